"""Hikvision face terminals (ISAPI): they recognise faces themselves and push their events to us.

The terminal's "HTTP listening" (httpHosts notification) posts each access-control event to the
gateway, either as `application/json`:

    {"ipAddress": "10.0.0.5", "macAddress": "...", "dateTime": "2026-11-22T10:00:00+08:00",
     "eventType": "AccessControllerEvent",
     "AccessControllerEvent": {"majorEventType": 5, "subEventType": 75, "employeeNoString": "M-1",
                               "serialNo": 1234, "cardNo": "...", "doorNo": 1, ...}}

or as `multipart/form-data` (or `multipart/mixed`) whose parts are that JSON (part name
`AccessControllerEvent` or `event_log`, or any part of type application/json) and JPEG pictures.
Pictures are dropped as they arrive, chunk by chunk: they are never buffered whole, stored,
forwarded or logged. Heartbeats (`eventType: heartBeat`) and XML notifications only show that the
terminal is alive.

Each credential presentation (major type 5, a minor type in `SUB_EVENTS`) becomes one internal
`access.identified` event: `{"reader": <terminal id>, "method": "face"|"card"|"pin"|"fingerprint",
"value": <credential or None>, "terminal_serial": <serialNo>, "terminal_time": <dateTime>}`. Values:
face, fingerprint and PIN presentations carry the terminal's employee number (`employeeNoString`);
cards `cardno:<decimal number without leading zeros>`; a stranger's face (76, 80), an unknown
fingerprint, a failed password carry None. A card the terminal refused (no right, expired, unknown
number) still carries its number: the gateway decides, from its own list. Door, tamper and other
device events are not credentials and are ignored. The terminal gets 200 once the event is on the
bus; the access service de-duplicates repeated pushes by `terminal_serial` (an event without
`serialNo` gets `<dateTime>|<major>|<minor>|<value>`).

Who pushed: a push is accepted only from an address in `allow` (by default the terminals' hosts);
anybody else gets 403. It is attributed to the terminal whose `host` is its source address; when
several terminals share that address (a NAT in between) or the source is allowed through a CIDR
but is no terminal's host, the event's own `macAddress` (matched against the terminal's `mac`),
then its `ipAddress` (against `host`), decides; an event that still matches no single terminal is
refused with 403.

Remote open: `open_door` issues `PUT /ISAPI/AccessControl/RemoteControl/door/<door_no>` with
`<RemoteControlDoor><cmd>open</cmd></RemoteControlDoor>` and HTTP digest auth, as a task on the
event loop (never blocking the caller); a failure is logged. ISAPI's remote open has no duration:
the door stays open for the terminal's own configured time, `seconds` is ignored. `feedback` does
nothing: the terminal shows its own verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator
from python_multipart.multipart import (
    MultipartParseError,
    MultipartParser,
    parse_options_header,
)
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
    iter_body,
    keep_watch,
    short_text,
    source_of,
    terminal_addresses,
    terminals_allow_list,
)
from .registry import register

MAX_JSON_PART = 256 * 1024  # one event's JSON; far below this in practice
JSON_PART_NAMES = {"accesscontrollerevent", "event_log"}
JSON_TYPES = {"application/json", "text/json", "text/plain"}
XML_TYPES = {"application/xml", "text/xml"}

MAJOR_EVENT = 5  # "event" (as opposed to alarm 1, exception 2, operation 3)
# Minor types of major type 5 that are a credential shown at the terminal: method, and whether the
# terminal recognised the person (employee number) or only the card number counts.
FACE, CARD, PIN, FINGERPRINT = "face", "card", "pin", "fingerprint"
SUB_EVENTS: dict[int, tuple[str, bool]] = {
    0x01: (CARD, True),          # MINOR_LEGAL_CARD_PASS: valid card
    0x02: (CARD, True),          # MINOR_CARD_AND_PSW_PASS
    0x03: (CARD, True),          # MINOR_CARD_AND_PSW_FAIL
    0x06: (CARD, True),          # MINOR_CARD_NO_RIGHT
    0x07: (CARD, True),          # MINOR_CARD_INVALID_PERIOD
    0x08: (CARD, True),          # MINOR_CARD_OUT_OF_DATE
    0x09: (CARD, True),          # MINOR_INVALID_CARD: no such card on the terminal
    0x26: (FINGERPRINT, True),   # MINOR_FINGERPRINT_COMPARE_PASS
    0x27: (FINGERPRINT, False),  # MINOR_FINGERPRINT_COMPARE_FAIL
    0x31: (FINGERPRINT, False),  # MINOR_FINGERPRINT_INEXISTENCE
    0x36: (FACE, True),          # MINOR_FACE_AND_FP_VERIFY_PASS
    0x39: (FACE, True),          # MINOR_FACE_AND_PW_VERIFY_PASS
    0x3C: (FACE, True),          # MINOR_FACE_AND_CARD_VERIFY_PASS
    0x3F: (FACE, True),          # MINOR_FACE_AND_PW_AND_FP_VERIFY_PASS
    0x42: (FACE, True),          # MINOR_FACE_CARD_AND_FP_VERIFY_PASS
    0x4B: (FACE, True),          # 75 MINOR_FACE_VERIFY_PASS
    0x4C: (FACE, False),         # 76 MINOR_FACE_VERIFY_FAIL: a stranger
    0x4D: (FACE, True),          # MINOR_EMPLOYEENO_AND_FACE_VERIFY_PASS
    0x50: (FACE, False),         # 80 MINOR_FACE_RECOGNIZE_FAIL
    0x68: (PIN, True),           # MINOR_EMPLOYEENO_AND_PW_PASS
    0x96: (PIN, False),          # MINOR_PSW_VERIFY_FAIL
    0x97: (PIN, False),          # MINOR_PASSWORD_MISMATCH
    0xB5: (PIN, True),           # MINOR_PASSWD_VERIFY_PASS
}
REMOTE_OPEN_BODY = "<RemoteControlDoor><cmd>open</cmd></RemoteControlDoor>"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?[0-9a-f]{2}){5}$")


class BadEvent(ValueError):
    """An ISAPI push that is not what a terminal sends (answered 400, or 415 for the type)."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


