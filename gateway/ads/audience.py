"""Audience measurement at screens: how many faces watched a play, and for how long.

A screen with a camera above or below it sees the faces of the people in front of it. Per analysed
frame, YuNet (gateway.vision.detect.FaceDetector) gives each face's box and 5 landmarks; a face is
**turned to the screen** when it is big enough and frontal enough (`facing`); `FaceTracks` links
the faces from frame to frame; and `AudienceMeter` adds up, per track, the time it faced the screen.
For a play window [start, end) the meter answers:

* **impressions**: distinct tracked faces that faced the screen for at least `min_watch_s` (1 s)
  within the window;
* **attention seconds**: the sum over all faces of the seconds they faced the screen within the
  window (glances shorter than `min_watch_s` included);
* **peak**: the most faces facing the screen in one analysed frame of the window;
* **frames**: how many frames were analysed in the window (0 means "not measured", e.g. the camera
  was down, which is not the same as "nobody watched").

Only these counts leave the gateway. Frames and face crops are never stored: the meter keeps, per
track, its last box (for the tracker) and the time intervals in which it faced the screen, nothing
of the image.

Time. A face facing the screen in two consecutive observations of its track accrues the time
between them, capped at `max_gap_s` (0.5 s), so a missed or skipped frame neither inflates the
figure (a face seen at t and again 3 s later is not credited 3 s) nor splits the track. A face seen
facing in a single frame accrues nothing. The credited time is placed just before the later
observation, which is how a play window splits it. Timestamps are the frames' own (the service
uses `Frame.ts`, wall-clock seconds, so play windows are given in `time.time()` seconds too).

Memory is bounded: tracks not seen for `horizon_s` (15 minutes by default) are dropped with their
intervals, as are per-frame counts older than that, and at most `max_tracks` tracks are kept. A
window must therefore be asked for within `horizon_s` of its end.

`AudienceService` runs one worker thread per camera (a camera may serve several screens), reading
the camera's newest frames from the frame hub as the face gates do, with one YuNet session shared by
all its cameras. A missing or broken model puts the workers in state "error" with the model's
message (which names the file) and is tried again every MODEL_RETRY_INTERVAL; the rest of the
gateway keeps running.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ..frame_worker import (
    MODEL_RETRY_INTERVAL,
    FrameFollower,
    FrameWorkerState,
    model_unavailable,
    start_worker,
    stop_worker,
    stop_workers,
)
from ..frames import FrameHub
from ..models import ModelError

if TYPE_CHECKING:  # OpenCV and onnxruntime load only when a worker runs
    from ..vision.capture import FpsLimiter
    from ..vision.detect import Detections, FaceDetector
    from ..vision.pipeline import StageTimes

__all__ = [
    "MAX_ROLL_DEG", "MAX_YAW", "MIN_FACE_PX", "YAW_HYSTERESIS", "Audience", "AudienceMeter", "AudienceNow",
    "AudienceService", "FaceTracks", "facing", "head_pose",
]

log = logging.getLogger("gateway.ads.audience")

# ------------------------------------------------------------------------------------ facing

# A face is "turned to the screen" when (thresholds measured with YuNet on ../shared/data/faces):
#
# * yaw: the nose tip, projected on the eye line, lies within MAX_YAW of the eyes' midpoint, in
#   units of half the distance between the eyes (0: nose centred, 1: nose in front of an eye). With
#   the nose tip about as far in front of the eyes as the eyes are apart / 2, the ratio is about
#   tan(yaw), so 0.5 is a head turned about 25-30 degrees: the usual limit for "looking at" a
#   screen in audience measurement. On the 61 celebrity photos and 13 test photos (people looking
#   at a camera, some a little turned) |ratio| is at most 0.47 (0.35 for the single portraits); the
#   two clearly turned heads in the group photos (a man looking sideways past the camera, a girl
#   turned away and down) measure 0.68 and 0.74.
# * roll: the eye line within MAX_ROLL_DEG of level (and the eyes in the right order, so an
#   upside-down or mirrored landmark set is refused). Roll does not change where a face points: this
#   is a plausibility check more than an attention one. Portraits tilt up to 15 degrees; YuNet
#   finds hardly any face rolled more than 45 degrees and reports the roll of those at about half
#   (a portrait rotated 45 degrees measures 19), so 30 degrees refuses only landmarks that are
#   not an upright face.
# * size: the box's shorter side at least MIN_FACE_PX pixels. YuNet finds faces from about 10 px,
#   but the eyes of a 24 px face are about 11 px apart, so one pixel of landmark noise is already
#   0.2 of the yaw ratio: smaller faces are too coarse to say where they look. With a 640 px wide
#   camera of 60 degrees horizontal field, a face (16 cm wide) is 24 px at about 3.7 m, the far
#   end of where people read a mall screen.
#
# YuNet itself mostly finds frontal and half-turned faces (a full profile or the back of a head is
# no face to it), so a face that is not detected is not watching either.
#
# The landmarks of one still face move the yaw ratio by about +-0.1 from frame to frame and scale to
# scale (the couple photo, heads turned about 20 degrees, measures 0.28 to 0.57 composited at 15
# sizes; the man looking sideways 0.45 to 0.93). So the meter applies YAW_HYSTERESIS: a tracked face
# starts facing the screen at |ratio| <= MAX_YAW and stops only past MAX_YAW + YAW_HYSTERESIS, and a
# borderline face does not flicker in and out, losing the time on both sides of each flip.

MAX_YAW = 0.5
YAW_HYSTERESIS = 0.1
MAX_ROLL_DEG = 30.0
MIN_FACE_PX = 24.0


def head_pose(landmarks) -> tuple[float, float]:
    """(yaw ratio, roll in degrees) of one face's YuNet landmarks [5, 2]: right eye, left eye, nose,
    right and left mouth corners, in image pixels.

    The yaw ratio is the nose tip's offset from the eyes' midpoint along the eye line, in half eye
    distances (signed: positive towards the face's left eye, i.e. the image's right for a face
    looking at the camera); the roll is the eye line's angle from the image's horizontal, 0 for
    level eyes in the right order, +-180 for an upside-down face. NaN for unusable landmarks.
    """
    points = np.asarray(landmarks, dtype=float).reshape(5, 2)
    if not np.isfinite(points).all():
        return math.nan, math.nan
    right_eye, left_eye, nose = points[0], points[1], points[2]
    eye_line = left_eye - right_eye
    eye_distance = float(np.hypot(*eye_line))
    if eye_distance <= 1e-6:
        return math.nan, math.nan
    along = eye_line / eye_distance
    yaw = float(np.dot(nose - (right_eye + left_eye) / 2.0, along) / (eye_distance / 2.0))
    roll = math.degrees(math.atan2(float(eye_line[1]), float(eye_line[0])))
    return yaw, roll


def facing(landmarks, box, min_face_px: float = MIN_FACE_PX, max_yaw: float = MAX_YAW,
           max_roll_deg: float = MAX_ROLL_DEG) -> bool:
    """Whether a face (YuNet landmarks [5, 2] and box x1, y1, x2, y2, image pixels) is turned to the
    camera, hence to the screen it sits on: big enough, frontal enough and upright (see the
    thresholds above). Also requires the mouth below the eyes, in the face's own frame."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=float).reshape(-1)[:4])
    side = min(x2 - x1, y2 - y1)
    if not (math.isfinite(side) and side >= min_face_px):
        return False
    yaw, roll = head_pose(landmarks)
    if not (abs(yaw) <= max_yaw and abs(roll) <= max_roll_deg):  # NaN fails both
        return False
    points = np.asarray(landmarks, dtype=float).reshape(5, 2)
    eye_line = points[1] - points[0]
    down = np.array([-eye_line[1], eye_line[0]])  # the eye line turned 90 degrees: "down" the face
    return float(np.dot((points[3] + points[4]) / 2.0 - (points[0] + points[1]) / 2.0, down)) > 0.0


