"""led_sign: the Alpha protocol encoder/decoder, and the driver over a real pty to the virtual sign.

The driver runs for real on an event loop in a background thread under a small fake DriverContext
(as in tests/test_pos_capture.py) against simulator/led_sign.py's VirtualLedSign, which reads the
packets with the same decoder a test can check by hand.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers import registry
from drivers.led_sign import (
    MODES,
    FrameDecoder,
    LedSignDriver,
    LedSignSettings,
    checksum,
    decode_frames,
    encode_text_frame,
    sanitise_text,
)
from simulator.led_sign import VirtualLedSign
from support import DRIVER_WAIT, FakeContext, Running, until



# ------------------------------------------------------------------------------ encoder / decoder


def test_encoder_matches_the_documented_packet():
    # The packet of wls.wwco.com/ledsigns/alpha/protocol.html (an Alpha 215C write-up):
    #   CHR$(1) + "Z00" + CHR$(2) + "AA" + CHR$(27) + " b" + "Message" + CHR$(4)
    # (after 20 NULs there; the protocol asks for at least 5), sent without a checksum. The checksum
    # form puts ETX and the checksum before EOT: "the 16-bit sum of STX through ETX inclusive" as four
    # upper-case hex digits, as the alphasign packages compute it (prototux/python-alphasign
    # alphasign/packet.py, lancereinsmith/alphasignpy tests/test_packet.py::test_checksum_correct_value:
    # f"{sum(STX + code + data + ETX) % 65536:04X}").
    # STX 02 + "AA" 41 41 + ESC 1B + " b" 20 62 + "Message" (709) + ETX 03 = 1001 = 0x03E9.
    documented = b"\x01Z00\x02AA\x1b bMessage\x04"
    expected = b"\x00" * 5 + documented[:-1] + b"\x03" + b"03E9" + b"\x04"
    assert encode_text_frame("Message", address="00", type_code="Z", file_label="A", mode="hold") == expected
    assert "%04X" % (sum(b"\x02" + b"A" + b"A\x1b bMessage" + b"\x03") % 65536) == "03E9"
    # The example of the module docstring, byte for byte.
    assert encode_text_frame("HELLO").hex(" ") == \
        "00 00 00 00 00 01 5a 30 30 02 41 41 1b 20 61 48 45 4c 4c 4f 03 30 32 39 37 04"
    # The documented packet without checksum is read as the sign reads it.
    (frame,) = decode_frames(b"\x00" * 20 + documented)
    assert (frame.type_code, frame.address, frame.command, frame.file_label, frame.position, frame.mode,
            frame.text, frame.checksum) == ("Z", "00", "A", "A", "middle", "hold", "Message", None)


def test_round_trip_with_every_mode_and_position():
    for mode in MODES:
        for position in ("middle", "top", "bottom", "fill", "left", "right"):
            data = encode_text_frame("Level B2: 17 spaces", address="0a", type_code="f", file_label="0",
                                     mode=mode, position=position)
            (frame,) = decode_frames(data)
            assert (frame.type_code, frame.address, frame.file_label, frame.position, frame.mode, frame.text) == \
                ("f", "0A", "0", position, mode, "Level B2: 17 spaces")
            assert frame.checksum == checksum(data[data.index(b"\x02"):data.index(b"\x03") + 1]).decode()


def test_checksum_failures_and_garbage_between_packets():
    good = encode_text_frame("OPEN 10-22")
    i = good.index(b"OPEN")
    bad_text = good[:i] + b"0" + good[i + 1:]  # one character changed in flight
    j = good.index(b"\x03") + 1
    bad_sum = good[:j] + (b"1" if good[j:j + 1] != b"1" else b"2") + good[j + 1:]
    for bad in (bad_text, bad_sum):
        decoder = FrameDecoder()
        assert decoder.feed(bad) == []
        assert decoder.rejected == 1
    truncated = good[:-6]  # cut off before the checksum ends; the next packet starts
    decoder = FrameDecoder()
    stream = b"noise\xff\x00" + bad_text + b"\r\n" + truncated + good + b"\x04\x04 more noise" + good
    frames = decoder.feed(stream)
    assert [f.text for f in frames] == ["OPEN 10-22", "OPEN 10-22"]
    assert decoder.rejected == 2
    # Split anywhere, one byte at a time, the same.
    decoder = FrameDecoder()
    frames = [f for b in stream for f in decoder.feed(bytes([b]))]
    assert [f.text for f in frames] == ["OPEN 10-22", "OPEN 10-22"] and decoder.rejected == 2
    # The checksum's hex digits are accepted in lower case too.
    assert decode_frames(good[:j] + good[j:j + 4].lower() + good[j + 4:])[0].text == "OPEN 10-22"


def test_text_sanitising():
    assert sanitise_text("欢迎光临 Welcome") == "???? Welcome"
    assert sanitise_text("ＡＢＣ　１２３") == "ABC 123"  # full-width forms fold to ASCII
    assert sanitise_text("Café\tcrème\r\nbrûlée") == "Cafe creme  brulee"
    assert sanitise_text("\x01\x02\x03\x1b\x7f") == "?????"  # control characters never reach the wire
    assert sanitise_text("x" * 300) == "x" * 125
    assert sanitise_text("abcdef", max_chars=3) == "abc"
    assert decode_frames(encode_text_frame("停车场 P2 满", max_chars=8))[0].text == "??? P2 ?"


def test_encoder_refuses_bad_parameters():
    for kwargs in ({"address": "0"}, {"address": "GG"}, {"type_code": "ZZ"}, {"type_code": "\x01"},
                   {"file_label": "?"}, {"file_label": ""}, {"mode": "blink"}, {"position": "centre"}):
        with pytest.raises(ValueError):
            encode_text_frame("x", **kwargs)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.sampled_from(sorted(MODES)), st.integers(min_value=1, max_value=200))
def test_any_text_round_trips_after_sanitising(text: str, mode: str, max_chars: int):
    (frame,) = decode_frames(encode_text_frame(text, mode=mode, max_chars=max_chars))
    assert frame.text == sanitise_text(text, max_chars)
    assert frame.mode == mode
    assert sanitise_text(frame.text, max_chars) == frame.text  # sanitising is idempotent


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=100))
def test_random_bytes_never_break_the_decoder(noise: bytes, tail: bytes):
    decoder = FrameDecoder()
    decoder.feed(noise)
    decoder.feed(tail)
    # After any noise, a packet (which starts a fresh SOH) is read.
    frames = decoder.feed(encode_text_frame("after noise"))
    assert frames and frames[-1].text == "after noise"


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300).map(lambda b: b"\x01Z00\x02A" + b))
def test_random_packets_never_raise(data: bytes):
    for frame in decode_frames(data + b"\x04"):
        assert isinstance(frame.data, bytes)


def test_settings_defaults_and_validation():
    s = LedSignSettings.model_validate({"id": "sign-1", "kind": "led_sign", "port": "/dev/ttyUSB0"})
    assert (s.baud, s.bytesize, s.parity, s.stopbits, s.address, s.type_code, s.file_label, s.mode, s.position,
            s.max_chars, s.reopen_max) == (9600, 8, "N", 1, "00", "Z", "A", "rotate", "middle", 125, 10.0)
    assert LedSignSettings.model_validate({"id": "s", "kind": "led_sign", "port": "p", "address": "1f"}).address == "1F"
    for bad in ({"address": "100"}, {"address": "x1"}, {"mode": "blink"}, {"file_label": "?"}, {"type_code": "ZZ"},
                {"max_chars": 0}, {"position": "centre"}):
        with pytest.raises(ValidationError):
            LedSignSettings.model_validate({"id": "s", "kind": "led_sign", "port": "p", **bad})
    assert registry.driver_for("led_sign") is LedSignDriver


# ------------------------------------------------------------------------------ the driver


@pytest.fixture
def sign():
    sign = VirtualLedSign(address="01").start()
    yield sign
    sign.stop()


def _driver(port: str, **overrides) -> tuple[LedSignDriver, FakeContext]:
    config = {"id": "sign-1", "kind": "led_sign", "port": port, "reopen_max": "0.3s", **overrides}
    ctx = FakeContext("sign-1")
    return LedSignDriver(LedSignSettings.model_validate(config), ctx), ctx


def test_the_sign_shows_what_the_driver_sends(sign):
    driver, ctx = _driver(sign.port, mode="hold")
    with Running(driver) as running:
        until(lambda: ctx.online, what="online")
        assert running.call(driver.show, "Welcome to MixC") is True
        until(lambda: sign.current == ("Welcome to MixC", "hold"), what="text on the sign")
        assert running.call(driver.show, "欢迎 B2 full", "flash") is True
        until(lambda: sign.current == ("?? B2 full", "flash"))
        assert running.call(driver.show, "x" * 200, "scroll")
        until(lambda: sign.current == ("x" * 125, "scroll"))
        with pytest.raises(ValueError):
            running.call(driver.show, "x", "blink")
        assert running.alive
    assert sign.shown == [("Welcome to MixC", "hold"), ("?? B2 full", "flash"), ("x" * 125, "scroll")]
    assert sign.rejected == 0
    assert all(f.checksum is not None for f in sign.frames)
    assert driver.last == ("x" * 125, "scroll")
    assert ctx.status == [(True, None)]


def test_unplugged_sign_goes_offline_and_gets_the_last_text_again(sign):
    driver, ctx = _driver(sign.port)
    with Running(driver) as running:
        until(lambda: ctx.online, what="online")
        assert running.call(driver.show, "Car park: 42 free")
        until(lambda: sign.current == ("Car park: 42 free", "rotate"))
        sign.unplug()  # the power cut: the sign forgets what it showed
        until(lambda: not ctx.online, what="offline after unplug")
        assert "sign port" in ctx.last_reason
        assert sign.current is None
        assert running.call(driver.show, "Car park: 41 free", "hold") is False  # not open: said so
        time.sleep(0.6)  # a few failed reopen attempts
        assert not ctx.online
        sign.plug()
        until(lambda: ctx.online, what="online after plug")
        # The newest text, given while the sign was away, is sent again as soon as the port opens.
        until(lambda: sign.current == ("Car park: 41 free", "hold"), what="last text re-sent")
        assert driver.pump.opens >= 2
        # A pulled data cable only (the sign kept its text): the text is sent again all the same.
        sign.unplug(power_off=False)
        until(lambda: not ctx.online)
        sign.plug()
        until(lambda: ctx.online)
        until(lambda: len(sign.shown) == 3)
        assert running.call(driver.show, "Car park: full", "flash")
        until(lambda: sign.current == ("Car park: full", "flash"))
        assert running.alive
    assert sign.shown == [("Car park: 42 free", "rotate"), ("Car park: 41 free", "hold"),
                          ("Car park: 41 free", "hold"), ("Car park: full", "flash")]
    assert sign.rejected == 0


def test_text_given_before_the_port_opens_is_shown_once_it_does(tmp_path):
    sign = VirtualLedSign(link_dir=str(tmp_path))
    sign.unplug()  # not there yet
    driver, ctx = _driver(sign.port, address="01", file_label="A")
    try:
        assert driver.show("Opening soon") is False  # before run: nothing open
        with Running(driver) as running:
            until(lambda: bool(ctx.status), what="a status")
            assert not ctx.online and "open failed" in ctx.last_reason
            sign.plug()
            sign.start()
            until(lambda: ctx.online)
            until(lambda: sign.current == ("Opening soon", "rotate"))
            assert running.alive
    finally:
        sign.stop()


def test_the_sign_ignores_packets_for_other_signs_and_files(sign):
    fd = os.open(sign.port, os.O_WRONLY | os.O_NOCTTY)  # the gateway's end of the line
    try:
        os.write(fd, encode_text_frame("for sign 02", address="02"))
        os.write(fd, encode_text_frame("file B", file_label="B"))
        os.write(fd, encode_text_frame("for me", address="01", type_code="f"))
    finally:
        os.close(fd)
    until(lambda: len(sign.frames) == 3)
    assert sign.shown == [("for me", "rotate")]


def test_a_sign_plays_the_text_creatives_of_its_plan(sign):
    """SignPlayer follows a screen's plan on the real driver and the virtual sign: each text creative
    once, placeholders filled in site time; a video in the plan leaves the sign's text as it was."""
    from datetime import datetime, timedelta, timezone

    from gateway.ads.model import Creative
    from gateway.ads.signs import SignPlayer, fill

    welcome = Creative(creative_id="w", type="text", duration=10, text="Welcome! {weekday} {time}")
    promo = Creative(creative_id="p", type="text", duration=10, text="B1 food court: 2x points today")
    video = Creative(creative_id="v", type="video", duration=10, media_url="https://cdn.example/v.mp4",
                     sha256="0" * 64)
    start = datetime(2026, 11, 24, 2, 0, tzinfo=timezone.utc)  # Tuesday 10:00 in Shanghai
    plan = [welcome, welcome, promo, video, promo]  # one item per ten seconds
    now = [start]

    def playing(moment):
        index = int((moment - start).total_seconds() // 10)
        return plan[index] if 0 <= index < len(plan) else None

    driver, ctx = _driver(sign.port)
    with Running(driver) as running:
        until(lambda: ctx.online, what="online")
        player = SignPlayer("lobby-sign", playing, lambda: driver, "Asia/Shanghai", clock=lambda: now[0])
        shown = []
        for second in range(0, 50, 5):
            now[0] = start + timedelta(seconds=second)
            shown.append(running.call(player.step))
        until(lambda: len(sign.shown) == 2, what="two texts on the sign")
    assert [s for s in shown if s] == ["Welcome! Tue 10:00", "B1 food court: 2x points today"]
    assert [text for text, _ in sign.shown] == ["Welcome! Tue 10:00", "B1 food court: 2x points today"]
    assert player.shows == 2
    assert fill("{parking} {time", start) == "{parking} {time"  # unknown and broken placeholders as written


def test_a_sign_screen_in_the_gateway_shows_its_campaign_text(tmp_path, sign):
    """A real gateway in-process: the `led_sign` device on the virtual sign, a screen that is that
    sign, and an ads.sync with a text campaign: the sign shows the campaign's text."""
    import asyncio

    import yaml

    from gateway.ads.model import WELCOME
    from gateway.config import parse_config
    from simulator.brokers import free_port
    from simulator.process import RunningGateway

    config = parse_config(yaml.safe_dump({
        "site_id": "mall-1", "gateway_id": "gw-1", "timezone": "Asia/Shanghai",
        "uplink": {"host": "127.0.0.1", "port": free_port(), "reconnect_min": "100ms", "reconnect_max": "1s"},
        "storage": {"path": str(tmp_path / "gateway.db")},
        "api": {"host": "127.0.0.1", "port": 0, "token": "site-token-0123456789abcdef"},
        "devices": [{"id": "sign-1", "kind": "led_sign", "port": sign.port, "address": "01", "reopen_max": "0.3s"}],
        "screens": [{"id": "lobby-sign", "sign": "sign-1"}],
    }), "site.yaml", env={})
    running = RunningGateway(config).start()
    try:
        sync = {"version": 1, "mode": "snapshot",
                "creatives": [{"creative_id": "welcome", "type": "text", "duration": 30,
                               "text": "Welcome to MixC - {weekday}"}],
                "campaigns": [{"campaign_id": "hello", "creatives": ["welcome"], "screens": ["lobby-sign"]}]}
        asyncio.run_coroutine_threadsafe(running.gateway.ads.sync_command(sync), running.gateway._loop).result(30)
        # A re-plan keeps the item playing now to its end (the built-in Welcome, 10 s), then the
        # campaign's text follows.
        until(lambda: sign.current is not None and sign.current[0].startswith("Welcome to MixC - "),
              timeout=WELCOME.duration + DRIVER_WAIT, what="the campaign's text on the sign")
    finally:
        running.stop()
    assert sign.current[0][-3:] in ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