# -------------------------------------------------------------------------------- the parsers


def _media_type(content_type: str) -> tuple[str, dict[bytes, bytes]]:
    try:
        ctype, params = parse_options_header(content_type or "")
    except Exception:  # noqa: BLE001 - untrusted header
        raise BadEvent("unreadable Content-Type") from None
    return ctype.decode("latin-1").strip().lower(), params


def _load_event(raw: bytes) -> dict:
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadEvent("body is not JSON") from None
    if not isinstance(event, dict):
        raise BadEvent("event JSON is not an object")
    if not isinstance(event.get("eventType", ""), str):
        raise BadEvent("eventType is not a string")
    return event


class IsapiBodyParser:
    """An ISAPI push body, fed chunk by chunk: JSON, XML, or multipart with JSON and pictures.

    `feed(chunk)` as the body arrives, then `finish()` -> the event objects (dicts) in the body.
    Multipart pictures are dropped in `feed`, chunk by chunk, never kept. BadEvent for anything a
    terminal does not send.
    """

    def __init__(self, content_type: str):
        self.media_type, params = _media_type(content_type)
        self.events: list[dict] = []
        self._buffer = bytearray()
        self._multipart: MultipartParser | None = None
        if self.media_type.startswith("multipart/"):
            boundary = params.get(b"boundary")
            if not boundary or len(boundary) > 200:
                raise BadEvent("multipart body without a usable boundary")
            self._parts: list[bytes] = []
            self._part: bytearray | None = None  # the JSON part being read, None while skipping one
            self._header_field = bytearray()
            self._header_value = bytearray()
            self._headers: dict[str, str] = {}
            self._ended = False
            try:
                self._multipart = MultipartParser(boundary, callbacks={
                    "on_part_begin": self._on_part_begin, "on_header_field": self._on_header_field,
                    "on_header_value": self._on_header_value, "on_header_end": self._on_header_end,
                    "on_headers_finished": self._on_headers_finished, "on_part_data": self._on_part_data,
                    "on_part_end": self._on_part_end, "on_end": self._on_end}, max_header_count=16)
            except Exception:  # noqa: BLE001 - a boundary python-multipart refuses
                raise BadEvent("unusable multipart boundary") from None
        elif self.media_type not in JSON_TYPES | XML_TYPES:
            raise BadEvent(f"unsupported Content-Type {self.media_type or '(none)'}", status=415)

    def feed(self, chunk: bytes) -> None:
        if self._multipart is not None:
            try:
                self._multipart.write(chunk)
            except MultipartParseError:
                raise BadEvent("malformed multipart body") from None
        elif self.media_type in JSON_TYPES:
            if len(self._buffer) + len(chunk) > MAX_JSON_PART:
                raise BadEvent("event JSON too large", status=413)
            self._buffer += chunk
        # XML notifications (heartbeats, other event kinds) carry no credential: not kept

    def finish(self) -> list[dict]:
        if self._multipart is not None:
            if not self._ended:
                raise BadEvent("truncated multipart body")
            events = [_load_event(part) for part in self._parts]
            if not events:
                raise BadEvent("multipart body without an event part")
            return events
        if self.media_type in JSON_TYPES:
            return [_load_event(bytes(self._buffer))]
        return []

    # --- python-multipart callbacks ---

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part = None

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        if len(self._header_value) > 4096:
            raise BadEvent("multipart header too long")

    def _on_header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").strip().lower()] = \
            self._header_value.decode("latin-1").strip()
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        ctype, _ = _media_type(self._headers.get("content-type", ""))
        name = ""
        disposition = self._headers.get("content-disposition")
        if disposition:
            try:
                _, params = parse_options_header(disposition)
            except Exception:  # noqa: BLE001
                raise BadEvent("unreadable Content-Disposition") from None
            name = params.get(b"name", b"").decode("latin-1").strip().lower()
        if name in JSON_PART_NAMES or ctype in ("application/json", "text/json"):
            self._part = bytearray()
        else:
            self._part = None  # a picture (or anything else): its bytes are dropped as they come

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part is not None:
            if len(self._part) + (end - start) > MAX_JSON_PART:
                raise BadEvent("event JSON part too large", status=413)
            self._part += data[start:end]

    def _on_part_end(self) -> None:
        if self._part is not None:
            self._parts.append(bytes(self._part))
        self._part = None

    def _on_end(self) -> None:
        self._ended = True