# ------------------------------------------------------------------------------------ tracks


@dataclass
class _FaceTrack:
    track_id: int
    center: np.ndarray  # (x, y) of the last match
    size: float  # sqrt(w * h) of the last match
    last_t: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # pixels per second
    matched: bool = False  # once, i.e. velocity is measured


class FaceTracks:
    """Stable ids for face boxes from frame to frame: a greedy matcher with a constant-velocity guess.

    gateway.vision.track.Tracker (ByteTrack for people) does not fit faces well: it reports Kalman
    boxes without saying which detection each came from (the landmarks must follow their face), it
    counts age in frames where the meter works in seconds, its score bands mean nothing for YuNet
    (which keeps only faces scoring 0.9 and more) and it links boxes by IoU alone. Faces are small:
    someone walking past a screen 3 m away moves half to a whole face width between frames analysed
    at 5 to 10 fps, where IoU drops to nothing. So here a detection is matched to a track when its
    centre is within `max_distance` face sizes (sqrt(w*h), the mean of the two) of where the track's
    velocity puts it now, and the sizes differ by at most `max_scale` times; the closest pairs are
    taken first. A track not matched for more than `max_age_s` seconds ends; ids are never reused.

    Not thread-safe: one per camera, fed from one thread.
    """

    def __init__(self, max_age_s: float = 1.0, max_distance: float = 1.0, max_scale: float = 2.0):
        if max_age_s < 0 or max_distance <= 0 or max_scale < 1:
            raise ValueError("need max_age_s >= 0, max_distance > 0 and max_scale >= 1")
        self.max_age_s = float(max_age_s)
        self.max_distance = float(max_distance)
        self.max_scale = float(max_scale)
        self._tracks: list[_FaceTrack] = []
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._tracks)

    def live_ids(self) -> list[int]:
        return [track.track_id for track in self._tracks]

    def reset(self) -> None:
        """End every track (the clock stepped back, the camera moved); ids keep counting up."""
        self._tracks = []

    def update(self, boxes, t: float) -> list[int]:
        """The track id of each box (x1, y1, x2, y2) [N, 4] seen at time `t`, in order."""
        boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
        self._tracks = [tr for tr in self._tracks if t - tr.last_t <= self.max_age_s]
        centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
        with np.errstate(invalid="ignore"):
            sizes = np.sqrt(np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None))
        pairs: list[tuple[float, int, int]] = []
        for row, track in enumerate(self._tracks):
            guess = track.center + track.velocity * max(0.0, t - track.last_t)
            distance = np.hypot(*(centers - guess).T) / np.maximum((sizes + track.size) / 2.0, 1e-6)
            scale = np.maximum(sizes, track.size) / np.maximum(np.minimum(sizes, track.size), 1e-6)
            for col in np.flatnonzero((distance <= self.max_distance) & (scale <= self.max_scale)):
                pairs.append((float(distance[col]), row, int(col)))
        pairs.sort()
        ids = [0] * len(boxes)
        used_tracks: set[int] = set()
        for _, row, col in pairs:
            if row in used_tracks or ids[col]:
                continue
            used_tracks.add(row)
            track = self._tracks[row]
            dt = t - track.last_t
            if dt > 0:
                seen = (centers[col] - track.center) / dt
                track.velocity = seen if not track.matched else (track.velocity + seen) / 2.0
                track.matched = True
            track.center, track.size, track.last_t = centers[col].copy(), float(sizes[col]), t
            ids[col] = track.track_id
        for col in range(len(boxes)):
            if not ids[col] and np.isfinite(centers[col]).all() and np.isfinite(sizes[col]) and sizes[col] > 0:
                track = _FaceTrack(self._next_id, centers[col].copy(), float(sizes[col]), t)
                self._next_id += 1
                self._tracks.append(track)
                ids[col] = track.track_id
        return ids


