"""What a site engineer configures for a camera's analytics: detector, lines, zones, masks.

All coordinates are pixels of the camera's own image (as in its snapshot), x to the right, y down.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from ..validation import Duration, StrictModel

# Finite pixel coordinates: NaN or infinity in a line would fail on every frame, not at load.
Point = tuple[Annotated[float, Field(allow_inf_nan=False)], Annotated[float, Field(allow_inf_nan=False)]]


class LineSettings(StrictModel):
    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    points: list[Point] = Field(..., min_length=2, description="two points, or a polyline")
    in_side: Literal["left", "right"] = Field(
        "left", description="the side that counts as in, walking from the first point to the second")
    hysteresis: float = Field(6.0, ge=0, description="pixels past the line before a crossing counts")


    @field_validator("points")
    @classmethod
    def _segments_have_length(cls, points: list[Point]) -> list[Point]:
        for (x1, y1), (x2, y2) in zip(points, points[1:]):
            if (x1, y1) == (x2, y2):
                raise ValueError(f"two consecutive points are the same ({x1:g}, {y1:g}): a segment needs length")
        return points


class ZoneSettings(StrictModel):
    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    polygon: list[Point] = Field(..., min_length=3)


class MotionSettings(StrictModel):
    enabled: bool = True
    threshold: float = Field(0.002, gt=0, le=1, description="fraction of the region's pixels that must change")
    max_interval: Duration = Field(2.0, description="run detection at least this often, motion or not")


class TrackerSettings(StrictModel):
    high_threshold: float = Field(0.5, ge=0, le=1)
    low_threshold: float = Field(0.1, ge=0, le=1)
    new_track_threshold: float = Field(0.6, ge=0, le=1)
    match_iou: float = Field(0.3, gt=0, le=1)
    min_hits: int = Field(3, ge=1)
    max_age: Duration = Field(3.0, description="how long a lost track may be re-found")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "TrackerSettings":
        if self.low_threshold > self.high_threshold:
            raise ValueError("low_threshold must not be above high_threshold")
        return self


class AnalyticsSettings(StrictModel):
    detector: str = Field("yolox_nano", description="model name in models/manifest.yaml")
    detector_family: Literal["yolox", "yolov8"] | None = Field(
        None, description="output layout; defaults to the manifest's family")
    score_threshold: float = Field(0.3, ge=0, le=1)
    nms_iou: float = Field(0.45, ge=0, le=1)
    reference: Literal["foot", "center"] = Field("foot", description="the point of a person that crosses lines")
    regions: list[list[Point]] = Field(default_factory=list, description="where motion matters (default: all)")
    masks: list[list[Point]] = Field(default_factory=list, description="areas ignored entirely (posters, mannequins)")
    lines: list[LineSettings] = Field(default_factory=list)
    zones: list[ZoneSettings] = Field(default_factory=list)
    motion: MotionSettings = Field(default_factory=MotionSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    counts_interval: Duration = Field(60.0, gt=0, description="how often visit.counts aggregates go up")

    @field_validator("regions", "masks")
    @classmethod
    def _polygons(cls, polygons: list[list[Point]]) -> list[list[Point]]:
        for polygon in polygons:
            if len(polygon) < 3:
                raise ValueError("a polygon needs at least 3 points")
        return polygons

    @model_validator(mode="after")
    def _unique_ids(self) -> "AnalyticsSettings":
        for kind, items in (("line", self.lines), ("zone", self.zones)):
            ids = [item.id for item in items]
            if len(ids) != len(set(ids)):
                raise ValueError(f"{kind} ids must be unique within a camera")
        return self
