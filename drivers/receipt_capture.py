"""What the POS capture drivers share: settings, the ESC/POS parser plumbing, serial ports, emitting.

Tills print their receipts; the gateway listens in on the way to the printer (`pos_serial`: a tap on
the serial printer line; `pos_tcp`: a raw TCP 9100 listener the tills print to) or is told by the
till itself (`pos_webhook`: JSON over HTTP). Member-code scanners (`barcode_scanner`) sit on serial
ports next to the tills. This module holds what those drivers have in common, so none of it is
written twice:

- settings: `PosDeviceSettings` (`store`, `till`), `EscPosCaptureSettings` (adds `encoding`,
  `template`, `idle_timeout`) and `SerialLineSettings` (`baud`, `bytesize`, `parity`, `stopbits`,
  `reopen_max`);
- `ReceiptCapture` / `ReceiptTap`: one `gateway.pos.escpos.EscPosStream` per byte stream (a serial
  port, a TCP connection), fed from any thread; `ReceiptCapture.poll()` ends the receipts of tills
  that went quiet without cutting (idle timeout), `close()` flushes what is pending;
- `receipt_event`: the internal `pos.receipt` event of a parsed receipt. It carries the text, never
  the raw bytes: `{"till": <device id>, "store", "template", "source": "serial"|"tcp", "text",
  "sha256", "size", "ended_by"}`;
- `SerialPump`: a thread that keeps a serial port (and optionally a pass-through peer port) open,
  hands every chunk read to a callback, copies bytes between the two ports, and reopens a port that
  failed (unplugged USB adapter) with backoff, reporting the device offline with the reason
  meanwhile. It never raises into the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import serial
from pydantic import Field, field_validator

from gateway.pos.escpos import EscPosStream, RawReceipt, normalise_encoding
from gateway.validation import Duration

from .base import DeviceConfig

log = logging.getLogger(__name__)

REOPEN_FIRST_S = 0.2  # first wait before reopening a failed port; doubles up to `reopen_max`
SELECT_TIMEOUT_S = 0.05  # how long the pump thread waits for bytes before checking for stop
WRITE_TIMEOUT_S = 2.0  # a pass-through peer that takes no bytes for this long has failed


# ------------------------------------------------------------------------------------ settings


class PosDeviceSettings(DeviceConfig):
    """What every till-facing device has."""

    store: str = Field(..., min_length=1, max_length=128, description="the tenant store id the receipts belong to")
    till: str | None = Field(None, min_length=1, max_length=128, description="a label for the till, e.g. 'Till 3'")


class EscPosCaptureSettings(PosDeviceSettings):
    """Devices that capture the ESC/POS bytes a till sends to its printer."""

    encoding: str = Field("gb18030", description="the printer's text encoding (Python codec name)")
    template: str | None = Field(None, min_length=1, max_length=128,
                                 description="name of the receipt template the sales service reads the text with")
    idle_timeout: Duration = Field(5.0, gt=0, description="a receipt with no cut ends after this much silence")

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        normalise_encoding(value)  # ValueError naming the encodings to use
        return value


class SerialLineSettings(DeviceConfig):
    """A serial line's framing and how hard to try reopening it."""

    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(19200, description="bits per second")
    bytesize: Literal[5, 6, 7, 8] = Field(8, description="data bits")
    parity: Literal["N", "E", "O", "M", "S"] = Field("N", description="parity: N(one), E(ven), O(dd), M(ark), S(pace)")
    stopbits: Literal[1, 1.5, 2] = Field(1, description="stop bits")
    reopen_max: Duration = Field(10.0, gt=0, description="longest wait between attempts to reopen a failed port "
                                                         "(waits start at 0.2 s and double)")


# ------------------------------------------------------------------------------------ emitting


def receipt_base(ctx: Any, settings: PosDeviceSettings, source: str, template: str | None) -> dict[str, Any]:
    """The part every `pos.receipt` event starts with."""
    return {"till": ctx.device_id, "store": settings.store, "template": template, "source": source}


def receipt_event(ctx: Any, settings: EscPosCaptureSettings, source: str, receipt: RawReceipt) -> dict[str, Any]:
    """The data of the internal `pos.receipt` event for a receipt parsed from ESC/POS."""
    return {**receipt_base(ctx, settings, source, settings.template),
            "text": receipt.text, "sha256": receipt.sha256, "size": len(receipt.data),
            "ended_by": receipt.ended_by}


# ------------------------------------------------------------------------------------- capture


