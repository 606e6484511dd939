"""A raw TCP print listener ("port 9100", JetDirect) that tills print to: each receipt becomes `pos.receipt`.

The till is pointed at the gateway (`listen_host`:`listen_port`, 9100 by default) instead of its
network printer. Each TCP connection is one print job: its bytes are cut into receipts by
`gateway.pos.escpos.EscPosStream` (paper cut, printer initialisation, `idle_timeout` of silence) and
the end of the connection flushes what is pending. Each receipt is emitted as an internal
`pos.receipt` event (`drivers.receipt_capture.receipt_event`, `source: "tcp"`): the decoded text,
its sha256 and size, never the raw bytes.

Only addresses in `allow` (IP addresses or CIDRs, required: raw TCP printing has no authentication)
may print; other connections are closed at once, unread, and logged.

With `printer_host` set, each connection is forwarded to the real printer (`printer_host`:
`printer_port`): the till's bytes go to the printer as they arrive and the printer's replies (status
answers) come back to the till. A printer that cannot be reached (or fails mid-job) does not stop
capture: the job is still read and emitted, the problem is logged, and the device is reported
offline with the reason "printer ... unreachable ... (still capturing)" until a later job reaches the
printer again. The device is online while it listens and the printer (if any) was reachable last
time.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Literal

from pydantic import Field, field_validator

from gateway.validation import Duration

from .base import DeviceConfig, Driver
from .http_listener import AllowList, check_allow_entries
from .receipt_capture import EscPosCaptureSettings, ReceiptCapture
from .registry import register

READ_CHUNK = 65536
MAX_CONNECTIONS = 64  # print jobs at once; more are refused (a till retries)


class PosTcpSettings(EscPosCaptureSettings):
    kind: Literal["pos_tcp"]
    listen_host: str = Field("0.0.0.0", min_length=1, description="address the print listener binds to")
    listen_port: int = Field(9100, ge=0, le=65535, description="TCP port the tills print to (0: any free port)")
    allow: list[str] = Field(..., min_length=1, description="addresses or CIDRs of the tills allowed to print")
    printer_host: str | None = Field(None, min_length=1,
                                     description="the real network printer to forward each job to; not set: none")
    printer_port: int = Field(9100, ge=1, le=65535, description="the real printer's raw TCP port")
    printer_timeout: Duration = Field(3.0, gt=0, description="connecting to, or writing to, the printer may take this long")

    @field_validator("allow")
    @classmethod
    def _allow_entries_parse(cls, entries: list[str]) -> list[str]:
        check_allow_entries(entries)
        return entries


class _PrinterLink:
    """One job's connection to the real printer; gives up (for this job) at the first failure."""

    def __init__(self, driver: PosTcpDriver, peer_writer: asyncio.StreamWriter):
        self.driver = driver
        self.till_writer = peer_writer
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.replies: asyncio.Task | None = None

    async def connect(self) -> None:
        s: PosTcpSettings = self.driver.settings  # type: ignore[assignment]
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(s.printer_host, s.printer_port), s.printer_timeout)
        except (OSError, TimeoutError) as exc:
            self.driver._printer_failed(f"connect: {exc or type(exc).__name__}")
            return
        self.driver._printer_ok()
        self.replies = asyncio.get_running_loop().create_task(self._copy_replies())

    async def send(self, data: bytes) -> None:
        if self.writer is None:
            return
        s: PosTcpSettings = self.driver.settings  # type: ignore[assignment]
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), s.printer_timeout)
        except (OSError, TimeoutError) as exc:
            self.driver._printer_failed(f"write: {exc or type(exc).__name__}")
            await self.close()

    async def _copy_replies(self) -> None:
        assert self.reader is not None
        try:
            while data := await self.reader.read(READ_CHUNK):
                self.till_writer.write(data)
                with contextlib.suppress(OSError):
                    await self.till_writer.drain()
        except OSError:
            pass

    async def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(OSError, TimeoutError):
                if writer.can_write_eof():
                    writer.write_eof()
                await asyncio.wait_for(writer.drain(), self.driver.settings.printer_timeout)  # type: ignore[attr-defined]
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        if self.replies is not None:
            self.replies.cancel()
            await asyncio.gather(self.replies, return_exceptions=True)
            self.replies = None


@register
class PosTcpDriver(Driver):
    kind = "pos_tcp"
    Settings = PosTcpSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self.port: int | None = None  # the bound listener port, once running
        self.capture: ReceiptCapture | None = None
        self.jobs = 0  # connections accepted (print jobs)
        self._allow = AllowList(settings.allow)  # type: ignore[attr-defined]
        self._printer_problem: str | None = None
        self._connections: set[asyncio.Task] = set()

    async def run(self) -> None:
        settings: PosTcpSettings = self.settings  # type: ignore[assignment]
        self.capture = ReceiptCapture(self.ctx, settings, "tcp")
        server = await asyncio.start_server(self._on_connection, settings.listen_host, settings.listen_port,
                                            reuse_address=True)
        try:
            self.port = server.sockets[0].getsockname()[1]
            self.ctx.log.info("listening for print jobs on %s:%d", settings.listen_host, self.port)
            self._report()
            await self.capture.poll_forever()
        finally:
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            self.capture.close()
            self.port = None

    # --- status ---

    def _printer_failed(self, problem: str) -> None:
        s: PosTcpSettings = self.settings  # type: ignore[assignment]
        message = f"printer {s.printer_host}:{s.printer_port} unreachable: {problem}"
        if message != self._printer_problem:
            self.ctx.log.warning("%s; the job is still captured", message)
        self._printer_problem = message
        self._report()

    def _printer_ok(self) -> None:
        if self._printer_problem is not None:
            s: PosTcpSettings = self.settings  # type: ignore[assignment]
            self.ctx.log.info("printer %s:%d is reachable again", s.printer_host, s.printer_port)
        self._printer_problem = None
        self._report()

    def _report(self) -> None:
        if self._printer_problem is None:
            self.ctx.set_online()
        else:
            self.ctx.set_offline(f"{self._printer_problem} (still capturing)")

    # --- print jobs ---

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else None
        try:
            if not self._allow.allows(source):
                self.ctx.log.warning("print job from %s refused: not in the allow-list %s", source, self._allow)
                return
            if len(self._connections) >= MAX_CONNECTIONS:
                self.ctx.log.warning("print job from %s refused: %d jobs already open", source, MAX_CONNECTIONS)
                return
            if task is not None:
                self._connections.add(task)
            await self._job(reader, writer, f"{source}:{peer[1]}")
        except asyncio.CancelledError:
            raise
        except Exception:
            self.ctx.log.exception("print job from %s failed", source)
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _job(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str) -> None:
        assert self.capture is not None
        self.jobs += 1
        tap = self.capture.open_tap(f"job from {name}")
        printer = _PrinterLink(self, writer) if self.settings.printer_host else None  # type: ignore[attr-defined]
        try:
            if printer is not None:
                await printer.connect()
            while data := await reader.read(READ_CHUNK):
                if printer is not None:
                    await printer.send(data)  # the printer first: the till waits for its paper
                tap.feed(data)
        except OSError as exc:  # the till reset the connection: what came is still a job
            self.ctx.log.info("print job from %s ended: %s", name, exc)
        finally:
            tap.close()  # the end of the job ends its receipt
            if printer is not None:
                await printer.close()
