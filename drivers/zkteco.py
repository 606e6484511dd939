"""ZKTeco face terminals on the push protocol ("ADMS", iclock): they call the gateway.

The terminal, configured with the gateway as its ADMS server (`listen_port`), makes these requests,
each with its serial number in `SN=`:

- `GET /iclock/cdata?SN=..&options=all`: the handshake; answered with the options text
  (`GET OPTION FROM: <SN>`, the stamps, `Delay` = `poll_interval`, `Realtime=1`, and
  `TransFlag=TransData AttLog`: punches only, no photos, no user or template uploads);
- `POST /iclock/cdata?SN=..&table=ATTLOG&Stamp=..`: punches, one a line,
  `PIN<TAB>YYYY-MM-DD HH:MM:SS<TAB>status<TAB>verify<TAB>workcode...`; answered `OK: <lines>`;
- `POST /iclock/cdata?SN=..&table=rtlog`: real-time events of access-control firmware, one a line
  of tab-separated `key=value` (`time= pin= cardno= eventaddr= event= inoutstatus= verifytype=
  index=`); answered `OK`;
- `POST /iclock/cdata?SN=..&table=OPERLOG` (and any other table, ATTPHOTO included): dropped
  unread, answered `OK`;
- `GET /iclock/getrequest?SN=..`: the terminal's poll for commands, every `poll_interval`;
  answered `OK` when there are none, else one `C:<id>:<command>` line each;
- `POST /iclock/devicecmd?SN=..`: command results, `ID=<id>&Return=<code>&CMD=<command>` lines
  (Return 0 is success); answered `OK`;
- `GET /iclock/ping?SN=..`: alive (push 3.x); answered `OK`.
The `.aspx` spellings of these paths (older firmware) are served as well.

Each punch (ATTLOG line) and each credential event (rtlog, `event` below 100 except remote and
linkage actions) becomes an internal `access.identified` event: `{"reader": <terminal id>, "method",
"value", "terminal_serial", "terminal_time"}`. Method from the verify type (ZKTeco's verify modes):
15-20 face (face alone or face with something else), 4, 7, 11 card, 0, 2, 3 pin, anything else
fingerprint. Value: the terminal's user PIN (for face, fingerprint and pin), `cardno:<digits>` for a
card (rtlog's `cardno`; ATTLOG lines carry no card number, so a card punch from ATTLOG has value
None), None for a person the terminal did not recognise (PIN empty or 0). `terminal_serial`: rtlog's
`index`, ATTLOG's `<pin>|<time>`; `terminal_time` as the terminal wrote it (its local time).

Who is who: by `SN` among the configured terminals; an unknown SN gets 403 (logged once per SN).
Requests are accepted only from `allow` (by default the terminals' `host`s; with neither, the
config is refused), and a terminal with a `host` only from that address.

Door opening: `open_door` queues `CONTROL DEVICE 01<door>01<seconds>` (each a two-digit hex byte:
output operation 01, the door, address type 01 = the door's lock, the time in seconds, 1-254) for
the terminal's next poll; a command not collected within `command_ttl` is dropped (a door must not
open a minute after the person left), and the result the terminal posts is logged. `feedback` does
nothing: the terminal shows its own verdict.
"""

from __future__ import annotations

import itertools
import re
import time
from collections import deque
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qsl

from pydantic import Field, field_validator, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.validation import Duration, StrictModel, duplicates

from .base import DeviceConfig, Driver
from .http_listener import (
    AllowList,
    HttpError,
    HttpListener,
    PushListenerSettings,
    TerminalLiveness,
    card_value,
    check_source,
    decode_text,
    keep_watch,
    read_body,
    short_text,
    source_of,
    terminal_addresses,
    terminals_allow_list,
)
from .registry import register

FACE_VERIFY = frozenset({15, 16, 17, 18, 19, 20})
CARD_VERIFY = frozenset({4, 7, 11})
PIN_VERIFY = frozenset({0, 2, 3})
VERIFY_OTHER = 200  # rtlog: no verification (door sensor, alarms)
# rtlog events below 100 that are no credential: 5 normal-open time zone, 6 linkage, 7 alarm
# cancelled, 8 remote open, 9 remote close, 10/11 intraday normal open off/on, 12/13 aux output.
NOT_CREDENTIAL_EVENTS = frozenset({5, 6, 7, 8, 9, 10, 11, 12, 13})
MAX_LINES = 2000  # lines in one post; a terminal sends a few hundred at most
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}$")
_SN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STAMP = re.compile(r"^[0-9]{1,20}$")


