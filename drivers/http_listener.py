"""What the drivers of devices that push to the gateway over HTTP share: the listener and its guards.

Face terminals (drivers.hikvision, drivers.zkteco) call the gateway, not the other way round: each
such driver serves a small Starlette app on its own port, inside its own task. This module holds
everything those drivers have in common, so that none of it is written twice:

- `PushListenerSettings`: the listener's settings (`listen_host`, `listen_port`, `allow`,
  `max_body`, `stale_after`), which each driver's settings extend;
- `AllowList`: source addresses (IPs and CIDRs) that may push; anybody else gets 403;
  `check_allow_entries` validates an `allow` setting (here, and in the POS drivers' settings);
- `read_body` / `iter_body`: a request body read with a size limit (413 beyond it), so that an
  untrusted sender cannot make the gateway buffer a gigabyte;
- `HttpListener`: uvicorn serving the app in the driver's task. The socket is bound here, before
  uvicorn runs, so that a port in use raises OSError in the driver (the supervisor restarts it with
  backoff) instead of uvicorn's `sys.exit`; uvicorn does not capture signals (they belong to the
  gateway), has no lifespan and logs warnings only; it trusts no `X-Forwarded-For` header (the
  source address is what the allow-list checks). `EmbeddedServer` and `wait_started` are shared
  with the gateway's own HTTP API (gateway.app);
- `TerminalLiveness`: per terminal, whether it was heard from within `stale_after`, reported as
  internal `access.reader_status` events on each change.
- `terminal_addresses` / `terminals_allow_list`: each terminal's host resolved once at start, and
  the allow-list that follows from it when `allow` is not set; `keep_watch`: the driver's loop while
  its listener serves (listener checked, liveness reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, NoReturn, Self

import uvicorn
from pydantic import ByteSize, Field, field_validator
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse

from gateway.validation import Duration

from .base import DeviceConfig

DEFAULT_MAX_BODY = 2 * 1024 * 1024  # an event with a couple of JPEG pictures fits easily


class HttpError(Exception):
    """A request the listener refuses: answered with `status` and a short plain-text reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> PlainTextResponse:
        return PlainTextResponse(self.reason + "\n", status_code=self.status)


# ------------------------------------------------------------------------------------ settings


class PushListenerSettings(DeviceConfig):
    """The settings every push-listener driver has (extended by each driver's own settings)."""

    listen_host: str = Field("0.0.0.0", min_length=1, description="address the listener binds to")
    listen_port: int = Field(..., ge=0, le=65535, description="TCP port the terminals push to (0: any free port)")
    allow: list[str] = Field(default_factory=list,
                             description="source addresses or CIDRs that may push (empty: the terminals' hosts)")
    max_body: ByteSize = Field(DEFAULT_MAX_BODY, gt=0, description="largest request body accepted (413 beyond)")
    stale_after: Duration = Field(120.0, gt=0, description="a terminal not heard from for this long is offline")

    @field_validator("allow")
    @classmethod
    def _allow_entries_parse(cls, entries: list[str]) -> list[str]:
        check_allow_entries(entries)
        return entries


# ---------------------------------------------------------------------------------- allow-list


def check_allow_entries(entries: Iterable[str]) -> None:
    """ValueError naming the first entry that is not an IP address or CIDR (every `allow` setting)."""
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"allow: {entry!r} is not an IP address or CIDR") from None


