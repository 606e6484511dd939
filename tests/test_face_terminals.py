"""Face terminals that push over HTTP: Hikvision ISAPI and ZKTeco push (ADMS) drivers.

Parsers are pure functions, tested directly (valid, malformed, and fuzzed with hypothesis). The
drivers run for real on loopback under a small fake DriverContext, with the virtual terminals of
simulator/face_terminals.py on their own addresses (127.0.0.2, 127.0.0.3: Linux routes all of
127/8 to lo), so that the allow-lists are exercised with real source addresses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.hikvision import (
    BadEvent,
    HikvisionDriver,
    HikvisionSettings,
    isapi_presentation,
    normalise_mac,
    parse_isapi_event,
)
from drivers.http_listener import AllowList, card_value
from drivers.zkteco import (
    ZktecoDriver,
    ZktecoSettings,
    open_door_command,
    options_text,
    parse_attlog,
    parse_devicecmd,
    parse_rtlog,
    verify_method,
)
from gateway.events import Event
from simulator.face_terminals import (
    VirtualHikvisionTerminal,
    VirtualZktecoTerminal,
    face_jpeg,
)
import support

TERMINAL_HOST = "127.0.0.2"
OTHER_HOST = "127.0.0.3"
WAIT = 10.0

FACE_EVENT = {
    "ipAddress": "10.0.0.5", "macAddress": "a4:14:37:00:00:01", "dateTime": "2026-11-22T10:00:00+08:00",
    "eventType": "AccessControllerEvent",
    "AccessControllerEvent": {"majorEventType": 5, "subEventType": 75, "employeeNoString": "M-1",
                              "cardNo": "", "serialNo": 1234, "currentVerifyMode": "cardOrFace",
                              "attendanceStatus": "undefined", "doorNo": 1},
}


def _loopback_alias_works() -> bool:
    try:
        with socket.socket() as s:
            s.bind((OTHER_HOST, 0))
        return True
    except OSError:
        return False


needs_loopback_aliases = pytest.mark.skipif(not _loopback_alias_works(), reason="127.0.0.3 is not bindable here")


# ------------------------------------------------------------------------------ fake context


class FakeContext(support.FakeContext):
    """The shared fake supervisor context, with the terminal events at hand."""

    def identified(self) -> list[Event]:
        return self.of_type("access.identified")

    def reader_status(self) -> list[dict]:
        return [e.data for e in self.of_type("access.reader_status")]


async def _until(predicate, timeout: float = WAIT) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Running:
    """A driver's `run` on a task; waits until it listens; cancels it on exit."""

    def __init__(self, driver):
        self.driver = driver
        self.task: asyncio.Task | None = None

    async def __aenter__(self):
        self.task = asyncio.get_running_loop().create_task(self.driver.run())
        await _until(lambda: self.driver.port is not None or self.task.done())
        if self.task.done():
            self.task.result()
        return self.driver

    async def __aexit__(self, *exc):
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def _hik_driver(terminal_port: int, **overrides) -> tuple[HikvisionDriver, FakeContext]:
    config = {"id": "hik-1", "kind": "hikvision_terminal", "listen_host": "127.0.0.1", "listen_port": 0,
              "terminals": [{"id": "t1", "host": TERMINAL_HOST, "port": terminal_port, "username": "admin",
                             "password": "terminal-pass-1", "door_no": 1}], **overrides}
    ctx = FakeContext("hik-1")
    return HikvisionDriver(HikvisionSettings.model_validate(config), ctx), ctx


def _zk_driver(**overrides) -> tuple[ZktecoDriver, FakeContext]:
    config = {"id": "zk-1", "kind": "zkteco_terminal", "listen_host": "127.0.0.1", "listen_port": 0,
              "terminals": [{"id": "z1", "serial_number": "ABC123", "door": 1, "host": TERMINAL_HOST}],
              **overrides}
    ctx = FakeContext("zk-1")
    return ZktecoDriver(ZktecoSettings.model_validate(config), ctx), ctx


# ========================================================================= ISAPI parsers


