"""The access service: a credential shown at a door becomes a local decision, a door pulse and events.

Readers' drivers put internal `access.card_read` / `access.keypad` events on the bus. For each, the
service finds the door the reader serves, asks the policy (credentials and rules last received by
`access.sync`, kept in SQLite, so it decides the same with the uplink down), drives the reader
(door output, green or red feedback) and publishes `access.granted` / `access.denied` upstream and,
on a grant, the internal `door.opened` that points and screens react to. Credential values never
leave the gateway: the events carry the method and a pseudonymous person id only.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from ..bus import EventBus
from ..config import DoorConfig
from ..events import Event
from .rules import AccessPolicy
from .store import AccessStore, apply_to_policy, parse_sync
from .wiegand import WiegandError, value_from_card_read

log = logging.getLogger("gateway.access")


class DoorActuator(Protocol):
    """What a reader's driver offers the service (drivers.osdp.OsdpDriver)."""

    def open_door(self, reader_address: int, seconds: float | None) -> bool: ...

    def feedback(self, reader_address: int, granted: bool) -> bool: ...


class AccessService:
    def __init__(self, bus: EventBus, store: AccessStore, policy: AccessPolicy, doors: list[DoorConfig],
                 site_timezone: str, actuators: dict[str, DoorActuator]):
        self.bus = bus
        self.store = store
        self.actuators = actuators  # device id -> running driver (the supervisor keeps it current)
        self.policy = policy  # store.load_policy(), loaded by the caller off the event loop
        self.reconfigure(doors, site_timezone)
        self.decisions = 0

    def reconfigure(self, doors: list[DoorConfig], site_timezone: str) -> None:
        """A reload: doors and the site's time zone apply at once."""
        self._doors = {(d.device, d.reader): d for d in doors}
        self.tz = ZoneInfo(site_timezone)

    # ------------------------------------------------------------------------------ reads

    async def on_read(self, event: Event) -> None:
        """Bus subscriber for `access.card_read` and `access.keypad`."""
        reader = event.data.get("reader")
        door = self._doors.get((event.device_id, reader))
        if door is None:
            log.warning("%s reader %s serves no configured door: read ignored", event.device_id, reader)
            return
        if event.type == "access.keypad":
            method, value = "pin", str(event.data.get("digits", ""))
        else:
            method = "card"
            try:
                value = value_from_card_read(event.data)
            except WiegandError as exc:  # a bad read is a denial, with the reader showing red
                self._deny(door, method, None, f"bad_read: {exc}")
                return
        decision = self.policy.decide(door.id, method, value, datetime.now(timezone.utc), self.tz)
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