class ReceiptTap:
    """One byte stream (a serial port, a TCP connection) cut into receipts; usable from any thread."""

    def __init__(self, capture: ReceiptCapture, name: str):
        self.capture = capture
        self.name = name
        self._lock = threading.Lock()
        self._stream = capture.new_stream()
        self.received = 0  # bytes fed
        self.emitted = 0  # receipts emitted

    def feed(self, data: bytes) -> None:
        if not data:
            return
        with self._lock:
            self.received += len(data)
            self._emit(self._call(self._stream.feed, data, time.monotonic()))

    def poll(self) -> None:
        with self._lock:
            self._emit(self._call(self._stream.poll, time.monotonic()))

    def flush(self) -> None:
        with self._lock:
            self._emit(self._call(self._stream.flush))

    def close(self) -> None:
        """Flush what is pending and stop polling this stream."""
        try:
            self.flush()
        finally:
            self.capture._taps.discard(self)

    def _call(self, method: Callable[..., list[RawReceipt]], *args: Any) -> list[RawReceipt]:
        try:
            return method(*args)
        except Exception:  # a parser bug must cost at most the receipt in progress, never the driver
            self.capture.ctx.log.exception("%s: the ESC/POS parser failed; the pending receipt is dropped",
                                           self.name)
            self._stream = self.capture.new_stream()
            return []

    def _emit(self, receipts: list[RawReceipt]) -> None:
        # Inside the lock: receipts of one stream go on the bus in the order they were printed.
        for receipt in receipts:
            if not receipt.text.strip():
                self.capture.ctx.log.debug("%s: a print job without text (%d bytes, %s) ignored",
                                           self.name, len(receipt.data), receipt.ended_by)
                continue
            self.emitted += 1
            self.capture.ctx.emit("pos.receipt", receipt_event(self.capture.ctx, self.capture.settings,
                                                               self.capture.source, receipt), internal=True)


class ReceiptCapture:
    """The receipt streams of one capture device, their idle polling and their emission."""

    def __init__(self, ctx: Any, settings: EscPosCaptureSettings, source: Literal["serial", "tcp"]):
        self.ctx = ctx
        self.settings = settings
        self.source = source
        self._taps: set[ReceiptTap] = set()

    def new_stream(self) -> EscPosStream:
        return EscPosStream(encoding=self.settings.encoding, idle_timeout=self.settings.idle_timeout)

    def open_tap(self, name: str) -> ReceiptTap:
        tap = ReceiptTap(self, name)
        self._taps.add(tap)
        return tap

    @property
    def poll_interval(self) -> float:
        """How often idle streams are checked: a fraction of the idle timeout, 20 ms to 0.5 s."""
        return max(0.02, min(0.5, self.settings.idle_timeout / 5))

    def poll(self) -> None:
        for tap in list(self._taps):
            tap.poll()

    async def poll_forever(self) -> None:
        while True:
            self.poll()
            await asyncio.sleep(self.poll_interval)

    def close(self) -> None:
        """Flush every stream (the driver stops: a pending sale is still a sale)."""
        for tap in list(self._taps):
            tap.close()


# ----------------------------------------------------------------------------------- serial


def open_serial(path: str, line: SerialLineSettings) -> serial.Serial:
    """The port, opened non-blocking (the pump waits with select)."""
    return serial.Serial(path, line.baud, bytesize=line.bytesize, parity=line.parity, stopbits=line.stopbits,
                         timeout=0, write_timeout=WRITE_TIMEOUT_S)


@dataclass(eq=False)
class SerialEndpoint:
    """One port the pump keeps open: its state, and when to try again after a failure."""

    label: str  # "till port", "printer port", "scanner port": names it in logs and status reasons
    path: str
    handle: serial.Serial | None = None
    error: str | None = None  # the last failure while the port is closed; None while it works
    retry_at: float = 0.0
    backoff: float = REOPEN_FIRST_S

    def fileno(self) -> int:
        return self.handle.fileno()  # type: ignore[union-attr]


