"""Counting lines, zones and interval figures on synthetic trajectories.

Image coordinates throughout: y grows downwards, so for a line drawn left to right the "left"
side is the part of the image above it.
"""

from __future__ import annotations

import math
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.vision.count import (
    CountingLine,
    Crossing,
    DwellEnded,
    IntervalAggregator,
    LineCounter,
    Zone,
    ZoneMonitor,
    points_in_polygon,
)
from gateway.vision.track import Track

HORIZONTAL = [(0.0, 100.0), (200.0, 100.0)]  # drawn left to right: "left" is above (y < 100)


def person(track_id: int, x: float, y: float) -> Track:
    """A confirmed track whose foot (bottom centre) is at (x, y); its centre is 20 px higher."""
    return Track(track_id, np.array([x - 10, y - 40, x + 10, y], dtype=float), 0.9, True, 3, 3, 0)


def walk(counter: LineCounter, track_id: int, points) -> list[Crossing]:
    crossings = []
    for x, y in points:
        crossings += counter.update([person(track_id, x, y)])
    return crossings


def vertical_path(x: float, ys) -> list[tuple[float, float]]:
    return [(x, y) for y in ys]


def directions(crossings) -> list[str]:
    return [c.direction for c in crossings]


# ------------------------------------------------------------------------------- a single line


@pytest.mark.parametrize("points, in_side, walking_up_is", [
    (HORIZONTAL, "left", "in"),
    (HORIZONTAL, "right", "out"),
    (HORIZONTAL[::-1], "left", "out"),  # drawn right to left: "left" is below
    (HORIZONTAL[::-1], "right", "in"),
])
def test_a_clean_crossing_counts_once_by_in_side_and_point_order(points, in_side, walking_up_is):
    walking_down_is = "out" if walking_up_is == "in" else "in"
    counter = LineCounter([CountingLine("door", points, in_side=in_side)])
    up = walk(counter, 1, vertical_path(100, range(150, 49, -10)))
    assert up == [Crossing("door", 1, walking_up_is)]
    down = walk(counter, 2, vertical_path(60, range(50, 151, 10)))
    assert down == [Crossing("door", 2, walking_down_is)]
    assert counter.totals == {"door": {"in": 1, "out": 1}}


def test_left_follows_the_direction_the_line_is_drawn_in():
    """A line drawn from top to bottom: walking down it, your left hand is on the image's right."""
    counter = LineCounter([CountingLine("L", [(100, 0), (100, 200)], in_side="left")])
    assert directions(walk(counter, 1, [(x, 120) for x in range(40, 161, 20)])) == ["in"]


def test_crossing_the_extension_of_a_segment_does_not_count():
    counter = LineCounter([CountingLine("door", HORIZONTAL)])
    for x in (-30, 230, 500):  # the infinite line y = 100, but beside the segment
        assert walk(counter, int(x) + 1000, vertical_path(x, range(150, 49, -10))) == []
    assert counter.totals == {"door": {"in": 0, "out": 0}}


def test_jitter_on_the_line_counts_at_most_once():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=5)])
    approach = vertical_path(100, [130, 120, 110, 102])
    jitter = vertical_path(100, [100 + (2 if i % 2 else -2) for i in range(20)])
    crossings = walk(counter, 1, approach + jitter)
    assert crossings == []  # within the band: nothing yet
    crossings = walk(counter, 1, vertical_path(100, [96, 90, 70]))
    assert directions(crossings) == ["in"]
    assert counter.totals["door"] == {"in": 1, "out": 0}


def test_jitter_on_the_line_then_going_back_counts_nothing():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=5)])
    path = vertical_path(100, [130, 110, 102] + [100 + (3 if i % 2 else -3) for i in range(20)] + [110, 140])
    assert walk(counter, 1, path) == []


