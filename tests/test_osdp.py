"""The OSDP driver against a virtual reader over a real pseudo-terminal.

The reader is libosdp's own PeripheralDevice (simulator/osdp_reader.py) on the master side of a pty;
the driver opens the slave side with pyserial as it opens /dev/ttyUSB0 on a site. Everything that
crosses is real OSDP framing, CRCs and (in the secure tests) AES secure channel, done by libosdp.

Timeouts are generous (libosdp takes about 8 s to give up on a silent reader); nothing asserts on
how long anything took.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from typing import Any

import pytest

osdp = pytest.importorskip("osdp")

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from drivers.osdp import OsdpDriver, OsdpSettings, active_panels  # noqa: E402
from drivers.serial_channel import SerialChannel  # noqa: E402
from gateway.events import Event  # noqa: E402
from simulator.osdp_reader import VirtualOsdpReader  # noqa: E402

WAIT = 40.0  # seconds; only a bound on a broken run
KEY = bytes.fromhex("00112233445566778899aabbccddeeff")


class FakeContext:
    """What the supervisor offers a driver, recording what the driver does with it."""

    def __init__(self, device_id: str = "doors-1"):
        self.device_id = device_id
        self.log = logging.getLogger(f"test.{device_id}")
        self.events: list[Event] = []
        self.states: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict[str, Any], *, ts: str | None = None, internal: bool = False) -> Event:
        event = Event(type, self.device_id, data, internal=internal)
        with self._lock:
            self.events.append(event)
        return event

    def set_online(self) -> None:
        self.states.append(("online", None))

    def set_offline(self, reason: str) -> None:
        self.states.append(("offline", reason))

    def last_activity(self) -> float | None:
        return None

    def offer_frames(self, source: Any | None) -> None:
        pass

    def of_type(self, type: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type == type]

    @property
    def state(self) -> str | None:
        return self.states[-1][0] if self.states else None


def make_settings(port: str, **reader: Any) -> OsdpSettings:
    extra = {k: reader.pop(k) for k in list(reader) if k in ("reconnect_interval", "output_pulse")}
    return OsdpSettings(id="doors-1", kind="osdp", port=port,
                        readers=[{"address": 7, "name": "lobby-in", **reader}], **extra)


async def wait_for(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Rig:
    """A virtual reader and the driver talking to it, the driver on an asyncio task."""

    def __init__(self, reader: VirtualOsdpReader, settings: OsdpSettings):
        self.reader = reader
        self.ctx = FakeContext(settings.id)
        self.driver = OsdpDriver(settings, self.ctx)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "Rig":
        self.reader.start()
        self.task = asyncio.get_running_loop().create_task(self.driver.run())
        return self

    async def __aexit__(self, *exc: Any) -> None:
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.reader.stop()

    async def online(self) -> None:
        await wait_for(lambda: self.ctx.state == "online", "the driver to report the device online")
        assert not self.task.done()


def card_reads(ctx: FakeContext) -> list[dict]:
    return [e.data for e in ctx.of_type("access.card_read")]


async def check_card_keypad_door_and_feedback(rig: Rig) -> None:
    reader, ctx, driver = rig.reader, rig.ctx, rig.driver
    await rig.online()

    assert reader.swipe("a1b2c3c0", 26)
    await wait_for(lambda: card_reads(ctx), "a card read event")
    [card] = ctx.of_type("access.card_read")
    assert card.internal, "card numbers must not go upstream raw"
    assert card.data == {"reader": 7, "reader_name": "lobby-in", "format": "wiegand", "bits": 26,
                         "data": "a1b2c3c0"}

    assert reader.type_pin("*4711#")
    await wait_for(lambda: ctx.of_type("access.keypad"), "a keypad event")
    [keys] = ctx.of_type("access.keypad")
    assert keys.internal and keys.data["digits"] == "*4711#" and keys.data["reader"] == 7

    assert active_panels["doors-1"] is driver
    assert driver.open_door(7)
    await wait_for(lambda: reader.outputs, "the output command at the reader")
    assert reader.outputs[0]["output_no"] == 0
    assert reader.outputs[0]["control_code"] == 5  # temporary on, then back to off
    assert reader.outputs[0]["timer_count"] == 30  # output_pulse 3 s in 100 ms ticks
    assert driver.open_door(7, seconds=1.5)
    await wait_for(lambda: len(reader.outputs) == 2, "the second output command")
    assert reader.outputs[1]["timer_count"] == 15

    assert driver.feedback(7, granted=True)
    await wait_for(lambda: reader.leds and reader.buzzers, "LED and buzzer commands")
    assert reader.leds[0]["on_color"] == osdp.CommandLEDColor.Green
    assert reader.buzzers[0]["rep_count"] == 1
    assert driver.feedback(7, granted=False)
    await wait_for(lambda: len(reader.leds) == 2, "the second LED command")
    assert reader.leds[1]["on_color"] == osdp.CommandLEDColor.Red

    await wait_for(lambda: len(reader.buzzers) == 2, "the second buzzer command")
    assert reader.buzzers[1]["rep_count"] == 3

    with pytest.raises(KeyError):
        driver.open_door(99)
    assert ctx.events and all(e.internal for e in ctx.events), "access events stay on the gateway for now"


def test_card_keypad_door_and_feedback_in_the_clear():
    async def scenario():
        reader = VirtualOsdpReader(address=7)
        async with Rig(reader, make_settings(reader.port)) as rig:
            await check_card_keypad_door_and_feedback(rig)
            statuses = [e.data for e in rig.ctx.of_type("access.reader_status")]
            assert statuses[-1]["status"] == "online" and statuses[-1]["secure"] is False
        assert "doors-1" not in active_panels

    asyncio.run(scenario())


def test_card_keypad_door_and_feedback_over_secure_channel():
    async def scenario():
        reader = VirtualOsdpReader(address=7, scbk=KEY)
        async with Rig(reader, make_settings(reader.port, scbk=KEY.hex())) as rig:
            await check_card_keypad_door_and_feedback(rig)
            assert reader.secure
            statuses = [e.data for e in rig.ctx.of_type("access.reader_status")]
            assert statuses[-1] == {"reader": 7, "reader_name": "lobby-in", "status": "online", "secure": True}

    asyncio.run(scenario())


def test_reader_with_another_key_stays_offline_and_says_nothing():
    async def scenario():
        reader = VirtualOsdpReader(address=7, scbk=bytes(16))
        async with Rig(reader, make_settings(reader.port, scbk=KEY.hex(), reconnect_interval=1)) as rig:
            await wait_for(lambda: rig.ctx.of_type("access.reader_status"), "a reader status")
            reader.swipe("a1b2c3c0", 26)
            await asyncio.sleep(1.0)
            assert rig.ctx.state == "offline"
            assert rig.ctx.of_type("access.reader_status")[-1].data["status"] == "offline"
            assert not card_reads(rig.ctx)
            assert not rig.task.done()

    asyncio.run(scenario())


def test_install_mode_gives_a_new_reader_its_key():
    async def scenario():
        reader = VirtualOsdpReader(address=7, install_mode=True)  # fresh from the box: no key
        settings = make_settings(reader.port, scbk=KEY.hex(), install_mode=True)
        async with Rig(reader, settings) as rig:
            await wait_for(lambda: reader.scbk == KEY, "the reader to receive its key")
            await wait_for(lambda: reader.secure and rig.ctx.state == "online", "a secure session")
            reader.swipe("0badcafe", 32)
            await wait_for(lambda: card_reads(rig.ctx), "a card read over the new key")
            assert card_reads(rig.ctx)[0]["data"] == "0badcafe"

    asyncio.run(scenario())


def test_unplugged_reader_goes_offline_and_comes_back():
    async def scenario():
        reader = VirtualOsdpReader(address=7)
        async with Rig(reader, make_settings(reader.port, reconnect_interval=1)) as rig:
            await rig.online()
            reader.unplug()
            await wait_for(lambda: rig.ctx.state == "offline", "the driver to report the reader offline")
            assert "lobby-in" in rig.ctx.states[-1][1]
            assert rig.ctx.of_type("access.reader_status")[-1].data["status"] == "offline"
            reader.plug()
            await wait_for(lambda: rig.ctx.state == "online", "the driver to report it online again")
            assert rig.ctx.of_type("access.reader_status")[-1].data["status"] == "online"
            reader.swipe("a1b2c3c0", 26)
            await wait_for(lambda: card_reads(rig.ctx), "a card read after the reader came back")

    asyncio.run(scenario())


def test_tamper_is_reported_as_reader_status():
    async def scenario():
        reader = VirtualOsdpReader(address=7)
        async with Rig(reader, make_settings(reader.port)) as rig:
            await rig.online()
            assert reader.tamper(True)
            await wait_for(lambda: rig.ctx.of_type("access.reader_status")[-1].data["status"] == "tamper",
                           "a tamper status")
            assert reader.tamper(False)
            await wait_for(lambda: rig.ctx.of_type("access.reader_status")[-1].data["status"] == "online",
                           "the tamper to clear")

    asyncio.run(scenario())


def test_missing_port_is_offline_not_a_crash(tmp_path):
    async def scenario():
        ctx = FakeContext()
        driver = OsdpDriver(make_settings(str(tmp_path / "ttyUSB9")), ctx)
        task = asyncio.get_running_loop().create_task(driver.run())
        await wait_for(lambda: ctx.state == "offline", "an offline report")
        await asyncio.sleep(1.0)
        assert not task.done()
        assert "ttyUSB9" in ctx.states[-1][1]
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


def test_serial_channel_survives_its_port_disappearing():
    master, slave = os.openpty()
    path = os.ttyname(slave)
    channel = SerialChannel(path, 9600, reopen_interval=0.0)
    try:
        assert channel.open()
        os.write(master, b"\x53\x01")
        deadline = time.monotonic() + WAIT
        got = b""
        while len(got) < 2 and time.monotonic() < deadline:
            got += channel.read(64)
        assert got == b"\x53\x01"
        assert channel.write(b"abc") == 3
        os.close(master)
        os.close(slave)
        master = slave = -1
        for _ in range(5):  # the pty is gone: every call says "nothing", none raises
            assert channel.read(64) == b""
            assert channel.write(b"abc") in (0, 3)
            channel.flush()
        assert channel.last_error is not None and channel.errors >= 1
    finally:
        channel.close()
        for fd in (master, slave):
            if fd >= 0:
                os.close(fd)
    missing = SerialChannel("/nonexistent/ttyUSB0")
    assert missing.read(10) == b"" and missing.write(b"x") == 0 and "ttyUSB0" in missing.last_error


@pytest.fixture
def running_rig():
    """A rig whose asyncio loop runs in a thread, so that hypothesis can drive it example by example."""
    reader = VirtualOsdpReader(address=7)
    rig = Rig(reader, make_settings(reader.port, reconnect_interval=1))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(rig.__aenter__(), loop).result(WAIT)
    asyncio.run_coroutine_threadsafe(rig.online(), loop).result(WAIT)
    yield rig, loop
    asyncio.run_coroutine_threadsafe(rig.__aexit__(None, None, None), loop).result(WAIT)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(WAIT)
    loop.close()


def test_random_bytes_on_the_bus_never_crash_the_driver(running_rig):
    rig, loop = running_rig

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(noise=st.binary(min_size=1, max_size=300))
    def noise_on_the_bus(noise: bytes) -> None:
        rig.reader.inject(noise)
        time.sleep(0.02)
        assert not rig.task.done(), "the driver died"
        assert rig.driver._panel is not None and rig.driver._panel.thread.is_alive()

    noise_on_the_bus()
    # Still a working reader link afterwards (it may have dropped and come back meanwhile).
    asyncio.run_coroutine_threadsafe(rig.online(), loop).result(WAIT)
    deadline = time.monotonic() + WAIT
    while not card_reads(rig.ctx) and time.monotonic() < deadline:
        rig.reader.swipe("a1b2c3c0", 26)
        time.sleep(1.0)
    assert card_reads(rig.ctx)[-1]["data"] == "a1b2c3c0"
    assert not rig.task.done()


def test_settings_reject_bad_readers():
    with pytest.raises(ValueError, match="16 bytes"):
        make_settings("/dev/ttyUSB0", scbk="0011")
    with pytest.raises(ValueError, match="needs the scbk"):
        make_settings("/dev/ttyUSB0", install_mode=True)
    with pytest.raises(ValueError, match="used twice"):
        OsdpSettings(id="d", kind="osdp", port="/dev/ttyUSB0", readers=[{"address": 1}, {"address": 1}])
    with pytest.raises(ValueError):
        make_settings("/dev/ttyUSB0", address=127)
