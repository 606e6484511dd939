"""The face gate service: gate cameras whose recognised faces open doors, with no card reader.

Per gate (a door watched by a camera), one worker thread reads the newest frame of the camera from
the frame hub (as the visit service does), keeps to the gate's fps, runs `FaceGate` (detect, the
largest face, align, embed, 1:N search, N-of-M confirmation) and, when a person is confirmed,
publishes an internal event for the access service, which decides as it does for a card:

    Event("access.identified", camera_id,
          {"door": door_id, "reader": None, "method": "face", "value": person_id, "score": 0.8123},
          internal=True)

Nothing is published for strangers, unsure or unconfirmed frames (a denial per frame would flood
the bus and the platform); they are counted per verdict for the status. Frames, crops and vectors
never leave this module. A gate whose model is missing or broken is in state "error" with the
model's message (which names the file) while the other gates run; the model is tried again every
MODEL_RETRY_INTERVAL, so a model copied in later is picked up without a restart.

The gallery is shared by all gates through a `GalleryHolder`, which reloads it from the face store
when the store's generation changes (an enrolment, a deletion), in whichever worker notices first,
and swaps it in one assignment: a search sees the old gallery or the new one, never half of each.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bus import EventBus
from ..events import Event, utc_timestamp
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
from .face_models import FaceModels
from .gallery import FaceGallery, MatchPolicy

if TYPE_CHECKING:  # OpenCV and onnxruntime load only when a gate runs
    from ..vision.capture import FpsLimiter
    from .gate import FaceGate

log = logging.getLogger("gateway.faces.gates")

IDENTIFIED = "access.identified"
MEMBER_IDENTIFIED = "member.identified"


@dataclass(frozen=True)
class GateSpec:
    """A face gate: the door it opens, the camera that watches it, its match policy and analysed fps.

    With `till` set instead, the camera watches a till: a match credits the member's purchase there
    (`member.identified` {till, member_id}) rather than opening a door; `door_id` then names the
    till's gate for status and logs.
    """

    door_id: str
    camera_id: str
    policy: MatchPolicy
    fps: float = 10.0
    till: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.door_id, self.camera_id)


class GalleryHolder:
    """The current gallery, reloaded when its source's generation changes.

    `load()` builds a gallery (e.g. `FaceStore.load_gallery(model)`); `generation()` is cheap and
    changes whenever the enrolled faces do. `current()` looks at the generation at most every
    `check_every` seconds and reloads in the calling thread when it moved; the other threads go on
    with the previous gallery meanwhile (or wait, if there is none yet). A failed reload keeps the
    previous gallery and is retried at the next check.
    """

    def __init__(self, load: Callable[[], FaceGallery], generation: Callable[[], int], check_every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._generation_of = generation
        self.check_every = float(check_every)
        self.clock = clock
        self._lock = threading.Lock()
        self._gallery: FaceGallery | None = None
        self.generation: int | None = None  # of the gallery held
        self._checked_at = float("-inf")
        self._stale = True

    def invalidate(self) -> None:
        """Reload at the next `current()`, whatever the generation says."""
        self._stale = True

    def current(self) -> FaceGallery:
        gallery = self._gallery
        if gallery is not None and not self._stale and self.clock() - self._checked_at < self.check_every:
            return gallery
        if not self._lock.acquire(blocking=gallery is None):
            return gallery  # another worker is looking or reloading: the old gallery is fine meanwhile
        try:
            now = self.clock()
            if self._gallery is not None and not self._stale and now - self._checked_at < self.check_every:
                return self._gallery  # reloaded by another worker while this one waited
            self._checked_at = now
            try:
                generation = self._generation_of()
                if self._gallery is None or self._stale or generation != self.generation:
                    self._stale = False  # before loading: an invalidate() during the load is kept
                    loaded = self._load()
                    prepare = getattr(loaded, "prepare", None)
                    if prepare is not None:  # grouping and the int8 prescreen, here rather than in a search
                        prepare()
                    self._gallery, self.generation = loaded, generation  # the swap: one assignment each
            except Exception:
                if self._gallery is None:
                    self._stale = True
                    raise
                self._stale = True
                log.exception("face gallery: reload failed, keeping the previous one (generation %s)",
                              self.generation)
            return self._gallery
        finally:
            self._lock.release()


@dataclass
class GateWorker(FrameWorkerState):  # state: starting | waiting_for_frames | running | error
    spec: GateSpec
    gate: FaceGate | None = None
    limiter: FpsLimiter | None = None
    frames: int = 0  # frames analysed
    matches: int = 0  # access.identified published
    verdicts: Counter = field(default_factory=Counter)
    last_verdict: dict[str, Any] | None = None


class FaceGateService:
    def __init__(self, bus: EventBus, frames: FrameHub, models_dir: str | Path, threads: int = 1,
                 gallery: GalleryHolder | None = None, embedder_name: str = "mobilefacenet",
                 detector_name: str = "yunet", models: FaceModels | None = None):
        self.bus = bus
        self.frames = frames
        self.models_dir = Path(models_dir)
        self.threads = threads
        self.gallery = gallery if gallery is not None else GalleryHolder(FaceGallery, lambda: 0)
        self.embedder_name = embedder_name
        self.detector_name = detector_name
        self._workers: dict[tuple[str, str], GateWorker] = {}
        # One onnxruntime session per model, shared by the gates (and, passed in, by other services).
        self.models = models if models is not None else FaceModels(self.models_dir, threads)

    # --------------------------------------------------------------------------- lifecycle

    def apply(self, gates: list[GateSpec]) -> None:
        """Run a worker per gate; restart those whose spec changed, stop those no longer listed."""
        wanted = {spec.key: spec for spec in gates}
        if len(wanted) != len(gates):
            raise ValueError("a door and camera pair is listed twice")
        for key in list(self._workers):
            if key not in wanted or wanted[key] != self._workers[key].spec:
                stop_worker(self._workers, key)
        for key, spec in wanted.items():
            if key not in self._workers:
                start_worker(self._workers, key, GateWorker(spec), self._run, f"face-gate-{spec.door_id}")

    def stop(self) -> None:
        stop_workers(self._workers)

    def forget_person(self, person_id: Hashable) -> None:
        """A person's face data was deleted: no cooldown or vote of theirs is kept, and the gallery is
        reloaded at the next frame rather than at the next generation check."""
        self.gallery.invalidate()
        for worker in list(self._workers.values()):
            if worker.gate is not None:
                worker.gate.forget_person(person_id)

    # ----------------------------------------------------------------------------- reading

    def status(self) -> list[dict[str, Any]]:
        out = []
        for worker in list(self._workers.values()):
            limiter, gate = worker.limiter, worker.gate
            out.append({
                "door": worker.spec.door_id,
                "camera": worker.spec.camera_id,
                "state": worker.state,
                "error": worker.error,
                "target_fps": worker.spec.fps,
                "processing_fps": round(limiter.rate(), 2) if limiter else 0.0,
                "frames": worker.frames,
                "frames_skipped": limiter.skipped if limiter else 0,
                "matches": worker.matches,
                "verdicts": dict(worker.verdicts),
                "last_verdict": worker.last_verdict,
                "stage_times": gate.times.summary() if gate else {},
                "gallery_generation": self.gallery.generation,
            })
        return out

    # ------------------------------------------------------------------------------ worker

    def _make_gate(self, worker: GateWorker) -> FaceGate | None:
        from .gate import FaceGate

        spec = worker.spec
        try:
            detector, embedder = self.models.pair(self.embedder_name, self.threads, self.detector_name)
        except (ModelError, ValueError) as exc:
            model_unavailable(worker, exc, log, f"face gate {spec.door_id}: no recognition", MODEL_RETRY_INTERVAL)
            return None
        worker.state, worker.error = "waiting_for_frames", None
        return FaceGate(spec.door_id, detector, embedder, self.gallery.current, spec.policy)

    def _run(self, worker: GateWorker) -> None:
        import cv2

        from ..vision.capture import FpsLimiter

        cv2.setNumThreads(1)  # as the visit service: one OpenCV thread per call on a small CPU
        spec = worker.spec
        worker.limiter = FpsLimiter(spec.fps)
        follower = FrameFollower(self.frames, spec.camera_id)
        model_tried = -MODEL_RETRY_INTERVAL
        while not worker.stop.is_set():
            if worker.gate is None and time.monotonic() - model_tried >= MODEL_RETRY_INTERVAL:
                model_tried = time.monotonic()
                worker.gate = self._make_gate(worker)
            frame = follower.next(worker.stop)
            if frame is None:
                if worker.state == "running":
                    worker.state = "waiting_for_frames"
                continue
            if worker.gate is None or not worker.limiter.due(time.monotonic()):
                continue
            try:
                result = worker.gate.process(frame.image)
            except Exception as exc:  # a bad frame or a failing gallery must not end the worker
                worker.state, worker.error = "error", f"{type(exc).__name__}: {exc}"
                log.exception("face gate %s: frame %d failed", spec.door_id, frame.index)
                continue
            worker.state, worker.error = "running", None
            worker.frames += 1
            worker.verdicts[result.verdict] += 1
            if result.decision is not None:
                worker.last_verdict = {"verdict": result.verdict, "score": round(result.score, 4),
                                       "runner_up_score": round(result.runner_up_score, 4),
                                       "face_px": round(result.face_px, 1), "at": utc_timestamp()}
            if result.verdict == "match":
                self._publish_match(worker, result.person_id, result.score)
                # From the frame leaving the camera's stream to the event on the bus.
                worker.gate.times.add("frame_to_event", (time.time() - frame.ts) * 1000)

    def _publish_match(self, worker: GateWorker, person_id: Hashable, score: float) -> None:
        spec = worker.spec
        worker.matches += 1
        try:
            if spec.till is not None:
                self.bus.publish(Event(MEMBER_IDENTIFIED, spec.camera_id, {
                    "till": spec.till, "member_id": str(person_id), "score": round(float(score), 4)}, internal=True))
                return
            self.bus.publish(Event(IDENTIFIED, spec.camera_id, {
                "door": spec.door_id, "reader": None, "method": "face", "value": str(person_id),
                "score": round(float(score), 4)}, internal=True))
        except RuntimeError:  # the bus has stopped (shutting down)
            log.warning("face gate %s: match not sent, the bus has stopped", spec.door_id)