def test_turning_back_before_getting_clear_of_the_line_counts_nothing():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=5)])
    assert walk(counter, 1, vertical_path(100, [140, 120, 104, 97, 96, 104, 130])) == []
    assert counter.totals["door"] == {"in": 0, "out": 0}


def test_crossing_then_turning_back_after_getting_clear_counts_in_then_out():
    """Both crossings happened; the platform wants to see both."""
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=5)])
    crossings = walk(counter, 1, vertical_path(100, [140, 120, 104, 98, 94, 92, 98, 104, 120]))
    assert directions(crossings) == ["in", "out"]
    assert counter.totals["door"] == {"in": 1, "out": 1}


def test_the_crossing_is_counted_in_the_frame_the_track_gets_clear():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=5)])
    per_frame = [counter.update([person(1, 100, y)]) for y in [120, 101, 99, 96, 95, 90]]
    assert [len(c) for c in per_frame] == [0, 0, 0, 0, 1, 0]


def test_zero_hysteresis_counts_in_the_frame_of_the_crossing():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=0)])
    per_frame = [counter.update([person(1, 100, y)]) for y in [120, 101, 99, 90]]
    assert [len(c) for c in per_frame] == [0, 0, 1, 0]


def test_a_point_exactly_on_the_line_is_decided_one_consistent_way():
    """On-the-line points belong to one side (here the one below). With no hysteresis, touching
    the line from the other side is a crossing there and back: the net is always right."""
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=0)])
    assert walk(counter, 1, vertical_path(100, [110, 100, 110, 100, 100, 110])) == []
    assert directions(walk(counter, 2, vertical_path(100, [90, 100, 90]))) == ["out", "in"]
    # Stop on the line, then carry on: exactly one crossing, from either side.
    assert directions(walk(counter, 3, vertical_path(100, [110, 100, 100, 90]))) == ["in"]
    assert directions(walk(counter, 4, vertical_path(100, [90, 100, 100, 110]))) == ["out"]
    # Exactly through an end point: trajectories are taken as shifted a hair towards +x, so
    # the left end (x = 0) is crossed and the right end (x = 200) is missed.
    assert directions(walk(counter, 5, [(0, 110), (0, 90)])) == ["in"]
    assert walk(counter, 7, [(200, 110), (200, 90)]) == []
    # Along the line itself and back.
    assert walk(counter, 6, [(-20, 100), (50, 100), (250, 100), (-20, 100)]) == []


def test_touching_the_line_counts_nothing_with_any_hysteresis():
    counter = LineCounter([CountingLine("door", HORIZONTAL, hysteresis=1)])
    assert walk(counter, 1, vertical_path(100, [110, 100, 110, 100, 100, 110])) == []
    assert walk(counter, 2, vertical_path(100, [90, 100, 90, 100, 90])) == []


# ------------------------------------------------------------------------------------ polylines


def test_a_polyline_counts_crossings_of_each_segment_by_its_own_direction():
    # Flat from (0, 100) to (100, 100), then down to the right to (200, 200): "left" is above/right.
    line = CountingLine("mouth", [(0, 100), (100, 100), (200, 200)], in_side="left", hysteresis=5)
    counter = LineCounter([line])
    assert directions(walk(counter, 1, vertical_path(50, [130, 110, 90, 70]))) == ["in"]  # first segment
    assert directions(walk(counter, 2, [(120, 170), (140, 150), (160, 130), (180, 110)])) == ["in"]  # second
    assert directions(walk(counter, 3, [(180, 110), (140, 150), (120, 170)])) == ["out"]
    assert directions(walk(counter, 4, [(100, 130), (100, 100), (100, 70)])) == ["in"]  # via the vertex
    assert walk(counter, 5, vertical_path(250, range(300, 0, -20))) == []  # beyond the end
    assert counter.totals == {"mouth": {"in": 3, "out": 1}}


