"""How many points a sale earns: the `points:` section of the site config and a pure function.

    points = amount x base rate of the tenant's category x the member's tier multiplier
             x the best matching campaign's multiplier, rounded as configured

- The category of a sale is the one configured for its store in `stores`, else the category the
  sale carries, else `default`; the base rate is `base[category]`, else `base["default"]`.
- A tier the config does not know multiplies by 1 (members not synced yet are `standard`).
- Campaigns are matched in the site's local time (weekdays, dates, time of day, categories: all
  given conditions must hold). When several campaigns match, only the one with the highest
  multiplier applies (they do not multiply together); none matching means x1.
- A sale below `min_amount` earns nothing. Arithmetic is decimal (no float error): 19.99 x 1.5 is
  29.985 before rounding.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..validation import StrictModel

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Rounding = Literal["down", "nearest", "up"]
_ROUNDING = {"down": ROUND_FLOOR, "nearest": ROUND_HALF_UP, "up": ROUND_CEILING}
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")


def _minutes(text: str) -> int:
    match = _CLOCK.match(text)
    if not match:
        raise ValueError(f"expected a time of day HH:MM (00:00 to 24:00), got {text!r}")
    return 24 * 60 if text == "24:00" else int(match.group(1)) * 60 + int(match.group(2))


def to_decimal(value: float | int | Decimal) -> Decimal:
    """A config number as the decimal it was written as (1.2, not 1.1999999999999999556)."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def round_points(value: Decimal, rounding: Rounding) -> int:
    return int(value.to_integral_value(rounding=_ROUNDING[rounding]))


def _number(value: float | Decimal) -> str:
    return f"{float(value):g}"


class DateRange(StrictModel):
    """Local dates, both included."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: date = Field(..., alias="from", description="first day of the campaign (local date)")
    until: date = Field(..., description="last day of the campaign (local date, included)")

    @model_validator(mode="after")
    def _ordered(self) -> "DateRange":
        if self.until < self.from_:
            raise ValueError(f"until {self.until} is before from {self.from_}")
        return self


class TimeOfDay(StrictModel):
    """Local time of day, start included, end excluded; an end before the start runs past midnight."""

    start: str = Field(..., description="HH:MM, local")
    end: str = Field(..., description="HH:MM, local (24:00 for the end of the day); excluded")

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        _minutes(value)
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> "TimeOfDay":
        if _minutes(self.start) == _minutes(self.end) or self.start == "24:00":
            raise ValueError(f"time {self.start}-{self.end} is empty")
        return self

    def contains(self, moment: datetime) -> bool:
        minute = moment.hour * 60 + moment.minute
        start, end = _minutes(self.start), _minutes(self.end)
        return start <= minute < end if start < end else (minute >= start or minute < end)


class Campaign(StrictModel):
    """A multiplier for sales matching every condition given. Weekdays and dates are those of the
    sale's own local date (a 22:00-02:00 window on `tue` matches Tuesday 22:00 to midnight only)."""

    name: str = Field(..., min_length=1, max_length=64, description="shown in the events' `rule`")
    multiplier: float = Field(..., gt=0, description="applies to the points of matching sales; when several "
                              "campaigns match, only the highest multiplier applies")
    weekdays: list[Weekday] | None = Field(None, description="local weekdays (mon..sun); any day if absent")
    dates: DateRange | None = Field(None, description="local dates; any date if absent")
    time: TimeOfDay | None = Field(None, description="local time of day; all day if absent")
    categories: list[str] | None = Field(None, description="tenant categories; every category if absent")

    def matches(self, category: str, local_time: datetime) -> bool:
        if self.weekdays is not None and WEEKDAYS[local_time.weekday()] not in self.weekdays:
            return False
        if self.dates is not None and not (self.dates.from_ <= local_time.date() <= self.dates.until):
            return False
        if self.time is not None and not self.time.contains(local_time):
            return False
        return self.categories is None or category in self.categories