def _normalised(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # ::ffff:10.0.0.5 on a dual-stack socket is 10.0.0.5
    return ip


def is_ip(text: str) -> bool:
    return _normalised(text) is not None


class AllowList:
    """Source addresses allowed to push: IP addresses and networks; an empty list allows nobody."""

    def __init__(self, entries: Iterable[str]):
        self.networks = [ipaddress.ip_network(e.strip(), strict=False) for e in entries]

    def allows(self, address: str | None) -> bool:
        ip = _normalised(address) if address else None
        if ip is None:
            return False
        return any(ip.version == net.version and ip in net for net in self.networks)

    def __repr__(self) -> str:
        return f"AllowList({', '.join(map(str, self.networks)) or 'nobody'})"


async def resolve_hosts(hosts: Iterable[str], log: logging.Logger) -> list[str]:
    """IP addresses of `hosts` (IP literals as they are; names resolved once, off the loop)."""
    addresses: list[str] = []
    for host in hosts:
        if _normalised(host) is not None:
            addresses.append(host)
            continue
        try:
            infos = await asyncio.to_thread(socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve terminal host %s: %s (its pushes will be refused)", host, exc)
            continue
        addresses.extend(sorted({str(info[4][0]) for info in infos}))
    return addresses


async def terminal_addresses(terminals: Iterable[Any], log: logging.Logger) -> dict[str, set[str]]:
    """Per terminal (`.id`, `.host`) that has a host: that host and its IP addresses (`resolve_hosts`).
    Terminals without a host are left out."""
    addresses: dict[str, set[str]] = {}
    for terminal in terminals:
        if terminal.host:
            addresses[terminal.id] = {terminal.host, *await resolve_hosts([terminal.host], log)}
    return addresses


def terminals_allow_list(allow: Iterable[str], addresses: dict[str, set[str]]) -> AllowList:
    """The `allow` setting when given, else the terminals' own IP addresses (`terminal_addresses`)."""
    return AllowList(allow or [a for addrs in addresses.values() for a in addrs if is_ip(a)])


def source_of(request: Request) -> str | None:
    return request.client.host if request.client else None


def check_source(request: Request, allow: AllowList, log: logging.Logger) -> str:
    """The request's source address, or HttpError 403 (logged) when it may not push."""
    source = source_of(request)
    if not allow.allows(source):
        log.warning("push from %s refused: not in the allow-list %s", source, allow)
        raise HttpError(403, "forbidden")
    return str(_normalised(source))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- bodies


def _declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is None:
        return
    try:
        length = int(declared)
    except ValueError:
        raise HttpError(400, "bad Content-Length") from None
    if length < 0:
        raise HttpError(400, "bad Content-Length")
    if length > limit:
        raise HttpError(413, f"body over {limit} bytes")


async def iter_body(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; HttpError 413 as soon as more than `limit` bytes came."""
    _declared_length(request, limit)
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise HttpError(413, f"body over {limit} bytes")
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise HttpError(400, "client went away") from None


async def read_body(request: Request, limit: int) -> bytes:
    return b"".join([chunk async for chunk in iter_body(request, limit)])


def decode_text(body: bytes) -> str:
    """A text body as str: UTF-8, else Latin-1 (terminals' firmware is not always careful)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


# -------------------------------------------------------------------------------- credentials

MAX_FIELD = 128  # credential values and record numbers longer than this are not believed


def short_text(value: Any) -> str | None:
    """A short identifier (employee number, PIN, serial) as text; None when absent or implausible."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        value = value.strip()
        if value and len(value) <= MAX_FIELD and value.isprintable():
            return value
    return None


def card_value(card_no: Any) -> str | None:
    """`cardno:<decimal>` from a terminal's card number (leading zeros dropped); None if none."""
    text = short_text(card_no)
    if text is None or not text.isascii() or not text.isdigit():
        return None
    digits = text.lstrip("0")
    return f"cardno:{digits}" if digits else None


# ------------------------------------------------------------------------------------ listener


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside the gateway's loop (a driver's task, the HTTP API): signals belong to the
    gateway, not to the web server."""

    def capture_signals(self):  # type: ignore[override]
        return contextlib.nullcontext()


async def wait_started(server: uvicorn.Server, task: asyncio.Task, what: str) -> None:
    """Return once `server` (served by `task`) accepts connections; if the task ends first, raise
    its error (e.g. the port in use), else RuntimeError("<what> stopped while starting")."""
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError(f"{what} stopped while starting")
        await asyncio.sleep(0.01)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; OSError (port in use, no such address) for the caller to raise."""
    infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpListener:
    """Serve an ASGI app on `host:port` for as long as the `async with` block runs.

    Entering binds the socket (OSError if it cannot) and returns once uvicorn accepts connections;
    leaving (normally, or by the driver's task being cancelled) stops the server and closes the
    socket. `check()` raises if the server stopped by itself.
    """

    def __init__(self, app: Any, host: str, port: int, log: logging.Logger, name: str = "push-listener"):
        self.app = app
        self.host = host
        self.requested_port = port
        self.log = log
        self.name = name
        self.port: int | None = None
        self._server: EmbeddedServer | None = None
        self._task: asyncio.Task | None = None
        self._sock: socket.socket | None = None

    async def __aenter__(self) -> Self:
        self._sock = bind_socket(self.host, self.requested_port)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False, date_header=False)
        self._server = EmbeddedServer(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve(sockets=[self._sock]),
                                                            name=self.name)
        try:
            await wait_started(self._server, self._task, f"{self.name}: the HTTP listener")
        except BaseException:
            await self._stop()
            raise
        self.log.info("listening for pushes on %s:%d", self.host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stop()

    def check(self) -> None:
        """Raise if the server stopped on its own (the driver then fails and is restarted)."""
        if self._task is not None and self._task.done():
            exc = None if self._task.cancelled() else self._task.exception()
            raise RuntimeError(f"{self.name}: the HTTP listener stopped") from exc

    async def _stop(self) -> None:
        server, task, sock = self._server, self._task, self._sock
        self._server = self._task = self._sock = None
        if server is not None:
            server.should_exit = True
        try:
            if task is not None:
                # Shielded: the driver's own cancellation must not leave uvicorn half-stopped.
                try:
                    await asyncio.shield(asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5.0))
                except TimeoutError:
                    task.cancel()
                except asyncio.CancelledError:
                    task.cancel()
                    raise
        finally:
            if sock is not None:
                sock.close()


# ----------------------------------------------------------------------------------- liveness


class TerminalLiveness:
    """Which terminals were heard from within `stale_after`; reported per terminal on each change.

    `heard(id)` on every request a terminal makes; `check()` every so often emits an internal
    `access.reader_status` event for each terminal whose state changed:
    `{"reader": id, "online": bool, "status": "online"|"offline", "reason": str|None}`. A terminal
    never heard from is reported offline once it had `stale_after` to show up.
    """

    def __init__(self, ctx: Any, terminal_ids: Iterable[str], stale_after: float):
        self.ctx = ctx
        self.stale_after = stale_after
        self.started = time.monotonic()
        self.last_heard: dict[str, float | None] = {tid: None for tid in terminal_ids}
        self.reported: dict[str, bool | None] = {tid: None for tid in self.last_heard}

    def heard(self, terminal_id: str) -> None:
        if terminal_id in self.last_heard:
            self.last_heard[terminal_id] = time.monotonic()

    def check(self) -> None:
        """Emit what changed (`reported` then holds each terminal's state as last reported)."""
        now = time.monotonic()
        for tid, seen in self.last_heard.items():
            online = seen is not None and now - seen <= self.stale_after
            if not online and seen is None and now - self.started < self.stale_after:
                continue  # not heard yet, but it has not had its chance
            if online != self.reported[tid]:
                self.reported[tid] = online
                reason = None if online else (
                    "never heard from" if seen is None else f"nothing heard for {self.stale_after:g}s")
                if online:
                    self.ctx.log.info("terminal %s is pushing", tid)
                else:
                    self.ctx.log.warning("terminal %s: %s", tid, reason)
                self.ctx.emit("access.reader_status", {"reader": tid, "online": online,
                                                       "status": "online" if online else "offline",
                                                       "reason": reason}, internal=True)

    def report(self) -> None:
        """Check, then set the device online while every terminal is heard from, else offline naming
        the silent ones (as an OSDP bus names its silent readers), so that `device.status` upstream
        shows a terminal that stopped pushing."""
        self.check()
        silent = [tid for tid, online in self.reported.items() if online is False]
        if silent:
            self.ctx.set_offline(f"not heard from: {', '.join(silent)}")
        else:
            self.ctx.set_online()


def check_interval(stale_after: float) -> float:
    return max(0.05, min(1.0, stale_after / 4))


async def keep_watch(listener: HttpListener, liveness: TerminalLiveness, stale_after: float) -> NoReturn:
    """A push driver's loop while its listener serves: the listener still up, the terminals' liveness
    reported, every `check_interval(stale_after)`; until cancelled (or the listener fails)."""
    while True:
        listener.check()
        liveness.report()
        await asyncio.sleep(check_interval(stale_after))
