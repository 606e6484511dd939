"""A virtual till that prints ESC/POS receipts, its printer, and a member-code scanner, for tests and the demo.

Everything has a thread API, like simulator/osdp_reader.py (call it through `asyncio.to_thread` inside
a running loop, or straight from a plain test):

    till = VirtualTill(seed=7, lang="zh").start()   # a pty: the gateway's pos_serial `port` is till.port
    printer = VirtualPrinter().start()              # a pty: the pos_serial `printer_port` is printer.port
    till.sale()                                     # a sale receipt (Chinese, GB18030, logo, QR, cut)
    till.sale(lang="en", member_code="M-1")         # an English one
    till.reprint()                                  # the last sale again, marked 重打 / REPRINT
    till.refund()                                   # a refund of the last sale (退货 / REFUND, original no.)
    till.status_query()                             # DLE EOT 1: the printer's answer comes back in till.replies
    till.receipts                                   # what was printed: receipt_no, amount, refund, reprint, text, data
    printer.received                                # the bytes that reached the printer
    till.unplug(); till.plug()                      # the cable pulled out and plugged back in
    till.stop(); printer.stop()

    net_till = VirtualTill(seed=7, tcp=("127.0.0.1", 9100))   # prints over raw TCP (one connection a job)
    net_printer = VirtualNetworkPrinter().start()             # a network printer: net_printer.port, .jobs

    scanner = VirtualScanner().start()              # a pty: the barcode_scanner `port` is scanner.port
    scanner.scan("M-1")

Serial lines are pseudo-terminals (`os.openpty`) in raw mode. Each device's `port` is a symlink (in a
private temporary directory) to the pty's slave, which the gateway opens with pyserial exactly as it
opens /dev/ttyUSB0 (or a /dev/serial/by-id link) on a site. `unplug()` closes the pty, so the gateway's
reads fail as they do when a USB adapter is pulled out, and removes the link; `plug()` makes a new pty
and points the link at it.

Receipts are built with `gateway.pos.escpos_builder.build_receipt`. Amounts are random but
reproducible: the same `seed` prints the same items, quantities and prices.
"""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import socketserver
import tempfile
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Self

from gateway.pos.escpos_builder import build_receipt

log = logging.getLogger(__name__)

DLE_EOT = b"\x10\x04"
# Answers to DLE EOT n (real-time status): printer online, no error, paper present.
STATUS_REPLIES = {1: 0x16, 2: 0x12, 3: 0x12, 4: 0x12}

CATALOG_ZH = [("矿泉水 550ml", "3.00"), ("拿铁咖啡 大杯", "32.00"), ("牛角面包", "12.50"), ("酸奶", "8.80"),
              ("口罩 10只装", "19.90"), ("保温杯", "129.00"), ("绿茶", "4.50"), ("巧克力", "15.60"),
              ("纸巾 3包", "9.90"), ("三明治", "22.00")]
CATALOG_EN = [("Mineral water 550ml", "3.00"), ("Latte large", "32.00"), ("Croissant", "12.50"),
              ("Yoghurt", "8.80"), ("Face masks x10", "19.90"), ("Thermos", "129.00"), ("Green tea", "4.50"),
              ("Chocolate", "15.60"), ("Tissues x3", "9.90"), ("Sandwich", "22.00")]


# What a receipt says, by language (VirtualTill._receipt): each "label: value" line is written
# f"{label}: {value}"; the others stand as they are.
_LABELS = {
    "zh": {"store": "万象城 星光便利店", "refund": "退货单", "reprint": "*** 重打 ***", "no": "单号", "time": "时间",
           "till": "收银台", "cashier": "收银员", "original": "原单号", "header": "商品            数量      金额",
           "refund_total": "退款金额", "refunded_to": "退款方式: 原路退回", "total": "合计", "paid": "实收",
           "change": "找零", "payment": "支付方式: 微信支付", "member": "会员", "thanks": "谢谢惠顾，欢迎再次光临"},
    "en": {"store": "STARLIGHT MART - MIXC", "refund": "REFUND", "reprint": "*** REPRINT ***", "no": "Receipt No",
           "time": "Date", "till": "Till", "cashier": "Cashier", "original": "Original Receipt",
           "header": "Item                 Qty  Amount", "refund_total": "REFUND TOTAL",
           "refunded_to": "Refunded to: original payment", "total": "TOTAL", "paid": "PAID", "change": "CHANGE",
           "payment": "Payment: Card", "member": "Member", "thanks": "Thank you for shopping with us"},
}


