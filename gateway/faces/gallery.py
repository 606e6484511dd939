"""1:N face identification: an in-memory gallery of enrolled vectors and the policy that turns
per-frame scores into gate decisions.

`FaceGallery` holds every enrolled template (several per person: photos from different angles) as
rows of one normalised float32 matrix, so a search is one matrix product, then a per-person maximum
(`np.maximum.reduceat` over the rows grouped by person). The matrix grows by chunks, so enrolling a
site's people one by one does not copy it on every add.

A single frame's best score is not enough to open a gate: a look-alike can score just above the
threshold once, and a blurred frame can do anything. `FaceMatcher` therefore asks for a margin over
the best *other* person, for the same person in N of the last M frames of a track, ignores faces too
small to recognise, and does not match the same person again within a cooldown (one entry, not ten
door openings while they walk through).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from .embed import l2_normalise

PersonId = Hashable
NO_SCORE = -1.0  # the lowest cosine: the score of "nobody" (empty gallery, no second person)
# Limits are compared with this slack, so that a configured margin of 0.1 accepts 0.5 vs 0.4 (whose
# difference is 0.09999999999999998 in floating point); far below any score's real precision.
_SLACK = 1e-9
# From this many templates a search first picks candidates from int8 copies (prescreen.py), then
# scores only those exactly: below it the exact float32 product is already fast (< 1 ms at 20k).
PRESCREEN_FROM = 20_000
PRESCREEN_CANDIDATES = 64  # rows scored exactly per probe: far more than the approximation reorders


class SearchResult(NamedTuple):
    """The best enrolled person for one probe, its cosine, and the best cosine of any other person."""

    person_id: PersonId | None
    score: float
    runner_up_score: float


class FaceGallery:
    """Enrolled face templates: person ids and a normalised float32 matrix [N, D], searched by cosine."""

    def __init__(self, dim: int | None = None, chunk: int = 1024, prescreen_from: int = PRESCREEN_FROM):
        if chunk < 1:
            raise ValueError("chunk must be at least 1")
        self.dim = dim
        self.chunk = int(chunk)
        self.prescreen_from = int(prescreen_from)
        self._prescreen = None  # an Int8Prescreen of the rows, built with the groups (see _grouped)
        self._matrix = np.zeros((0, dim or 0), np.float32)  # capacity rows; the first _count are used
        self._person_of_row: list[PersonId] = []
        self._count = 0
        self._groups: tuple[list[PersonId], np.ndarray | None] | None = None  # cache, see _grouped
        self._group_lock = threading.Lock()

    # ---------------------------------------------------------------------------------- enrolment

    def add(self, person_id: PersonId, vectors: np.ndarray) -> int:
        """Enrol templates ([D] or [K, D], normalised here) for a person; returns how many were added."""
        vectors = np.asarray(vectors, np.float32)
        if vectors.ndim == 1:
            vectors = vectors[np.newaxis]
        if vectors.ndim != 2 or vectors.shape[1] == 0:
            raise ValueError(f"vectors must be [D] or [K, D], got shape {vectors.shape}")
        if not np.all(np.isfinite(vectors)):
            raise ValueError("vectors must be finite")
        if self.dim is None:
            self.dim = vectors.shape[1]
            self._matrix = np.zeros((0, self.dim), np.float32)
        if vectors.shape[1] != self.dim:
            raise ValueError(f"the gallery holds {self.dim}-d vectors, not {vectors.shape[1]}-d")
        needed = self._count + len(vectors)
        if needed > len(self._matrix):
            # Grow by at least a chunk and at least double: amortised O(1) copies per template.
            capacity = max(needed, len(self._matrix) * 2, len(self._matrix) + self.chunk)
            grown = np.zeros((capacity, self.dim), np.float32)
            grown[:self._count] = self._matrix[:self._count]
            self._matrix = grown
        self._matrix[self._count:needed] = l2_normalise(vectors)
        self._person_of_row.extend([person_id] * len(vectors))
        self._count = needed
        self._groups = None
        return len(vectors)

    def remove(self, person_id: PersonId) -> int:
        """Forget every template of a person; returns how many there were."""
        keep = np.fromiter((p != person_id for p in self._person_of_row), bool, self._count)
        removed = int(self._count - keep.sum())
        if removed:
            kept = int(keep.sum())
            self._matrix[:kept] = self._matrix[:self._count][keep]
            self._matrix[kept:self._count] = 0.0
            self._person_of_row = [p for p in self._person_of_row if p != person_id]
            self._count = kept
            self._groups = None
        return removed

    def __len__(self) -> int:
        """The number of templates (not persons)."""
        return self._count

    @property
    def capacity(self) -> int:
        """Rows allocated (grows by chunks, so adds rarely copy the matrix)."""
        return len(self._matrix)

    def persons(self) -> list[PersonId]:
        """Enrolled persons, in order of first enrolment."""
        return list(dict.fromkeys(self._person_of_row))

    @property
    def vectors(self) -> np.ndarray:
        """A read-only view of the used rows [N, D], grouped by person (in `person_ids` order)."""
        self._grouped()
        view = self._matrix[:self._count]
        view.flags.writeable = False
        return view

    def person_ids(self) -> list[PersonId]:
        """The person of each row of `vectors`."""
        self._grouped()
        return list(self._person_of_row)

    # ------------------------------------------------------------------------------------- search

    def _grouped(self) -> tuple[list[PersonId], np.ndarray | None]:
        """(persons in order of first enrolment, the first row of each; None when each has one row).

        The rows are kept grouped by person, so a search reduces its scores per person without
        gathering them first: a gallery loaded person by person is grouped already, and one whose
        adds interleaved is re-sorted here once (a stable sort: each person's rows keep their order).
        """
        with self._group_lock:  # two gates searching a fresh gallery at once: one sorts, once
            if self._groups is None:
                persons = self.persons()
                index_of = {p: i for i, p in enumerate(persons)}
                person_index = np.fromiter((index_of[p] for p in self._person_of_row), np.int64, self._count)
                if np.any(np.diff(person_index) < 0):
                    order = np.argsort(person_index, kind="stable")
                    self._matrix[:self._count] = self._matrix[:self._count][order]
                    self._person_of_row = [self._person_of_row[i] for i in order]
                    person_index = person_index[order]
                starts = None if len(persons) == self._count else \
                    np.searchsorted(person_index, np.arange(len(persons)))
                self._prescreen = None
                if self._count >= self.prescreen_from:
                    from .prescreen import Int8Prescreen

                    self._prescreen = Int8Prescreen(self._matrix[:self._count])
                self._groups = (persons, starts)
            return self._groups

    def prepare(self) -> None:
        """Do now what the first search would (grouping rows, the int8 prescreen of a big gallery):
        call it where a new gallery is loaded, so that no gate frame pays for it."""
        self._grouped()

    def person_scores(self, probes: np.ndarray) -> tuple[list[PersonId], np.ndarray]:
        """(persons, [M, P] best cosine of each probe against each person's templates)."""
        probes = l2_normalise(np.atleast_2d(np.asarray(probes, np.float32)))
        persons, starts = self._grouped()
        if not persons:
            return persons, np.zeros((len(probes), 0), np.float32)
        if probes.shape[1] != self.dim:
            raise ValueError(f"the gallery holds {self.dim}-d vectors, the probe is {probes.shape[1]}-d")
        # [M, N] cosines: a matrix product, memory-bound (100k x 128 floats is 51 MB read per search).
        scores = probes @ self._matrix[:self._count].T
        return persons, scores if starts is None else np.maximum.reduceat(scores, starts, axis=1)

    def top(self, probes: np.ndarray, k: int) -> list[list[tuple[PersonId, float]]]:
        """The `k` most similar persons (person, best cosine), best first, for each probe of [M, D].

        In a gallery of at least `prescreen_from` templates the persons are chosen among the
        PRESCREEN_CANDIDATES rows the int8 prescreen scores highest, and ranked by their exact
        cosines (the scores returned are always exact).
        """
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        self._grouped()
        if self._prescreen is not None:
            return self._top_prescreened(probes, k)
        persons, per_person = self.person_scores(probes)
        k = min(max(1, int(k)), len(persons))
        if not k:
            return [[] for _ in range(len(probes))]
        # The k best persons per probe (unordered from argpartition), then sorted among themselves.
        best = np.argpartition(-per_person, k - 1, axis=1)[:, :k] if k < len(persons) else \
            np.broadcast_to(np.arange(len(persons)), per_person.shape)
        best_scores = np.take_along_axis(per_person, best, axis=1)
        ranked = np.argsort(-best_scores, axis=1, kind="stable")
        best, best_scores = np.take_along_axis(best, ranked, axis=1), np.take_along_axis(best_scores, ranked, axis=1)
        return [[(persons[i], float(s)) for i, s in zip(row, row_scores)] for row, row_scores in zip(best, best_scores)]

    def _top_prescreened(self, probes: np.ndarray, k: int) -> list[list[tuple[PersonId, float]]]:
        probes = l2_normalise(probes)
        if probes.shape[1] != self.dim:
            raise ValueError(f"the gallery holds {self.dim}-d vectors, the probe is {probes.shape[1]}-d")
        count = max(PRESCREEN_CANDIDATES, 4 * int(k))
        found = []
        for probe, rows in zip(probes, self._prescreen.candidates(probes, count)):
            exact = self._matrix[rows] @ probe
            best: dict[PersonId, float] = {}
            for row, score in zip(rows.tolist(), exact.tolist()):
                person = self._person_of_row[row]
                if score > best.get(person, -2.0):
                    best[person] = score
            found.append(sorted(best.items(), key=lambda item: -item[1])[:max(1, int(k))])
        return found

    def search(self, probe: np.ndarray, top_k: int = 2) -> SearchResult | list[SearchResult]:
        """The best person for a probe [D] (a SearchResult), or for each of [M, D] probes (a list).

        The runner-up is the best score of a *different* person, so several templates of the same
        person never eat into the margin. With an empty gallery, or one person only, the missing
        scores are -1. `top_k` (at least 2) is how many persons are ranked; `top()` returns them all.
        """
        probe = np.asarray(probe, np.float32)
        results = []
        for candidates in self.top(probe, max(2, int(top_k))):
            if not candidates:
                results.append(SearchResult(None, NO_SCORE, NO_SCORE))
                continue
            runner_up = candidates[1][1] if len(candidates) > 1 else NO_SCORE
            results.append(SearchResult(candidates[0][0], candidates[0][1], runner_up))
        return results[0] if probe.ndim == 1 else results


# ------------------------------------------------------------------------------------ decisions


@dataclass(frozen=True)
class MatchPolicy:
    """When a face counts as a known person. Scores are cosines in [-1, 1].

    - `threshold`: a frame votes for its best person when score >= threshold ...
    - `margin`: ... and score - runner_up >= margin (clear of the next most similar person);
    - `unknown_band`: scores in [threshold - unknown_band, threshold) are "unknown" (maybe enrolled,
      not sure: ask them to look at the camera) rather than "stranger";
    - `min_face_px`: faces whose shorter box side is below this are ignored (too small to trust);
    - `confirm_n` of the last `confirm_m` evaluated frames of a track must vote for the same person;
    - `cooldown_s`: a person matched is not matched again within this many seconds.
    """

    threshold: float = 0.45
    margin: float = 0.05
    unknown_band: float = 0.10
    min_face_px: float = 48.0
    confirm_n: int = 2
    confirm_m: int = 3
    cooldown_s: float = 10.0

    def __post_init__(self):
        if not -1.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be a cosine in [-1, 1]")
        if self.margin < 0 or self.unknown_band < 0 or self.min_face_px < 0 or self.cooldown_s < 0:
            raise ValueError("margin, unknown_band, min_face_px and cooldown_s must not be negative")
        if not 1 <= self.confirm_n <= self.confirm_m:
            raise ValueError("need 1 <= confirm_n <= confirm_m")


Verdict = Literal["match", "pending", "ambiguous", "unknown", "stranger", "too_small", "cooldown"]


@dataclass
class Decision:
    """What the matcher made of one frame of one track.

    verdict: "match" (open: confirmed in N of M frames), "pending" (a vote, not yet confirmed),
    "cooldown" (confirmed, but that person was matched less than cooldown_s ago), "ambiguous" (over
    the threshold but too close to another person), "unknown" (in the band below the threshold),
    "stranger" (below the band), "too_small" (face ignored).
    """

    verdict: Verdict
    person_id: PersonId | None
    score: float
    runner_up_score: float
    votes: int = 0


class FaceMatcher:
    """Turns per-frame search results, per track (or per gate), into decisions under a MatchPolicy.

    One matcher per gate: the cooldown is per person across all its tracks, so a person who leaves
    the view and comes back as a new track within the cooldown is not matched twice. `clock` is
    injectable (tests use a fake one); `now` can also be passed per call.
    """

    def __init__(self, policy: MatchPolicy, clock: Callable[[], float] = time.monotonic):
        self.policy = policy
        self.clock = clock
        self._tracks: dict[Hashable, deque] = {}
        self._last_match: dict[PersonId, float] = {}

    def classify(self, result: SearchResult) -> Verdict:
        """A single frame's verdict, before confirmation: pending (a vote), ambiguous, unknown or stranger."""
        policy = self.policy
        if result.person_id is None or not math.isfinite(result.score):
            return "stranger"
        if result.score >= policy.threshold - _SLACK:
            return "pending" if result.score - result.runner_up_score >= policy.margin - _SLACK else "ambiguous"
        if result.score >= policy.threshold - policy.unknown_band - _SLACK:
            return "unknown"
        return "stranger"

    def update(self, key: Hashable, result: SearchResult, face_px: float, now: float | None = None) -> Decision:
        """Feed one frame's search result for track (or gate) `key`; `face_px` is the face's shorter side."""
        policy = self.policy
        now = self.clock() if now is None else now
        if face_px < policy.min_face_px:
            return Decision("too_small", None, result.score, result.runner_up_score)
        verdict = self.classify(result)
        window = self._tracks.setdefault(key, deque(maxlen=policy.confirm_m))
        vote = result.person_id if verdict == "pending" else None
        window.append(vote)
        if vote is None:
            person = result.person_id if verdict in ("ambiguous", "unknown") else None
            return Decision(verdict, person, result.score, result.runner_up_score)
        votes = sum(1 for v in window if v == vote)
        if votes < policy.confirm_n:
            return Decision("pending", vote, result.score, result.runner_up_score, votes)
        last = self._last_match.get(vote)
        if last is not None and now - last < policy.cooldown_s:
            return Decision("cooldown", vote, result.score, result.runner_up_score, votes)
        self._last_match = {p: t for p, t in self._last_match.items() if now - t < policy.cooldown_s}
        self._last_match[vote] = now
        window.clear()  # a new match for this track needs a fresh confirmation
        return Decision("match", vote, result.score, result.runner_up_score, votes)

    def forget_person(self, person_id: PersonId) -> None:
        """A person's face data was deleted: drop their cooldown and every vote for them."""
        self._last_match.pop(person_id, None)
        for window in self._tracks.values():
            if person_id in window:
                kept = [v if v != person_id else None for v in window]
                window.clear()
                window.extend(kept)

    def forget(self, key: Hashable) -> None:
        """Drop a track's window (the tracker lost it)."""
        self._tracks.pop(key, None)

    def tracks(self) -> Iterable[Hashable]:
        return list(self._tracks)