def parse_isapi_event(content_type: str, body: bytes) -> list[dict]:
    """The event objects in one ISAPI push body (JSON or multipart); [] for XML. BadEvent if bad."""
    parser = IsapiBodyParser(content_type)
    parser.feed(body)
    return parser.finish()


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 12:
        return int(value.strip())
    return None


def isapi_presentation(event: dict) -> dict | None:
    """What a pushed event means as a credential shown at the terminal, or None when it is not one.

    -> {"method", "value", "terminal_serial", "terminal_time"}; `reader` is added by the driver.
    """
    if event.get("eventType") != "AccessControllerEvent":
        return None
    ace = event.get("AccessControllerEvent")
    if not isinstance(ace, dict) or _int(ace.get("majorEventType")) != MAJOR_EVENT:
        return None
    sub = _int(ace.get("subEventType"))
    if sub not in SUB_EVENTS:
        return None
    method, recognised = SUB_EVENTS[sub]
    if method == CARD:
        value = card_value(ace.get("cardNo"))
    elif recognised:
        value = short_text(ace.get("employeeNoString")) or short_text(ace.get("employeeNo"))
    else:
        value = None
    time_ = event.get("dateTime")
    terminal_time = time_ if isinstance(time_, str) and len(time_) <= 64 else None
    serial = _int(ace.get("serialNo"))
    terminal_serial = str(serial) if serial is not None else \
        f"{terminal_time}|{MAJOR_EVENT}|{sub}|{value}"
    return {"method": method, "value": value, "terminal_serial": terminal_serial, "terminal_time": terminal_time}


def normalise_mac(mac: Any) -> str | None:
    if not isinstance(mac, str):
        return None
    mac = mac.strip().lower()
    if not _MAC.match(mac):
        return None
    digits = mac.replace(":", "").replace("-", "")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


# --------------------------------------------------------------------------------- settings