def test_json_face_event_is_one_face_presentation():
    events = parse_isapi_event("application/json; charset=utf-8", json.dumps(FACE_EVENT).encode())
    assert events == [FACE_EVENT]
    assert isapi_presentation(events[0]) == {"method": "face", "value": "M-1", "terminal_serial": "1234",
                                             "terminal_time": "2026-11-22T10:00:00+08:00"}


@pytest.mark.parametrize("sub, extra, expected", [
    (76, {}, ("face", None)),                              # a stranger
    (80, {}, ("face", None)),                              # face not recognised
    (1, {"cardNo": "000123456"}, ("card", "cardno:123456")),
    (9, {"cardNo": "77"}, ("card", "cardno:77")),          # unknown to the terminal: the gateway decides
    (1, {"cardNo": "0000"}, ("card", None)),
    (1, {"cardNo": "12AB"}, ("card", None)),
    (38, {}, ("fingerprint", "M-1")),
    (39, {}, ("fingerprint", None)),
    (0xB5, {}, ("pin", "M-1")),
    (0x4D, {"employeeNoString": None, "employeeNo": 42}, ("face", "42")),
])
def test_sub_event_types_map_to_methods(sub, extra, expected):
    event = json.loads(json.dumps(FACE_EVENT))
    event["AccessControllerEvent"].update({"subEventType": sub, **extra})
    result = isapi_presentation(event)
    assert (result["method"], result["value"]) == expected
    assert result["terminal_serial"] == "1234"


@pytest.mark.parametrize("change", [
    {"eventType": "heartBeat"},
    {"AccessControllerEvent": {"majorEventType": 5, "subEventType": 21, "serialNo": 1}},  # door unlocked
    {"AccessControllerEvent": {"majorEventType": 2, "subEventType": 39}},                 # an exception
    {"AccessControllerEvent": {"majorEventType": 5, "subEventType": 1024}},               # unknown minor type
    {"AccessControllerEvent": "not a dict"},
    {"AccessControllerEvent": {"majorEventType": True, "subEventType": 75}},
])
def test_events_that_are_no_credential_are_ignored(change):
    assert isapi_presentation({**FACE_EVENT, **change}) is None


def test_missing_serial_gets_a_stable_serial():
    event = json.loads(json.dumps(FACE_EVENT))
    del event["AccessControllerEvent"]["serialNo"]
    first, second = isapi_presentation(event), isapi_presentation(json.loads(json.dumps(event)))
    assert first["terminal_serial"] == second["terminal_serial"] == "2026-11-22T10:00:00+08:00|5|75|M-1"


