"""The event envelope: the one shape in which everything leaves the gateway.

An `Event` is what drivers and services produce (type, device, data). The outbox turns it into an
envelope by adding the site, the gateway and a per-gateway sequence number at the moment it is
committed, so that `seq` is strictly increasing in commit order and never re-numbered.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import IntEnum
from typing import Any

import orjson
import uuid_utils

EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
DEVICE_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Streams become topic levels under .../up/; `ack` is taken by command acks.
RESERVED_STREAMS = frozenset({"ack"})
MAX_EVENT_TYPE_LENGTH = 64


def check_event_type(event_type: str) -> str:
    """The type itself, or ValueError saying why it cannot be an event type."""
    if not isinstance(event_type, str) or len(event_type) > MAX_EVENT_TYPE_LENGTH \
            or not EVENT_TYPE_PATTERN.match(event_type):
        raise ValueError(f"event type must be dotted lower case like visit.entry, got {event_type!r}")
    if stream_of(event_type) in RESERVED_STREAMS:
        raise ValueError(f"event type {event_type!r}: the stream {stream_of(event_type)!r} is reserved")
    return event_type


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_PATTERN.match(device_id):
        raise ValueError(f"device id must be letters, digits and _.:- (starting with a letter or digit), "
                         f"got {device_id!r}")
    return device_id


def new_event_id() -> str:
    """A UUIDv7: time-ordered (48-bit ms timestamp first) and unique without coordination."""
    return str(uuid_utils.uuid7())


def utc_timestamp(moment: datetime | None = None) -> str:
    """UTC ISO-8601 with milliseconds and a `Z`, e.g. 2026-11-22T07:45:25.123Z."""
    if moment is None:  # the hot path: every event is stamped (twice as fast as datetime)
        now = time.time()
        seconds = int(now)
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((now - seconds) * 1000):03d}Z"
    if moment.tzinfo is None:
        raise ValueError("timestamp must carry a time zone")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def normalise_timestamp(text: str) -> str:
    """Parse an ISO-8601 time with a zone (as handed in by a local system) into our UTC form."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"time has no zone (add Z or +08:00): {text!r}")
    return utc_timestamp(moment)


def stream_of(event_type: str) -> str:
    """The uplink stream (topic suffix) of a type: its first dotted segment."""
    return event_type.split(".", 1)[0]


class Priority(IntEnum):
    """What the outbox may drop when it is full: LOW first, then NORMAL, CRITICAL never."""

    LOW = 0
    NORMAL = 1
    CRITICAL = 2


@dataclass(frozen=True, slots=True)
class Event:
    """An event produced on this gateway, before the outbox numbers it."""

    type: str
    device_id: str
    data: dict[str, Any]
    event_id: str = field(default_factory=new_event_id)
    ts: str = field(default_factory=utc_timestamp)
    # Internal events (e.g. `door.opened`) travel on the bus between services and never go up.
    internal: bool = False

    def __post_init__(self) -> None:
        # Checked where events are made, so a bad one fails in the driver that made it, not later
        # inside a transaction shared with other events.
        check_event_type(self.type)
        check_device_id(self.device_id)

    @property
    def stream(self) -> str:
        return stream_of(self.type)


def envelope_parts(event: Event, *, site_id: str, gateway_id: str) -> tuple[bytes, bytes]:
    """The envelope as compact UTF-8 JSON, split where `seq` goes: `head + b"%d" % seq + tail`.

    The producer encodes (and so validates) the event; the outbox writer only fills in the seq it
    assigns at commit. JSON has no NaN or Infinity: such numbers are sent as null. Raises ValueError
    for data that cannot be JSON at all (non-string keys, arbitrary objects).
    """
    head = orjson.dumps({"event_id": event.event_id, "type": event.type, "ts": event.ts, "site_id": site_id,
                         "gateway_id": gateway_id, "device_id": event.device_id})
    try:
        data = orjson.dumps(event.data)
    except TypeError as exc:  # orjson.JSONEncodeError
        raise ValueError(f"{event.type} from {event.device_id}: data is not JSON: {exc}") from None
    return head[:-1] + b',"seq":', b',"data":' + data + b"}"


def envelope_json(event: Event, *, site_id: str, gateway_id: str, seq: int) -> str:
    """The envelope as compact JSON text (the outbox keeps it as UTF-8 bytes of the same text)."""
    head, tail = envelope_parts(event, site_id=site_id, gateway_id=gateway_id)
    return (head + str(seq).encode() + tail).decode("utf-8")
