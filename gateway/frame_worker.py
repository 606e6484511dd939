"""Following one camera's newest frames from the frame hub: shared by the services that analyse frames.

A service's worker thread asks for the next frame newer than the one it had; a camera driver that
restarts attaches a new source whose frames count from 1 again, and while it restarts there is no
source at all. `FrameFollower` hides both, so each service's loop is only about its own analysis
(gateway/visits.py counts people, gateway/faces/gate_service.py recognises faces at gates).
"""

from __future__ import annotations

import threading
from typing import Any

from .frames import FrameHub, FrameSource

NO_SOURCE_WAIT_S = 0.2  # how long to wait before looking again while the camera driver is (re)starting


class FrameFollower:
    """The frames of `camera_id`, each at most once, newest first (older ones are skipped)."""

    def __init__(self, frames: FrameHub, camera_id: str):
        self.frames = frames
        self.camera_id = camera_id
        self._source: FrameSource | None = None
        self._last_index = 0

    def next(self, stop: threading.Event, timeout: float = 1.0) -> Any | None:
        """The next frame newer than the last one returned (a gateway.vision.capture.Frame), or None
        when none came within `timeout`, or the camera offers no frames now (after a short wait,
        cut short by `stop`)."""
        current = self.frames.source(self.camera_id)
        if current is None:  # the camera driver is (re)starting
            stop.wait(NO_SOURCE_WAIT_S)
            return None
        if current is not self._source:  # a new capture counts its frames from 1 again
            self._source, self._last_index = current, 0
        frame = current.wait_next(self._last_index, timeout=timeout)
        if frame is not None:
            self._last_index = frame.index
        return frame
