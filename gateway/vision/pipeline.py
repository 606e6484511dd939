"""One camera's analytics: motion gate -> person detector -> tracker -> lines and zones -> events.

`CameraAnalytics.process(image, now)` takes one frame and returns what happened in it; it knows
nothing of where frames come from (a live stream in the visit service, a file in the replay tool)
nor where events go. `now` is the frame's time in seconds (wall clock live, video time in replay).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .count import CountingLine, IntervalAggregator, LineCounter, Zone, ZoneMonitor
from .detect import Detections, PersonDetector
from .motion import MotionGate
from .settings import AnalyticsSettings
from .track import Track, Tracker

# Called after tracking with (image, tracks, now): where face recognition attaches members to
# tracks (the face-gate work) without the counting code knowing about faces.
TrackObserver = Callable[[np.ndarray, list[Track], float], None]


@dataclass
class StageTimes:
    """Rolling per-stage timings in milliseconds (last 500 frames)."""

    samples: dict[str, deque] = field(default_factory=dict)

    def add(self, stage: str, ms: float) -> None:
        self.samples.setdefault(stage, deque(maxlen=500)).append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for stage, values in self.samples.items():
            arr = np.fromiter(values, float)
            out[stage] = {"mean_ms": round(float(arr.mean()), 2), "p95_ms": round(float(np.percentile(arr, 95)), 2)}
        return out


@dataclass
class FrameResult:
    inferred: bool
    detections: Detections | None
    tracks: list[Track]
    events: list[tuple[str, dict[str, Any]]]  # (type, data) of visit.entry / visit.exit / zone.dwell


def _point_in_polygons(points: np.ndarray, polygons: list[np.ndarray]) -> np.ndarray:
    """Which of the points (N,2) fall in any of the polygons (ray casting, vectorised per polygon)."""
    inside = np.zeros(len(points), bool)
    for poly in polygons:
        x, y = points[:, 0:1], points[:, 1:2]
        x1, y1 = poly[:, 0], poly[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        crosses = ((y1 > y) != (y2 > y)) & (x < (x2 - x1) * (y - y1) / np.where(y2 == y1, 1e-9, y2 - y1) + x1)
        inside |= (crosses.sum(axis=1) % 2) == 1
    return inside


class CameraAnalytics:
    def __init__(self, camera_id: str, settings: AnalyticsSettings, detector: PersonDetector,
                 frame_size: tuple[int, int], fps: float):
        self.camera_id = camera_id
        self.settings = settings
        self.detector = detector
        self.frame_size = frame_size
        self.motion = MotionGate(frame_size, rois=settings.regions, masks=settings.masks,
                                 threshold=settings.motion.threshold, max_interval=settings.motion.max_interval) \
            if settings.motion.enabled else None
        t = settings.tracker
        # max_age counts tracker updates; frames the motion gate skips are not updates, so a still
        # scene (nothing moving, nothing to lose) does not age its tracks.
        self.tracker = Tracker(high_threshold=t.high_threshold, low_threshold=t.low_threshold,
                               new_track_threshold=t.new_track_threshold, match_iou=t.match_iou,
                               min_hits=t.min_hits, max_age=max(1, round(t.max_age * fps)))
        self.lines = LineCounter([CountingLine(line.id, [tuple(p) for p in line.points], in_side=line.in_side,
                                               hysteresis=line.hysteresis) for line in settings.lines],
                                 reference=settings.reference)
        self.zones = ZoneMonitor([Zone(zone.id, [tuple(p) for p in zone.polygon]) for zone in settings.zones],
                                 reference=settings.reference)
        self.counts = IntervalAggregator([line.id for line in settings.lines], [zone.id for zone in settings.zones])
        self._masks = [np.asarray(m, float) for m in settings.masks]
        self.observers: list[TrackObserver] = []
        self.times = StageTimes()
        self.frames_processed = 0
        self.frames_inferred = 0
        self.last_tracks: list[Track] = []

    def process(self, image: np.ndarray, now: float) -> FrameResult:
        self.frames_processed += 1
        if self.motion is not None:
            start = time.perf_counter()
            gate = self.motion.check(image, now)
            self.times.add("motion", (time.perf_counter() - start) * 1000)
            if not gate.run_inference:
                return FrameResult(False, None, self.last_tracks, [])
        self.frames_inferred += 1

        start = time.perf_counter()
        detections = self.detector.detect(image)
        self.times.add("inference", (time.perf_counter() - start) * 1000)

        start = time.perf_counter()
        boxes, scores = detections.boxes, detections.scores
        if self._masks and len(boxes):
            # A person on a poster or a mannequin inside a mask is not a visitor.
            reference = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1) \
                if self.settings.reference == "foot" else \
                np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            keep = ~_point_in_polygons(reference, self._masks)
            boxes, scores = boxes[keep], scores[keep]
        tracks = self.tracker.update(boxes, scores)
        ended = [track.track_id for track in self.tracker.ended]
        crossings = self.lines.update(tracks, ended)
        dwells = self.zones.update(tracks, now, ended)
        self.counts.update(crossings, dwells, self.zones.occupancy())
        events: list[tuple[str, dict[str, Any]]] = []
        for crossing in crossings:
            events.append(("visit.entry" if crossing.direction == "in" else "visit.exit",
                           {"camera": self.camera_id, "line": crossing.line_id, "track_id": crossing.track_id}))
        for dwell in dwells:
            events.append(("zone.dwell", {"camera": self.camera_id, "zone": dwell.zone_id, "track_id": dwell.track_id,
                                          "seconds": round(dwell.seconds, 2)}))
        self.times.add("tracking", (time.perf_counter() - start) * 1000)
        self.last_tracks = tracks
        for observer in self.observers:
            observer(image, tracks, now)
        return FrameResult(True, detections, tracks, events)

    def interval_counts(self) -> dict[str, Any]:
        """The aggregates since the last call (a visit.counts event's data)."""
        return {"camera": self.camera_id, **self.counts.snapshot_and_reset()}