def verify_method(verify: int) -> str:
    if verify in FACE_VERIFY:
        return "face"
    if verify in CARD_VERIFY:
        return "card"
    if verify in PIN_VERIFY:
        return "pin"
    return "fingerprint"


def _pin(value: Any) -> str | None:
    """A user PIN as the terminal wrote it; None for none (empty or 0: not recognised)."""
    text = short_text(value)
    if text is None or text.lstrip("0") == "" or any(c.isspace() for c in text):
        return None
    return text


def _small_int(text: str) -> int | None:
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) <= 6:
        return int(text)
    return None


def _lines(text: str) -> list[str]:
    lines = [line.strip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if len(lines) > MAX_LINES:
        raise ValueError(f"more than {MAX_LINES} lines")
    return lines


class Parsed(NamedTuple):
    records: list[dict]  # the presentations the lines meant
    bad: int  # lines that were not understood (skipped)
    ignored: int = 0  # understood lines that are no credential (door states, alarms)


def parse_attlog(text: str) -> Parsed:
    """ATTLOG lines -> presentations {"method", "value", "terminal_serial", "terminal_time"}."""
    records: list[dict] = []
    bad = 0
    for line in _lines(text):
        fields = line.split("\t")
        if len(fields) < 4:
            bad += 1
            continue
        pin, when, verify = _pin(fields[0]), fields[1].strip(), _small_int(fields[3])
        if pin is None or not _TIME.match(when) or verify is None:
            bad += 1
            continue
        method = verify_method(verify)
        value = None if method == "card" else pin  # ATTLOG has no card number
        records.append({"method": method, "value": value, "terminal_serial": f"{pin}|{when}",
                        "terminal_time": when})
    return Parsed(records, bad)


def parse_rtlog(text: str) -> Parsed:
    """rtlog lines (tab-separated key=value) -> presentations, as `parse_attlog`."""
    records: list[dict] = []
    bad = ignored = 0
    for line in _lines(text):
        fields: dict[str, str] = {}
        for item in line.split("\t"):
            key, sep, value = item.partition("=")
            if sep:
                fields[key.strip().lower()] = value.strip()
        when = fields.get("time", "")
        event = _small_int(fields.get("event", ""))
        verify = _small_int(fields.get("verifytype", ""))
        if not _TIME.match(when) or event is None or verify is None:
            bad += 1
            continue
        if event >= 100 or event in NOT_CREDENTIAL_EVENTS or verify == VERIFY_OTHER:
            ignored += 1
            continue
        method = verify_method(verify)
        pin = _pin(fields.get("pin"))
        value = card_value(fields.get("cardno")) if method == "card" else pin
        index = short_text(fields.get("index"))
        serial = index if index is not None else f"{pin}|{when}|{fields.get('eventaddr', '')}"
        records.append({"method": method, "value": value, "terminal_serial": serial, "terminal_time": when})
    return Parsed(records, bad, ignored)


def parse_devicecmd(text: str) -> list[dict]:
    """Command results: [{"id": int, "return": int|None, "cmd": str}] (lines without an ID skipped)."""
    results = []
    for line in _lines(text):
        fields = dict(parse_qsl(line, keep_blank_values=True))
        cid = _small_int(fields.get("ID", "")[:12]) if "ID" in fields else None
        if cid is None:
            continue
        ret = fields.get("Return", "").strip()
        results.append({"id": cid, "return": int(ret) if re.fullmatch(r"-?\d{1,6}", ret) else None,
                        "cmd": fields.get("CMD", "")[:64]})
    return results


def options_text(sn: str, attlog_stamp: str, delay: int) -> str:
    """The handshake answer: what the terminal should send, and how often to poll."""
    return "\n".join([
        f"GET OPTION FROM: {sn}",
        f"ATTLOGStamp={attlog_stamp}",
        "OPERLOGStamp=9999",
        "ATTPHOTOStamp=9999",
        "ErrorDelay=30",
        f"Delay={delay}",
        "TransTimes=00:00;14:05",
        "TransInterval=1",
        "TransFlag=TransData AttLog",
        "Realtime=1",
        "Encrypt=None",
    ]) + "\n"


def open_door_command(door: int, seconds: float) -> str:
    """CONTROL DEVICE for a door pulse: operation 01, door, address type 01 (lock), seconds (hex bytes)."""
    secs = max(1, min(254, round(seconds)))
    return f"CONTROL DEVICE 01{door:02X}01{secs:02X}"


# --------------------------------------------------------------------------------- settings


class ZktecoTerminalSettings(StrictModel):
    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                    description="the terminal's name, the `reader` of its door in `access.doors`")
    serial_number: str = Field(..., pattern=_SN.pattern, description="the terminal's serial number (SN)")
    door: int = Field(1, ge=1, le=255, description="the terminal's door number for remote open")
    host: str | None = Field(None, description="the terminal's address: its requests are accepted only from there")