class DoorOpenRule(StrictModel):
    points: int = Field(..., ge=1, description="points for a member's first opening of a door in a local day")
    daily_cap: int | None = Field(None, ge=1, description="most points a member earns from doors in one local "
                                  "day (the last award is cut down to it); default: `points` (one award a day)")
    doors: list[str] | None = Field(None, description="door ids that earn points; every door if absent (list "
                                    "them, or staff entrances earn too)")

    @property
    def cap(self) -> int:
        return self.points if self.daily_cap is None else self.daily_cap


class PointsConfig(StrictModel):
    enabled: bool = Field(False, description="award loyalty points for sales (and door openings) on the gateway")
    currency: str = Field("CNY", min_length=3, max_length=3, description="sales in other currencies earn nothing")
    store: Path | None = Field(None, description="the points ledger (SQLite); default: points.db beside "
                                                 "storage.path")
    base: dict[str, float] = Field(default_factory=lambda: {"default": 1.0},
                                   description="points per currency unit by tenant category; `default` for the "
                                               "others")
    stores: dict[str, str] = Field(default_factory=dict, description="store id -> tenant category")
    tiers: dict[str, float] = Field(default_factory=lambda: {"standard": 1.0},
                                    description="member tier -> multiplier (a tier not listed multiplies by 1)")
    campaigns: list[Campaign] = Field(default_factory=list,
                                      description="extra multipliers (e.g. member day); when several match a "
                                                  "sale, only the highest multiplier applies")
    min_amount: Decimal = Field(Decimal(0), ge=0, description="sales below this amount earn nothing",
                                json_schema_extra={"default": 0})  # the schema says 0, not "0"
    rounding: Rounding = Field("down", description="how fractional points are rounded: down, nearest "
                               "(half up) or up")
    door_open: DoorOpenRule | None = Field(None, description="daily points for opening doors; none if absent")

    @field_validator("base", "tiers")
    @classmethod
    def _not_negative(cls, value: dict[str, float]) -> dict[str, float]:
        negative = [k for k, v in value.items() if not v >= 0]  # also NaN
        if negative:
            raise ValueError(f"must not be negative: {negative}")
        return value

    @field_validator("base")
    @classmethod
    def _has_default(cls, value: dict[str, float]) -> dict[str, float]:
        if "default" not in value:
            raise ValueError("needs a `default` rate (for categories not listed)")
        return value

    @field_validator("currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _campaign_names_unique(self) -> "PointsConfig":
        names = [c.name for c in self.campaigns]
        if len(set(names)) != len(names):
            raise ValueError("campaign names must be unique")
        return self

    def category_of(self, store: str, sale_category: str | None = None) -> str:
        """The tenant category a store's sales earn by: `stores`, else the sale's own, else default."""
        return self.stores.get(store) or sale_category or "default"


def compute_purchase_points(rules: PointsConfig, amount: Decimal, category: str | None, tier: str,
                            local_time: datetime) -> tuple[int, str]:
    """(points, how they were computed) for a sale of `amount` at `local_time` (site local time).

    Pure: no clock, no I/O. `category` None means `default`.
    """
    amount = to_decimal(amount)
    category = category or "default"
    if amount < rules.min_amount:
        return 0, f"below min_amount {rules.min_amount}"
    rate_name = category if category in rules.base else "default"
    rate = rules.base[rate_name]
    tier_multiplier = rules.tiers.get(tier, 1.0)
    text = f"{category} {_number(rate)}/{rules.currency} x tier {tier} {_number(tier_multiplier)}"
    value = amount * to_decimal(rate) * to_decimal(tier_multiplier)
    matching = [c for c in rules.campaigns if c.matches(category, local_time)]
    if matching:
        best = max(matching, key=lambda c: c.multiplier)  # the first listed among equals
        value *= to_decimal(best.multiplier)
        text += f" x {best.name} {_number(best.multiplier)}"
    return max(0, round_points(value, rules.rounding)), text
