"""Where camera drivers offer their newest frame to the services that analyse it.

Frames never travel on the event bus (a queue of images would grow without bound); a camera driver
attaches its frame source here, and a service asks that source for the next frame newer than the
one it has (`source.wait_next(after_index, timeout)`), as Frigate's detectors read the newest
frame from a shared buffer.
"""

from __future__ import annotations

from typing import Any, Protocol


class FrameSource(Protocol):
    def latest(self) -> Any | None: ...

    def wait_next(self, after_index: int, timeout: float) -> Any | None: ...


class FrameHub:
    def __init__(self) -> None:
        self._sources: dict[str, FrameSource] = {}

    def attach(self, device_id: str, source: FrameSource | None) -> None:
        """Offer a device's frames (None withdraws them, e.g. while its driver restarts)."""
        if source is None:
            self._sources.pop(device_id, None)
        else:
            self._sources[device_id] = source

    def source(self, device_id: str) -> FrameSource | None:
        """The device's frame source now; a different object after a driver restart."""
        return self._sources.get(device_id)