def _form_data(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[str, bytes]:
    body = b""
    for name, ctype, data in parts:
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n'.encode()
        if ctype:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", body + f"--{boundary}--\r\n".encode()


@pytest.mark.parametrize("name, ctype", [("AccessControllerEvent", None), ("event_log", "application/json"),
                                          ("whatever", "application/json")])
def test_multipart_keeps_the_json_and_drops_pictures(name, ctype):
    jpeg = face_jpeg()
    content_type, body = _form_data([(name, ctype, json.dumps(FACE_EVENT).encode()),
                                     ("Picture", "image/jpeg", jpeg)])
    events = parse_isapi_event(content_type, body)
    assert events == [FACE_EVENT]
    assert jpeg[:64] not in json.dumps(events).encode()
    mixed = parse_isapi_event(content_type.replace("form-data", "mixed"), body)
    assert mixed == [FACE_EVENT]


def test_multipart_fed_in_small_chunks():
    from drivers.hikvision import IsapiBodyParser

    content_type, body = _form_data([("Picture", "image/jpeg", face_jpeg()),
                                     ("AccessControllerEvent", None, json.dumps(FACE_EVENT).encode())])
    parser = IsapiBodyParser(content_type)
    for i in range(0, len(body), 7):
        parser.feed(body[i:i + 7])
    assert parser.finish() == [FACE_EVENT]


@pytest.mark.parametrize("content_type, body, status", [
    ("application/json", b"{not json", 400),
    ("application/json", b"[1, 2]", 400),
    ("application/json", b'{"eventType": 5}', 400),
    ("application/json", b"", 400),
    ("application/json", b"[" * 100000, 400),
    ("image/jpeg", b"\xff\xd8\xff", 415),
    ("", b"{}", 415),
    ("multipart/form-data", b"--x\r\n\r\n", 400),                        # no boundary
    ("multipart/form-data; boundary=zz", b"garbage, no boundary at all", 400),
    ("multipart/form-data; boundary=zz", b'--zz\r\nContent-Disposition: form-data; name="event_log"\r\n\r\n{}', 400),
    ("multipart/form-data; boundary=zz", b"--zz--\r\n", 400),           # no event part
])
def test_malformed_isapi_bodies_are_refused(content_type, body, status):
    with pytest.raises(BadEvent) as caught:
        parse_isapi_event(content_type, body)
    assert caught.value.status == status


def test_xml_notifications_carry_no_event():
    assert parse_isapi_event("application/xml", b"<EventNotificationAlert><eventType>heartBeat</eventType>"
                                                 b"</EventNotificationAlert>") == []


def test_mac_and_card_helpers():
    assert normalise_mac("A4-14-37-00-00-01") == normalise_mac("a41437000001") == "a4:14:37:00:00:01"
    assert normalise_mac("zz:14:37:00:00:01") is None and normalise_mac(7) is None
    assert card_value("0012") == "cardno:12" and card_value(12) == "cardno:12"
    assert card_value("") is None and card_value("٣") is None and card_value(True) is None


def test_allow_list():
    allow = AllowList(["10.0.0.5", "192.168.1.0/24", "fd00::/8"])
    assert allow.allows("10.0.0.5") and allow.allows("192.168.1.77") and allow.allows("::ffff:10.0.0.5")
    assert allow.allows("fd00::1")
    assert not allow.allows("10.0.0.6") and not allow.allows("") and not allow.allows(None)
    assert not allow.allows("not an address")
    assert not AllowList([]).allows("127.0.0.1")


_json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                            lambda children: st.lists(children, max_size=4)
                            | st.dictionaries(st.text(max_size=12), children, max_size=5), max_leaves=20)
_ace = st.fixed_dictionaries({}, optional={
    "majorEventType": st.one_of(st.sampled_from([5, "5", 1, True]), _json_values),
    "subEventType": st.one_of(st.sampled_from([1, 9, 38, 75, 76, 80, 0xB5, "75"]), _json_values),
    "employeeNoString": st.one_of(st.text(max_size=200), _json_values),
    "employeeNo": _json_values, "cardNo": st.one_of(st.text("0123456789", max_size=30), _json_values),
    "serialNo": st.one_of(st.integers(), st.text(max_size=20), _json_values),
})
_isapi_events = st.fixed_dictionaries({}, optional={
    "eventType": st.one_of(st.just("AccessControllerEvent"), _json_values),
    "dateTime": _json_values, "macAddress": _json_values, "ipAddress": _json_values,
    "AccessControllerEvent": st.one_of(_ace, _json_values)})


@settings(max_examples=400, deadline=None)
@given(event=_isapi_events)
def test_fuzz_presentation_never_raises_and_has_the_contract_shape(event):
    result = isapi_presentation(event)
    if result is not None:
        assert set(result) == {"method", "value", "terminal_serial", "terminal_time"}
        assert result["method"] in ("face", "card", "pin", "fingerprint")
        assert result["value"] is None or isinstance(result["value"], str)
        assert isinstance(result["terminal_serial"], str)
        assert result["terminal_time"] is None or isinstance(result["terminal_time"], str)
        if result["method"] == "card" and result["value"] is not None:
            assert result["value"].startswith("cardno:") and result["value"][7:].isdigit()


@settings(max_examples=400, deadline=None)
@given(content_type=st.one_of(st.sampled_from(["application/json", "multipart/form-data; boundary=zz",
                                               "multipart/mixed; boundary=\"a b\"", "text/xml", "application/json; charset=utf-8"]),
                              st.text(max_size=60)),
       body=st.one_of(st.binary(max_size=400),
                      st.builds(lambda b: b"--zz\r\n" + b, st.binary(max_size=300))))
