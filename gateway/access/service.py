"""The access service: a credential shown at a door becomes a local decision, a door pulse and events.

Readers' drivers put internal `access.card_read` / `access.keypad` events on the bus; face
terminals and the gateway's own face gates put `access.identified` (a method and a credential value
already read: a terminal's member id, a card number, a face match). For each, the
service finds the door the reader serves (or that the face gate names), asks the policy (credentials and rules last received by
`access.sync`, kept in SQLite, so it decides the same with the uplink down), drives the reader
(door output, green or red feedback) and publishes `access.granted` / `access.denied` upstream and,
on a grant, the internal `door.opened` that points and screens react to. Credential values never
leave the gateway: the events carry the method and a pseudonymous person id only.

Terminals resend an event they are not sure was received; each carries the terminal's own record
number (`terminal_serial`), and a (device, reader, record number) already decided is dropped, also
across restarts (the numbers are kept as long as the local decision log, `access.keep_events`).
Decisions are written to that local log in the background, once a second, off the decision path.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from ..bus import EventBus
from ..config import DoorConfig
from ..events import Event, utc_timestamp
from .rules import AccessPolicy
from .store import AccessStore, apply_to_policy, parse_sync
from .wiegand import WiegandError, value_from_card_read

log = logging.getLogger("gateway.access")

READ_EVENT_TYPES = ["access.card_read", "access.keypad", "access.identified"]
MAX_REMEMBERED_SERIALS = 200_000  # terminal record numbers kept in memory for de-duplication
LOG_FLUSH_INTERVAL = 1.0
LOG_PRUNE_INTERVAL = 3600.0


class DoorActuator(Protocol):
    """What a reader's driver offers the service (drivers.osdp.OsdpDriver)."""

    def open_door(self, reader: int | str, seconds: float | None) -> bool: ...

    def feedback(self, reader: int | str, granted: bool) -> bool: ...