def test_a_step_crossing_two_segments_of_a_zigzag_nets_out():
    """A long step (a fast walker, a dropped frame) over a V counts its net crossing: none."""
    line = CountingLine("v", [(0, 0), (100, 100), (200, 0)], hysteresis=5)
    counter = LineCounter([line])
    assert walk(counter, 1, [(20, 60), (180, 60)]) == []  # in through one arm, out through the other
    assert directions(walk(counter, 2, [(100, 150), (100, 40)])) == ["in"]  # through the vertex, once


# -------------------------------------------------------------------------- tracks and their state


def test_a_track_hidden_while_crossing_is_counted_once_when_seen_again():
    counter = LineCounter([CountingLine("door", HORIZONTAL)])
    walk(counter, 1, vertical_path(100, [160, 140, 120]))
    for _ in range(10):  # occluded: the tracker reports other people only
        assert counter.update([person(2, 20, 300)]) == []
    assert directions(walk(counter, 1, vertical_path(100, [60, 50, 40]))) == ["in"]


def test_state_is_dropped_when_the_track_ends():
    counter = LineCounter([CountingLine("door", HORIZONTAL)])
    walk(counter, 7, vertical_path(100, [160, 140]))
    counter.update([], ended_track_ids=[7])
    assert counter.update([person(7, 100, 40)]) == []  # a new start, not a step from y = 140
    assert counter._tracks.keys() == {7}
    counter.update([], ended_track_ids=[7, 99])
    assert counter._tracks == {}


def test_tracks_are_counted_independently_in_one_update():
    counter = LineCounter([CountingLine("a", HORIZONTAL), CountingLine("b", [(300, 0), (300, 200)])])
    frames = [
        [person(1, 100, 130), person(2, 100, 70), person(3, 280, 50)],
        [person(1, 100, 70), person(2, 100, 130), person(3, 320, 50)],
    ]
    crossings = [c for tracks in frames for c in counter.update(tracks)]
    assert sorted((c.line_id, c.track_id, c.direction) for c in crossings) == [
        ("a", 1, "in"), ("a", 2, "out"), ("b", 3, "in")]
    assert counter.totals == {"a": {"in": 1, "out": 1}, "b": {"in": 1, "out": 0}}


def test_foot_and_center_references_differ():
    """The foot is 20 px below the centre: a step from y = 110 to 95 takes the foot across y = 100
    but leaves the centre (90 -> 75) above it."""
    line = CountingLine("door", HORIZONTAL)
    by_foot, by_center = LineCounter([line]), LineCounter([line], reference="center")
    path = vertical_path(100, [110, 95, 90])
    assert directions(walk(by_foot, 1, path)) == ["in"]
    assert walk(by_center, 1, path) == []


def test_reset_clears_totals_and_state():
    counter = LineCounter([CountingLine("door", HORIZONTAL)])
    walk(counter, 1, vertical_path(100, [140, 60]))
    counter.reset()
    assert counter.totals == {"door": {"in": 0, "out": 0}}
    assert counter.update([person(1, 100, 140)]) == []


@pytest.mark.parametrize("kwargs", [
    {"points": [(0, 0)]},
    {"points": [(0, 0), (0, 0), (10, 0)]},
    {"points": [(0, 0), (math.nan, 1)]},
    {"points": HORIZONTAL, "in_side": "inside"},
    {"points": HORIZONTAL, "hysteresis": -1},
])
def test_bad_lines_are_errors(kwargs):
    with pytest.raises(ValueError):
        CountingLine("bad", **kwargs)


def test_bad_counter_settings_are_errors():
    with pytest.raises(ValueError):
        LineCounter([CountingLine("a", HORIZONTAL), CountingLine("a", HORIZONTAL)])
    with pytest.raises(ValueError):
        LineCounter([], reference="head")
    with pytest.raises(ValueError):
        ZoneMonitor([Zone("z", [(0, 0), (1, 0), (0, 1)])], reference="head")
    with pytest.raises(ValueError):
        Zone("z", [(0, 0), (1, 0)])