class HikvisionTerminalSettings(StrictModel):
    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                    description="the terminal's name, the `reader` of its door in `access.doors`")
    host: str = Field(..., min_length=1, description="the terminal's address (it pushes from there; remote open goes there)")
    port: int = Field(80, ge=1, le=65535, description="the terminal's ISAPI port")
    scheme: Literal["http", "https"] = "http"
    verify_tls: bool = Field(True, description="https: check the terminal's certificate")
    username: str = Field(..., min_length=1, description="ISAPI user allowed to open the door")
    password: SecretStr = Field(..., description="that user's password (digest auth)")
    door_no: int = Field(1, ge=1, le=255, description="the terminal's door number for remote open")
    mac: str | None = Field(None, description="the terminal's MAC address, to tell apart terminals behind one address")

    @field_validator("mac")
    @classmethod
    def _mac_format(cls, value: str | None) -> str | None:
        if value is None:
            return None
        mac = normalise_mac(value)
        if mac is None:
            raise ValueError(f"{value!r} is not a MAC address")
        return mac


class HikvisionSettings(PushListenerSettings):
    kind: Literal["hikvision_terminal"]
    listen_port: int = Field(8091, ge=0, le=65535, description="TCP port the terminals push to (0: any free port)")
    path: str = Field("/isapi/events", pattern=r"^/[A-Za-z0-9._~/-]*$", description="the URL path the terminals post to")
    terminals: list[HikvisionTerminalSettings] = Field(..., min_length=1)
    request_timeout: Duration = Field(5.0, gt=0, description="timeout of a remote-open request to a terminal")

    @field_validator("terminals")
    @classmethod
    def _ids_unique(cls, terminals: list[HikvisionTerminalSettings]) -> list[HikvisionTerminalSettings]:
        repeated = duplicates(terminal.id for terminal in terminals)
        if repeated:
            raise ValueError(f"terminal id {repeated[0]!r} is used twice")
        return terminals

    @model_validator(mode="after")
    def _path_not_root(self) -> HikvisionSettings:
        if self.path == "/":
            raise ValueError("path must not be /")
        return self


# ----------------------------------------------------------------------------------- driver


def _skips_tls_check(terminal: HikvisionTerminalSettings) -> bool:
    """An https terminal whose certificate is not checked (`verify_tls: false`)."""
    return terminal.scheme == "https" and not terminal.verify_tls