def test_fuzz_isapi_parser_refuses_cleanly(content_type, body):
    try:
        events = parse_isapi_event(content_type, body)
    except BadEvent as exc:
        assert 400 <= exc.status < 500
    else:
        assert all(isinstance(e, dict) for e in events)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picture=st.binary(min_size=16, max_size=3000), split=st.integers(1, 50))
def test_fuzz_pictures_never_reach_an_event(picture, split):
    from drivers.hikvision import IsapiBodyParser

    picture = b"\xff\xd8\xff\xe0" + picture  # a JPEG's start, then anything
    content_type, body = _form_data([("AccessControllerEvent", None, json.dumps(FACE_EVENT).encode()),
                                     ("Picture", "image/jpeg", picture)], boundary="Bound4ry-x9")
    if b"Bound4ry-x9" in picture:
        return
    parser = IsapiBodyParser(content_type)
    for i in range(0, len(body), split):
        parser.feed(body[i:i + split])
    events = parser.finish()
    assert events == [FACE_EVENT]
    assert b"\xff\xd8\xff\xe0" not in repr(events).encode()


# ===================================================================== ZKTeco parsers


def test_attlog_lines():
    text = ("1001\t2026-11-22 10:00:00\t0\t15\t0\t0\t0\r\n"
            "1002\t2026-11-22 10:00:05\t1\t1\t0\n"
            "1003\t2026-11-22 10:00:09\t0\t3\t\n"
            "1004\t2026-11-22 10:00:10\t0\t4\t0\n"
            "\n"
            "garbage line\n"
            "1005\tyesterday\t0\t15\n"
            "0\t2026-11-22 10:00:11\t0\t15\t0\n")
    parsed = parse_attlog(text)
    assert parsed.records == [
        {"method": "face", "value": "1001", "terminal_serial": "1001|2026-11-22 10:00:00",
         "terminal_time": "2026-11-22 10:00:00"},
        {"method": "fingerprint", "value": "1002", "terminal_serial": "1002|2026-11-22 10:00:05",
         "terminal_time": "2026-11-22 10:00:05"},
        {"method": "pin", "value": "1003", "terminal_serial": "1003|2026-11-22 10:00:09",
         "terminal_time": "2026-11-22 10:00:09"},
        {"method": "card", "value": None, "terminal_serial": "1004|2026-11-22 10:00:10",
         "terminal_time": "2026-11-22 10:00:10"},
    ]
    assert parsed.bad == 3


def test_rtlog_lines():
    base = "time=2026-11-22 10:00:00\tpin={pin}\tcardno={card}\teventaddr=1\tevent={event}\tinoutstatus=0\tverifytype={v}\tindex={i}"
    text = "\n".join([
        base.format(pin="1001", card="0", event=0, v=15, i=12),
        base.format(pin="0", card="0", event=27, v=15, i=13),          # a stranger's face
        base.format(pin="1001", card="000998877", event=0, v=4, i=14),  # a card
        base.format(pin="0", card="0", event=200, v=200, i=15),         # door opened: no credential
        base.format(pin="0", card="0", event=8, v=200, i=16),           # remote open
        "time=nonsense\tevent=0\tverifytype=15",
    ])
    parsed = parse_rtlog(text)
    assert [(r["method"], r["value"], r["terminal_serial"]) for r in parsed.records] == [
        ("face", "1001", "12"), ("face", None, "13"), ("card", "cardno:998877", "14")]
    assert all(r["terminal_time"] == "2026-11-22 10:00:00" for r in parsed.records)
    assert (parsed.bad, parsed.ignored) == (1, 2)