class ZktecoSettings(PushListenerSettings):
    kind: Literal["zkteco_terminal"]
    listen_port: int = Field(8092, ge=0, le=65535, description="TCP port of the ADMS server the terminals call (0: any free port)")
    terminals: list[ZktecoTerminalSettings] = Field(..., min_length=1)
    poll_interval: int = Field(2, ge=1, le=60, description="seconds between the terminal's command polls (`Delay`)")
    open_seconds: float = Field(5.0, ge=1, le=254, description="how long open_door releases the lock, when not told")
    command_ttl: Duration = Field(15.0, gt=0, description="a door-open command not collected by then is dropped")

    @field_validator("terminals")
    @classmethod
    def _unique(cls, terminals: list[ZktecoTerminalSettings]) -> list[ZktecoTerminalSettings]:
        # One pass over (attribute, value) pairs: the first repetition is reported, as it is met.
        repeated = duplicates(pair for terminal in terminals
                              for pair in (("terminal id", terminal.id), ("serial number", terminal.serial_number)))
        if repeated:
            what, value = repeated[0]
            raise ValueError(f"{what} {value!r} is used twice")
        return terminals

    @model_validator(mode="after")
    def _someone_may_call(self) -> ZktecoSettings:
        if not self.allow and any(t.host is None for t in self.terminals):
            raise ValueError("set `allow` (addresses or CIDRs the terminals call from) or every terminal's `host`")
        return self


class _Command(NamedTuple):
    id: int
    text: str
    queued: float


# ----------------------------------------------------------------------------------- driver


