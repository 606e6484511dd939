"""What the services that analyse camera frames share: one worker thread per camera (or gate) that
follows the camera's newest frames from the frame hub (gateway/visits.py counts people,
gateway/faces/gate_service.py recognises faces at gates, gateway/ads/audience.py measures the
audience at screens).

* `FrameFollower`: a worker thread asks for the next frame newer than the one it had; a camera
  driver that restarts attaches a new source whose frames count from 1 again, and while it
  restarts there is no source at all. The follower hides both, so each service's loop is only about
  its own analysis.
* `FrameWorkerState`, `start_worker`, `stop_worker`, `stop_workers`: a worker's thread, stop event,
  state and error, and starting and stopping the workers a service keeps by key.
* `MODEL_RETRY_INTERVAL` and `model_unavailable`: a worker whose model is missing or broken is in
  state "error" with the model's message, logged once per distinct message, and each service's loop
  tries the model again every MODEL_RETRY_INTERVAL (each loop keeps its own way of waiting).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from .frames import FrameHub, FrameSource

NO_SOURCE_WAIT_S = 0.2  # how long to wait before looking again while the camera driver is (re)starting
MODEL_RETRY_INTERVAL = 60.0  # seconds between attempts to load a missing or broken model
STOP_JOIN_S = 10.0  # how long stopping waits for a worker's thread to end


@dataclass(kw_only=True)
class FrameWorkerState:
    """The part of a service's per-camera worker that the lifecycle helpers below use; each service's
    worker dataclass extends it with its own fields (given positionally, these only by keyword)."""

    thread: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = "starting"  # starting | waiting_for_frames | running | error (and a service's own)
    error: str | None = None


def start_worker(workers: MutableMapping[Hashable, Any], key: Hashable, worker: FrameWorkerState,
                 target: Callable[[Any], None], name: str) -> None:
    """Keep `worker` as `workers[key]` and run `target(worker)` in a daemon thread called `name`."""
    worker.thread = threading.Thread(target=target, args=(worker,), name=name, daemon=True)
    workers[key] = worker
    worker.thread.start()


def stop_worker(workers: MutableMapping[Hashable, Any], key: Hashable) -> None:
    """Forget the worker kept as `workers[key]` (if any), tell it to stop and wait for its thread
    (at most STOP_JOIN_S)."""
    worker = workers.pop(key, None)
    if worker:
        worker.stop.set()
        if worker.thread:
            worker.thread.join(STOP_JOIN_S)


def stop_workers(workers: MutableMapping[Hashable, Any]) -> None:
    """Stop every worker in `workers`, one after the other."""
    for key in list(workers):
        stop_worker(workers, key)


def model_unavailable(worker: FrameWorkerState, exc: Exception, log: logging.Logger, what: str,
                      retry_s: float = MODEL_RETRY_INTERVAL) -> None:
    """`worker`'s model failed to load with `exc`: state "error" with the model's message, logged as
    "<what>: <message> (trying again every <retry_s>s)" unless it is the error the worker already has."""
    if worker.error != str(exc):
        log.error("%s: %s (trying again every %gs)", what, exc, retry_s)
    worker.state, worker.error = "error", str(exc)


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
