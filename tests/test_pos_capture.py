"""POS capture drivers (pos_serial, pos_tcp, pos_webhook, barcode_scanner) against the virtual till.

The drivers run for real, each on an event loop in a background thread under a small fake
DriverContext, against simulator/till.py: the till prints ESC/POS receipts into a pseudo-terminal
(pos_serial, with a virtual printer on a second pty behind the tap) or over raw TCP (pos_tcp, with a
virtual network printer behind it); webhooks are posted with httpx; the scanner types into a pty.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from decimal import Decimal

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.barcode_scanner import (
    BarcodeScannerDriver,
    BarcodeScannerSettings,
    LineSplitter,
)
from drivers.pos_serial import PosSerialDriver, PosSerialSettings
from drivers.pos_tcp import PosTcpDriver, PosTcpSettings
from drivers.pos_webhook import (
    PosWebhookDriver,
    PosWebhookSettings,
    parse_webhook_body,
    sign,
    signature_ok,
)
from gateway.events import Event
from simulator.till import (
    VirtualNetworkPrinter,
    VirtualPrinter,
    VirtualScanner,
    VirtualTill,
)
from support import FakeContext, Running, until

SECRET = "till-webhook-secret-0123456789"
ESC_POS_KEYS = {"till", "store", "template", "source", "text", "sha256", "size", "ended_by"}


# ------------------------------------------------------------------------------ fake context


def listening(driver) -> bool:
    return driver.port is not None


# ------------------------------------------------------------------------------ pos_serial


def _serial_driver(port: str, printer_port: str | None = None, **overrides) -> tuple[PosSerialDriver, FakeContext]:
    config = {"id": "till-1", "kind": "pos_serial", "store": "S-101", "till": "Till 1", "template": "mart-zh",
              "port": port, "printer_port": printer_port, "reopen_max": "0.3s", **overrides}
    ctx = FakeContext("till-1")
    return PosSerialDriver(PosSerialSettings.model_validate(config), ctx), ctx


def _check_receipt(event: dict, printed, *, source: str, till: str = "till-1") -> None:
    assert set(event) == ESC_POS_KEYS
    assert event["till"] == till and event["store"] == "S-101" and event["source"] == source
    assert event["text"] == printed.text
    assert event["sha256"] == hashlib.sha256(printed.data).hexdigest()
    assert event["size"] == len(printed.data)
    assert event["ended_by"] == "cut"


@pytest.fixture
def serial_till():
    till = VirtualTill(seed=11).start()
    printer = VirtualPrinter().start()
    yield till, printer
    till.stop()
    printer.stop()


def test_serial_tap_captures_receipts_and_passes_them_through(serial_till):
    till, printer = serial_till
    driver, ctx = _serial_driver(till.port, printer.port)
    with Running(driver, lambda d: ctx.online):
        printed = [till.sale(), till.sale(lang="en", member_code="M-1"), till.refund("000001"), till.reprint("000001")]
        until(lambda: len(ctx.receipts()) == 4, what="four receipts")
        until(lambda: len(printer.received) == sum(len(p.data) for p in printed), what="printer got everything")
        # The real printer gets exactly the bytes the till sent, in order.
        assert printer.received == b"".join(p.data for p in printed)
        # Its status answers reach the till through the tap.
        till.status_query(1)
        until(lambda: till.replies == b"\x16", what="status reply at the till")
    for event, p in zip(ctx.receipts(), printed):
        _check_receipt(event, p, source="serial")
        assert event["template"] == "mart-zh"
    assert "退货单" in ctx.receipts()[2]["text"] and "原单号: 000001" in ctx.receipts()[2]["text"]
    assert "重打" in ctx.receipts()[3]["text"]
    assert printed[1].text in ctx.receipts()[1]["text"] and "Member: M-1" in ctx.receipts()[1]["text"]
    assert all(e.internal for e in ctx.of_type("pos.receipt"))
    assert [r.receipt_no for r in till.receipts] == ["000001", "000002", "000003", "000001"]


def test_serial_tap_without_printer(serial_till):
    till, _ = serial_till
    driver, ctx = _serial_driver(till.port)
    with Running(driver, lambda d: ctx.online):
        printed = till.sale()
        until(lambda: len(ctx.receipts()) == 1)
    _check_receipt(ctx.receipts()[0], printed, source="serial")
    assert ctx.status == [(True, None)]


def test_serial_line_unplugged_and_plugged_back(serial_till):
    till, printer = serial_till
    driver, ctx = _serial_driver(till.port, printer.port)
    with Running(driver, lambda d: ctx.online) as running:
        first = till.sale()
        until(lambda: len(ctx.receipts()) == 1)
        till.unplug()
        until(lambda: not ctx.online, what="offline after unplug")
        assert "till port" in ctx.last_reason
        time.sleep(0.8)  # a few failed reopen attempts
        assert not ctx.online
        till.plug()
        until(lambda: ctx.online, what="online after plug")
        assert driver.pump.opens >= 2
        second = till.sale()
        until(lambda: len(ctx.receipts()) == 2)
        # The printer side going away does not stop capture; it is reported.
        printer.unplug()
        third = till.sale()
        until(lambda: len(ctx.receipts()) == 3)
        until(lambda: not ctx.online, what="offline once the printer port fails")
        assert "printer port" in ctx.last_reason and "still capturing" in ctx.last_reason
        printer.plug()
        until(lambda: ctx.online, what="online after the printer is back")
        fourth = till.sale()
        until(lambda: len(ctx.receipts()) == 4)
        until(lambda: printer.received.endswith(fourth.data))
        assert running.alive
    for event, p in zip(ctx.receipts(), [first, second, third, fourth]):
        _check_receipt(event, p, source="serial")


def test_serial_port_missing_at_start(tmp_path):
    driver, ctx = _serial_driver(str(tmp_path / "ttyUSB9"))
    with Running(driver, lambda d: bool(ctx.status)) as running:
        assert not ctx.online and "open failed" in ctx.last_reason
        time.sleep(0.5)
        assert running.alive


def test_idle_timeout_ends_a_receipt_without_cut(serial_till):
    till, _ = serial_till
    driver, ctx = _serial_driver(till.port, idle_timeout="300ms")
    with Running(driver, lambda d: ctx.online):
        started = time.monotonic()
        printed = till.sale(cut=False)
        until(lambda: len(ctx.receipts()) == 1, what="idle receipt")
        assert time.monotonic() - started >= 0.25
    event = ctx.receipts()[0]
    assert event["ended_by"] == "idle"
    assert event["text"] == printed.text


def test_random_bytes_on_the_serial_line_never_crash_the_driver(serial_till):
    till, printer = serial_till
    driver, ctx = _serial_driver(till.port, printer.port, idle_timeout="100ms")
    sent = bytearray()
    with Running(driver, lambda d: ctx.online) as running:

        @settings(max_examples=40, deadline=None, database=None)
        @given(st.binary(min_size=1, max_size=3000))
        def noise(data: bytes) -> None:
            assert till.send(data) == len(data)
            sent.extend(data)

        noise()
        until(lambda: len(printer.received) == len(sent), what="the noise reached the printer")
        assert printer.received == bytes(sent)  # pass-through is exact whatever the bytes
        assert running.alive and ctx.online
        time.sleep(0.3)  # idle: whatever half-command the noise left is over
        before = len(ctx.receipts())
        printed = till.sale()
        until(lambda: len(ctx.receipts()) > before and ctx.receipts()[-1]["text"] == printed.text,
              what="a receipt after the noise")
        assert running.alive
    for event in ctx.receipts():
        assert set(event) == ESC_POS_KEYS and isinstance(event["text"], str)


# ------------------------------------------------------------------------------ pos_tcp


def _tcp_driver(**overrides) -> tuple[PosTcpDriver, FakeContext]:
    config = {"id": "till-2", "kind": "pos_tcp", "store": "S-101", "listen_host": "127.0.0.1", "listen_port": 0,
              "allow": ["127.0.0.1"], "printer_timeout": "1s", **overrides}
    ctx = FakeContext("till-2")
    return PosTcpDriver(PosTcpSettings.model_validate(config), ctx), ctx


def test_tcp_capture_with_forwarding_to_the_printer():
    printer = VirtualNetworkPrinter().start()
    try:
        driver, ctx = _tcp_driver(printer_host="127.0.0.1", printer_port=printer.port, template="mart-en")
        with Running(driver, listening):
            till = VirtualTill(seed=5, lang="en", tcp=("127.0.0.1", driver.port))
            printed = [till.sale(), till.sale(lang="zh"), till.refund()]
            until(lambda: len(ctx.receipts()) == 3)
            until(lambda: printer.finished == 3, what="three jobs at the printer")
            assert printer.jobs == [p.data for p in printed]
            till.status_query(1, wait_replies=0.5)
            assert till.replies == b"\x16"  # the printer's answer came back through the gateway
            assert ctx.online
    finally:
        printer.stop()
    for event, p in zip(ctx.receipts(), printed):
        _check_receipt(event, p, source="tcp", till="till-2")
        assert event["template"] == "mart-en"


def test_tcp_connection_end_flushes_a_receipt_without_cut():
    driver, ctx = _tcp_driver()
    with Running(driver, listening):
        till = VirtualTill(seed=2, tcp=("127.0.0.1", driver.port))
        printed = till.sale(cut=False)
        until(lambda: len(ctx.receipts()) == 1)
    assert ctx.receipts()[0]["ended_by"] == "flush"
    assert ctx.receipts()[0]["text"] == printed.text


def test_tcp_keeps_capturing_when_the_printer_is_unreachable():
    printer = VirtualNetworkPrinter()
    port = printer.port
    printer.stop()  # nothing listens there any more
    driver, ctx = _tcp_driver(printer_host="127.0.0.1", printer_port=port)
    with Running(driver, listening):
        till = VirtualTill(seed=3, tcp=("127.0.0.1", driver.port))
        printed = till.sale()
        until(lambda: len(ctx.receipts()) == 1)
        until(lambda: not ctx.online)
        assert "printer 127.0.0.1" in ctx.last_reason and "still capturing" in ctx.last_reason
    _check_receipt(ctx.receipts()[0], printed, source="tcp", till="till-2")


def test_tcp_refuses_sources_not_allowed():
    driver, ctx = _tcp_driver(allow=["10.0.0.0/8"])
    with Running(driver, listening):
        till = VirtualTill(seed=3, tcp=("127.0.0.1", driver.port))
        till.sale()
        time.sleep(0.3)
        assert ctx.receipts() == []
        assert driver.jobs == 0


def test_tcp_settings():
    with pytest.raises(ValidationError):
        PosTcpSettings.model_validate({"id": "t", "kind": "pos_tcp", "store": "S"})  # allow is required
    with pytest.raises(ValidationError):
        PosTcpSettings.model_validate({"id": "t", "kind": "pos_tcp", "store": "S", "allow": ["nowhere"]})
    with pytest.raises(ValidationError):
        PosTcpSettings.model_validate({"id": "t", "kind": "pos_tcp", "store": "S", "allow": ["10.0.0.1"],
                                       "encoding": "klingon"})
    s = PosTcpSettings.model_validate({"id": "t", "kind": "pos_tcp", "store": "S", "allow": ["10.0.0.0/24"]})
    assert (s.listen_port, s.printer_port, s.encoding, s.idle_timeout, s.template) == (9100, 9100, "gb18030", 5.0, None)


# ------------------------------------------------------------------------------ pos_webhook


def _webhook_driver(**overrides) -> tuple[PosWebhookDriver, FakeContext]:
    config = {"id": "till-3", "kind": "pos_webhook", "store": "S-202", "listen_host": "127.0.0.1",
              "listen_port": 0, "secret": SECRET, **overrides}
    ctx = FakeContext("till-3")
    return PosWebhookDriver(PosWebhookSettings.model_validate(config), ctx), ctx


def _post(driver, body: bytes, signature: str | None = "auto", path: str = "/pos/receipts") -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signature == "auto":
        signature = sign(SECRET.encode(), body)
    if signature is not None:
        headers["X-Signature"] = signature
    return httpx.post(f"http://127.0.0.1:{driver.port}{path}", content=body, headers=headers, timeout=5)


def test_webhook_receipt_becomes_an_event():
    driver, ctx = _webhook_driver()
    body = json.dumps({"receipt_no": "A-1001", "time": "2026-11-22T10:00:00+08:00", "paid": "12.30",
                       "total": 15, "member_code": "M-1", "lines": [{"name": "Latte", "qty": 1}],
                       "extra": "ignored"}).encode()
    refund = json.dumps({"receipt_no": "A-1002", "total": 12.3, "refund": True,
                         "original_receipt_no": "A-1001", "currency": "HKD"}).encode()
    with Running(driver, listening):
        response = _post(driver, body)
        assert response.status_code == 202, response.text
        assert _post(driver, refund).status_code == 202
    first, second = ctx.receipts()
    assert first == {"till": "till-3", "store": "S-202", "template": None, "source": "webhook",
                     "sha256": hashlib.sha256(body).hexdigest(), "member_code": "M-1",
                     "fields": {"receipt_no": "A-1001", "time": "2026-11-22T10:00:00+08:00", "paid": "12.30",
                                "total": "15", "amount": "12.30", "refund": False, "reprint": False,
                                "currency": "CNY", "original_receipt_no": None}}
    assert second["fields"]["amount"] == "12.3" and second["fields"]["paid"] is None
    assert second["fields"]["refund"] is True and second["fields"]["original_receipt_no"] == "A-1001"
    assert second["fields"]["currency"] == "HKD" and second["member_code"] is None
    assert ctx.online


def test_webhook_refuses_bad_signatures_malformed_bodies_and_strangers():
    driver, ctx = _webhook_driver(max_body="4KiB")
    good = json.dumps({"receipt_no": "1", "paid": "1.00"}).encode()
    with Running(driver, listening):
        assert _post(driver, good, signature=None).status_code == 401
        assert _post(driver, good, signature="sha256=" + "0" * 64).status_code == 401
        assert _post(driver, good, signature=sign(b"another-secret-entirely", good)).status_code == 401
        assert _post(driver, good, signature=sign(SECRET.encode(), good + b" ")).status_code == 401
        for bad, reason in [(b"not json", "not JSON"), (b"[1, 2]", "object"),
                            (json.dumps({"paid": "1"}).encode(), "receipt_no"),
                            (json.dumps({"receipt_no": "1"}).encode(), "paid or total"),
                            (json.dumps({"receipt_no": "1", "paid": "-1"}).encode(), "paid"),
                            (json.dumps({"receipt_no": "1", "paid": "NaN"}).encode(), "paid"),
                            (b'{"receipt_no": "1", "paid": Infinity}', "not a number"),
                            (json.dumps({"receipt_no": "1", "paid": "1", "refund": "yes"}).encode(), "refund"),
                            (json.dumps({"receipt_no": "1", "paid": "1", "time": "yesterday"}).encode(), "time")]:
            response = _post(driver, bad)
            assert response.status_code == 422, (bad, response.text)
            assert reason in response.text, (reason, response.text)
        big = json.dumps({"receipt_no": "1", "paid": "1", "lines": [{"x": "y" * 100}] * 100}).encode()
        assert _post(driver, big).status_code == 413
        assert _post(driver, good, path="/other").status_code == 404
        assert _post(driver, good).status_code == 202
    assert len(ctx.receipts()) == 1

    stranger_driver, stranger_ctx = _webhook_driver(allow=["10.0.0.0/8"])
    with Running(stranger_driver, listening):
        assert _post(stranger_driver, good).status_code == 403
    assert stranger_ctx.receipts() == []


def test_webhook_body_and_signature_helpers():
    assert signature_ok(b"k" * 16, b"{}", sign(b"k" * 16, b"{}"))
    assert signature_ok(b"k" * 16, b"{}", sign(b"k" * 16, b"{}").upper().replace("SHA256=", "sha256="))
    assert not signature_ok(b"k" * 16, b"{}", "md5=00")
    receipt = parse_webhook_body(b'{"receipt_no": 42, "paid": 0.1}')
    assert receipt.receipt_no == "42" and receipt.paid == Decimal("0.1")
    with pytest.raises(ValidationError):
        PosWebhookSettings.model_validate({"id": "w", "kind": "pos_webhook", "store": "S"})  # secret is required


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_webhook_parser_never_raises_anything_but_value_error(body: bytes):
    try:
        parse_webhook_body(body)
    except ValueError:
        pass


# ------------------------------------------------------------------------------ barcode_scanner


def test_scanner_emits_member_scans():
    scanner = VirtualScanner().start()
    config = {"id": "scan-1", "kind": "barcode_scanner", "port": scanner.port, "till": "till-1",
              "reopen_max": "0.3s"}
    ctx = FakeContext("scan-1")
    driver = BarcodeScannerDriver(BarcodeScannerSettings.model_validate(config), ctx)
    try:
        with Running(driver, lambda d: ctx.online) as running:
            scanner.scan("M-1")
            scanner.scan("  M-2  ", end="\n")
            scanner.send(b"\r\n\r\n")  # empty lines
            scanner.send(b"X" * 300 + b"\r")  # no member code is that long
            scanner.send(b"M-")
            scanner.send(b"3\r")
            until(lambda: len(ctx.of_type("pos.member_scan")) == 3)
            scanner.unplug()
            until(lambda: not ctx.online)
            scanner.plug()
            until(lambda: ctx.online)
            scanner.scan("M-4")
            until(lambda: len(ctx.of_type("pos.member_scan")) == 4)
            assert running.alive
    finally:
        scanner.stop()
    scans = ctx.of_type("pos.member_scan")
    assert [e.data for e in scans] == [{"till": "till-1", "code": c} for c in ("M-1", "M-2", "M-3", "M-4")]
    assert all(e.internal for e in scans)
    assert driver.settings.baud == 9600


@settings(max_examples=50, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=20),
                max_size=5), st.integers(min_value=1, max_value=7))
def test_line_splitter_whatever_the_chunks(codes: list[str], chunk: int):
    got: list[str] = []
    splitter = LineSplitter(got.append, logging.getLogger("test"))
    data = b"".join(c.encode() + b"\r\n" for c in codes)
    for i in range(0, len(data), chunk):
        splitter.feed(data[i:i + chunk])
    assert got == codes


# ------------------------------------------------------------------------------ the virtual till


def test_virtual_till_receipts_are_reproducible_and_readable():
    from gateway.pos.escpos import parse_receipts
    from gateway.pos.fields import extract

    def run(seed: int, lang: str) -> list:
        till = VirtualTill(seed=seed, lang=lang, tcp=("127.0.0.1", 9))
        return [till.sale(send=False, member_code="M-1"), till.sale(send=False), till.refund("000001", send=False),
                till.reprint("000002", send=False)]

    for lang in ("zh", "en"):
        printed = run(4, lang)
        assert [(p.receipt_no, p.amount) for p in printed] == [(p.receipt_no, p.amount) for p in run(4, lang)]
        assert [(p.refund, p.reprint, p.original_receipt_no) for p in printed] == \
            [(False, False, None), (False, False, None), (True, False, "000001"), (False, True, None)]
        for p in printed:
            (receipt,) = parse_receipts(p.data)
            assert receipt.text == p.text and receipt.ended_by == "cut"
            fields = extract(receipt.text)
            assert fields is not None, p.text
            assert (fields.receipt_no, fields.amount, fields.refund, fields.reprint) == \
                (p.receipt_no, p.amount, p.refund, p.reprint)
    assert "重打" in run(4, "zh")[3].text and "REPRINT" in run(4, "en")[3].text
    assert "退货" in run(4, "zh")[2].text and "REFUND" in run(4, "en")[2].text


def _typed(text: str) -> bytes:
    """The input events a scanner in keyboard mode sends to type `text` and press Enter (US layout)."""
    from drivers.barcode_scanner import _KEYS, _SHIFTED, INPUT_EVENT, KEY_ENTER, KEY_LEFTSHIFT, EV_KEY

    code_of = {char: code for code, char in _KEYS.items() if code < 71}  # the main block, not the keypad
    shifted = {upper: lower for lower, upper in _SHIFTED.items()}
    events = []

    def key(code: int, value: int) -> None:
        events.append(INPUT_EVENT.pack(0, 0, EV_KEY, code, value))
        events.append(INPUT_EVENT.pack(0, 0, 0, 0, 0))  # EV_SYN between reports, as a keyboard sends

    for char in text:
        base = shifted.get(char, char.lower())
        shift = char in shifted or char != char.lower()
        if shift:
            key(KEY_LEFTSHIFT, 1)
        key(code_of[base], 1)
        key(code_of[base], 0)
        if shift:
            key(KEY_LEFTSHIFT, 0)
    key(KEY_ENTER, 1)
    key(KEY_ENTER, 0)
    return b"".join(events)


def test_a_scanner_in_keyboard_mode_types_member_codes(tmp_path):
    """`input: keyboard`: the scanner's input device (a pipe of real input_event records here: no
    /dev/uinput on a test machine) read as the text typed; pulled out, offline; back, online."""
    device = tmp_path / "usb-scanner-event-kbd"
    os.mkfifo(device)
    config = {"id": "scan-1", "kind": "barcode_scanner", "input": "keyboard", "port": str(device),
              "till": "till-1", "reopen_max": "0.3s"}
    ctx = FakeContext("scan-1")
    driver = BarcodeScannerDriver(BarcodeScannerSettings.model_validate(config), ctx)
    with Running(driver, lambda d: True) as running:
        writer = os.open(device, os.O_WRONLY)  # blocks until the driver has opened it
        data = _typed("QR-M1") + _typed("a1B2!@ {x}")
        for i in range(0, len(data), 37):  # split anywhere, even inside a record
            os.write(writer, data[i:i + 37])
        until(lambda: len(ctx.of_type("pos.member_scan")) == 2)
        os.close(writer)  # the scanner unplugged
        until(lambda: not ctx.online)
        writer = os.open(device, os.O_WRONLY)
        until(lambda: ctx.online)
        os.write(writer, _typed("M-9"))
        until(lambda: len(ctx.of_type("pos.member_scan")) == 3)
        os.close(writer)
        assert running.alive
    assert [e.data["code"] for e in ctx.of_type("pos.member_scan")] == ["QR-M1", "a1B2!@ {x}", "M-9"]