# ------------------------------------------------------------------------------------- serial line


class PtyLine:
    """A virtual serial cable: a raw pty whose slave is reachable at a stable symlink (`port`).

    `on_data` (if given) gets every chunk the other end (the gateway) writes, from a reader thread.
    """

    def __init__(self, name: str, on_data: Callable[[bytes], None] | None = None, link_dir: str | None = None):
        self._own_dir = link_dir is None
        self.dir = Path(link_dir or tempfile.mkdtemp(prefix="vserial-"))
        self.port = str(self.dir / name)
        self.on_data = on_data
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.plug()

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> None:
        with self._lock:
            if self._master is not None:
                return
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no line editing: a serial line carries bytes as they are
            tty.setraw(master)
            self._master, self._slave = master, slave
            tmp = self.port + ".new"
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(os.ttyname(slave), tmp)
            os.replace(tmp, self.port)

    def unplug(self) -> None:
        with self._lock:
            if os.path.lexists(self.port):
                os.unlink(self.port)
            for fd in (self._master, self._slave):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._master = self._slave = None

    def start(self) -> None:
        if self.on_data is not None and self._thread is None:
            self._thread = threading.Thread(target=self._read_loop, name=f"pty-{Path(self.port).name}", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        self.unplug()
        if self._own_dir:
            try:
                self.dir.rmdir()
            except OSError:
                pass

    def write(self, data: bytes) -> int:
        """Put bytes on the line (blocking while the other end does not read); 0 while unplugged."""
        view = memoryview(data)
        written = 0
        while written < len(data):
            with self._lock:
                fd = self._master
            if fd is None:
                return written
            try:
                ready = select.select([], [fd], [], 0.1)[1]
                if ready:
                    written += os.write(fd, view[written:written + 4096])
            except OSError:
                return written
            if self._stop.is_set():
                break
        return written

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                fd = self._master
            if fd is None:
                self._stop.wait(0.02)
                continue
            try:
                if not select.select([fd], [], [], 0.05)[0]:
                    continue
                data = os.read(fd, 4096)
            except OSError:  # unplugged under us, or nobody has the other end open: nothing to hear
                self._stop.wait(0.02)
                continue
            if data and self.on_data is not None:
                try:
                    self.on_data(data)
                except Exception:
                    log.exception("%s: handling received bytes failed", self.port)


class _StatusResponder:
    """Finds DLE EOT n in a byte stream (split anywhere) and answers it as a printer does."""

    def __init__(self, reply: Callable[[bytes], Any]):
        self.reply = reply
        self._tail = b""

    def feed(self, data: bytes) -> None:
        buf = self._tail + data
        start = 0
        while (i := buf.find(DLE_EOT, start)) >= 0 and i + 2 < len(buf):
            n = buf[i + 2]
            if n in STATUS_REPLIES:
                self.reply(bytes([STATUS_REPLIES[n]]))
            start = i + 3
        self._tail = buf[max(start, len(buf) - 2):]


# ----------------------------------------------------------------------------------------- printers


class VirtualPrinter:
    """A serial receipt printer on a pty: records every byte it gets, answers DLE EOT status requests."""

    def __init__(self, name: str = "printer", link_dir: str | None = None):
        self._lock = threading.Lock()
        self._received = bytearray()
        self.line = PtyLine(name, self._on_data, link_dir)
        self._status = _StatusResponder(self.line.write)

    @property
    def port(self) -> str:
        return self.line.port

    @property
    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def start(self) -> Self:
        self.line.start()
        return self

    def stop(self) -> None:
        self.line.close()

    def unplug(self) -> None:
        self.line.unplug()

    def plug(self) -> None:
        self.line.plug()

    def _on_data(self, data: bytes) -> None:
        with self._lock:
            self._received += data
        self._status.feed(data)


class VirtualNetworkPrinter:
    """A raw TCP (9100) printer: `jobs` holds the bytes of each connection (in the order accepted;
    complete once `finished` counts it); answers DLE EOT."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.jobs: list[bytes] = []
        self.finished = 0
        self._lock = threading.Lock()
        printer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with printer._lock:  # jobs in the order they were accepted, as a printer prints them
                    index = len(printer.jobs)
                    printer.jobs.append(b"")
                received = bytearray()
                status = _StatusResponder(self.request.sendall)
                try:
                    while data := self.request.recv(65536):
                        received += data
                        status.feed(data)
                except OSError:
                    pass
                with printer._lock:
                    printer.jobs[index] = bytes(received)
                    printer.finished += 1

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server((host, port), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def received(self) -> bytes:
        with self._lock:
            return b"".join(self.jobs)

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="virtual-network-printer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only when it runs
            self._server.shutdown()
            self._thread.join(2.0)
            self._thread = None
        self._server.server_close()


# --------------------------------------------------------------------------------------------- till


@dataclass
class PrintedReceipt:
    receipt_no: str
    amount: Decimal  # what was paid (a refund: what was paid back)
    refund: bool
    reprint: bool
    text: str  # the printed lines, joined by "\n"
    data: bytes = field(repr=False)  # the ESC/POS bytes sent
    lang: str = "zh"
    original_receipt_no: str | None = None
    member_code: str | None = None
    items: list[tuple[str, int, Decimal]] = field(default_factory=list)


class VirtualTill:
    """A till printing receipts over a serial line (a pty, `port`) or raw TCP (`tcp=(host, port)`).

    `seed` makes the amounts reproducible; receipt numbers count up from `first_no`. `replies` holds
    what came back from the printer (through the gateway's pass-through), e.g. status answers.
    """

    def __init__(self, seed: int = 0, *, lang: str = "zh", store_name: str | None = None, first_no: int = 1,
                 till_no: str = "01", tcp: tuple[str, int] | None = None, source_host: str | None = None,
                 encoding: str = "gb18030", link_dir: str | None = None, clock: datetime | None = None):
        if lang not in ("zh", "en"):
            raise ValueError("lang must be zh or en")
        self.rng = random.Random(seed)
        self.lang = lang
        self.store_name = store_name
        self.next_no = first_no
        self.till_no = till_no
        self.encoding = encoding
        self.tcp = tcp
        self.source_host = source_host
        self.clock = clock or datetime(2026, 11, 22, 10, 0, 0)
        self.receipts: list[PrintedReceipt] = []
        self._lock = threading.Lock()
        self._replies = bytearray()
        self.line = PtyLine("till", self._on_reply, link_dir) if tcp is None else None

    # --- the device ---

    @property
    def port(self) -> str:
        if self.line is None:
            raise AttributeError("this till prints over TCP: it has no serial port")
        return self.line.port

    @property
    def replies(self) -> bytes:
        with self._lock:
            return bytes(self._replies)

    def start(self) -> Self:
        if self.line is not None:
            self.line.start()
        return self

    def stop(self) -> None:
        if self.line is not None:
            self.line.close()

    def unplug(self) -> None:
        if self.line is not None:
            self.line.unplug()

    def plug(self) -> None:
        if self.line is not None:
            self.line.plug()

    def _on_reply(self, data: bytes) -> None:
        with self._lock:
            self._replies += data

    # --- printing ---

    def send(self, data: bytes, *, wait_replies: float = 0.0) -> int:
        """Raw bytes to the printer: onto the serial line, or as one TCP connection (one job)."""
        if self.tcp is None:
            assert self.line is not None
            return self.line.write(data)
        with socket.create_connection(self.tcp, timeout=5.0,
                                      source_address=(self.source_host, 0) if self.source_host else None) as sock:
            sock.sendall(data)
            if wait_replies > 0:
                sock.settimeout(wait_replies)
                try:
                    while reply := sock.recv(4096):
                        self._on_reply(reply)
                except (TimeoutError, OSError):
                    pass
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return len(data)

    def status_query(self, n: int = 1, *, wait_replies: float = 0.0) -> int:
        """DLE EOT n: ask the printer for its status (the answer lands in `replies`)."""
        return self.send(DLE_EOT + bytes([n]), wait_replies=wait_replies)

    def sale(self, *, lang: str | None = None, member_code: str | None = None, items: int | None = None,
             logo: bool = True, qr: bool = True, cut: bool = True, send: bool = True) -> PrintedReceipt:
        """Ring up a sale of 1-5 random items and print its receipt."""
        lang = lang or self.lang
        catalog = CATALOG_ZH if lang == "zh" else CATALOG_EN
        chosen = []
        for name, price in self.rng.sample(catalog, items or self.rng.randint(1, 5)):
            chosen.append((name, self.rng.randint(1, 3), Decimal(price)))
        no = self._next_no()
        receipt = self._receipt(lang, no, chosen, member_code=member_code, refund=False, reprint=False,
                                original=None, logo=logo, qr=qr, cut=cut)
        return self._print(receipt, send)

    def reprint(self, receipt_no: str | None = None, *, send: bool = True, cut: bool = True) -> PrintedReceipt:
        """Print an earlier receipt again (the last one by default), marked as a reprint."""
        original = self._find(receipt_no)
        receipt = self._receipt(original.lang, original.receipt_no, original.items, member_code=original.member_code,
                                refund=original.refund, reprint=True, original=original.original_receipt_no,
                                logo=True, qr=True, cut=cut)
        return self._print(receipt, send)

    def refund(self, receipt_no: str | None = None, *, send: bool = True, cut: bool = True) -> PrintedReceipt:
        """Take back everything of an earlier sale (the last one by default): a refund receipt."""
        original = self._find(receipt_no, sales_only=True)
        no = self._next_no()
        receipt = self._receipt(original.lang, no, original.items, member_code=original.member_code, refund=True,
                                reprint=False, original=original.receipt_no, logo=True, qr=True, cut=cut)
        return self._print(receipt, send)

    # --- inside ---

    def _next_no(self) -> str:
        no = f"{self.next_no:06d}"
        self.next_no += 1
        return no

    def _find(self, receipt_no: str | None, sales_only: bool = False) -> PrintedReceipt:
        for receipt in reversed(self.receipts):
            if receipt.reprint or (sales_only and receipt.refund):
                continue
            if receipt_no is None or receipt.receipt_no == receipt_no:
                return receipt
        raise LookupError(f"no receipt {receipt_no or '(any)'} printed yet")

    def _print(self, receipt: PrintedReceipt, send: bool) -> PrintedReceipt:
        self.receipts.append(receipt)
        if send:
            self.send(receipt.data)
        return receipt

    def _receipt(self, lang: str, no: str, items: list[tuple[str, int, Decimal]], *, member_code: str | None,
                 refund: bool, reprint: bool, original: str | None, logo: bool, qr: bool, cut: bool) -> PrintedReceipt:
        total = sum((qty * price for _, qty, price in items), Decimal("0.00"))
        paid = total
        when = self.clock + timedelta(minutes=3 * len(self.receipts))
        stamp = when.strftime("%Y-%m-%d %H:%M:%S")
        t = _LABELS[lang]
        lines = [self.store_name or t["store"]]
        if refund:
            lines.append(t["refund"])
        if reprint:
            lines.append(t["reprint"])
        lines += [f"{t['no']}: {no}", f"{t['time']}: {stamp}", f"{t['till']}: {self.till_no}  {t['cashier']}: 1024"]
        if refund:
            lines.append(f"{t['original']}: {original}")
        lines += ["-" * 32, t["header"]]
        for name, qty, price in items:
            lines.append(f"{name}  x{qty}  {qty * price:.2f}")
        lines.append("-" * 32)
        if refund:
            lines += [f"{t['refund_total']}: {paid:.2f}", t["refunded_to"]]
        else:
            lines += [f"{t['total']}: {total:.2f}", f"{t['paid']}: {paid:.2f}", f"{t['change']}: 0.00", t["payment"]]
        if member_code:
            lines.append(f"{t['member']}: {member_code}")
        lines.append(t["thanks"])
        data = _build(lines, self.encoding, logo=logo, qr=(f"R:{no}" if qr else None), cut=cut)
        return PrintedReceipt(no, paid, refund, reprint, "\n".join(lines), data, lang=lang,
                              original_receipt_no=original, member_code=member_code, items=list(items))


def _build(lines: list[str], encoding: str, *, logo: bool, qr: str | None, cut: bool) -> bytes:
    return build_receipt(lines, encoding, logo=logo, qr=qr, cut=cut)


# ------------------------------------------------------------------------------------------ scanner


class VirtualScanner:
    """A member-code scanner on a pty: `scan(code)` sends the code and a line end, as scanners do."""

    def __init__(self, name: str = "scanner", link_dir: str | None = None):
        self.line = PtyLine(name, None, link_dir)
        self.scanned: list[str] = []

    @property
    def port(self) -> str:
        return self.line.port

    def start(self) -> Self:
        return self

    def stop(self) -> None:
        self.line.close()

    def unplug(self) -> None:
        self.line.unplug()

    def plug(self) -> None:
        self.line.plug()

    def scan(self, code: str, end: str = "\r\n") -> int:
        self.scanned.append(code)
        return self.line.write((code + end).encode("utf-8"))

    def send(self, data: bytes) -> int:
        return self.line.write(data)