def test_verify_types_devicecmd_and_commands():
    assert [verify_method(v) for v in (15, 16, 4, 11, 3, 0, 1, 25)] == \
        ["face", "face", "card", "card", "pin", "pin", "fingerprint", "fingerprint"]
    assert open_door_command(1, 5) == "CONTROL DEVICE 01010105"
    assert open_door_command(2, 30) == "CONTROL DEVICE 0102011E"
    assert open_door_command(1, 0.01) == "CONTROL DEVICE 01010101" and open_door_command(1, 999).endswith("FE")
    assert parse_devicecmd("ID=7&Return=0&CMD=CONTROL DEVICE\nID=x&Return=1\nID=8&Return=-1002&CMD=DATA\n") == [
        {"id": 7, "return": 0, "cmd": "CONTROL DEVICE"}, {"id": 8, "return": -1002, "cmd": "DATA"}]
    text = options_text("ABC123", "None", 2)
    assert text.startswith("GET OPTION FROM: ABC123\n") and "ATTLOGStamp=None" in text and "Delay=2" in text
    assert "AttPhoto" not in text


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=500),
                      st.lists(st.lists(st.text(max_size=25), max_size=10).map("\t".join), max_size=10).map("\n".join),
                      st.lists(st.lists(st.tuples(st.sampled_from(["time", "pin", "cardno", "event", "verifytype",
                                                                   "index", "eventaddr"]),
                                                  st.text(max_size=20)).map("=".join), max_size=9).map("\t".join),
                               max_size=8).map("\n".join)))
def test_fuzz_zk_parsers_never_crash(text):
    for parse in (parse_attlog, parse_rtlog):
        parsed = parse(text)
        for record in parsed.records:
            assert set(record) == {"method", "value", "terminal_serial", "terminal_time"}
            assert record["value"] is None or isinstance(record["value"], str)
            assert isinstance(record["terminal_serial"], str)
    assert all(isinstance(r["id"], int) for r in parse_devicecmd(text))


def test_settings_validation():
    with pytest.raises(ValueError, match="allow"):
        ZktecoSettings.model_validate({"id": "zk", "kind": "zkteco_terminal",
                                       "terminals": [{"id": "z1", "serial_number": "ABC"}]})
    with pytest.raises(ValueError):
        ZktecoSettings.model_validate({"id": "zk", "kind": "zkteco_terminal", "allow": ["10.0.0.0/8"],
                                       "terminals": [{"id": "z1", "serial_number": "A"}, {"id": "z2", "serial_number": "A"}]})
    with pytest.raises(ValueError, match="allow"):
        HikvisionSettings.model_validate({"id": "h", "kind": "hikvision_terminal", "allow": ["nonsense"],
                                          "terminals": [{"id": "t", "host": "10.0.0.5", "username": "a", "password": "b"}]})
    hik = HikvisionSettings.model_validate({"id": "h", "kind": "hikvision_terminal", "terminals": [
        {"id": "t", "host": "10.0.0.5", "username": "a", "password": "s3cret-pw", "mac": "A4-14-37-00-00-01"}]})
    assert (hik.listen_host, hik.listen_port, hik.path, hik.stale_after) == ("0.0.0.0", 8091, "/isapi/events", 120.0)
    assert hik.terminals[0].mac == "a4:14:37:00:00:01" and "s3cret-pw" not in repr(hik)
    zk = ZktecoSettings.model_validate({"id": "zk", "kind": "zkteco_terminal", "allow": ["10.0.0.0/8"],
                                        "terminals": [{"id": "z1", "serial_number": "ABC"}]})
    assert (zk.listen_port, zk.poll_interval, zk.open_seconds, zk.command_ttl) == (8092, 2, 5.0, 15.0)


# ====================================================================== Hikvision over HTTP


