"""Multi-object tracking by detection in the ByteTrack style, in plain numpy and scipy.

Counting people needs the same person to keep the same id from frame to frame, and a detector
alone gives unrelated boxes. The tracker links them:

1. **Predict.** Every live track carries a constant-velocity Kalman filter on (cx, cy, w, h) and
   their velocities; one vectorised step moves all of them to the new frame.
2. **First association.** Detections scoring at least ``high_threshold`` are matched to the
   confirmed tracks, tracked and lost alike, by IoU with the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment`` on 1 - IoU; a pair under ``match_iou`` costs as much
   as no overlap at all and is rejected afterwards).
3. **Second association** (what ByteTrack adds). Detections scoring between ``low_threshold`` and
   ``high_threshold``, the partly occluded people a plain tracker throws away, are matched to the
   confirmed tracks still unmatched that were tracked in the previous frame (not lost ones), with a
   stricter IoU (``low_match_iou``): a weak box only keeps an existing track going, never revives
   or starts one.
4. **Tentative tracks** (seen for fewer than ``min_hits`` frames) get the high detections left over;
   a tentative track that misses a single frame is dropped, so one-frame false positives never get
   an id that a counter would see.
5. **New tracks** start from the high detections still left that score at least
   ``new_track_threshold`` (so a value below ``high_threshold`` changes nothing: weak
   detections never start tracks).

Hysteresis on both ends: a track is *confirmed* once it has been matched in ``min_hits`` frames,
and a confirmed track that stops being matched is *lost*: it keeps predicting and can be re-found
for ``max_age`` frames (a gap of up to ``max_age`` missed frames keeps the id), then it *ends*
(at the ``max_age + 1``-th consecutive miss). Ids are positive, increasing and never reused within
one ``Tracker``, not even after ``reset()``.

One ``update`` is one frame step for the motion model: callers that skip frames should still call
``update`` (with empty arrays) so that velocities stay per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["Track", "Tracker", "iou_matrix"]

# Kalman noise, as a fraction of the box size (the values ByteTrack and DeepSORT use): position
# is trusted to 1/20 of the box, velocity to 1/160 of it per frame.
_STD_POSITION = 1.0 / 20.0
_STD_VELOCITY = 1.0 / 160.0
# Noise is scaled by box size; a floor keeps tiny boxes from making the filter singular.
_MIN_NOISE_SCALE = 1.0
# A predicted box never shrinks below this (pixels), so a coasting track stays matchable.
_MIN_BOX_SIZE = 1e-2
# Coordinates beyond this (pixels) are no camera's: such boxes are dropped like NaN ones, before
# they can overflow an area computation.
_MAX_COORDINATE = 1e7

_TRANSITION = np.eye(8)
_TRANSITION[:4, 4:] = np.eye(4)


@dataclass(eq=False)
class Track:
    """One tracked object as the tracker saw it in the last update (a snapshot, safe to keep).

    ``box`` is the Kalman estimate (x1, y1, x2, y2) after this frame's match, the prediction while
    the track is lost, and for an ended track the estimate at its last match (where it was last
    seen). ``score`` is the score of the last matched detection.
    """

    track_id: int
    box: np.ndarray
    score: float
    confirmed: bool
    hits: int  # frames in which a detection was matched to it, the first one included
    age: int  # frames since creation (0 in the frame that created it)
    misses: int  # frames since the last match (0 when matched in this frame)

    def center(self) -> tuple[float, float]:
        x1, y1, x2, y2 = self.box
        return float((x1 + x2) / 2.0), float((y1 + y2) / 2.0)

    def foot(self) -> tuple[float, float]:
        """Bottom centre: where a person seen from the side touches the floor, so counting lines
        drawn on the floor compare like with like."""
        x1, _, x2, y2 = self.box
        return float((x1 + x2) / 2.0), float(y2)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (xyxy), as an [N, M] array.

    Boxes with no area (or non-finite ones) have IoU 0 with everything.
    """
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    with np.errstate(invalid="ignore", over="ignore"):
        area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
        area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
        width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
        height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
        inter = np.clip(width, 0, None) * np.clip(height, 0, None)
        union = area_a[:, None] + area_b[None, :] - inter
        valid = (union > 0) & np.isfinite(union) & np.isfinite(inter)
        return np.divide(inter, union, out=np.zeros_like(inter), where=valid)


# ----------------------------------------------------------------------------- box conversions


