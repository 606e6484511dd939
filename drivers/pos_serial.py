"""A tap on a till's serial printer line: every receipt the till prints becomes a `pos.receipt` event.

Wiring: the till's printer cable goes to `port` (a USB serial adapter on the gateway). With
`printer_port` set, the gateway passes the line through to the real printer on a second adapter:
every byte from the till is written to the printer at once, and every byte from the printer (status
replies such as the answers to `DLE EOT`) is copied back to the till, so the till sees its real
printer. Both ports use the same framing (`baud`, default 19200, which most receipt printers ship
with or accept; 8 data bits, no parity, 1 stop bit).

The till's bytes are cut into receipts by `gateway.pos.escpos.EscPosStream` (paper cut, printer
initialisation, or `idle_timeout` of silence) and each receipt is emitted as an internal
`pos.receipt` event (`drivers.receipt_capture.receipt_event`, `source: "serial"`): the decoded text,
its sha256 and size, never the raw bytes.

A port unplugged (open fails, a read or write raises) is closed and reopened with backoff
(`reopen_max`); the device is offline with the reason meanwhile and online again once every port is
open. With only the printer port gone, capture goes on (the sale matters more than the paper) and the
reason says so. The ports are served by a thread (`drivers.receipt_capture.SerialPump`); the driver's
task only polls the idle timeout. When the driver stops, a receipt in progress is flushed.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from .base import DeviceConfig, Driver
from .receipt_capture import (
    EscPosCaptureSettings,
    ReceiptCapture,
    SerialEndpoint,
    SerialLineSettings,
    SerialPump,
)
from .registry import register


class PosSerialSettings(SerialLineSettings, EscPosCaptureSettings):
    kind: Literal["pos_serial"]
    port: str = Field(..., min_length=1, description="serial port on the till's side of the tap, e.g. /dev/ttyUSB0")
    printer_port: str | None = Field(None, min_length=1,
                                     description="serial port of the real printer (pass-through); not set: no printer")

    @model_validator(mode="after")
    def _ports_differ(self) -> PosSerialSettings:
        if self.printer_port is not None and self.printer_port == self.port:
            raise ValueError("printer_port must not be the till's port")
        return self


@register
class PosSerialDriver(Driver):
    kind = "pos_serial"
    Settings = PosSerialSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self.capture: ReceiptCapture | None = None
        self.pump: SerialPump | None = None

    async def run(self) -> None:
        settings: PosSerialSettings = self.settings  # type: ignore[assignment]
        capture = ReceiptCapture(self.ctx, settings, "serial")
        tap = capture.open_tap(settings.port)
        peer = SerialEndpoint("printer port", settings.printer_port) if settings.printer_port else None
        pump = SerialPump(self.ctx, settings, SerialEndpoint("till port", settings.port), tap.feed, peer)
        self.capture, self.pump = capture, pump
        try:
            await pump.run(tick=capture.poll, interval=capture.poll_interval)
        finally:
            capture.close()