# --------------------------------------------------------------------------------- consistency

# Polylines that are graphs y = f(x) over the whole area the trajectories live in, so "which side"
# is well defined everywhere: the side change between two points is what a counter must report.
GEOMETRIES = {
    # a broad one with integer pixels
    "broad": ([(-50, 180), (120, 90), (260, 230), (450, 140)], (0, 400), (0, 320), (0, 20)),
    # a tiny one, where trajectories often land exactly on segments and pass through vertices
    "tiny": ([(-10, 5), (5, 5), (10, 10), (25, 0)], (0, 20), (-10, 20), (0, 3)),
}


def graph_y(vertices, x: float) -> float:
    xs, ys = zip(*vertices)
    return float(np.interp(x, xs, ys))


def distance_to_segment(p, a, b) -> float:
    (px, py), (ax, ay), (bx, by) = p, a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)))
    return math.hypot(px - ax - t * dx, py - ay - t * dy)


@st.composite
def trajectories(draw, geometry: str):
    _, (x0, x1), (y0, y1), (h0, h1) = GEOMETRIES[geometry]
    point = st.tuples(st.integers(x0, x1), st.integers(y0, y1))
    hysteresis = draw(st.integers(h0, h1))
    paths = draw(st.lists(st.lists(point, min_size=2, max_size=30), min_size=1, max_size=3))
    # each path is hidden (absent from the update) in some frames, never first or last
    hidden = [draw(st.lists(st.booleans(), min_size=len(p), max_size=len(p))) for p in paths]
    return hysteresis, paths, hidden


def check_consistency(geometry, drawn, in_side, reverse):
    vertices = GEOMETRIES[geometry][0]
    hysteresis, paths, hidden = drawn
    clear = hysteresis + 0.5
    for path in paths:
        for end in (path[0], path[-1]):
            assume(min(distance_to_segment(end, a, b) for a, b in pairwise(vertices)) >= clear)
    points = vertices[::-1] if reverse else vertices
    counter = LineCounter([CountingLine("L", points, in_side=in_side, hysteresis=hysteresis)])
    crossings = []
    for frame in range(max(len(p) for p in paths)):
        tracks = [person(i, *path[frame]) for i, path in enumerate(paths)
                  if frame < len(path) and (frame in (0, len(path) - 1) or not hidden[i][frame])]
        crossings += counter.update(tracks)
    # Drawn left to right, the "left" side is above the graph (smaller y).
    in_is_above = (in_side == "left") != reverse
    for i, path in enumerate(paths):
        def is_in(p):
            return (p[1] < graph_y(vertices, p[0])) == in_is_above
        net = sum(1 if c.direction == "in" else -1 for c in crossings if c.track_id == i)
        assert net == int(is_in(path[-1])) - int(is_in(path[0]))
        # and no crossing is ever counted while the point is still within the band
        counts = [c for c in crossings if c.track_id == i]
        assert len(counts) <= len(path) - 1


@settings(max_examples=300, deadline=None)
@given(trajectories("broad"), st.sampled_from(["left", "right"]), st.booleans())
def test_counts_equal_the_net_side_change_on_random_trajectories(drawn, in_side, reverse):
    check_consistency("broad", drawn, in_side, reverse)


@settings(max_examples=300, deadline=None)
@given(trajectories("tiny"), st.sampled_from(["left", "right"]), st.booleans())
def test_counts_equal_the_net_side_change_even_through_vertices_and_along_segments(drawn, in_side, reverse):
    check_consistency("tiny", drawn, in_side, reverse)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(-50, 250), st.floats(0, 200)), min_size=2, max_size=30),
       st.floats(0, 20))
def test_a_crossing_is_only_ever_counted_clear_of_the_line(path, hysteresis):
    line = CountingLine("door", HORIZONTAL, hysteresis=hysteresis)
    counter = LineCounter([line])
    for x, y in path:
        if counter.update([person(1, x, y)]):
            assert line.distance(np.array([[x, y]]))[0] >= hysteresis