def _xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = boxes.T
    return np.stack([(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1], axis=1)


def _cxcywh_to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy = state[:, 0], state[:, 1]
    half_w = np.maximum(state[:, 2], _MIN_BOX_SIZE) / 2.0
    half_h = np.maximum(state[:, 3], _MIN_BOX_SIZE) / 2.0
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


# ------------------------------------------------------------------ Kalman filter, all tracks at once


def _noise_scale(wh: np.ndarray) -> np.ndarray:
    """[N, 4] scale (w, h, w, h) per track: x and w noise follow the width, y and h the height."""
    wh = np.maximum(wh, _MIN_NOISE_SCALE)
    return wh[:, [0, 1, 0, 1]]


def _kalman_initiate(measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(measurement)
    mean = np.concatenate([measurement, np.zeros((n, 4))], axis=1)
    scale = _noise_scale(measurement[:, 2:4])
    std = np.concatenate([2.0 * _STD_POSITION * scale, 10.0 * _STD_VELOCITY * scale], axis=1)
    cov = np.zeros((n, 8, 8))
    cov[:, np.arange(8), np.arange(8)] = std**2
    return mean, cov


def _kalman_predict(mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = _noise_scale(mean[:, 2:4])
    process_var = np.concatenate([_STD_POSITION * scale, _STD_VELOCITY * scale], axis=1) ** 2
    mean = mean @ _TRANSITION.T
    cov = _TRANSITION @ cov @ _TRANSITION.T
    cov[:, np.arange(8), np.arange(8)] += process_var
    return mean, cov


def _kalman_update(mean: np.ndarray, cov: np.ndarray, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Batched correction; the measurement is (cx, cy, w, h), i.e. H = [I 0]."""
    measurement_var = (_STD_POSITION * _noise_scale(mean[:, 2:4])) ** 2
    innovation_cov = cov[:, :4, :4].copy()
    innovation_cov[:, np.arange(4), np.arange(4)] += measurement_var
    # K = P H^T S^-1, and S is symmetric, so K^T = S^-1 (H P): one batched solve.
    gain = np.linalg.solve(innovation_cov, cov[:, :4, :]).transpose(0, 2, 1)
    innovation = measurement - mean[:, :4]
    mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    cov = cov - gain @ innovation_cov @ gain.transpose(0, 2, 1)
    cov = (cov + cov.transpose(0, 2, 1)) / 2.0  # keep it symmetric despite rounding
    return mean, cov


# ---------------------------------------------------------------------------------- association


def _associate(track_boxes: np.ndarray, det_boxes: np.ndarray, min_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """Optimal one-to-one pairs (track row, detection row) with IoU >= min_iou.

    Pairs under ``min_iou`` cost as much as no overlap (1.0), so a weak pair can never push a good
    one out of the optimum; they are dropped from the answer.
    """
    empty = np.zeros(0, dtype=int)
    if len(track_boxes) == 0 or len(det_boxes) == 0:
        return empty, empty
    iou = iou_matrix(track_boxes, det_boxes)
    cost = np.where(iou >= min_iou, 1.0 - iou, 1.0)
    rows, cols = linear_sum_assignment(cost)
    good = iou[rows, cols] >= min_iou
    return rows[good], cols[good]


def _valid_detections(boxes, scores, low_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The detections worth looking at: finite, with an area, and scoring >= low_threshold."""
    boxes = np.asarray(boxes, dtype=float)
    scores = np.asarray(scores, dtype=float).reshape(-1)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must have shape [N, 4], got {boxes.shape}")
    if len(scores) != len(boxes):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    keep = (np.isfinite(boxes).all(axis=1) & (np.abs(boxes) <= _MAX_COORDINATE).all(axis=1)
            & np.isfinite(scores) & (scores >= low_threshold))
    with np.errstate(invalid="ignore"):
        keep &= (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], scores[keep]


# ------------------------------------------------------------------------------------- tracker


class Tracker:
    """ByteTrack-style tracker; see the module docstring for the algorithm.

    Not thread-safe: one tracker per camera stream, fed from one thread.
    """

    def __init__(self, high_threshold: float = 0.5, low_threshold: float = 0.1,
                 new_track_threshold: float = 0.6, match_iou: float = 0.3, min_hits: int = 3,
                 max_age: int = 30, low_match_iou: float = 0.5) -> None:
        if not 0.0 <= low_threshold <= high_threshold:
            raise ValueError("need 0 <= low_threshold <= high_threshold")
        if not (0.0 < match_iou <= 1.0 and 0.0 < low_match_iou <= 1.0):
            raise ValueError("match_iou and low_match_iou must be in (0, 1]")
        if min_hits < 1 or max_age < 0:
            raise ValueError("need min_hits >= 1 and max_age >= 0")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.new_track_threshold = float(new_track_threshold)
        self.match_iou = float(match_iou)
        self.low_match_iou = float(low_match_iou)
        self.min_hits = int(min_hits)
        self.max_age = int(max_age)
        self._next_id = 1
        self.ended: list[Track] = []
        self._clear()

    def _clear(self) -> None:
        # One row per live track, in parallel arrays, so that every step is one numpy operation.
        self._ids = np.zeros(0, dtype=np.int64)
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 8, 8))
        self._hits = np.zeros(0, dtype=np.int64)
        self._age = np.zeros(0, dtype=np.int64)
        self._misses = np.zeros(0, dtype=np.int64)
        self._confirmed = np.zeros(0, dtype=bool)
        self._score = np.zeros(0)
        self._last_seen_box = np.zeros((0, 4))

    def reset(self) -> None:
        """Forget every track (a camera moved, a stream restarted). Ids keep counting up, so an id
        from before the reset can never be mistaken for a new person."""
        self._clear()
        self.ended = []

    @property
    def tracks(self) -> list[Track]:
        """Every live track: tentative, tracked and lost."""
        return self._snapshot(np.arange(len(self._ids)), _cxcywh_to_xyxy(self._mean))

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> list[Track]:
        """Advance one frame with this frame's detections (xyxy boxes [N, 4], scores [N]).

        Returns the confirmed tracks matched in this frame, the ones a counter should look at.
        Non-finite boxes, boxes without area and scores under ``low_threshold`` are ignored.
        ``ended`` then holds the confirmed tracks that ended in this update.
        """
        boxes, scores = _valid_detections(boxes, scores, self.low_threshold)
        self.ended = []

        if len(self._ids):
            lost = self._misses > 0
            self._mean[lost, 6:8] = 0.0  # a lost box keeps moving but stops growing or shrinking
            self._mean, self._cov = _kalman_predict(self._mean, self._cov)
            self._age += 1
        predicted = _cxcywh_to_xyxy(self._mean)

        high = np.flatnonzero(scores >= self.high_threshold)
        low = np.flatnonzero(scores < self.high_threshold)
        confirmed = np.flatnonzero(self._confirmed)
        tentative = np.flatnonzero(~self._confirmed)

        # 1. high detections x confirmed tracks (tracked and lost)
        rows, cols = _associate(predicted[confirmed], boxes[high], self.match_iou)
        matched_tracks, matched_dets = [confirmed[rows]], [high[cols]]
        left_tracks = np.setdiff1d(confirmed, confirmed[rows])
        left_high = np.setdiff1d(high, high[cols])

        # 2. low detections x confirmed tracks left over that were tracked (not lost) until now
        was_tracked = left_tracks[self._misses[left_tracks] == 0]
        rows, cols = _associate(predicted[was_tracked], boxes[low], self.low_match_iou)
        matched_tracks.append(was_tracked[rows])
        matched_dets.append(low[cols])

        # 3. high detections left over x tentative tracks
        rows, cols = _associate(predicted[tentative], boxes[left_high], self.match_iou)
        matched_tracks.append(tentative[rows])
        matched_dets.append(left_high[cols])
        left_high = np.setdiff1d(left_high, left_high[cols])

        matched_tracks = np.concatenate(matched_tracks)
        matched_dets = np.concatenate(matched_dets)
        self._apply_matches(matched_tracks, boxes[matched_dets], scores[matched_dets])
        self._retire_unmatched()

        new = left_high[scores[left_high] >= self.new_track_threshold]
        self._start_tracks(boxes[new], scores[new])
        reported = np.flatnonzero(self._confirmed & (self._misses == 0))  # new ones too if min_hits == 1
        return self._snapshot(reported, self._last_seen_box)

    # --------------------------------------------------------------------------- bookkeeping

    def _apply_matches(self, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray) -> None:
        unmatched = np.ones(len(self._ids), dtype=bool)
        unmatched[rows] = False
        self._misses[unmatched] += 1
        if len(rows) == 0:
            return
        self._mean[rows], self._cov[rows] = _kalman_update(self._mean[rows], self._cov[rows],
                                                           _xyxy_to_cxcywh(boxes))
        self._hits[rows] += 1
        self._misses[rows] = 0
        self._score[rows] = scores
        self._confirmed[rows] |= self._hits[rows] >= self.min_hits
        self._last_seen_box[rows] = _cxcywh_to_xyxy(self._mean[rows])

    def _retire_unmatched(self) -> None:
        """Drop tentative tracks that missed this frame and end lost tracks past ``max_age``."""
        missed = self._misses > 0
        ending = missed & self._confirmed & (self._misses > self.max_age)
        self.ended = self._snapshot(np.flatnonzero(ending), self._last_seen_box)
        self._keep(~(ending | (missed & ~self._confirmed)))

    def _keep(self, mask: np.ndarray) -> None:
        for name in ("_ids", "_mean", "_cov", "_hits", "_age", "_misses", "_confirmed", "_score",
                     "_last_seen_box"):
            setattr(self, name, getattr(self, name)[mask])

    def _start_tracks(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        n = len(boxes)
        if n == 0:
            return
        mean, cov = _kalman_initiate(_xyxy_to_cxcywh(boxes))
        ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        self._next_id += n
        self._ids = np.concatenate([self._ids, ids])
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._hits = np.concatenate([self._hits, np.ones(n, dtype=np.int64)])
        self._age = np.concatenate([self._age, np.zeros(n, dtype=np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(n, dtype=np.int64)])
        self._confirmed = np.concatenate([self._confirmed, np.full(n, self.min_hits <= 1)])
        self._score = np.concatenate([self._score, scores])
        self._last_seen_box = np.concatenate([self._last_seen_box, _cxcywh_to_xyxy(mean)])

    def _snapshot(self, rows: np.ndarray, boxes: np.ndarray) -> list[Track]:
        return [Track(track_id=int(self._ids[i]), box=boxes[i].copy(), score=float(self._score[i]),
                      confirmed=bool(self._confirmed[i]), hits=int(self._hits[i]), age=int(self._age[i]),
                      misses=int(self._misses[i]))
                for i in rows]