def test_hikvision_end_to_end_over_loopback():
    terminal = VirtualHikvisionTerminal("http://invalid/", host=TERMINAL_HOST).start()

    async def scenario():
        driver, ctx = _hik_driver(terminal.port)
        async with Running(driver):
            url = f"http://127.0.0.1:{driver.port}/isapi/events"
            terminal.push_url = url

            # one face push: exactly one access.identified
            response = await asyncio.to_thread(terminal.push_face, "M-1", serial=1234)
            assert response.status_code == 200
            assert len(ctx.identified()) == 1
            event = ctx.identified()[0]
            assert event.internal and event.device_id == "hik-1"
            assert event.data == {"reader": "t1", "method": "face", "value": "M-1", "terminal_serial": "1234",
                                  "terminal_time": event.data["terminal_time"]}
            assert isinstance(event.data["terminal_time"], str)

            # the same push again: emitted again (dedupe is the service's), same terminal_serial
            await asyncio.to_thread(terminal.push_face, "M-1", serial=1234)
            assert [e.data["terminal_serial"] for e in ctx.identified()] == ["1234", "1234"]

            # multipart with a real JPEG, both flavours; and a stranger
            for flavour in ("form-data", "mixed"):
                response = await asyncio.to_thread(terminal.push_face, "M-2", serial=1300, multipart=flavour)
                assert response.status_code == 200, response.text
            await asyncio.to_thread(terminal.push_face, None, serial=1301)
            await asyncio.to_thread(terminal.push_card, "000123", serial=1302)
            await asyncio.to_thread(terminal.push_heartbeat)
            data = [e.data for e in ctx.identified()]
            assert [(d["method"], d["value"], d["terminal_serial"]) for d in data[2:]] == [
                ("face", "M-2", "1300"), ("face", "M-2", "1300"), ("face", None, "1301"),
                ("card", "cardno:123", "1302")]
            everything = repr([e.data for e in ctx.events]).encode() + json.dumps([e.data for e in ctx.events]).encode()
            jpeg = terminal.picture
            assert len(jpeg) > 1000
            for offset in range(0, len(jpeg) - 16, max(1, len(jpeg) // 50)):
                assert jpeg[offset:offset + 16] not in everything
            assert b"\xff\xd8" not in everything

            # reader status: online
            await _until(lambda: {"reader": "t1", "online": True, "status": "online", "reason": None}
                         in ctx.reader_status())
            assert ctx.status and ctx.status[-1] == (True, None)

            # wrong source: 403, nothing emitted
            count = len(ctx.identified())
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.1")) as client:
                response = await client.post(url, json=FACE_EVENT)
                assert response.status_code == 403
            # from the terminal's address: oversized, garbage, wrong type, wrong path
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=TERMINAL_HOST)) as client:
                big = b"x" * (3 * 1024 * 1024)
                response = await client.post(url, content=big, headers={"Content-Type": "application/json"})
                assert response.status_code == 413

                async def chunks():  # no Content-Length: the limit holds while streaming
                    yield b'--q\r\nContent-Disposition: form-data; name="Picture"\r\nContent-Type: image/jpeg\r\n\r\n'
                    for _ in range(40):
                        yield b"y" * 100_000
                response = await client.post(url, content=chunks(),
                                             headers={"Content-Type": "multipart/form-data; boundary=q"})
                assert response.status_code == 413
                response = await client.post(url, content=b"{garbage", headers={"Content-Type": "application/json"})
                assert response.status_code == 400
                response = await client.post(url, content=b"--zz\r\nnope",
                                             headers={"Content-Type": "multipart/form-data; boundary=zz"})
                assert response.status_code == 400
                response = await client.post(url, content=b"\xff\xd8", headers={"Content-Type": "image/jpeg"})
                assert response.status_code == 415
                response = await client.post(url.replace("/isapi/events", "/other"), json=FACE_EVENT)
                assert response.status_code == 404
            assert len(ctx.identified()) == count
            # and it keeps serving
            response = await asyncio.to_thread(terminal.push_face, "M-3", serial=1400)
            assert response.status_code == 200 and ctx.identified()[-1].data["value"] == "M-3"

            # remote open: digest auth on the terminal's ISAPI
            assert driver.feedback("t1", True) is False
            assert driver.open_door("nope") is False
            assert driver.open_door("t1", 3.0) is True
            await _until(lambda: terminal.remote_opens == [1])
            assert terminal.auth_failures >= 1  # the digest challenge came first
        assert not driver.open_door("t1")  # not running any more

    try:
        asyncio.run(scenario())
    finally:
        terminal.stop()