# --------------------------------------------------------------------------------------- zones

SQUARE = Zone("square", [(100, 100), (200, 100), (200, 200), (100, 200)])
L_SHAPE = Zone("ell", [(0, 0), (60, 0), (60, 20), (20, 20), (20, 60), (0, 60)])  # concave


def test_points_in_polygon_on_a_concave_zone():
    points = np.array([[10, 10], [50, 10], [10, 50], [50, 50], [30, 30], [-1, 10], [70, 10]])
    assert L_SHAPE.contains(points).tolist() == [True, True, True, False, False, False, False]
    assert points_in_polygon(np.zeros((0, 2)), np.array(L_SHAPE.polygon)).shape == (0,)


def reference_inside(point, polygon) -> bool:
    """Winding number, a different algorithm from the vectorised ray casting."""
    x, y = point
    winding = 0
    for (x1, y1), (x2, y2) in zip(polygon, polygon[1:] + polygon[:1]):
        side = (x2 - x1) * (y - y1) - (x - x1) * (y2 - y1)
        if y1 <= y < y2 and side > 0:
            winding += 1
        elif y2 <= y < y1 and side < 0:
            winding -= 1
    return winding != 0


STAR = [(50 + 40 * math.cos(k * math.pi / 5) * (1 if k % 2 == 0 else 0.4),
         50 + 40 * math.sin(k * math.pi / 5) * (1 if k % 2 == 0 else 0.4)) for k in range(10)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0, 100)), min_size=1, max_size=20))
def test_points_in_polygon_matches_a_winding_number_reference(points):
    polygon = STAR
    edges = list(zip(polygon, polygon[1:] + polygon[:1]))
    for p in points:  # points on an edge may go either way
        assume(min(distance_to_segment(p, a, b) for a, b in edges) > 1e-6)
    got = points_in_polygon(np.array(points), np.array(polygon))
    assert got.tolist() == [reference_inside(p, polygon) for p in points]


def test_occupancy_and_dwell_with_a_fake_clock():
    monitor = ZoneMonitor([SQUARE, L_SHAPE])
    timeline = [  # (now, [(track_id, foot)]): 1 walks through the square, 2 stays in it
        (0.0, [(1, (50, 150)), (2, (150, 150))]),
        (1.0, [(1, (120, 150)), (2, (151, 150))]),
        (2.0, [(1, (150, 150)), (2, (152, 150))]),
        (3.5, [(1, (190, 150)), (2, (153, 150))]),
        (4.0, [(1, (250, 150)), (2, (154, 150))]),
    ]
    occupancy, ended = [], []
    for now, seen in timeline:
        ended += monitor.update([person(i, *foot) for i, foot in seen], now)
        occupancy.append(monitor.occupancy())
    assert [o["square"] for o in occupancy] == [1, 2, 2, 2, 1]
    assert all(o["ell"] == 0 for o in occupancy)
    # track 1 first seen inside at 1.0, last seen inside at 3.5
    assert ended == [DwellEnded("square", 1, 2.5)]


def test_a_track_ending_inside_a_zone_ends_its_dwell_at_its_last_sighting():
    monitor = ZoneMonitor([SQUARE])
    monitor.update([person(5, 150, 150)], now=10.0)
    monitor.update([person(5, 150, 160)], now=12.0)
    for now in (13.0, 14.0, 15.0):  # lost: still counted as there
        assert monitor.update([], now) == []
        assert monitor.occupancy() == {"square": 1}
    assert monitor.update([], 16.0, ended_track_ids=[5]) == [DwellEnded("square", 5, 2.0)]
    assert monitor.occupancy() == {"square": 0}
    assert monitor.update([], 17.0, ended_track_ids=[5]) == []  # ending twice is harmless


