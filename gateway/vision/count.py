"""Turning tracks into visitor figures: counting lines (entries, exits) and zones (occupancy, dwell).

Coordinates are image pixels as the camera shows them: x to the right, y **down**, which is how a
site engineer draws lines and zones on a snapshot. Everything here takes tracks through a small
protocol (``track_id``, ``center()``, ``foot()``), so it does not depend on the tracker.

Counting lines
    A ``CountingLine`` is a polyline. Walking from each point to the next, the side on your left
    *as seen on the image* is "left" (for a line drawn left to right, that is the part of the image
    above it). ``in_side`` says which side is inside the shop.

    A crossing is counted when a track's reference point (its foot by default) really crosses a
    segment of the polyline between two sightings (segment against segment, not the infinite
    line), and only once the point has then got at least ``hysteresis`` pixels away from the line:
    jitter on the line, or a person who steps over and back within the band, counts nothing. The
    crossings seen since the track last stood clear of the band are netted, so oscillating across
    the line counts at most once. Somebody who walks in, gets clear, and walks back out counts one
    "in" and one "out": both really happened, and the platform wants both.

    Exact geometry: a point lying exactly on the line, or a step passing exactly through a vertex,
    is resolved by a fixed infinitesimal shift of the whole trajectory (simulation of simplicity),
    so every degenerate case is decided one consistent way and the net count always equals the net
    change of side. This is exact for integer (and binary-fraction) pixel coordinates.

    Known limits: a track is only seen once the tracker confirms it, so a crossing made during the
    first ``min_hits`` frames of a track is not counted; a track that crosses and ends inside the
    band is not counted either.

Zones
    ``ZoneMonitor`` keeps, per zone, the tracks whose last known reference point is inside it
    (a track hidden for a few frames still occupies the zone until the tracker ends it) and times
    each visit from the first to the last update that saw the track inside.

``IntervalAggregator`` folds all that into the per-interval figures sent up as events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

__all__ = [
    "CountingLine", "Crossing", "DwellEnded", "IntervalAggregator", "LineCounter", "Zone", "ZoneMonitor",
    "points_in_polygon",
]

Side = Literal["left", "right"]
Reference = Literal["foot", "center"]
Direction = Literal["in", "out"]
Point = tuple[float, float]

# The sign of cross(segment direction, point - segment start) for a point on the left *as seen
# on the image*: with y pointing down, left of travel is the negative side.
_LEFT_SIGN = -1


class TrackLike(Protocol):
    track_id: int

    def center(self) -> Point: ...

    def foot(self) -> Point: ...


def _reference_points(tracks: Sequence[TrackLike], reference: Reference) -> tuple[list[int], np.ndarray]:
    """Ids and [N, 2] points of the tracks whose reference point is finite."""
    ids, points = [], []
    for track in tracks:
        point = track.foot() if reference == "foot" else track.center()
        if np.isfinite(point).all():
            ids.append(int(track.track_id))
            points.append(point)
    return ids, np.asarray(points, dtype=float).reshape(-1, 2)


def _check_reference(reference: str) -> None:
    if reference not in ("foot", "center"):
        raise ValueError(f"reference must be 'foot' or 'center', got {reference!r}")


def _cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]


def _sign_or(values: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """sign(values), with zeros replaced by ``tie`` (broadcast)."""
    signs = np.sign(values)
    return np.where(signs == 0, tie, signs)


# ---------------------------------------------------------------------------------- counting lines


@dataclass(frozen=True)
class CountingLine:
    line_id: str
    points: Sequence[Point]
    in_side: Side = "left"
    hysteresis: float = 5.0  # pixels the point must get clear of the line before a crossing counts

    _starts: np.ndarray = field(init=False, repr=False, compare=False)
    _directions: np.ndarray = field(init=False, repr=False, compare=False)
    _vertices: np.ndarray = field(init=False, repr=False, compare=False)
    _ties: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        vertices = np.asarray(self.points, dtype=float)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 2:
            raise ValueError(f"line {self.line_id!r}: needs 2 or more (x, y) points")
        if not np.isfinite(vertices).all():
            raise ValueError(f"line {self.line_id!r}: points must be finite")
        directions = np.diff(vertices, axis=0)
        if (np.abs(directions).sum(axis=1) == 0).any():
            raise ValueError(f"line {self.line_id!r}: two consecutive points are the same")
        if self.in_side not in ("left", "right"):
            raise ValueError(f"line {self.line_id!r}: in_side must be 'left' or 'right'")
        if not (np.isfinite(self.hysteresis) and self.hysteresis >= 0):
            raise ValueError(f"line {self.line_id!r}: hysteresis must be a finite number >= 0")
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in vertices))
        object.__setattr__(self, "_vertices", vertices)
        object.__setattr__(self, "_starts", vertices[:-1])
        object.__setattr__(self, "_directions", directions)
        # Which side a point exactly on a segment's line is taken to be on: the side it lands on
        # after the shift by (e, e^2), e -> 0, that all trajectory points get.
        dx, dy = directions[:, 0], directions[:, 1]
        object.__setattr__(self, "_ties", np.where(dy != 0, np.sign(-dy), np.sign(dx)))

    @property
    def _in_sign(self) -> int:
        return _LEFT_SIGN if self.in_side == "left" else -_LEFT_SIGN

    def net_crossings(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Signed crossings of the polyline by each step ``before[i] -> after[i]`` ([N, 2] each):
        +1 per crossing towards the in side, -1 per crossing towards the out side, summed."""
        before = np.asarray(before, dtype=float).reshape(-1, 2)
        after = np.asarray(after, dtype=float).reshape(-1, 2)
        # Side of each end with respect to each segment's line: [N, S].
        side_before = _sign_or(_cross(self._directions, before[:, None, :] - self._starts), self._ties)
        side_after = _sign_or(_cross(self._directions, after[:, None, :] - self._starts), self._ties)
        # Side of each vertex with respect to the step's line: [N, S + 1]. The shift of the
        # trajectory by (e, e^2) moves the step's line; its first-order effect decides ties.
        step = after - before
        step_ties = np.where(step[:, 1] != 0, np.sign(step[:, 1]), -np.sign(step[:, 0]))
        vertex_side = _sign_or(_cross(step[:, None, :], self._vertices - before[:, None, :]), step_ties[:, None])
        within_segment = vertex_side[:, :-1] != vertex_side[:, 1:]
        crossed = (side_before != side_after) & within_segment
        signed = np.where(side_after == self._in_sign, 1, -1)
        return np.where(crossed, signed, 0).sum(axis=1)

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance in pixels from each point [N, 2] to the polyline (its segments, not their lines)."""
        points = np.asarray(points, dtype=float).reshape(-1, 2)
        offsets = points[:, None, :] - self._starts  # [N, S, 2]
        lengths2 = (self._directions**2).sum(axis=1)
        t = np.clip((offsets * self._directions).sum(axis=2) / lengths2, 0.0, 1.0)
        nearest = self._starts + t[..., None] * self._directions
        return np.sqrt(((points[:, None, :] - nearest) ** 2).sum(axis=2)).min(axis=1)


@dataclass(frozen=True)
class Crossing:
    line_id: str
    track_id: int
    direction: Direction


@dataclass
class _TrackOnLines:
    point: np.ndarray  # last reference point seen
    pending: np.ndarray  # per line: net crossings since the point last stood clear of the line


class LineCounter:
    """Counts crossings of several lines by tracks; keeps per-track state until the track ends.

    Call ``update`` once per frame with the tracks the tracker reported (confirmed, matched in
    this frame) and the ids of the tracks that ended; a track absent for a few frames keeps its
    last point, so a person hidden while crossing is still counted when seen again on the other
    side. State is dropped only through ``ended_track_ids``: pass ``Tracker.ended`` every frame.
    """

    def __init__(self, lines: Sequence[CountingLine], reference: Reference = "foot") -> None:
        _check_reference(reference)
        ids = [line.line_id for line in lines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate line ids in {ids}")
        self.lines = list(lines)
        self.reference = reference
        self._tracks: dict[int, _TrackOnLines] = {}
        self._totals = {line_id: {"in": 0, "out": 0} for line_id in ids}

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        """Running totals since creation (or ``reset``): ``{line_id: {"in": n, "out": n}}``."""
        return {line_id: dict(counts) for line_id, counts in self._totals.items()}

    def reset(self) -> None:
        self._tracks.clear()
        for counts in self._totals.values():
            counts["in"] = counts["out"] = 0

    def update(self, tracks: Sequence[TrackLike], ended_track_ids: Iterable[int] = ()) -> list[Crossing]:
        ids, points = _reference_points(tracks, self.reference)
        known = [i for i, track_id in enumerate(ids) if track_id in self._tracks]
        crossings: list[Crossing] = []
        if known:
            states = [self._tracks[ids[i]] for i in known]
            before = np.array([state.point for state in states])
            after = points[known]
            pending = np.array([state.pending for state in states])  # [K, L]
            for column, line in enumerate(self.lines):
                pending[:, column] += line.net_crossings(before, after)
                clear = line.distance(after) >= line.hysteresis
                for row in np.flatnonzero(clear & (pending[:, column] != 0)):
                    crossings.extend(self._count(line.line_id, ids[known[row]], int(pending[row, column])))
                    pending[row, column] = 0
            for state, point, row in zip(states, after, pending):
                state.point, state.pending = point, row
        for i, track_id in enumerate(ids):
            if track_id not in self._tracks:
                self._tracks[track_id] = _TrackOnLines(points[i], np.zeros(len(self.lines), dtype=np.int64))
        for track_id in ended_track_ids:
            self._tracks.pop(int(track_id), None)
        return crossings

    def _count(self, line_id: str, track_id: int, net: int) -> list[Crossing]:
        """``net`` crossings in one direction; more than one only for a polyline that winds round."""
        direction: Direction = "in" if net > 0 else "out"
        self._totals[line_id][direction] += abs(net)
        return [Crossing(line_id, track_id, direction)] * abs(net)


# ------------------------------------------------------------------------------------------ zones


def points_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Which of ``points`` [N, 2] lie inside ``polygon`` [V, 2] (any simple or self-intersecting
    ring, even-odd rule), by ray casting towards +x over all points and edges at once."""
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    polygon = np.asarray(polygon, dtype=float).reshape(-1, 2)
    start, end = polygon, np.roll(polygon, -1, axis=0)
    px, py = points[:, 0:1], points[:, 1:2]  # [N, 1] against [V] edges
    straddles = (start[:, 1] > py) != (end[:, 1] > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        crossing_x = start[:, 0] + (py - start[:, 1]) * (end[:, 0] - start[:, 0]) / (end[:, 1] - start[:, 1])
    hits = straddles & (px < crossing_x)
    return (hits.sum(axis=1) % 2) == 1


@dataclass(frozen=True)
class Zone:
    zone_id: str
    polygon: Sequence[Point]

    def __post_init__(self) -> None:
        vertices = np.asarray(self.polygon, dtype=float)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
            raise ValueError(f"zone {self.zone_id!r}: needs 3 or more (x, y) points")
        if not np.isfinite(vertices).all():
            raise ValueError(f"zone {self.zone_id!r}: points must be finite")
        object.__setattr__(self, "polygon", tuple((float(x), float(y)) for x, y in vertices))

    def contains(self, points: np.ndarray) -> np.ndarray:
        return points_in_polygon(points, np.asarray(self.polygon))


@dataclass(frozen=True)
class DwellEnded:
    zone_id: str
    track_id: int
    seconds: float


@dataclass
class _Visit:
    entered: float  # time of the first update that saw the track inside
    last_seen: float  # time of the last update that saw it inside


class ZoneMonitor:
    """Occupancy of each zone and how long each track stayed in it.

    A visit lasts from the first to the last update that saw the track inside (so a track seen
    inside in a single frame dwells 0 s). It ends when an update sees the track outside, or when
    the track ends while inside (then timed to its last sighting: nobody saw it leave). ``now`` is
    any clock in seconds, normally ``time.monotonic()``; it should not go backwards.
    """

    def __init__(self, zones: Sequence[Zone], reference: Reference = "foot") -> None:
        _check_reference(reference)
        ids = [zone.zone_id for zone in zones]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate zone ids in {ids}")
        self.zones = list(zones)
        self.reference = reference
        self._visits: dict[str, dict[int, _Visit]] = {zone_id: {} for zone_id in ids}

    def update(self, tracks: Sequence[TrackLike], now: float,
               ended_track_ids: Iterable[int] = ()) -> list[DwellEnded]:
        ids, points = _reference_points(tracks, self.reference)
        ended: list[DwellEnded] = []
        for zone in self.zones:
            visits = self._visits[zone.zone_id]
            inside = zone.contains(points)
            for track_id, is_inside in zip(ids, inside):
                visit = visits.get(track_id)
                if is_inside and visit is None:
                    visits[track_id] = _Visit(now, now)
                elif is_inside:
                    visit.last_seen = now
                elif visit is not None:
                    ended.append(self._end(zone.zone_id, track_id))
        for track_id in ended_track_ids:
            for zone in self.zones:
                if int(track_id) in self._visits[zone.zone_id]:
                    ended.append(self._end(zone.zone_id, int(track_id)))
        return ended

    def _end(self, zone_id: str, track_id: int) -> DwellEnded:
        visit = self._visits[zone_id].pop(track_id)
        return DwellEnded(zone_id, track_id, max(0.0, visit.last_seen - visit.entered))

    def occupancy(self) -> dict[str, int]:
        """Tracks per zone whose last known reference point is inside it."""
        return {zone_id: len(visits) for zone_id, visits in self._visits.items()}

    def reset(self) -> None:
        for visits in self._visits.values():
            visits.clear()


# ------------------------------------------------------------------------------------ intervals


class IntervalAggregator:
    """Per-interval figures for the visit events: counts per line, occupancy and dwell per zone.

    Call ``update`` once per processed frame; occupancy is sampled then (an unweighted mean over
    updates, so it assumes a roughly steady frame rate). ``snapshot_and_reset`` closes the
    interval. Figures with no data in the interval are ``None`` (no frame: no occupancy; no
    finished visit: no mean dwell), never a misleading 0.
    """

    def __init__(self, line_ids: Iterable[str], zone_ids: Iterable[str]) -> None:
        self.line_ids = list(line_ids)
        self.zone_ids = list(zone_ids)
        self._reset()

    def _reset(self) -> None:
        self._counts = {line_id: {"in": 0, "out": 0} for line_id in self.line_ids}
        self._samples = 0
        self._occupancy_sum = {zone_id: 0 for zone_id in self.zone_ids}
        self._occupancy_peak = {zone_id: 0 for zone_id in self.zone_ids}
        self._dwell_sum = {zone_id: 0.0 for zone_id in self.zone_ids}
        self._dwells = {zone_id: 0 for zone_id in self.zone_ids}

    def update(self, crossings: Iterable[Crossing] = (), dwells: Iterable[DwellEnded] = (),
               occupancy: Mapping[str, int] | None = None) -> None:
        """Add one frame's crossings and finished visits, and sample occupancy if given.

        Ids that were not configured raise ``KeyError``: a wiring mistake, better seen at once.
        """
        for crossing in crossings:
            self._counts[crossing.line_id][crossing.direction] += 1
        for dwell in dwells:
            self._dwell_sum[dwell.zone_id] += dwell.seconds
            self._dwells[dwell.zone_id] += 1
        if occupancy is not None:
            unknown = set(occupancy) - set(self.zone_ids)
            if unknown:
                raise KeyError(f"unknown zone ids {sorted(unknown)}")
            self._samples += 1
            for zone_id in self.zone_ids:
                count = occupancy.get(zone_id, 0)
                self._occupancy_sum[zone_id] += count
                self._occupancy_peak[zone_id] = max(self._occupancy_peak[zone_id], count)

    def snapshot_and_reset(self) -> dict:
        snapshot = {
            "lines": {line_id: dict(counts) for line_id, counts in self._counts.items()},
            "zones": {
                zone_id: {
                    "avg_occupancy": self._occupancy_sum[zone_id] / self._samples if self._samples else None,
                    "peak_occupancy": self._occupancy_peak[zone_id] if self._samples else None,
                    "mean_dwell_s": self._dwell_sum[zone_id] / self._dwells[zone_id] if self._dwells[zone_id] else None,
                    "dwells": self._dwells[zone_id],
                }
                for zone_id in self.zone_ids
            },
        }
        self._reset()
        return snapshot