@register
class HikvisionDriver(Driver):
    kind = "hikvision_terminal"
    Settings = HikvisionSettings

    def __init__(self, settings: DeviceConfig, ctx: Any):
        super().__init__(settings, ctx)
        self._terminals: dict[str, HikvisionTerminalSettings] = {t.id: t for t in settings.terminals}  # type: ignore[attr-defined]
        self._addresses: dict[str, set[str]] = {}  # filled by run(): each terminal's host and its IPs
        self._allow = AllowList([])
        self._liveness: TerminalLiveness | None = None
        self._client: httpx.AsyncClient | None = None
        self._insecure_client: httpx.AsyncClient | None = None  # for https terminals with verify_tls false
        self._tasks: set[asyncio.Task] = set()
        self.port: int | None = None  # the bound listener port, once running

    # --- running ---

    async def run(self) -> None:
        settings: HikvisionSettings = self.settings  # type: ignore[assignment]
        self._addresses.update(await terminal_addresses(self._terminals.values(), self.ctx.log))
        self._allow = terminals_allow_list(settings.allow, self._addresses)
        self._liveness = TerminalLiveness(self.ctx, self._terminals, settings.stale_after)
        app = Starlette(routes=[Route(settings.path, self._on_push, methods=["POST", "PUT"])])
        # Remote opens: one client, plus one that checks no certificate if some terminal needs it.
        insecure = any(_skips_tls_check(t) for t in self._terminals.values())
        async with (httpx.AsyncClient(timeout=settings.request_timeout) as client,
                    (httpx.AsyncClient(timeout=settings.request_timeout, verify=False) if insecure
                     else contextlib.nullcontext()) as insecure_client,
                    HttpListener(app, settings.listen_host, settings.listen_port, self.ctx.log,
                                 name=f"{self.ctx.device_id}-listener") as listener):
            self._client = client
            self._insecure_client = insecure_client
            self.port = listener.port
            try:
                await keep_watch(listener, self._liveness, settings.stale_after)
            finally:
                self._client = self._insecure_client = None
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- pushes ---

    async def _on_push(self, request: Request) -> PlainTextResponse:
        settings: HikvisionSettings = self.settings  # type: ignore[assignment]
        try:
            source = check_source(request, self._allow, self.ctx.log)
            parser = IsapiBodyParser(request.headers.get("content-type", ""))
            async for chunk in iter_body(request, int(settings.max_body)):
                parser.feed(chunk)
            events = parser.finish()
            if not events:  # an XML notification: only the source tells who is alive
                terminal = self._attribute(source, {})
                if terminal is not None and self._liveness is not None:
                    self._liveness.heard(terminal)
                return PlainTextResponse("OK\n")
            terminals = [self._attribute(source, event) for event in events]
        except HttpError as exc:
            if exc.status != 403:
                self.ctx.log.warning("push from %s refused: %s", source_of(request), exc.reason)
            return exc.response()
        except BadEvent as exc:
            self.ctx.log.warning("push from %s refused: %s", source_of(request), exc)
            return PlainTextResponse(f"{exc}\n", status_code=exc.status)
        if None in terminals:
            self.ctx.log.warning("push from %s refused: it matches no single configured terminal", source)
            return PlainTextResponse("unknown terminal\n", status_code=403)
        for terminal, event in zip(terminals, events):
            assert terminal is not None
            if self._liveness is not None:
                self._liveness.heard(terminal)
            presentation = isapi_presentation(event)
            if presentation is None:
                continue
            self.ctx.emit("access.identified", {"reader": terminal, **presentation}, internal=True)
        return PlainTextResponse("OK\n")

    def _attribute(self, source: str, event: dict) -> str | None:
        """The id of the terminal that pushed `event` from `source`, or None (see the module doc)."""
        by_source = [tid for tid, addrs in self._addresses.items() if source in addrs]
        if len(by_source) == 1:
            return by_source[0]
        candidates = by_source or list(self._terminals)
        mac = normalise_mac(event.get("macAddress"))
        if mac is not None:
            matches = [tid for tid in candidates if self._terminals[tid].mac == mac]
            if len(matches) == 1:
                return matches[0]
        ip = event.get("ipAddress")
        if isinstance(ip, str):
            matches = [tid for tid in candidates if ip.strip() in self._addresses[tid]]
            if len(matches) == 1:
                return matches[0]
        return None

    # --- commands from the access service (called on the event loop) ---

    def open_door(self, reader: str, seconds: float | None = None) -> bool:
        """Ask terminal `reader` to open its door (ISAPI remote open, digest auth), without waiting.

        True once the request is scheduled; False for a terminal this device does not have or
        while the driver is not running. The request's failure is logged. `seconds` is ignored:
        ISAPI opens the door for the terminal's own configured time.
        """
        terminal = self._terminals.get(str(reader))
        if terminal is None:
            return False
        client = self._insecure_client if _skips_tls_check(terminal) else self._client
        if client is None:  # not running
            return False
        task = asyncio.get_running_loop().create_task(self._remote_open(terminal, client),
                                                      name=f"{self.ctx.device_id}-open-{terminal.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def feedback(self, reader: str, granted: bool) -> bool:
        """Nothing to do: the terminal shows its own verdict."""
        return False

    async def _remote_open(self, terminal: HikvisionTerminalSettings, client: httpx.AsyncClient) -> bool:
        host = f"[{terminal.host}]" if ":" in terminal.host else terminal.host
        url = f"{terminal.scheme}://{host}:{terminal.port}/ISAPI/AccessControl/RemoteControl/door/{terminal.door_no}"
        auth = httpx.DigestAuth(terminal.username, terminal.password.get_secret_value())
        try:
            response = await client.put(url, content=REMOTE_OPEN_BODY, auth=auth,
                                        headers={"Content-Type": "application/xml"})
        except httpx.HTTPError as exc:
            self.ctx.log.error("terminal %s: remote open failed: %s", terminal.id, exc or type(exc).__name__)
            return False
        if response.status_code != 200:
            self.ctx.log.error("terminal %s: remote open refused: HTTP %d", terminal.id, response.status_code)
            return False
        self.ctx.log.info("terminal %s: door %d opened remotely", terminal.id, terminal.door_no)
        return True