def test_overlapping_zones_and_reentry():
    big = Zone("big", [(0, 0), (400, 0), (400, 400), (0, 400)])
    monitor = ZoneMonitor([SQUARE, big])
    ended = []
    for now, x in enumerate([150, 150, 250, 150, 150, 150]):
        ended += monitor.update([person(1, x, 150)], float(now))
    assert ended == [DwellEnded("square", 1, 1.0)]  # the second visit to the square is still on
    assert monitor.occupancy() == {"square": 1, "big": 1}
    ended = monitor.update([], 9.0, ended_track_ids=[1])
    assert sorted(ended, key=lambda d: d.zone_id) == [DwellEnded("big", 1, 5.0), DwellEnded("square", 1, 2.0)]


def test_the_center_reference_for_zones():
    monitor = ZoneMonitor([SQUARE], reference="center")
    monitor.update([person(1, 150, 215)], 0.0)  # foot outside (y = 215), centre inside (y = 195)
    assert monitor.occupancy() == {"square": 1}


# ---------------------------------------------------------------------------------- intervals


def test_interval_aggregator_snapshot_values_and_reset():
    agg = IntervalAggregator(["L1", "L2"], ["Z1"])
    agg.update([Crossing("L1", 1, "in"), Crossing("L1", 2, "in")], occupancy={"Z1": 1})
    agg.update([Crossing("L1", 3, "in"), Crossing("L1", 1, "out")], [DwellEnded("Z1", 1, 10.0)], {"Z1": 3})
    agg.update(dwells=[DwellEnded("Z1", 2, 14.0), DwellEnded("Z1", 4, 12.0), DwellEnded("Z1", 5, 12.0)],
               occupancy={"Z1": 0})
    agg.update(occupancy={"Z1": 2})
    assert agg.snapshot_and_reset() == {
        "lines": {"L1": {"in": 3, "out": 1}, "L2": {"in": 0, "out": 0}},
        "zones": {"Z1": {"avg_occupancy": 1.5, "peak_occupancy": 3, "mean_dwell_s": 12.0, "dwells": 4}},
    }
    assert agg.snapshot_and_reset() == {
        "lines": {"L1": {"in": 0, "out": 0}, "L2": {"in": 0, "out": 0}},
        "zones": {"Z1": {"avg_occupancy": None, "peak_occupancy": None, "mean_dwell_s": None, "dwells": 0}},
    }
    agg.update(occupancy={"Z1": 0})
    assert agg.snapshot_and_reset()["zones"]["Z1"] == {
        "avg_occupancy": 0.0, "peak_occupancy": 0, "mean_dwell_s": None, "dwells": 0}


def test_interval_aggregator_rejects_unknown_ids():
    agg = IntervalAggregator(["L1"], ["Z1"])
    with pytest.raises(KeyError):
        agg.update([Crossing("L9", 1, "in")])
    with pytest.raises(KeyError):
        agg.update(occupancy={"Z9": 1})


def test_the_whole_chain_from_tracks_to_an_interval():
    line = CountingLine("door", HORIZONTAL)
    counter, monitor = LineCounter([line]), ZoneMonitor([SQUARE])
    agg = IntervalAggregator(["door"], ["square"])
    paths = {1: vertical_path(50, range(150, 40, -10)), 2: [(150, 150)] * 11}
    for frame in range(11):
        tracks = [person(i, *p[frame]) for i, p in paths.items()]
        agg.update(counter.update(tracks), monitor.update(tracks, float(frame)), monitor.occupancy())
    agg.update(counter.update([], [1, 2]), monitor.update([], 11.0, [1, 2]), monitor.occupancy())
    snapshot = agg.snapshot_and_reset()
    assert snapshot["lines"] == {"door": {"in": 1, "out": 0}}
    assert snapshot["zones"]["square"] == {"avg_occupancy": 11 / 12, "peak_occupancy": 1,
                                           "mean_dwell_s": 10.0, "dwells": 1}
