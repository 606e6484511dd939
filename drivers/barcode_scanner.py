"""A member-code scanner on a serial port, next to a till: each scan becomes `pos.member_scan`.

The scanner sends each code as a line of text ended by CR, LF or both (the usual "serial keyboard"
set-up of barcode and QR scanners, 9600 8N1 by default). Each non-empty line, stripped, becomes an
internal `pos.member_scan` event `{"till": <the till's device id>, "code": <code>}`; the sales
service credits the next receipt of that till to the member. A line longer than 256 characters, or
one that is not printable UTF-8 text, is not a member code: it is dropped with a warning.

The port is served by `drivers.receipt_capture.SerialPump`: unplugged, the device is offline with the
reason and the port is reopened with backoff (`reopen_max`).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field

from gateway.events import DEVICE_ID_PATTERN

from .base import DeviceConfig, Driver
from .receipt_capture import SerialEndpoint, SerialLineSettings, SerialPump
from .registry import register

MAX_LINE = 256
_LINE_END = re.compile(rb"[\r\n]")


class BarcodeScannerSettings(SerialLineSettings):
    kind: Literal["barcode_scanner"]
    port: str = Field(..., min_length=1, description="serial port of the scanner, e.g. /dev/ttyACM0")
    baud: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = Field(9600, description="bits per second")
    till: str = Field(..., pattern=DEVICE_ID_PATTERN.pattern,
                      description="device id of the till (its pos_* device) whose receipts the scans belong to")


class LineSplitter:
    """Bytes in, stripped non-empty lines out (CR or LF ends a line); overlong lines are dropped."""

    def __init__(self, on_line: Any, log: Any, max_line: int = MAX_LINE):
        self.on_line = on_line
        self.log = log
        self.max_line = max_line
        self._buffer = bytearray()
        self._overflow = False  # the current line is over max_line: skip to its end

    def feed(self, data: bytes) -> None:
        start = 0
        for match in _LINE_END.finditer(data):
            self._take(data[start:match.start()])
            self._end_line()
            start = match.end()
        self._take(data[start:])

    def _take(self, chunk: bytes) -> None:
        if self._overflow or not chunk:
            return
        self._buffer += chunk
        if len(self._buffer) > self.max_line:
            self.log.warning("scanner line over %d bytes dropped", self.max_line)
            self._buffer.clear()
            self._overflow = True

    def _end_line(self) -> None:
        raw, overflow = bytes(self._buffer), self._overflow
        self._buffer.clear()
        self._overflow = False
        if overflow:
            return
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.log.warning("scanner line that is not UTF-8 text dropped (%d bytes)", len(raw))
            return
        if not line:
            return
        if not line.isprintable():
            self.log.warning("scanner line with control characters dropped (%d bytes)", len(raw))
            return
        self.on_line(line)


@register
class BarcodeScannerDriver(Driver):
    kind = "barcode_scanner"
    Settings = BarcodeScannerSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self.pump: SerialPump | None = None

    def _scanned(self, code: str) -> None:
        self.ctx.emit("pos.member_scan", {"till": self.settings.till, "code": code},  # type: ignore[attr-defined]
                      internal=True)

    async def run(self) -> None:
        settings: BarcodeScannerSettings = self.settings  # type: ignore[assignment]
        splitter = LineSplitter(self._scanned, self.ctx.log)
        self.pump = SerialPump(self.ctx, settings, SerialEndpoint("scanner port", settings.port), splitter.feed)
        await self.pump.run(interval=0.5)
