"""Each device's health (online / offline / error with the last error), reported on change."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Callable

from .events import utc_timestamp


class DeviceState(str, Enum):
    STARTING = "starting"
    ONLINE = "online"
    OFFLINE = "offline"
    ERROR = "error"


@dataclass
class DeviceHealth:
    device_id: str
    kind: str
    state: DeviceState = DeviceState.STARTING
    since: str = field(default_factory=utc_timestamp)
    last_error: str | None = None
    restarts: int = 0
    last_activity: float | None = None  # monotonic

    def as_dict(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        data.pop("last_activity")
        return data


class HealthRegistry:
    """Thread-safe: drivers running in threads report here as well as asyncio ones."""

    def __init__(self) -> None:
        self._devices: dict[str, DeviceHealth] = {}
        self._lock = threading.Lock()
        self._listeners: list[Callable[[DeviceHealth], None]] = []

    def on_change(self, listener: Callable[[DeviceHealth], None]) -> None:
        self._listeners.append(listener)

    def add(self, device_id: str, kind: str) -> None:
        with self._lock:
            health = self._devices.setdefault(device_id, DeviceHealth(device_id, kind))
            health.kind = kind  # a device re-configured as another kind keeps its history

    def remove(self, device_id: str) -> None:
        with self._lock:
            self._devices.pop(device_id, None)

    def set(self, device_id: str, state: DeviceState, error: str | None = None) -> None:
        """Record a state; listeners hear of it only when the state (or the error) changed."""
        with self._lock:
            health = self._devices.get(device_id)
            if health is None:
                return
            # A new reason while offline or in error is news too (connecting -> connection refused).
            if health.state == state and (state == DeviceState.ONLINE or health.last_error == error):
                return
            health.state = state
            health.since = utc_timestamp()
            if error is not None:
                health.last_error = error
            snapshot = DeviceHealth(**{**health.__dict__})
        for listener in self._listeners:
            listener(snapshot)

    def count_restart(self, device_id: str) -> None:
        with self._lock:
            if device_id in self._devices:
                self._devices[device_id].restarts += 1

    def touch(self, device_id: str) -> None:
        with self._lock:
            if device_id in self._devices:
                self._devices[device_id].last_activity = time.monotonic()

    def last_activity(self, device_id: str) -> float | None:
        health = self._devices.get(device_id)
        return health.last_activity if health else None

    def get(self, device_id: str) -> DeviceHealth | None:
        return self._devices.get(device_id)

    def all(self) -> list[DeviceHealth]:
        with self._lock:
            return list(self._devices.values())

    def summary(self) -> dict[str, int]:
        counts = {state.value: 0 for state in DeviceState}
        for health in self.all():
            counts[health.state.value] += 1
        counts["total"] = len(self._devices)
        return counts
