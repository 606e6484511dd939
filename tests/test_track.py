"""The ByteTrack-style tracker: ids that stick, confirmation and ending hysteresis, the low-score
second association, robustness to bad detector output, and IoU against a scalar reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.vision.track import Track, Tracker, iou_matrix

NO_BOXES = np.zeros((0, 4))
NO_SCORES = np.zeros(0)


def box(cx: float, cy: float, w: float = 40.0, h: float = 100.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def feed(tracker: Tracker, boxes: list[list[float]], scores: list[float]) -> list[Track]:
    return tracker.update(np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores, dtype=float))


def ids(tracks: list[Track]) -> list[int]:
    return sorted(t.track_id for t in tracks)


# --------------------------------------------------------------------------------- identities


def test_one_object_at_constant_velocity_keeps_one_id_and_is_followed_closely():
    tracker = Tracker()
    seen = []
    for frame in range(50):
        truth = box(100 + 6 * frame, 200 + 2 * frame)
        seen.append(feed(tracker, [truth], [0.9]))
    assert [len(s) for s in seen] == [0, 0] + [1] * 48
    assert {t.track_id for s in seen for t in s} == {1}
    last = seen[-1][0]
    assert last.hits == 50 and last.age == 49 and last.misses == 0 and last.confirmed
    assert np.allclose(last.box, box(100 + 6 * 49, 200 + 2 * 49), atol=1.0)
    assert last.center() == pytest.approx((100 + 6 * 49, 200 + 2 * 49), abs=1.0)
    assert last.foot() == pytest.approx((100 + 6 * 49, 200 + 2 * 49 + 50), abs=1.0)


@pytest.mark.parametrize("occluded_score", [0.9, 0.3])
def test_two_objects_crossing_paths_keep_their_own_ids(occluded_score):
    """A walks right, B walks left, 10 px lower; their boxes overlap for several frames. With
    occluded_score 0.3 the one behind is only weakly detected there (ByteTrack's second stage)."""
    tracker = Tracker()
    history: dict[int, list[float]] = {}
    for frame in range(60):
        a_x, b_x = 100 + 8 * frame, 572 - 8 * frame
        overlapping = abs(a_x - b_x) < 40
        frame_tracks = feed(tracker, [box(a_x, 200), box(b_x, 210)],
                            [0.9, occluded_score if overlapping else 0.9])
        for t in frame_tracks:
            history.setdefault(t.track_id, []).append(t.center()[0])
    assert sorted(history) == [1, 2]
    a_positions, b_positions = history[1], history[2]
    assert all(np.diff(a_positions) > 0), "track 1 must follow A (always moving right)"
    assert all(np.diff(b_positions) < 0), "track 2 must follow B (always moving left)"
    assert len(a_positions) == len(b_positions) == 58  # reported in every frame once confirmed


@pytest.mark.parametrize("min_hits", [1, 2, 3, 5])
def test_a_track_is_reported_only_from_its_min_hits_th_frame(min_hits):
    tracker = Tracker(min_hits=min_hits)
    for frame in range(min_hits - 1):
        assert feed(tracker, [box(300, 300)], [0.9]) == []
        (tentative,) = tracker.tracks
        assert not tentative.confirmed and tentative.hits == frame + 1
    (reported,) = feed(tracker, [box(300, 300)], [0.9])
    assert reported.confirmed and reported.hits == min_hits and reported.track_id == 1


def test_a_tentative_track_that_misses_one_frame_is_dropped_silently():
    tracker = Tracker(min_hits=3)
    feed(tracker, [box(300, 300)], [0.9])
    feed(tracker, [box(300, 300)], [0.9])
    assert feed(tracker, [], []) == []
    assert tracker.tracks == [] and tracker.ended == []  # never reported, so never "ended" either
    for _ in range(2):
        feed(tracker, [box(300, 300)], [0.9])
    assert ids(feed(tracker, [box(300, 300)], [0.9])) == [2]


def test_an_occlusion_shorter_than_max_age_refinds_the_same_id_where_it_was_heading():
    tracker = Tracker(max_age=30)
    for frame in range(10):
        feed(tracker, [box(100 + 5 * frame, 300)], [0.9])
    for frame in range(10, 30):  # hidden for 20 frames, still walking
        assert feed(tracker, [], []) == []
        (lost,) = tracker.tracks
        assert lost.confirmed and lost.misses == frame - 9 and tracker.ended == []
    assert lost.center()[0] > 100 + 5 * 9 + 80  # the prediction kept walking (velocity still converging)
    (refound,) = feed(tracker, [box(100 + 5 * 30, 300)], [0.9])
    assert refound.track_id == 1 and refound.misses == 0 and refound.hits == 11


@pytest.mark.parametrize("gap, same_id", [(5, True), (6, False)])
def test_max_age_is_the_longest_gap_a_track_survives(gap, same_id):
    tracker = Tracker(max_age=5)
    for _ in range(5):
        feed(tracker, [box(300, 300)], [0.9])
    ended_at = []
    for frame in range(gap):
        feed(tracker, [], [])
        if tracker.ended:
            ended_at.append((frame + 1, [t.track_id for t in tracker.ended]))
    assert ended_at == ([] if same_id else [(6, [1])])
    for _ in range(2):
        feed(tracker, [box(300, 300)], [0.9])
    reported = feed(tracker, [box(300, 300)], [0.9])
    assert ids(reported) == ([1] if same_id else [2])


def test_an_ended_track_is_reported_where_it_was_last_seen():
    tracker = Tracker(max_age=2)
    for frame in range(5):
        feed(tracker, [box(100 + 10 * frame, 300)], [0.9])
    for _ in range(3):
        feed(tracker, [], [])
    (ended,) = tracker.ended
    assert ended.track_id == 1 and ended.misses == 3 and ended.hits == 5
    assert ended.center() == pytest.approx((140, 300), abs=2.0)  # not 30 px further on, as predicted
    assert tracker.tracks == []
    feed(tracker, [], [])
    assert tracker.ended == []  # "ended" is about the last update only


def test_low_score_detections_keep_a_track_alive_only_with_the_second_stage():
    """Tracked at 0.9, then partly occluded (score 0.3) for 20 frames, then clear again."""
    def run(tracker: Tracker) -> list[list[int]]:
        out = []
        for frame in range(40):
            score = 0.3 if 10 <= frame < 30 else 0.9
            out.append(ids(feed(tracker, [box(100 + 4 * frame, 300)], [score])))
        return out

    bytetrack = run(Tracker(max_age=5))
    assert bytetrack[2:] == [[1]] * 38  # reported through the occlusion, one id throughout

    high_only = run(Tracker(max_age=5, low_threshold=0.5, high_threshold=0.5))
    assert all(frame == [] for frame in high_only[10:32])  # lost, then ended, then tentative
    assert high_only[2:10] == [[1]] * 8 and high_only[32:] == [[2]] * 8


def test_low_score_detections_never_start_or_revive_tracks():
    tracker = Tracker(max_age=10)
    for _ in range(20):
        assert feed(tracker, [box(300, 300)], [0.4]) == []
    assert tracker.tracks == []
    for _ in range(3):
        feed(tracker, [box(300, 300)], [0.9])
    feed(tracker, [], [])  # now lost: a weak box may not bring it back
    assert feed(tracker, [box(300, 300)], [0.4]) == []
    assert tracker.tracks[0].misses == 2
    assert ids(feed(tracker, [box(300, 300)], [0.9])) == [1]


def test_a_new_track_threshold_under_high_threshold_still_starts_no_track_from_a_weak_box():
    tracker = Tracker(high_threshold=0.5, new_track_threshold=0.2, min_hits=1)
    assert feed(tracker, [box(100, 300)], [0.3]) == [] and tracker.tracks == []
    assert ids(feed(tracker, [box(100, 300)], [0.5])) == [1]


def test_detections_between_high_and_new_track_threshold_match_but_do_not_start_tracks():
    tracker = Tracker(high_threshold=0.5, new_track_threshold=0.6)
    for _ in range(5):
        feed(tracker, [box(300, 300)], [0.55])
    assert tracker.tracks == []
    for _ in range(3):
        feed(tracker, [box(300, 300)], [0.9])
    assert ids(feed(tracker, [box(300, 300)], [0.55])) == [1]


# ------------------------------------------------------------------------------ bad detector output


def test_nan_inf_degenerate_and_absurd_boxes_are_ignored():
    good = box(300, 300)
    junk = [
        [np.nan, 0, 10, 10], [0, 0, np.inf, 10], [-np.inf, 0, 10, 10],
        [50, 50, 50, 90],  # zero width
        [50, 90, 80, 90],  # zero height
        [80, 50, 50, 90],  # inverted
        [0, 0, 1e12, 1e12],  # no camera is that big
        box(600, 300),  # fine box, but NaN score
        box(900, 300),  # fine box, score under low_threshold
    ]
    scores = [0.9] * 7 + [np.nan, 0.05]
    clean, dirty = Tracker(min_hits=1), Tracker(min_hits=1)
    for frame in range(5):
        shifted = [c + 3 * frame if i % 2 == 0 else c for i, c in enumerate(good)]
        expected = feed(clean, [shifted], [0.9])
        got = feed(dirty, junk + [shifted], scores + [0.9])
        assert [t.track_id for t in got] == [t.track_id for t in expected] == [1]
        assert np.allclose(got[0].box, expected[0].box)
    assert len(dirty.tracks) == 1


def test_empty_frames_in_every_shape_are_fine():
    tracker = Tracker()
    assert tracker.update(NO_BOXES, NO_SCORES) == []
    assert tracker.update(np.array([]), np.array([])) == []
    assert tracker.update([], []) == []
    assert tracker.tracks == [] and tracker.ended == []


def test_mismatched_shapes_are_errors():
    tracker = Tracker()
    with pytest.raises(ValueError):
        tracker.update(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(ValueError):
        tracker.update(np.zeros((2, 5)), np.zeros(2))


def test_bad_settings_are_errors():
    for kwargs in ({"low_threshold": 0.6, "high_threshold": 0.5}, {"min_hits": 0}, {"max_age": -1},
                   {"match_iou": 0.0}, {"low_match_iou": 1.5}):
        with pytest.raises(ValueError):
            Tracker(**kwargs)


def test_reset_forgets_tracks_but_never_reuses_ids():
    tracker = Tracker(min_hits=1)
    assert ids(feed(tracker, [box(100, 100), box(400, 100)], [0.9, 0.9])) == [1, 2]
    tracker.reset()
    assert tracker.tracks == []
    assert ids(feed(tracker, [box(100, 100)], [0.9])) == [3]


def test_returned_tracks_are_snapshots():
    tracker = Tracker(min_hits=1)
    (first,) = feed(tracker, [box(100, 100)], [0.9])
    kept = first.box.copy()
    first.box[:] = -1
    feed(tracker, [box(110, 100)], [0.9])
    assert np.allclose(tracker.tracks[0].box, box(110, 100), atol=5) and np.allclose(first.box, -1)
    assert not np.allclose(kept, -1)


# ------------------------------------------------------------------------------ many objects


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_crowd_with_noise_and_missed_detections_is_tracked_without_id_switches(seed):
    """Ten people walking across a 1280x720 view, 2 px detector noise, 10 % missed detections,
    some low scores and two one-frame false positives per frame; scored with py-motmetrics."""
    mm = pytest.importorskip("motmetrics")
    rng = np.random.default_rng(seed)
    n, frames = 10, 100
    start = np.column_stack([rng.uniform(100, 1180, n), rng.uniform(100, 620, n)])
    velocity = rng.uniform(-4, 4, (n, 2))
    size = np.column_stack([rng.uniform(30, 50, n), rng.uniform(80, 120, n)])
    tracker = Tracker()
    acc = mm.MOTAccumulator(auto_id=True)
    reported_ids: set[int] = set()
    for frame in range(frames):
        centres = start + velocity * frame
        truth = np.column_stack([centres - size / 2, centres + size / 2])
        detected = rng.random(n) > 0.1
        noisy = truth[detected] + rng.normal(0, 2, (detected.sum(), 4))
        scores = np.where(rng.random(detected.sum()) < 0.15, 0.3, 0.9)
        clutter_xy = rng.uniform(0, [1240, 620], (2, 2))  # one-frame false positives
        clutter = np.column_stack([clutter_xy, clutter_xy + [40, 100]])
        tracks = tracker.update(np.vstack([noisy, clutter]), np.concatenate([scores, [0.7, 0.7]]))
        reported_ids |= {t.track_id for t in tracks}
        distances = 1 - iou_matrix(truth, np.array([t.box for t in tracks]).reshape(-1, 4))
        distances[distances > 0.5] = np.nan
        acc.update(list(range(n)), [t.track_id for t in tracks], distances)
    summary = mm.metrics.create().compute(acc, metrics=["num_switches", "precision", "recall", "idf1"])
    assert summary["num_switches"].iloc[0] == 0
    assert len(reported_ids) == n  # one id per person, none for the clutter
    assert summary["precision"].iloc[0] > 0.99  # a clutter box may now and then stand in for a miss
    # Only matched tracks are reported, so recall is bounded by the detector's 0.9, less the
    # frames before confirmation.
    assert summary["recall"].iloc[0] > 0.8
    assert summary["idf1"].iloc[0] > 0.9


# ---------------------------------------------------------------------------------- properties

coordinate = st.one_of(st.floats(-100, 800, allow_nan=False), st.sampled_from([np.nan, np.inf, -np.inf, 1e9]))
raw_box = st.lists(coordinate, min_size=4, max_size=4)
frame = st.lists(st.tuples(raw_box, st.one_of(st.floats(0, 1), st.just(np.nan))), max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(frame, max_size=25), st.integers(1, 4), st.integers(0, 4))
def test_random_detections_never_crash_and_ids_stay_unique(frames, min_hits, max_age):
    tracker = Tracker(min_hits=min_hits, max_age=max_age)
    retired: set[int] = set()
    highest = 0
    for detections in frames:
        boxes = np.array([b for b, _ in detections], dtype=float).reshape(-1, 4)
        scores = np.array([s for _, s in detections], dtype=float)
        reported = tracker.update(boxes, scores)
        live = tracker.tracks
        live_ids = [t.track_id for t in live]
        assert len(set(live_ids)) == len(live_ids)
        assert all(i > 0 for i in live_ids)
        assert {t.track_id for t in reported} <= set(live_ids)
        assert all(t.confirmed and t.misses == 0 and np.isfinite(t.box).all() for t in reported)
        assert all(t.misses <= max_age for t in live)
        assert all(t.confirmed for t in live if t.misses > 0)  # tentative tracks never coast
        assert not set(live_ids) & retired
        new = [i for i in live_ids if i > highest]
        assert sorted(new) == list(range(highest + 1, highest + 1 + len(new)))
        highest = max([highest, *live_ids])
        retired |= {t.track_id for t in tracker.ended}


def reference_iou(a, b) -> float:
    ax1, ay1, ax2, ay2 = a
    bx1, by1, bx2, by2 = b
    area_a = max(0.0, ax2 - ax1) * max(0.0, ay2 - ay1)
    area_b = max(0.0, bx2 - bx1) * max(0.0, by2 - by1)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


finite_box = st.tuples(st.floats(0, 500), st.floats(0, 500), st.floats(0, 200), st.floats(0, 200)).map(
    lambda b: (b[0], b[1], b[0] + b[2], b[1] + b[3]))


@settings(max_examples=200, deadline=None)
@given(st.lists(finite_box, max_size=6), st.lists(finite_box, max_size=6))
def test_iou_matrix_matches_a_scalar_reference(a, b):
    got = iou_matrix(np.array(a, dtype=float).reshape(-1, 4), np.array(b, dtype=float).reshape(-1, 4))
    assert got.shape == (len(a), len(b))
    for i, box_a in enumerate(a):
        for j, box_b in enumerate(b):
            assert math.isclose(got[i, j], reference_iou(box_a, box_b), rel_tol=1e-9, abs_tol=1e-12)
    assert ((got >= 0) & (got <= 1 + 1e-12)).all()


def test_iou_matrix_known_values():
    got = iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30],
                                                           [0, 0, 0, 10], [np.nan, 0, 10, 10]]))
    assert got.shape == (1, 5) and got[0].tolist() == pytest.approx([1.0, 1 / 3, 0.0, 0.0, 0.0])
