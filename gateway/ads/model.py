"""The content model of screens and ads: creatives, campaigns, screens, and the `ads.sync` body.

- A **creative** is one thing a screen shows for `duration` seconds: an image or a video (a
  `media_url` and its `sha256`, so a player checks what it downloaded), a web page (`media_url`), or a
  text (`text`, for LED signs; no `media_url`).
- A **campaign** plays its creatives in turn on the screens it targets (`screens` by id and
  `screen_groups` by group; both empty: every screen), during its `flight` (local dates, both
  included; always when absent) and its `dayparts` (weekly windows in the site's local wall-clock
  time, as the access rules' `TimeWindow`: an end before the start runs into the next day, `24:00`
  is the end of the day; none: all day). `targeting.hours` (local hours of the day) narrows the
  dayparts; `targeting.member_tiers` and `targeting.crowd` depend on who is in front of the screen,
  so a campaign with either is planned only for a matching `Context` (see `gateway.ads.planner`).
  `priority`, `weight` and `frequency_cap_per_hour` are explained in the planner.
  A campaign with a `trigger` (a gate screen's `door_opened`) never plays in the loop: it is chosen
  by `planner.interrupt` when its trigger fires, for `trigger_duration` seconds (3 to 8).
- A **screen** is configured in the site config; its `default_loop` plays whenever no campaign may
  (else the synced default loop, else a built-in "Welcome" text), so a screen is never black.
- `AdsSync` is the body of the `ads.sync` downlink command; the store applies it with the version
  rules of `gateway.versioned_sync`. In a delta, removals come before upserts, `default_loop`
  absent leaves the default loop as it is. A campaign must name creatives of the resulting catalog,
  and so must the default loop (checked by `AdsCatalog.from_sync` and the store).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, SecretStr, field_validator, model_validator

from ..access.rules import DAY_SECONDS, WEEKDAYS, TimeWindow, clock_seconds
from ..validation import Duration, StrictModel, duplicates
from ..versioned_sync import MAX_ERRORS_SHOWN, VersionedSync

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
CreativeType = Literal["image", "video", "web", "text"]
Crowd = Literal["low", "medium", "high"]
Trigger = Literal["door_opened"]
Id = Annotated[str, Field(min_length=1, max_length=128)]
_URL = re.compile(r"^https?://[^\s/]+\S*$", re.IGNORECASE)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class _Frozen(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _between(low: float, high: float):
    def check(value: float) -> float:
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g} seconds, got {value:g}")
        return value
    return AfterValidator(check)


class Creative(_Frozen):
    creative_id: Id
    type: CreativeType
    duration: Annotated[Duration, _between(1, 3600)] = Field(..., description="seconds it plays, 1 to 3600")
    media_url: str | None = Field(None, description="http(s) URL of the media; none for text")
    sha256: str | None = Field(None, description="hex sha256 of the media file (image, video)")
    text: str | None = Field(None, min_length=1, max_length=2000, description="what a text creative shows")
    width: int | None = Field(None, ge=1, le=16384)
    height: int | None = Field(None, ge=1, le=16384)

    @model_validator(mode="after")
    def _consistent(self):
        if self.media_url is not None and not _URL.match(self.media_url):
            raise ValueError(f"media_url must be an http or https URL, got {self.media_url!r}")
        if self.sha256 is not None and not _SHA256.match(self.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        if self.type == "text":
            if self.text is None:
                raise ValueError("a text creative needs `text`")
            if self.media_url is not None:
                raise ValueError("a text creative has no media_url")
        else:
            if self.media_url is None:
                raise ValueError(f"an {self.type} creative needs a media_url")
            if self.type in ("image", "video") and self.sha256 is None:
                raise ValueError(f"an {self.type} creative needs the sha256 of its media")
        return self

    @property
    def duration_ms(self) -> int:
        return round(self.duration * 1000)


class Daypart(_Frozen):
    """Local wall-clock `start`-`end` on each of `days`; an end before the start runs into the next
    day (`fri 22:00-02:00` is Friday 22:00 to Saturday 02:00), `24:00` is the end of the day."""

    days: tuple[Weekday, ...] = Field(WEEKDAYS, min_length=1, description="mon..sun; every day if absent")
    start: str = Field(..., description="HH:MM, local, included")
    end: str = Field(..., description="HH:MM, local, excluded (24:00: end of the day)")

    @model_validator(mode="after")
    def _valid(self):
        TimeWindow(day="mon", start=self.start, end=self.end)  # the same checks as the access rules
        return self

    def spans(self) -> list[tuple[int, int, int]]:
        """(weekday, start second, end second) pieces, split at midnight."""
        return [piece for day in dict.fromkeys(self.days)
                for piece in TimeWindow(day=day, start=self.start, end=self.end).spans()]


class Flight(_Frozen):
    start: date = Field(..., description="first local date")
    end: date = Field(..., description="last local date (included)")

    @model_validator(mode="after")
    def _ordered(self):
        if self.end < self.start:
            raise ValueError(f"flight end {self.end} is before its start {self.start}")
        return self

    def contains(self, day: date) -> bool:
        return self.start <= day <= self.end


class Targeting(_Frozen):
    member_tiers: tuple[str, ...] | None = Field(None, min_length=1, description="plays only to these "
                                                 "member tiers (live context only)")
    crowd: Crowd | None = Field(None, description="plays only at this crowd level (live context only)")
    hours: tuple[Annotated[int, Field(ge=0, le=23)], ...] | None = Field(
        None, min_length=1, description="local hours of the day (0-23) it may start in")

    @property
    def live(self) -> bool:
        """Depends on who is in front of the screen: planned only for a matching Context."""
        return self.member_tiers is not None or self.crowd is not None


class Campaign(_Frozen):
    campaign_id: Id
    creatives: tuple[Id, ...] = Field(..., min_length=1, description="creative ids, played in turn")
    flight: Flight | None = Field(None, description="local dates; always if absent")
    dayparts: tuple[Daypart, ...] = Field((), description="weekly local windows; all day if empty")
    priority: int = Field(0, ge=-1000, le=1000, description="a higher tier preempts lower ones")
    weight: float = Field(1.0, gt=0, le=1e6, allow_inf_nan=False, description="share of voice in its tier")
    frequency_cap_per_hour: int | None = Field(None, ge=1, le=3600, description="most plays per rolling "
                                               "hour on one screen; plays at least 3600/cap s apart")
    screens: tuple[Id, ...] = ()
    screen_groups: tuple[Id, ...] = ()
    targeting: Targeting | None = None
    trigger: Trigger | None = Field(None, description="interrupt-only campaign, chosen when this fires")
    trigger_duration: Annotated[Duration, _between(3, 8)] | None = Field(
        None, description="seconds an interrupt plays, 3 to 8 (default 5 with a trigger)")
    category: str | None = Field(None, min_length=1, max_length=64, description="what it advertises (food, "
                                 "fashion, jewellery, electronics, services, other): a feature of the ad scorer")

    @model_validator(mode="after")
    def _consistent(self):
        if self.trigger_duration is not None and self.trigger is None:
            raise ValueError("trigger_duration needs a trigger")
        if len(set(self.creatives)) != len(self.creatives):
            raise ValueError("a creative is listed twice in creatives")
        return self

    @property
    def interrupt_seconds(self) -> float:
        return 5.0 if self.trigger_duration is None else self.trigger_duration

    @property
    def gap_ms(self) -> int:
        """The least time between two starts on one screen (0: no cap)."""
        cap = self.frequency_cap_per_hour
        return 0 if cap is None else -(-3_600_000 // cap)

    def targets(self, screen: Screen) -> bool:
        if not self.screens and not self.screen_groups:
            return True
        return screen.id in self.screens or any(g in self.screen_groups for g in screen.groups)


class Screen(StrictModel):
    """A screen or LED sign of the site (the site config's `screens`)."""

    id: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
    name: str | None = Field(None, max_length=128)
    groups: tuple[Id, ...] = Field((), description="names campaigns target, e.g. floor-1, food-court")
    orientation: Literal["landscape", "portrait"] | None = None
    resolution: str | None = Field(None, pattern=r"^\d{1,5}x\d{1,5}$", description="WIDTHxHEIGHT")
    default_loop: tuple[Id, ...] = Field((), description="creative ids played when no campaign may; else "
                                         "the synced default loop, else a built-in Welcome text")
    # Issue 6 (the screen API): how the player authenticates and what triggers its interrupts.
    token: SecretStr | None = Field(None, description="bearer token of this screen's player for /v1/screens/{id}/... "
                                    "(at least 16 characters); none: only the site API token may read it")
    door: str | None = Field(None, description="an access door (access.doors id) whose openings trigger "
                             "door_opened spots on this screen (a gate screen)")
    camera: str | None = Field(None, description="a camera device watching the audience of this screen")
    sign: str | None = Field(None, description="an led_sign device: this screen is that LED sign, which shows "
                                               "the text creatives of its plan")

    @field_validator("token")
    @classmethod
    def _token_long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters")
        return token


class Removals(StrictModel):
    creatives: list[Id] = []
    campaigns: list[Id] = []

    def empty(self) -> bool:
        return not (self.creatives or self.campaigns)


class AdsSync(VersionedSync):
    """The body of an `ads.sync` command."""

    creatives: list[Creative] = []
    campaigns: list[Campaign] = []
    remove: Removals = Removals()
    default_loop: list[Id] | None = Field(None, description="replaces the default loop; a delta without it "
                                          "keeps the current one")

    @model_validator(mode="after")
    def _consistent(self):
        if self.mode == "snapshot" and not self.remove.empty():
            raise ValueError("a snapshot replaces everything: `remove` must be empty")
        for what, keys in (("creative_id", [c.creative_id for c in self.creatives]),
                           ("campaign_id", [c.campaign_id for c in self.campaigns])):
            repeated = duplicates(keys)
            if repeated:
                raise ValueError(f"{what} given more than once: {repeated[:MAX_ERRORS_SHOWN]}")
        if self.mode == "snapshot":
            problems = missing_references(self.creatives, self.campaigns, self.default_loop or ())
            if problems:
                raise ValueError(problems)
        return self


def missing_references(creatives, campaigns, default_loop) -> str | None:
    """What names an unknown creative, as a message; None when everything resolves."""
    known = {c.creative_id for c in creatives}
    missing = [f"campaign {c.campaign_id} -> {cid}" for c in campaigns for cid in c.creatives if cid not in known]
    missing += [f"default_loop -> {cid}" for cid in default_loop if cid not in known]
    if not missing:
        return None
    more = len(missing) - MAX_ERRORS_SHOWN
    return ("unknown creatives: " + ", ".join(missing[:MAX_ERRORS_SHOWN])
            + (f" (and {more} more)" if more > 0 else ""))


WELCOME = Creative(creative_id="builtin:welcome", type="text", duration=10, text="Welcome")


@dataclass(frozen=True, eq=False)
class AdsCatalog:
    """What a screen may play: the synced creatives, campaigns and default loop, at `version`.

    Treat it as immutable: the planner caches what it derives from it on the instance."""

    creatives: Mapping[str, Creative] = field(default_factory=dict)
    campaigns: Mapping[str, Campaign] = field(default_factory=dict)
    default_loop: tuple[str, ...] = ()
    version: int = 0
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_sync(cls, body: dict | AdsSync) -> AdsCatalog:
        """The catalog a sync body describes on its own (an `ads.sync` JSON for `--catalog`, say);
        ValueError when it is malformed or names creatives it does not hold."""
        sync = body if isinstance(body, AdsSync) else AdsSync.model_validate(body)
        problems = missing_references(sync.creatives, sync.campaigns, sync.default_loop or ())
        if problems:
            raise ValueError(problems)
        return cls({c.creative_id: c for c in sync.creatives}, {c.campaign_id: c for c in sync.campaigns},
                   tuple(sync.default_loop or ()), sync.version)


__all__ = ["AdsCatalog", "AdsSync", "Campaign", "Creative", "CreativeType", "Crowd", "Daypart", "Flight",
           "Removals", "Screen", "Targeting", "WELCOME", "Weekday", "missing_references",
           "DAY_SECONDS", "WEEKDAYS", "clock_seconds"]