def test_hikvision_wrong_password_is_logged_not_raised(caplog):
    terminal = VirtualHikvisionTerminal("http://invalid/", host=TERMINAL_HOST, password="other").start()

    async def scenario():
        driver, _ctx = _hik_driver(terminal.port)
        async with Running(driver):
            with caplog.at_level(logging.ERROR, logger="test.hik-1"):
                assert driver.open_door("t1") is True
                await _until(lambda: "remote open refused: HTTP 401" in caplog.text)
            assert terminal.remote_opens == []

    try:
        asyncio.run(scenario())
    finally:
        terminal.stop()


@needs_loopback_aliases
def test_hikvision_attribution_through_an_allowed_network():
    """Two terminals behind one allowed network (say a NAT): told apart by the event's MAC address."""

    async def scenario():
        config = {"id": "hik-2", "kind": "hikvision_terminal", "listen_host": "127.0.0.1", "listen_port": 0,
                  "allow": ["127.0.0.0/8"], "stale_after": 0.3,
                  "terminals": [{"id": "a", "host": "10.9.0.1", "username": "u", "password": "p",
                                 "mac": "00:00:00:00:00:0a"},
                                {"id": "b", "host": "10.9.0.2", "username": "u", "password": "p",
                                 "mac": "00:00:00:00:00:0b"}]}
        ctx = FakeContext("hik-2")
        driver = HikvisionDriver(HikvisionSettings.model_validate(config), ctx)
        async with Running(driver):
            url = f"http://127.0.0.1:{driver.port}/isapi/events"
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=OTHER_HOST)) as client:
                for mac, serial in (("00-00-00-00-00-0B", 5), ("00:00:00:00:00:0a", 6)):
                    event = json.loads(json.dumps(FACE_EVENT))
                    event["macAddress"], event["ipAddress"] = mac, "192.0.2.1"
                    event["AccessControllerEvent"]["serialNo"] = serial
                    assert (await client.post(url, json=event)).status_code == 200
                event["macAddress"], event["ipAddress"] = "00:00:00:00:00:0c", "10.9.0.2"
                assert (await client.post(url, json=event)).status_code == 200  # by ipAddress
                event["macAddress"], event["ipAddress"] = "00:00:00:00:00:0c", "192.0.2.1"
                assert (await client.post(url, json=event)).status_code == 403  # nobody's
            assert [(e.data["reader"], e.data["terminal_serial"]) for e in ctx.identified()] == [
                ("b", "5"), ("a", "6"), ("b", "6")]
            # silence: each terminal goes offline after stale_after
            await _until(lambda: {e["reader"] for e in ctx.reader_status() if not e["online"]} == {"a", "b"})

    asyncio.run(scenario())


def test_port_in_use_raises():
    async def scenario():
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            driver, _ = _hik_driver(80, listen_port=taken.getsockname()[1])
            with pytest.raises(OSError):
                await asyncio.wait_for(driver.run(), WAIT)

    asyncio.run(scenario())


def test_silent_terminal_is_reported_offline():
    async def scenario():
        driver, ctx = _hik_driver(80, stale_after=0.2)
        async with Running(driver):
            await _until(lambda: any(not s["online"] for s in ctx.reader_status()))
        status = ctx.reader_status()[0]
        assert status == {"reader": "t1", "online": False, "status": "offline", "reason": "never heard from"}
        # The device goes offline naming the silent terminal, as an OSDP bus names its silent readers.
        assert (False, "not heard from: t1") in ctx.status

    asyncio.run(scenario())


# ========================================================================= ZKTeco over HTTP