class SerialPump:
    """Keep `main` (and the pass-through `peer`, if any) open in a thread; move the bytes.

    Every chunk read from `main` is written to `peer` first (at once: the printer behind a tap must
    not wait for the gateway), then handed to `on_data`. Bytes read from `peer` (a printer's status
    replies) are written back to `main`. A port that fails to open, read or write is closed and
    reopened after a wait that starts at 0.2 s and doubles up to `reopen_max`; the other port goes
    on meanwhile. The device is online while every port is open, else offline with the reasons
    (`main` failing: nothing is captured; only `peer` failing: capture goes on, said in the reason).
    """

    def __init__(self, ctx: Any, line: SerialLineSettings, main: SerialEndpoint,
                 on_data: Callable[[bytes], None], peer: SerialEndpoint | None = None,
                 opener: Callable[[str, SerialLineSettings], serial.Serial] = open_serial):
        self.ctx = ctx
        self.line = line
        self.main = main
        self.peer = peer
        self.on_data = on_data
        self.opener = opener
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: tuple[bool, str | None] | None = None
        self.opens = 0  # successful opens of `main` (tests watch reconnects)

    @property
    def endpoints(self) -> list[SerialEndpoint]:
        return [self.main] if self.peer is None else [self.main, self.peer]

    async def run(self, tick: Callable[[], None] | None = None, interval: float = 0.25) -> None:
        """Pump until cancelled, calling `tick` on the event loop every `interval` seconds."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"{self.ctx.device_id}-serial", daemon=True)
        self._thread.start()
        try:
            while True:
                if not self._thread.is_alive():
                    raise RuntimeError("the serial pump thread stopped")
                if tick is not None:
                    tick()
                await asyncio.sleep(interval)
        finally:
            self._stop.set()
            await asyncio.shield(asyncio.to_thread(self._thread.join, 5.0))

    # --- the thread ---

    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                self._step()
        except Exception:  # never expected; the run() task sees the thread gone and fails
            self.ctx.log.exception("serial pump failed")
        finally:
            for endpoint in self.endpoints:
                self._close(endpoint)

    def _step(self) -> None:
        now = time.monotonic()
        for endpoint in self.endpoints:
            if endpoint.handle is None and now >= endpoint.retry_at:
                self._open(endpoint)
        self._report()
        open_ = [e for e in self.endpoints if e.handle is not None]
        if not open_:
            wait = min(e.retry_at for e in self.endpoints) - time.monotonic()
            self._stop.wait(max(0.0, min(wait, SELECT_TIMEOUT_S)))
            return
        try:
            ready, _, _ = select.select(open_, [], [], SELECT_TIMEOUT_S)
        except (OSError, ValueError) as exc:  # a descriptor went bad under us: find out which on read
            ready = open_
            self.ctx.log.debug("select failed: %s", exc)
        if self.main in ready:
            data = self._read(self.main)
            if data:
                if self.peer is not None and self.peer.handle is not None:
                    self._write(self.peer, data)
                try:
                    self.on_data(data)
                except Exception:
                    self.ctx.log.exception("%s: handling %d bytes failed", self.main.label, len(data))
        if self.peer is not None and self.peer in ready:
            data = self._read(self.peer)
            if data and self.main.handle is not None:
                self._write(self.main, data)

    def _open(self, endpoint: SerialEndpoint) -> None:
        try:
            endpoint.handle = self.opener(endpoint.path, self.line)
        except Exception as exc:  # noqa: BLE001 (any failure to open is a reason to retry)
            self._fail(endpoint, "open failed", exc)
            return
        if endpoint.error is not None:
            self.ctx.log.info("%s %s is back", endpoint.label, endpoint.path)
        else:
            self.ctx.log.info("%s %s open", endpoint.label, endpoint.path)
        endpoint.error = None
        endpoint.backoff = REOPEN_FIRST_S
        if endpoint is self.main:
            self.opens += 1

    def _read(self, endpoint: SerialEndpoint) -> bytes:
        handle = endpoint.handle
        if handle is None:
            return b""
        try:
            return bytes(handle.read(max(1, handle.in_waiting)))
        except Exception as exc:  # noqa: BLE001 - SerialException, OSError (EIO: the adapter is gone)
            self._fail(endpoint, "read failed", exc)
            return b""

    def _write(self, endpoint: SerialEndpoint, data: bytes) -> None:
        handle = endpoint.handle
        if handle is None:
            return
        try:
            handle.write(data)
        except Exception as exc:  # noqa: BLE001 (as for reads)
            self._fail(endpoint, "write failed", exc)

    def _fail(self, endpoint: SerialEndpoint, action: str, exc: Exception) -> None:
        first = endpoint.error is None
        endpoint.error = f"{endpoint.label} {endpoint.path}: {action}: {exc or type(exc).__name__}"
        if first:
            self.ctx.log.warning("%s", endpoint.error)
        self._close(endpoint)
        endpoint.retry_at = time.monotonic() + endpoint.backoff
        endpoint.backoff = min(endpoint.backoff * 2, max(REOPEN_FIRST_S, self.line.reopen_max))

    @staticmethod
    def _close(endpoint: SerialEndpoint) -> None:
        handle, endpoint.handle = endpoint.handle, None
        if handle is not None:
            try:
                handle.close()
            except Exception:  # noqa: BLE001, S110 (closing a port that already failed)
                pass

    def _report(self) -> None:
        problems = [e.error for e in self.endpoints if e.error is not None]
        if not problems:
            state: tuple[bool, str | None] = (True, None)
        elif self.main.error is None:
            state = (False, "; ".join(problems) + " (still capturing from the " + self.main.label + ")")
        else:
            state = (False, "; ".join(problems))
        if state == self._reported:
            return
        self._reported = state
        if state[0]:
            self.ctx.set_online()
        else:
            self.ctx.set_offline(state[1])  # type: ignore[arg-type]
