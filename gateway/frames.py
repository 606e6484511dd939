"""Where camera drivers offer their newest frame to the services that analyse it.

Frames never travel on the event bus (a queue of images would grow without bound); a camera driver
attaches its frame source here, and a service asks for the next frame newer than the one it has,
as Frigate's detectors read the newest frame from a shared buffer.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol


class FrameSource(Protocol):
    def latest(self) -> Any | None: ...

    def wait_next(self, after_index: int, timeout: float) -> Any | None: ...


class FrameHub:
    def __init__(self) -> None:
        self._sources: dict[str, FrameSource] = {}
        self._changed = threading.Condition()

    def attach(self, device_id: str, source: FrameSource | None) -> None:
        """Offer a device's frames (None withdraws them, e.g. while its driver restarts)."""
        with self._changed:
            if source is None:
                self._sources.pop(device_id, None)
            else:
                self._sources[device_id] = source
            self._changed.notify_all()

    def source(self, device_id: str) -> FrameSource | None:
        return self._sources.get(device_id)

    def wait_next(self, device_id: str, after_index: int, timeout: float) -> Any | None:
        """The next frame newer than `after_index`, or None if none came within `timeout`."""
        deadline = time.monotonic() + timeout
        source = self._sources.get(device_id)
        while source is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._changed:
                self._changed.wait(remaining)
            source = self._sources.get(device_id)
        return source.wait_next(after_index, max(0.0, deadline - time.monotonic()))
