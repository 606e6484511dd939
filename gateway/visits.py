"""The visit service: people counting for every camera that has analytics configured.

Per camera, one worker thread reads the newest frame that the camera driver offers (frame hub),
keeps to the camera's target fps, runs `CameraAnalytics`, and publishes `visit.entry`,
`visit.exit`, `zone.dwell` and, every `counts_interval`, `visit.counts` on the bus. A camera whose
model is missing or broken gets no analytics (its status says why) while everything else runs.
Frames never leave this module except as the annotated set-up snapshot served to engineers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from drivers.base import DeviceConfig

from .bus import EventBus
from .events import Event, utc_timestamp
from .frame_worker import (
    MODEL_RETRY_INTERVAL,
    FrameFollower,
    FrameWorkerState,
    model_unavailable,
    start_worker,
    stop_worker,
    stop_workers,
)
from .frames import FrameHub
from .models import ModelError
from .vision.settings import AnalyticsSettings

if TYPE_CHECKING:  # the vision stack (OpenCV, onnxruntime, SciPy) loads only when a camera runs
    import numpy as np

    from .vision.capture import FpsLimiter
    from .vision.detect import PersonDetector
    from .vision.pipeline import CameraAnalytics

log = logging.getLogger("gateway.visits")


@dataclass
class CameraWorker(FrameWorkerState):  # state: starting | running | waiting_for_frames | no_analytics | error
    camera_id: str
    settings: DeviceConfig  # drivers.camera.CameraSettings
    analytics: CameraAnalytics | None = None
    limiter: FpsLimiter | None = None
    last_image: np.ndarray | None = None
    frame_size: tuple[int, int] | None = None
    interval_start: str = field(default_factory=utc_timestamp)
    next_counts: float = 0.0


class VisitService:
    def __init__(self, bus: EventBus, frames: FrameHub, models_dir: Path, threads: int = 1):
        self.bus = bus
        self.frames = frames
        self.models_dir = models_dir
        self.threads = threads
        self._workers: dict[str, CameraWorker] = {}
        self._detectors: dict[tuple, Any] = {}  # one onnxruntime session per model, shared by cameras
        self._lock = threading.Lock()

    # --------------------------------------------------------------------------- lifecycle

    def apply(self, devices: list[DeviceConfig]) -> None:
        """Run a worker for every enabled camera; restart those whose settings changed."""
        cameras = {d.id: d for d in devices if d.kind == "camera" and d.enabled}
        for camera_id in list(self._workers):
            if camera_id not in cameras or cameras[camera_id] != self._workers[camera_id].settings:
                stop_worker(self._workers, camera_id)
        for camera_id, settings in cameras.items():
            if camera_id not in self._workers:
                _load_vision_stack()
                start_worker(self._workers, camera_id, CameraWorker(camera_id, settings), self._run,
                             f"visits-{camera_id}")

    def stop(self) -> None:
        stop_workers(self._workers)

    # ----------------------------------------------------------------------------- reading

    def cameras(self) -> list[dict[str, Any]]:
        if not self._workers:
            return []
        from .vision.capture import redact_url

        out = []
        for worker in list(self._workers.values()):
            analytics = worker.analytics
            limiter = worker.limiter
            out.append({
                "id": worker.camera_id,
                "url": redact_url(worker.settings.url),  # camera URLs carry passwords
                "state": worker.state,
                "error": worker.error,
                "target_fps": worker.settings.fps,
                "frame_size": worker.frame_size,
                "frames_read": getattr(self.frames.source(worker.camera_id), "frames_read", 0),
                "frames_processed": limiter.processed if limiter else 0,
                "frames_skipped": limiter.skipped if limiter else 0,
                "frames_inferred": analytics.frames_inferred if analytics else 0,
                "processing_fps": round(limiter.rate(), 2) if limiter else 0.0,
                "stage_times": analytics.times.summary() if analytics else {},
                "counts": analytics.lines.totals if analytics else {},
                "occupancy": analytics.zones.occupancy() if analytics else {},
            })
        return out

    def snapshot(self, camera_id: str) -> bytes | None:
        """The newest frame with boxes, track ids, lines and zones drawn (None: no frame yet)."""
        worker = self._workers.get(camera_id)
        if worker is None:
            raise KeyError(camera_id)
        image = worker.last_image
        if image is None:
            source = self.frames.source(camera_id)
            frame = source.latest() if source else None
            image = frame.image if frame is not None else None
        if image is None:
            return None
        from .vision.draw import annotate, encode_jpeg

        analytics = worker.analytics
        drawn = annotate(image, worker.settings.analytics, analytics.last_tracks if analytics else [],
                         analytics.zones.occupancy() if analytics else None)
        return encode_jpeg(drawn)

    # ------------------------------------------------------------------------------ worker

    def _detector(self, settings: AnalyticsSettings) -> PersonDetector:
        key = (settings.detector, settings.detector_family, settings.score_threshold, settings.nms_iou)
        with self._lock:  # cameras with the same settings share one detector (one onnxruntime session)
            if key not in self._detectors:
                from .vision.detect import detector_for

                self._detectors[key] = detector_for(settings, self.models_dir, self.threads)
            return self._detectors[key]

    def _load_detector(self, worker: CameraWorker) -> PersonDetector | None:
        try:
            detector = self._detector(worker.settings.analytics)
        except (ModelError, ValueError) as exc:
            model_unavailable(worker, exc, log, f"camera {worker.camera_id}: no analytics", MODEL_RETRY_INTERVAL)
            return None
        worker.state, worker.error = "waiting_for_frames", None
        return detector

    def _run(self, worker: CameraWorker) -> None:
        from .vision.capture import FpsLimiter

        settings = worker.settings
        worker.limiter = FpsLimiter(settings.fps)
        detector, model_tried = None, -MODEL_RETRY_INTERVAL
        if settings.analytics is None:
            worker.state = "no_analytics"
        follower = FrameFollower(self.frames, worker.camera_id)
        worker.next_counts = time.monotonic() + (settings.analytics.counts_interval if settings.analytics else 0)
        while not worker.stop.is_set():
            if settings.analytics is not None and detector is None \
                    and time.monotonic() - model_tried >= MODEL_RETRY_INTERVAL:
                # A model copied in (gateway models fetch) is picked up without a restart.
                model_tried = time.monotonic()
                detector = self._load_detector(worker)
            frame = follower.next(worker.stop)
            if frame is None:
                if worker.state == "running":
                    worker.state = "waiting_for_frames"
                continue
            if not worker.limiter.due(time.monotonic()):
                continue
            worker.last_image = frame.image
            worker.frame_size = (frame.image.shape[1], frame.image.shape[0])
            if detector is None:
                continue
            try:
                self._analyse(worker, detector, frame)
            except Exception as exc:  # a bad frame or a model failure must not end the worker
                worker.state, worker.error = "error", f"{type(exc).__name__}: {exc}"
                log.exception("camera %s: analytics failed on frame %d", worker.camera_id, frame.index)
                continue
            if time.monotonic() >= worker.next_counts:
                self._publish_counts(worker)
        self._publish_counts(worker)  # the unfinished interval is not thrown away on stop or reload

    def _publish_counts(self, worker: CameraWorker) -> None:
        if worker.analytics is None:
            return
        data = worker.analytics.interval_counts()
        data.update({"start": worker.interval_start, "end": utc_timestamp()})
        worker.interval_start = data["end"]
        worker.next_counts = time.monotonic() + worker.settings.analytics.counts_interval
        try:
            self.bus.publish(Event("visit.counts", worker.camera_id, data))
        except RuntimeError:  # the bus has stopped
            log.warning("camera %s: last counts not sent, the bus has stopped", worker.camera_id)

    def _analyse(self, worker: CameraWorker, detector: PersonDetector, frame) -> None:
        if worker.analytics is None or worker.analytics.frame_size != worker.frame_size:
            from .vision.pipeline import CameraAnalytics

            worker.analytics = CameraAnalytics(worker.camera_id, worker.settings.analytics, detector,
                                               worker.frame_size, worker.settings.fps)
        result = worker.analytics.process(frame.image, frame.ts)
        worker.state, worker.error = "running", None
        ts = utc_timestamp(datetime.fromtimestamp(frame.ts, timezone.utc))  # when the frame was taken
        for event_type, data in result.events:
            self.bus.publish(Event(event_type, worker.camera_id, data, ts=ts))
        if result.inferred:  # from the frame leaving the camera's stream to its events on the bus
            worker.analytics.times.add("frame_to_event", (time.time() - frame.ts) * 1000)


def _load_vision_stack() -> None:
    import cv2

    # One OpenCV thread per call: with a worker thread per camera on a small CPU, OpenCV's own
    # pool only adds wake-ups (motion check p95 4.4 ms with 2 threads, 0.6 ms with 1).
    cv2.setNumThreads(1)