# ------------------------------------------------------------------------------------- meter


@dataclass(frozen=True)
class Audience:
    """What a screen's camera measured over a play window (see the module docstring)."""

    impressions: int  # faces that faced the screen for at least min_watch_s in the window
    attention_s: float  # seconds faced, summed over all faces
    peak: int  # most faces facing the screen in one analysed frame
    frames: int = 0  # frames analysed in the window: 0 means not measured


class AudienceNow(NamedTuple):
    """Who faces the screen now: the scorer's `audience` and `dwell_s` (gateway.ads.scorer)."""

    audience: int
    dwell_s: float  # mean seconds each of them has faced the screen so far


@dataclass
class _Watch:
    """One tracked face: when it was seen, and when it faced the screen (intervals, merged)."""

    last_seen: float
    facing: bool  # at its last observation
    intervals: deque = field(default_factory=deque)  # [start, end] lists, in time order
    total_s: float = 0.0  # every second credited, for the dwell


class AudienceMeter:
    """Faces turned to one screen, over time; `observe` each analysed frame in time order.

    Thread-safe: the camera's worker observes while the planner asks for windows.
    """

    def __init__(self, min_watch_s: float = 1.0, min_face_px: float = MIN_FACE_PX, max_gap_s: float = 0.5,
                 horizon_s: float = 900.0, max_yaw: float = MAX_YAW, yaw_hysteresis: float = YAW_HYSTERESIS,
                 max_roll_deg: float = MAX_ROLL_DEG, max_tracks: int = 10_000, tracks: FaceTracks | None = None):
        if min_watch_s < 0 or max_gap_s <= 0 or horizon_s <= 0 or max_tracks < 1 or yaw_hysteresis < 0:
            raise ValueError("need min_watch_s >= 0, max_gap_s > 0, horizon_s > 0, max_tracks >= 1 "
                             "and yaw_hysteresis >= 0")
        self.min_watch_s = float(min_watch_s)
        self.min_face_px = float(min_face_px)
        self.max_gap_s = float(max_gap_s)
        self.horizon_s = float(horizon_s)
        self.max_yaw = float(max_yaw)
        self.yaw_hysteresis = float(yaw_hysteresis)
        self.max_roll_deg = float(max_roll_deg)
        self.max_tracks = int(max_tracks)
        self.tracks = tracks if tracks is not None else FaceTracks()
        self._watches: dict[int, _Watch] = {}  # by track id, oldest first
        self._frames: deque[tuple[float, int]] = deque()  # (t, faces facing) per analysed frame
        self._last_t: float | None = None
        self._pruned_at = -math.inf
        self._lock = threading.Lock()

    @property
    def tracked(self) -> int:
        """Tracks kept (live or ended within the horizon)."""
        return len(self._watches)

    @property
    def frames_kept(self) -> int:
        return len(self._frames)

    def observe(self, faces: Detections, t: float) -> int:
        """One analysed frame's faces (a FaceDetector's output, landmarks included) at time `t`
        (seconds); returns how many of them face the screen. A frame with no face counts too: it is
        how the meter knows the screen was watched by nobody rather than not measured. A time
        earlier than the previous frame's (a clock stepped back) ends every track first, so no time
        is credited across the step."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, not {t!r}")
        boxes = np.asarray(faces.boxes, dtype=float).reshape(-1, 4)
        landmarks = faces.landmarks
        if len(boxes) and landmarks is None:
            raise ValueError("the faces need their landmarks (a FaceDetector's detections)")
        with self._lock:
            if self._last_t is not None and t < self._last_t:
                self.tracks.reset()
                for watch in self._watches.values():
                    watch.facing = False
            ids = self.tracks.update(boxes, t)
            count = 0
            for i, track_id in enumerate(ids):
                if not track_id:
                    continue
                watch = self._watches.get(track_id)
                max_yaw = self.max_yaw + (self.yaw_hysteresis if watch is not None and watch.facing else 0.0)
                now_facing = facing(landmarks[i], boxes[i], self.min_face_px, max_yaw, self.max_roll_deg)
                count += now_facing
                if watch is None:
                    self._watches[track_id] = _Watch(t, now_facing)
                    continue
                if now_facing and watch.facing and t > watch.last_seen:
                    credit = min(t - watch.last_seen, self.max_gap_s)
                    start = t - credit
                    if watch.intervals and watch.intervals[-1][1] >= start - 1e-9:
                        watch.intervals[-1][1] = t
                    else:
                        watch.intervals.append([start, t])
                    watch.total_s += credit
                watch.last_seen, watch.facing = t, now_facing
            self._frames.append((t, count))
            self._last_t = t
            self._prune(t)
            return count

    def _prune(self, t: float) -> None:
        while len(self._watches) > self.max_tracks:  # oldest first: dicts keep insertion order
            del self._watches[next(iter(self._watches))]
        cutoff = t - self.horizon_s
        while self._frames and self._frames[0][0] < cutoff:
            self._frames.popleft()
        if t - self._pruned_at < min(1.0, self.horizon_s / 10):  # the tracks at most once a second
            return
        self._pruned_at = t
        for track_id in [k for k, w in self._watches.items() if w.last_seen < cutoff]:
            del self._watches[track_id]
        for watch in self._watches.values():
            while watch.intervals and watch.intervals[0][1] < cutoff:
                watch.intervals.popleft()

    def window(self, start: float, end: float) -> Audience:
        """The audience of a play that ran over [start, end) (the frames' clock)."""
        start, end = float(start), float(end)
        with self._lock:
            impressions, attention, peak, frames = 0, 0.0, 0, 0
            for watch in self._watches.values():
                seconds = 0.0
                for a, b in watch.intervals:
                    if b <= start:
                        continue
                    if a >= end:
                        break
                    seconds += min(b, end) - max(a, start)
                attention += seconds
                impressions += seconds > 0 and seconds >= self.min_watch_s - 1e-9
            for t, count in self._frames:
                if start <= t < end:
                    frames += 1
                    peak = max(peak, count)
            return Audience(impressions, attention, peak, frames)

    def current(self, now: float | None = None, max_age_s: float | None = None) -> AudienceNow:
        """The faces facing the screen at their latest observation, if that was within `max_gap_s`
        of `now` (default: the latest frame's time), and the mean of their facing seconds so far.

        With `max_age_s`: the faces of the latest analysed frame, provided that frame is at most
        `max_age_s` older than `now` (else nobody: the camera or its worker stopped). A worker a
        little behind on a busy machine then still counts the people in front of the screen."""
        with self._lock:
            if self._last_t is None:
                return AudienceNow(0, 0.0)
            if max_age_s is not None:
                if now is not None and float(now) - self._last_t > max_age_s:
                    return AudienceNow(0, 0.0)
                now = None
            now = self._last_t if now is None else float(now)
            dwell = [w.total_s for w in self._watches.values()
                     if w.facing and now - self.max_gap_s <= w.last_seen <= now]
            return AudienceNow(len(dwell), sum(dwell) / len(dwell) if dwell else 0.0)


# ----------------------------------------------------------------------------------- service


@dataclass
class _CameraWorker(FrameWorkerState):  # state: starting | waiting_for_frames | running | error
    camera_id: str
    meter: AudienceMeter
    limiter: FpsLimiter | None = None
    times: StageTimes | None = None
    frames: int = 0  # frames analysed


class AudienceService:
    """One audience worker per camera watching screens; `meter(screen_id)` for the planner.

    `fps` is how many frames a second each camera's worker analyses (None or 0: every frame the
    camera delivers); 5 keeps a frame interval well under the meter's `max_gap_s`. `meter_factory`
    makes each camera's meter (AudienceMeter with its defaults unless given).
    """

    def __init__(self, frames: FrameHub, models_dir: str | Path, threads: int = 1, fps: float | None = 5.0,
                 detector_name: str = "yunet", meter_factory: Callable[[], AudienceMeter] = AudienceMeter):
        self.frames = frames
        self.models_dir = Path(models_dir)
        self.threads = threads
        self.fps = fps
        self.detector_name = detector_name
        self.meter_factory = meter_factory
        self._screens: dict[str, str] = {}  # screen id -> camera id
        self._workers: dict[str, _CameraWorker] = {}  # by camera id
        self._detector: FaceDetector | None = None  # one onnxruntime session for every camera
        self._lock = threading.Lock()

    def apply(self, screens_with_cameras: Mapping[str, str]) -> None:
        """Measure the screens given (screen id -> the camera watching its audience): start a worker
        per camera not running yet, stop those no screen uses any more. A camera's meter survives a
        change of the screens it serves."""
        wanted = {str(screen): str(camera) for screen, camera in screens_with_cameras.items()}
        cameras = set(wanted.values())
        for camera_id in [c for c in self._workers if c not in cameras]:
            stop_worker(self._workers, camera_id)
        self._screens = wanted
        for camera_id in sorted(cameras - set(self._workers)):
            start_worker(self._workers, camera_id, _CameraWorker(camera_id, self.meter_factory()), self._run,
                         f"audience-{camera_id}")

    def meter(self, screen_id: str) -> AudienceMeter | None:
        camera_id = self._screens.get(screen_id)
        worker = self._workers.get(camera_id) if camera_id is not None else None
        return worker.meter if worker is not None else None

    def stop(self) -> None:
        stop_workers(self._workers)
        self._screens = {}

    def status(self) -> list[dict[str, Any]]:
        out = []
        screens = dict(self._screens)
        for worker in list(self._workers.values()):
            limiter = worker.limiter
            now = worker.meter.current()
            out.append({
                "camera": worker.camera_id,
                "screens": sorted(s for s, c in screens.items() if c == worker.camera_id),
                "state": worker.state,
                "error": worker.error,
                "target_fps": self.fps,
                "processing_fps": round(limiter.rate(), 2) if limiter else 0.0,
                "frames": worker.frames,
                "frames_skipped": limiter.skipped if limiter else 0,
                "audience": now.audience,
                "dwell_s": round(now.dwell_s, 2),
                "tracks": worker.meter.tracked,
                "stage_times": worker.times.summary() if worker.times else {},
            })
        return out

    # ------------------------------------------------------------------------------ worker

    def _load_detector(self, worker: _CameraWorker) -> FaceDetector | None:
        from ..vision.detect import FaceDetector

        try:
            with self._lock:
                if self._detector is None:
                    self._detector = FaceDetector.from_model(self.detector_name, self.models_dir,
                                                             threads=self.threads)
                detector = self._detector
        except (ModelError, ValueError) as exc:
            model_unavailable(worker, exc, log, f"audience camera {worker.camera_id}: not measuring",
                              MODEL_RETRY_INTERVAL)
            return None
        worker.state, worker.error = "waiting_for_frames", None
        return detector

    def _run(self, worker: _CameraWorker) -> None:
        import cv2

        from ..vision.capture import FpsLimiter
        from ..vision.pipeline import StageTimes

        cv2.setNumThreads(1)  # as the other frame services: one OpenCV thread per call on a small CPU
        worker.limiter = FpsLimiter(self.fps)
        worker.times = StageTimes()
        follower = FrameFollower(self.frames, worker.camera_id)
        detector: FaceDetector | None = None
        model_tried = -MODEL_RETRY_INTERVAL
        while not worker.stop.is_set():
            if detector is None:
                if time.monotonic() - model_tried < MODEL_RETRY_INTERVAL:
                    worker.stop.wait(min(1.0, MODEL_RETRY_INTERVAL))
                    continue
                model_tried = time.monotonic()
                detector = self._load_detector(worker)
                continue
            frame = follower.next(worker.stop)
            if frame is None:
                if worker.state == "running":
                    worker.state = "waiting_for_frames"
                continue
            if not worker.limiter.due(time.monotonic()):
                continue
            try:
                t0 = time.perf_counter()
                faces = detector.detect(frame.image)
                t1 = time.perf_counter()
                worker.meter.observe(faces, frame.ts)
                t2 = time.perf_counter()
            except Exception as exc:  # a bad frame must not end the worker
                worker.state, worker.error = "error", f"{type(exc).__name__}: {exc}"
                log.exception("audience camera %s: frame %d failed", worker.camera_id, frame.index)
                continue
            del faces  # nothing of the image outlives the frame
            worker.times.add("detect", (t1 - t0) * 1000)
            worker.times.add("meter", (t2 - t1) * 1000)
            worker.state, worker.error = "running", None
            worker.frames += 1