def test_zkteco_end_to_end_over_loopback():
    async def scenario():
        driver, ctx = _zk_driver()
        async with Running(driver):
            base = f"http://127.0.0.1:{driver.port}"
            terminal = VirtualZktecoTerminal(base, sn="ABC123", host=TERMINAL_HOST, poll_interval=0.05)
            await asyncio.to_thread(terminal.start)
            try:
                assert terminal.options.startswith("GET OPTION FROM: ABC123\n")

                response = await asyncio.to_thread(terminal.punch, "1001", verify=15, when="2026-11-22 10:00:00")
                assert response.status_code == 200 and response.text.strip() == "OK: 1"
                assert [e.data for e in ctx.identified()] == [{
                    "reader": "z1", "method": "face", "value": "1001", "terminal_serial": "1001|2026-11-22 10:00:00",
                    "terminal_time": "2026-11-22 10:00:00"}]
                assert ctx.identified()[0].internal
                await asyncio.to_thread(terminal.punch, "1001", verify=15, when="2026-11-22 10:00:00")
                assert ctx.identified()[1].data == ctx.identified()[0].data  # same record, same serial

                response = await asyncio.to_thread(terminal.rtlog, pin="0", cardno="0042", verifytype=4, index=77,
                                                   event=27)
                assert response.status_code == 200 and response.text.strip() == "OK"
                assert ctx.identified()[-1].data == {"reader": "z1", "method": "card", "value": "cardno:42",
                                                     "terminal_serial": "77",
                                                     "terminal_time": ctx.identified()[-1].data["terminal_time"]}
                count = len(ctx.identified())
                for table in ("OPERLOG", "ATTPHOTO"):
                    response = await asyncio.to_thread(terminal.post_table, table, "OPLOG 4\t0\t2026-11-22 10:00:00\n")
                    assert response.status_code == 200
                response = await asyncio.to_thread(terminal.post_table, "ATTLOG", "\x00\x01 garbage\n")
                assert response.status_code == 400
                assert len(ctx.identified()) == count

                # unknown SN, wrong source, no SN, too big: refused, and the driver keeps serving
                async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address=TERMINAL_HOST)) as c:
                    r = await c.post(f"{base}/iclock/cdata", params={"SN": "EVIL9", "table": "ATTLOG"},
                                     content=b"1\t2026-11-22 10:00:00\t0\t15\n")
                    assert r.status_code == 403
                    assert (await c.get(f"{base}/iclock/getrequest", params={"SN": "EVIL9"})).status_code == 403
                    assert (await c.get(f"{base}/iclock/getrequest")).status_code == 400
                    r = await c.post(f"{base}/iclock/cdata", params={"SN": "ABC123", "table": "ATTLOG"},
                                     content=b"1\t2026-11-22 10:00:00\t0\t15\n" * 200_000)
                    assert r.status_code == 413
                async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(local_address="127.0.0.1")) as c:
                    r = await c.post(f"{base}/iclock/cdata", params={"SN": "ABC123", "table": "ATTLOG"},
                                     content=b"1\t2026-11-22 10:00:00\t0\t15\n")
                    assert r.status_code == 403
                assert len(ctx.identified()) == count
                await _until(lambda: {"reader": "z1", "online": True, "status": "online", "reason": None}
                             in ctx.reader_status())

                # door open: queued, collected by getrequest, executed, result posted to devicecmd
                assert driver.feedback("z1", False) is False
                assert driver.open_door("zz") is False
                assert driver.open_door("z1") is True
                assert driver.open_door("z1", 3) is True
                await _until(lambda: len(terminal.door_opens) == 2)
                assert terminal.door_opens == [(1, 5), (1, 3)]
                assert all(line.split(":", 2)[2] in ("CONTROL DEVICE 01010105", "CONTROL DEVICE 01010103")
                           for line in terminal.commands)
                await _until(lambda: not driver._sent)  # both results came back through devicecmd
                assert terminal.poll_failures == 0
            finally:
                await asyncio.to_thread(terminal.stop)

    asyncio.run(scenario())


def test_zkteco_stale_commands_are_dropped():
    async def scenario():
        driver, _ = _zk_driver(command_ttl=0.1)
        async with Running(driver):
            terminal = VirtualZktecoTerminal(f"http://127.0.0.1:{driver.port}", sn="ABC123", host=TERMINAL_HOST)
            await asyncio.to_thread(terminal.start, False)  # handshake only, no polling
            try:
                assert driver.open_door("z1")
                await asyncio.sleep(0.3)
                assert await asyncio.to_thread(terminal.poll_once) == []  # too late: never sent
                assert driver.open_door("z1")
                assert len(await asyncio.to_thread(terminal.poll_once)) == 1
                assert terminal.door_opens == [(1, 5)]
            finally:
                await asyncio.to_thread(terminal.stop)

    asyncio.run(scenario())