class AccessService:
    def __init__(self, bus: EventBus, store: AccessStore, policy: AccessPolicy, doors: list[DoorConfig],
                 site_timezone: str, actuators: dict[str, DoorActuator], keep_events: float = 30 * 86400.0):
        self.bus = bus
        self.store = store
        self.actuators = actuators  # device id -> running driver (the supervisor keeps it current)
        self.policy = policy  # store.load_policy(), loaded by the caller off the event loop
        self.reconfigure(doors, site_timezone, keep_events)
        self.decisions = 0
        self.duplicates = 0
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._pending_log: list[tuple] = []
        self._pending_seen: list[tuple[str, str, str, str]] = []

    def reconfigure(self, doors: list[DoorConfig], site_timezone: str, keep_events: float | None = None) -> None:
        """A reload: doors, the site's time zone and the log's retention apply at once."""
        self._doors = {(d.device, d.reader): d for d in doors}
        self._doors_by_id = {d.id: d for d in doors}
        self.tz = ZoneInfo(site_timezone)
        if keep_events is not None:
            self.keep_events = keep_events

    def load_seen(self) -> None:
        """Remember the terminal record numbers decided within the retention (blocking: call off the loop)."""
        for key in self.store.terminal_serials(self._horizon()):
            self._remember(tuple(key))

    def _horizon(self) -> str:
        return utc_timestamp(datetime.now(timezone.utc) - timedelta(seconds=self.keep_events))

    def _remember(self, key: tuple[str, str, str]) -> None:
        self._seen[key] = None
        if len(self._seen) > MAX_REMEMBERED_SERIALS:
            self._seen.popitem(last=False)

    # ------------------------------------------------------------------------------ reads

    async def on_read(self, event: Event) -> None:
        """Bus subscriber for READ_EVENT_TYPES."""
        data = event.data
        reader = data.get("reader")
        door = self._doors_by_id.get(data["door"]) if "door" in data else self._doors.get((event.device_id, reader))
        if door is None:
            log.warning("%s reader %s serves no configured door: read ignored", event.device_id, reader)
            return
        serial = data.get("terminal_serial")
        if serial is not None:
            key = (event.device_id, str(reader), str(serial))
            if key in self._seen:
                self.duplicates += 1
                log.info("door %s: terminal record %s already decided; repeat ignored", door.id, serial)
                return
            self._remember(key)
            self._pending_seen.append((*key, event.ts))
        if event.type == "access.keypad":
            method, value = "pin", str(data.get("digits", ""))
        elif event.type == "access.identified":
            method, value = str(data.get("method")), data.get("value")
        else:
            method = "card"
            try:
                value = value_from_card_read(data)
            except WiegandError as exc:  # a bad read is a denial, with the reader showing red
                self._deny(door, method, None, f"bad_read: {exc}")
                return
        if method not in door.methods:
            self._deny(door, method, None, "method_not_allowed")
            return
        if not value:  # a face or card the terminal did not know
            self._deny(door, method, None, "unknown_credential")
            return
        decision = self.policy.decide(door.id, method, str(value), datetime.now(timezone.utc), self.tz)
        self.decisions += 1
        if decision.granted:
            self._grant(door, method, decision.person_id, decision.reason, decision.anti_passback_violation)
        else:
            self._deny(door, method, decision.person_id, str(decision.reason))

    def _grant(self, door: DoorConfig, method: str, person_id: str | None, reason: Any,
               anti_passback_violation: bool) -> None:
        actuator = self.actuators.get(door.device)
        try:
            opened = actuator is not None and bool(actuator.open_door(door.reader, door.open_for))
        except Exception as exc:  # a driver refusing (unknown reader address, port gone)
            log.error("door %s: opening failed: %s", door.id, exc)
            opened = False
        if not opened:
            # Allowed, but nothing opened: say so, rather than report a passage that did not happen.
            log.error("door %s: granted to %s but its device %s did not take the open command", door.id,
                      person_id, door.device)
            self._deny(door, method, person_id, "door_unavailable")
            return
        actuator.feedback(door.reader, True)
        data = {"door": door.id, "method": method, "person_id": person_id, "reason": str(reason)}
        if anti_passback_violation:
            data["anti_passback_violation"] = True
        self.bus.publish(Event("access.granted", door.device, data))
        self._log(door, method, person_id, True, "granted")
        self.bus.publish(Event("door.opened", door.device, {"door": door.id, "person_id": person_id,
                                                            "method": method}, internal=True))
        if person_id:
            self.policy.record_passage(door.id, person_id)

    def _deny(self, door: DoorConfig, method: str, person_id: str | None, reason: str) -> None:
        actuator = self.actuators.get(door.device)
        if actuator is not None:
            try:
                actuator.feedback(door.reader, False)
            except Exception as exc:
                log.warning("door %s: red feedback failed: %s", door.id, exc)
        self.bus.publish(Event("access.denied", door.device, {"door": door.id, "method": method,
                                                              "person_id": person_id, "reason": reason}))
        self._log(door, method, person_id, False, reason)

    # ------------------------------------------------------------------------ the local log

    def _log(self, door: DoorConfig, method: str, person_id: str | None, granted: bool, reason: str) -> None:
        self._pending_log.append((utc_timestamp(), door.id, method, person_id, granted, reason))

    async def flush_log(self) -> None:
        """Write the decisions taken since the last flush (in a worker thread)."""
        decisions, seen = self._pending_log, self._pending_seen
        if not decisions and not seen:
            return
        self._pending_log, self._pending_seen = [], []
        try:
            await asyncio.to_thread(self.store.append_log, decisions, seen)
        except Exception as exc:  # the decisions were taken and sent up; only the local copy is lost
            log.error("access log: %d decisions not written: %s", len(decisions), exc)

    async def run_housekeeping(self) -> None:
        """Flush the local log every second and prune it hourly, until cancelled (then flush)."""
        loop = asyncio.get_running_loop()
        next_prune = loop.time()
        try:
            while True:
                await self.flush_log()
                if loop.time() >= next_prune:
                    removed = await asyncio.to_thread(self.store.prune_log, self._horizon())
                    if removed:
                        log.info("access log: %d decisions older than %gs forgotten", removed, self.keep_events)
                    next_prune = loop.time() + LOG_PRUNE_INTERVAL
                await asyncio.sleep(LOG_FLUSH_INTERVAL)
        finally:
            await asyncio.shield(self.flush_log())

    async def forget_face_records(self, person_id: str) -> int:
        """A person's face data is being deleted: their face decisions leave the local log too."""
        self._pending_log = [row for row in self._pending_log if not (row[3] == person_id and row[2] == "face")]
        return await asyncio.to_thread(self.store.delete_face_records, person_id)

    # ------------------------------------------------------------------------ access.sync

    async def sync_command(self, args: dict) -> dict:
        """The `access.sync` downlink: store first (one transaction), then swap the live policy."""
        sync = parse_sync(args)  # SyncError (a CommandError) for a malformed or unordered message
        result = await asyncio.to_thread(self.store.apply, sync)
        if result.get("applied"):
            if sync.mode == "snapshot":
                self.policy = await asyncio.to_thread(apply_to_policy, sync, self.policy)
            else:
                self.policy = apply_to_policy(sync, self.policy)
        return result
