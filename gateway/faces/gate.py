"""One face gate's pipeline, frame by frame: the person at the gate, recognised or not.

A gate camera looks at the one person about to pass. Per frame: YuNet finds faces and their 5
landmarks (gateway.vision.detect.FaceDetector), the largest face is taken as that person's (others
further back wait their turn), a face too small to trust is ignored (MatchPolicy.min_face_px) before
anything costly runs, the face is aligned onto the ArcFace template (gateway.faces.align), embedded
(gateway.faces.embed), searched 1:N in the gallery (FaceGallery.search), and the result goes to the
gate's FaceMatcher (N of M frames, margin, unknown band, cooldown), keyed by the gate: the gate's
window of votes is the "track". When nobody has been in front of the camera for `forget_after_s`,
the window is dropped, so votes of someone who walked away are not counted for the next person.

The gallery comes from a callable, asked on every frame, so that enrolments and deletions apply
without restarting the gate (gateway.faces.gate_service.GalleryHolder swaps it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..vision.pipeline import StageTimes
from .align import align_face
from .enrol import face_sides
from .gallery import (
    NO_SCORE,
    Decision,
    FaceGallery,
    FaceMatcher,
    MatchPolicy,
    SearchResult,
)

if TYPE_CHECKING:
    from ..vision.detect import FaceDetector
    from .embed import FaceEmbedder

FORGET_AFTER_S = 1.0  # no face for this long: the person left, their votes are dropped


@dataclass
class GateResult:
    """What one frame gave at a gate.

    `decision` is None when no face was found (nobody at the gate); otherwise the matcher's
    Decision ("too_small" for a face below min_face_px, which is never embedded). `box` is the face's
    (x1, y1, x2, y2) in frame pixels, `face_px` its shorter side. `times_ms` holds the stages that
    ran: detect, embed (alignment included), search.
    """

    decision: Decision | None
    box: tuple[float, float, float, float] | None = None
    face_px: float = 0.0
    times_ms: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.decision.verdict if self.decision is not None else "no_face"

    @property
    def person_id(self) -> Hashable | None:
        return self.decision.person_id if self.decision is not None else None

    @property
    def score(self) -> float:
        return self.decision.score if self.decision is not None else NO_SCORE

    @property
    def runner_up_score(self) -> float:
        return self.decision.runner_up_score if self.decision is not None else NO_SCORE


class FaceGate:
    """Recognises the person in front of one gate camera; `process` one frame at a time (one thread)."""

    def __init__(self, key: Hashable, detector: FaceDetector, embedder: FaceEmbedder,
                 gallery: Callable[[], FaceGallery], policy: MatchPolicy, matcher: FaceMatcher | None = None,
                 forget_after_s: float = FORGET_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self.key = key
        self.detector = detector
        self.embedder = embedder
        self.gallery = gallery
        self.policy = policy
        self.matcher = matcher or FaceMatcher(policy, clock=clock)
        self.forget_after_s = forget_after_s
        self.clock = clock
        self.times = StageTimes()
        self._last_face_at: float | None = None

    def process(self, frame_bgr: np.ndarray, now: float | None = None) -> GateResult:
        now = self.clock() if now is None else now
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        faces = self.detector.detect(frame_bgr)
        times["detect"] = (time.perf_counter() - t0) * 1000
        self.times.add("detect", times["detect"])
        if len(faces) == 0:
            if self._last_face_at is not None and now - self._last_face_at >= self.forget_after_s:
                self.matcher.forget(self.key)  # the person left: their votes do not count for the next
                self._last_face_at = None
            return GateResult(None, times_ms=times)
        self._last_face_at = now
        sides = face_sides(faces)  # the largest face, as enrolment picks it (enrol.largest_face_crop)
        best = int(np.argmax(sides))
        face_px = float(sides[best])
        box = tuple(float(v) for v in faces.boxes[best][:4])
        if face_px < self.policy.min_face_px:  # not worth an embedding: the matcher says too_small
            decision = self.matcher.update(self.key, SearchResult(None, NO_SCORE, NO_SCORE), face_px, now)
            return GateResult(decision, box, face_px, times)

        t0 = time.perf_counter()
        vector = self.embedder.embed_one(align_face(frame_bgr, faces.landmarks[best]))
        times["embed"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        result = self.gallery().search(vector)
        times["search"] = (time.perf_counter() - t0) * 1000
        self.times.add("embed", times["embed"])
        self.times.add("search", times["search"])
        decision = self.matcher.update(self.key, result, face_px, now)
        return GateResult(decision, box, face_px, times)

    def forget_person(self, person_id: Hashable) -> None:
        """A person's face data was deleted: drop their cooldown and any votes for them."""
        self.matcher.forget_person(person_id)