@register
class ZktecoDriver(Driver):
    kind = "zkteco_terminal"
    Settings = ZktecoSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        terminals: list[ZktecoTerminalSettings] = list(settings.terminals)  # type: ignore[attr-defined]
        self._by_sn = {t.serial_number: t for t in terminals}
        self._by_id = {t.id: t for t in terminals}
        self._addresses: dict[str, set[str]] = {}
        self._allow = AllowList([])
        self._liveness: TerminalLiveness | None = None
        self._queues: dict[str, deque[_Command]] = {t.id: deque() for t in terminals}
        self._sent: dict[int, tuple[str, str]] = {}  # command id -> (terminal id, command)
        self._ids = itertools.count(int(time.time()) % 1_000_000 + 1)
        self._stamps: dict[str, str] = {}
        self._unknown_logged: set[str] = set()
        self._running = False
        self.port: int | None = None

    # --- running ---

    async def run(self) -> None:
        settings: ZktecoSettings = self.settings  # type: ignore[assignment]
        self._addresses.update(await terminal_addresses(self._by_id.values(), self.ctx.log))
        self._allow = terminals_allow_list(settings.allow, self._addresses)
        self._liveness = TerminalLiveness(self.ctx, self._by_id, settings.stale_after)
        routes = []
        for suffix in ("", ".aspx"):
            routes += [Route(f"/iclock/cdata{suffix}", self._on_cdata, methods=["GET", "POST"]),
                       Route(f"/iclock/getrequest{suffix}", self._on_getrequest, methods=["GET"]),
                       Route(f"/iclock/devicecmd{suffix}", self._on_devicecmd, methods=["POST"]),
                       Route(f"/iclock/ping{suffix}", self._on_ping, methods=["GET"])]
        app = Starlette(routes=routes)
        async with HttpListener(app, settings.listen_host, settings.listen_port, self.ctx.log,
                                name=f"{self.ctx.device_id}-listener") as listener:
            self.port = listener.port
            self._running = True
            try:
                await keep_watch(listener, self._liveness, settings.stale_after)
            finally:
                self._running = False

    # --- requests ---

    def _terminal(self, request: Request) -> ZktecoTerminalSettings:
        """The calling terminal, or HttpError (logged): wrong source, missing or unknown SN."""
        source = check_source(request, self._allow, self.ctx.log)
        sn = request.query_params.get("SN", "")
        if not _SN.match(sn):
            self.ctx.log.warning("request from %s refused: no usable SN", source)
            raise HttpError(400, "missing or bad SN")
        terminal = self._by_sn.get(sn)
        if terminal is None:
            if sn not in self._unknown_logged and len(self._unknown_logged) < 100:
                self._unknown_logged.add(sn)
                self.ctx.log.warning("request from %s refused: unknown terminal SN %s (not configured)", source, sn)
            raise HttpError(403, "unknown SN")
        addresses = self._addresses.get(terminal.id)
        if addresses is not None and source not in addresses:
            self.ctx.log.warning("request for SN %s from %s refused: terminal %s is at %s", sn, source,
                                 terminal.id, terminal.host)
            raise HttpError(403, "forbidden")
        if self._liveness is not None:
            self._liveness.heard(terminal.id)
        return terminal

    async def _on_cdata(self, request: Request) -> PlainTextResponse:
        try:
            terminal = self._terminal(request)
            if request.method == "GET":
                stamp = self._stamps.get(terminal.id, "None")
                return _text(options_text(terminal.serial_number, stamp, self.settings.poll_interval))
            table = request.query_params.get("table", "").strip().lower()
            body = await read_body(request, int(self.settings.max_body))
            if table not in ("attlog", "rtlog"):
                return _text("OK")  # OPERLOG, ATTPHOTO, user and template tables: not ours, dropped unread
            text = decode_text(body)
            try:
                parsed = parse_attlog(text) if table == "attlog" else parse_rtlog(text)
            except ValueError as exc:
                raise HttpError(400, str(exc)) from None
        except HttpError as exc:
            if exc.status not in (403,):
                self.ctx.log.warning("cdata from %s refused: %s", source_of(request), exc.reason)
            return exc.response()
        if parsed.bad:
            self.ctx.log.warning("terminal %s: %d %s line(s) not understood, skipped", terminal.id, parsed.bad, table)
            if not parsed.records and not parsed.ignored:
                return _text("no line understood", 400)
        for record in parsed.records:
            self.ctx.emit("access.identified", {"reader": terminal.id, **record}, internal=True)
        stamp = request.query_params.get("Stamp", "")
        if table == "attlog" and _STAMP.match(stamp):
            self._stamps[terminal.id] = stamp
        if table == "attlog":
            return _text(f"OK: {len(parsed.records) + parsed.bad}")
        return _text("OK")

    async def _on_getrequest(self, request: Request) -> PlainTextResponse:
        try:
            terminal = self._terminal(request)
        except HttpError as exc:
            return exc.response()
        queue = self._queues[terminal.id]
        now = time.monotonic()
        lines = []
        while queue:
            command = queue.popleft()
            if now - command.queued > self.settings.command_ttl:
                self.ctx.log.warning("terminal %s: command %d (%s) not collected within %gs: dropped",
                                     terminal.id, command.id, command.text, self.settings.command_ttl)
                continue
            self._sent[command.id] = (terminal.id, command.text)
            lines.append(f"C:{command.id}:{command.text}")
        while len(self._sent) > 1000:  # results that never came
            self._sent.pop(next(iter(self._sent)))
        return _text("\n".join(lines) if lines else "OK")

    async def _on_devicecmd(self, request: Request) -> PlainTextResponse:
        try:
            terminal = self._terminal(request)
            text = decode_text(await read_body(request, 64 * 1024))
        except HttpError as exc:
            return exc.response()
        try:
            results = parse_devicecmd(text)
        except ValueError:
            return _text("too many lines", 400)
        for result in results:
            sent = self._sent.pop(result["id"], None)
            if sent is None or sent[0] != terminal.id:
                self.ctx.log.debug("terminal %s: result for unknown command %s", terminal.id, result["id"])
                continue
            if result["return"] == 0:
                self.ctx.log.info("terminal %s: %s done", terminal.id, sent[1])
            else:
                self.ctx.log.error("terminal %s: %s failed (Return=%s)", terminal.id, sent[1], result["return"])
        return _text("OK")

    async def _on_ping(self, request: Request) -> PlainTextResponse:
        try:
            self._terminal(request)
        except HttpError as exc:
            return exc.response()
        return _text("OK")

    # --- commands from the access service (called on the event loop) ---

    def open_door(self, reader: str, seconds: float | None = None) -> bool:
        """Queue a door pulse of `seconds` (default `open_seconds`, 1-254 s) for terminal `reader`.

        True once queued (the terminal collects it on its next poll, within `poll_interval`);
        False for a terminal this device does not have or while the driver is not running.
        """
        terminal = self._by_id.get(str(reader))
        if terminal is None or not self._running:
            return False
        pulse = self.settings.open_seconds if seconds is None else float(seconds)
        command = _Command(next(self._ids), open_door_command(terminal.door, pulse), time.monotonic())
        self._queues[terminal.id].append(command)
        self.ctx.log.info("terminal %s: %s queued as command %d", terminal.id, command.text, command.id)
        return True

    def feedback(self, reader: str, granted: bool) -> bool:
        """Nothing to do: the terminal shows its own verdict."""
        return False


def _text(text: str, status: int = 200) -> PlainTextResponse:
    return PlainTextResponse(text if text.endswith("\n") else text + "\n", status_code=status)
