"""The ads service: the catalog, each screen's playlist, door-triggered interrupts, proof of play.

- **Catalog.** Loaded from the `AdsStore` at start (in a worker thread); `ads.sync` (downlink) is
  applied by the store in a worker thread, then every screen is re-planned. A refused sync leaves
  the catalog, the store and the playlists as they were.
- **Playlists.** Per screen, a plan from `planner.plan` for the coming `plan_window` (2 h), with a
  deterministic seed per screen (crc32 of its id). The playlist is that plan as JSON: items
  `{creative_id, campaign_id, type, media_url, duration, start, end}` (plus `sha256` for image and
  video, `text` for text) in UTC, with `valid_until` (the end of the last item) and a `version`
  derived from its content (`v{catalog version}-{digest}`), which is also the ETag: it changes
  only when the content does. When less than half the window is left the plan is extended (the
  items not yet over are kept, a new window is appended); when the catalog or the screen's config
  changes it is re-planned from the end of the spot playing now (that spot is kept unless its
  creative was removed). Each change that alters the content is announced to the screen's SSE
  listeners (`playlist`), so players refetch; a player without SSE polls (with If-None-Match).
- **Interrupts.** On `door.opened` (internal, from the access service) every screen whose `door`
  is that door gets `planner.interrupt(..., trigger="door_opened", context=...)` (a 3-8 s spot of a
  triggered campaign, caps counted over this screen's recent interrupts), pushed to its SSE
  listeners as an `interrupt` message and recorded (per screen, for an hour; counted in `status`).
  The context is live: the tier of the person who opened the door (`member_tier(person_id)`, the
  tier the platform last synced; none for a person who is not a known member, or when the lookup
  fails) and the screen's crowd from its camera's audience meter (faces now: low below
  `CROWD_LOW_BELOW`, high from `CROWD_HIGH_FROM`, else medium; unknown without a meter), so a
  triggered campaign with `targeting.member_tiers` / `crowd` can play, and wins over an untargeted
  one of the same priority.
- **Live spots.** `check_live` (every LIVE_CHECK_S, in a task of `run`) plays, as an interrupt
  (`trigger` "live"), a live-targeted loop campaign (`planner.live_spot`) on each screen whose live
  context matches: the crowd its camera sees, the member tiers recognised at its door in the last
  LIVE_PRESENCE_S. Never over an interrupt still playing or a loop spot of a higher priority, at
  most one every LIVE_GAP_S per screen, not on signs.
- **Scorer.** With a `ScorerHolder`, the planner's `chooser` asks it to rank the candidates:
  CandidateInfo from the campaign (`category`, else `other`) and creative, with this screen's
  plays in the last hour before the plan (from the plays store and the previous plan). For spots
  starting within `LIVE_HORIZON_S` (2 min) of the moment the plan is computed, the screen state is
  the camera's live audience (faces now, their mean dwell, the crowd level as above; read once per
  plan); later spots, and screens without a meter, get the neutral state (audience 0, crowd medium).
- **Proof of play.** See `gateway.ads.plays`: records kept `keep_plays`, `ad.played` per
  (screen, creative, campaign, hour) once the hour is over plus `report_delay` (5 min, for players
  posting a minute late), revised when late plays arrive; every `report_partial` seconds (15 min;
  None: never) the changed groups of the hour in progress are reported with their totals so far
  (`final` false) and each is reported final once its hour is over; `ads.resend {from, to}` sends the
  reported aggregates of that range again (the same event ids). At start, the reports of the last
  `REEMIT_AFTER_START` seconds are sent again (same ids), covering a crash between the report and
  the outbox's commit.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import hashlib
import logging
import operator
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ..bus import EventBus
from ..commands import CommandError
from ..events import Event, normalise_timestamp, utc_timestamp
from .model import WELCOME, AdsCatalog, Campaign, Creative, Screen
from .planner import Context, PlanItem, interrupt, live_spot, plan
from .plays import HOUR_MS, Aggregate, PlayRecord, PlaysStore, from_ms, iso_to_ms, to_ms
from .scorer import CandidateInfo, ScorerHolder, ScreenState
from .store import AdsStore, parse_sync

log = logging.getLogger("gateway.ads")

TICK = 30.0  # seconds between checks of the plans (extend) and of the hours to report
AGGREGATE_INTERVAL = 60.0
PRUNE_INTERVAL = 3600.0
REPORT_DELAY = 300.0  # seconds after an hour's end before it is reported
REPORT_PARTIAL = 900.0  # seconds between interim reports of the hour in progress
REEMIT_AFTER_START = 120.0
MAX_LISTENER_BACKLOG = 100
MAX_CLOCK_SKEW_MS = 600_000  # a play may end at most 10 min in the gateway's future
CROWD_LOW_BELOW = 3  # faces facing a screen: fewer is a `low` crowd
CROWD_HIGH_FROM = 10  # this many or more is a `high` crowd (in between: `medium`)
LIVE_HORIZON_S = 120.0  # the scorer gets the live audience for spots starting this soon after planning
LIVE_CHECK_S = 2.0  # seconds between looks at each screen's live context (live spots)
LIVE_GAP_S = 30.0  # the least time between the starts of two live spots on one screen
LIVE_PRESENCE_S = 30.0  # a member who opened a screen's door counts as present this long
LIVE_MAX_AGE_S = 3.0  # the camera's latest analysed frame is "now" if at most this old (else nobody)


@dataclass(eq=False)
class _ScreenPlan:
    items: list[tuple[int, int, str, str | None]]  # (start ms, end ms, creative_id, campaign_id)
    doc: dict[str, Any]
    etag: str

    @property
    def end_ms(self) -> int:
        return self.items[-1][1] if self.items else 0


@dataclass(eq=False)
class _ScreenRuntime:
    screen: Screen
    plan: _ScreenPlan | None = None
    interrupts: deque = field(default_factory=lambda: deque(maxlen=1000))  # PlanItems
    listeners: set[asyncio.Queue] = field(default_factory=set)
    busy_until_ms: int = 0  # the end of the interrupt playing (no live spot before it)
    next_live_ms: int = 0  # no live spot before this: LIVE_GAP_S after the last one
    tiers: dict[str, int] = field(default_factory=dict)  # member tier recognised here -> present until (ms)


class AdsService:
    def __init__(self, bus: EventBus, store: AdsStore, plays: PlaysStore, screens: list[Screen], tz: str,
                 site_id: str, gateway_id: str, scorer: ScorerHolder | None = None, *,
                 keep_plays: float = 30 * 86400.0, plan_window: float = 7200.0,
                 report_delay: float = REPORT_DELAY, clock: Callable[[], datetime] | None = None,
                 audience: Callable[[str], Any] | None = None, media: Any = None,
                 member_tier: Callable[[str], str | None] | None = None,
                 report_partial: float | None = REPORT_PARTIAL):
        self.bus = bus
        # member id -> its tier as the platform last synced it, None for a person who is not a known
        # member (or None: no points here): the live context of door-triggered interrupts.
        self.member_tier = member_tier
        # Issue 6 (media): a gateway.ads.media.MediaCache, or None. After each plan it is told the
        # creatives the plans (and the door screens' interrupts) need; a file it stores puts a
        # `local_url` in the playlists that play it.
        self.media = media
        if media is not None:
            media.on_cached = self._media_cached
        # screen id -> its camera's AudienceMeter (gateway.ads.audience), or None: the audience a
        # play had is measured on the gateway and attached to the player's record.
        self.audience = audience
        self.store = store
        self.plays = plays
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.scorer = scorer
        self.report_delay = report_delay
        self.report_partial = report_partial
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.catalog = AdsCatalog()
        self._screens: dict[str, _ScreenRuntime] = {}
        self._set_config(screens, tz, keep_plays, plan_window)
        self._plan_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self.counts = {"interrupts": 0, "live_spots": 0, "plays_accepted": 0, "plays_duplicates": 0, "plays_expired": 0,
                       "ad_played_events": 0}
        self._pending = 0

    def _set_config(self, screens: list[Screen], tz: str, keep_plays: float, plan_window: float) -> None:
        old = self._screens
        self._screens = {s.id: old[s.id] if s.id in old else _ScreenRuntime(s) for s in screens}
        for s in screens:
            self._screens[s.id].screen = s
        for gone in set(old) - set(self._screens):
            for queue in old[gone].listeners:
                _put(queue, None)
        self.tz = ZoneInfo(tz)
        self.keep_plays = keep_plays
        self.plan_window = plan_window

    def _now_ms(self) -> int:
        return to_ms(self.clock())

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the catalog (off the loop), plan every screen, re-send the reports of just before."""
        self.catalog = await asyncio.to_thread(self.store.load)
        await self.replan(reset=True)
        since = self._now_ms() - round(REEMIT_AFTER_START * 1000)
        recent = await asyncio.to_thread(self.plays.reported, reported_since_ms=since)
        self._publish(recent)
        self._pending = await asyncio.to_thread(self.plays.pending_count)

    async def run(self) -> None:
        """Extend plans running low, report complete hours, prune old plays, and (in a task of its
        own) play live spots; until cancelled."""
        live = asyncio.create_task(self._run_live(), name="ads-live")
        try:
            await self._housekeeping()
        finally:
            live.cancel()

    async def _run_live(self) -> None:
        while True:
            try:
                await self.check_live()
            except Exception:
                log.exception("ads live spots failed")
            await asyncio.sleep(LIVE_CHECK_S)

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        next_aggregate = next_prune = loop.time()
        next_interim = loop.time() + (self.report_partial or 0)
        while True:
            try:
                await self.replan(reset=False)
                interim = bool(self.report_partial) and loop.time() >= next_interim
                if loop.time() >= next_aggregate or self._wake.is_set() or interim:
                    self._wake.clear()
                    await self.aggregate(interim=interim)
                    next_aggregate = loop.time() + AGGREGATE_INTERVAL
                    if interim:
                        next_interim = loop.time() + self.report_partial
                if loop.time() >= next_prune:
                    await self.prune()
                    next_prune = loop.time() + PRUNE_INTERVAL
            except Exception:
                log.exception("ads housekeeping failed")
            wait = TICK if not self.report_partial else min(TICK, max(0.05, next_interim - loop.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def close_streams(self) -> None:
        """End every SSE stream (before the HTTP server stops: it waits for open responses)."""
        for runtime in self._screens.values():
            for queue in list(runtime.listeners):
                _put(queue, None)

    async def reconfigure(self, screens: list[Screen], tz: str, *, keep_plays: float, plan_window: float,
                          report_partial: float | None) -> None:
        """A config reload: screens (tokens, doors, default loops), time zone, retention, window,
        interim reports (None: off)."""
        self.report_partial = report_partial
        self._set_config(screens, tz, keep_plays, plan_window)
        await self.replan(reset=True)

    # ------------------------------------------------------------------------------- the catalog

    async def sync_command(self, args: dict) -> dict:
        """The `ads.sync` downlink: store first (one transaction, in a worker thread), then re-plan."""
        sync = parse_sync(args)  # AdsSyncError (a CommandError) for a malformed message
        result = await asyncio.to_thread(self.store.apply, sync)
        if result.get("applied"):
            self.catalog = await asyncio.to_thread(self.store.load)
            await self.replan(reset=True)
        return result

    # ---------------------------------------------------------------------------------- plans

    def screen(self, screen_id: str) -> Screen | None:
        runtime = self._screens.get(screen_id)
        return runtime.screen if runtime is not None else None

    def screens(self) -> list[Screen]:
        return [r.screen for r in self._screens.values()]

    def now_playing(self, screen_id: str, moment: datetime) -> Creative | None:
        """The creative the screen's plan plays at `moment` (a sign shows it; a player plays the
        playlist itself); None outside the plan or for an unknown screen."""
        runtime = self._screens.get(screen_id)
        item = _item_at(runtime, to_ms(moment)) if runtime is not None else None
        if item is None:
            return None
        return self.catalog.creatives.get(item[2]) or (WELCOME if item[2] == WELCOME.creative_id else None)

    def playlist(self, screen_id: str) -> tuple[dict[str, Any], str] | None:
        """(the playlist document, its ETag) of a screen; None for an unknown screen."""
        runtime = self._screens.get(screen_id)
        if runtime is None or runtime.plan is None:
            return None
        return runtime.plan.doc, runtime.plan.etag

    async def replan(self, reset: bool, screen_ids: Iterable[str] | None = None) -> None:
        """reset: re-plan from the spot playing now (catalog or config changed); else only extend the
        plans with less than half the window left."""
        async with self._plan_lock:
            now_ms = self._now_ms()
            catalog = self.catalog
            planned = False
            for screen_id in list(screen_ids if screen_ids is not None else self._screens):
                runtime = self._screens.get(screen_id)
                if runtime is None:
                    continue
                old = runtime.plan
                if not reset and old is not None and old.end_ms - now_ms >= self.plan_window * 500:
                    continue
                new = await asyncio.to_thread(self._compute, runtime.screen, old, catalog, now_ms, reset)
                runtime.plan, planned = new, True
                if old is None or new.etag != old.etag:
                    self._notify(runtime, "playlist", {"version": new.doc["version"], "etag": new.etag,
                                                       "valid_until": new.doc["valid_until"]})
            if reset or planned:  # what the screens need changed only then (retries are the cache's)
                self._ensure_media()  # issue 6 (media)

    # ---------------------------------------------------------------- media (issue 6, media)

    def _needed_creatives(self) -> list[Creative]:
        """The creatives of the current plans, those of the triggered campaigns of door screens, and
        those of the live-targeted campaigns (live spots) of the screens they target."""
        catalog = self.catalog
        ids: set[str] = set()
        for runtime in self._screens.values():
            if runtime.plan is not None:
                ids.update(it[2] for it in runtime.plan.items)
            for campaign in catalog.campaigns.values():
                if not campaign.targets(runtime.screen):
                    continue
                live = campaign.trigger is None and campaign.targeting is not None and campaign.targeting.live
                if live or (campaign.trigger is not None and runtime.screen.door is not None):
                    ids.update(campaign.creatives)
        return [catalog.creatives[i] for i in sorted(ids) if i in catalog.creatives]

    def _ensure_media(self) -> None:
        if self.media is not None:
            self.media.ensure(self._needed_creatives())

    def _local_url(self, screen_id: str, creative: Creative | None) -> str | None:
        if self.media is None or creative is None or not creative.sha256 or not self.media.has(creative.sha256):
            return None
        return f"/v1/screens/{screen_id}/media/{creative.sha256}"

    async def _media_cached(self, sha256: str) -> None:
        """A file was stored: the playlists that play it get its local_url (same items, new ETag)."""
        async with self._plan_lock:
            catalog = self.catalog
            for runtime in self._screens.values():
                old = runtime.plan
                if old is None or not any(getattr(catalog.creatives.get(it[2]), "sha256", None) == sha256
                                          for it in old.items):
                    continue
                new = self._document(runtime.screen, catalog, old.items)
                runtime.plan = new
                if new.etag != old.etag:
                    self._notify(runtime, "playlist", {"version": new.doc["version"], "etag": new.etag,
                                                       "valid_until": new.doc["valid_until"]})

    def media_file(self, sha256: str) -> tuple[Any, str] | None:
        """(the cached file, its Content-Type) of a creative's sha256; None when not cached (yet)."""
        if self.media is None:
            return None
        creative = next((c for c in self.catalog.creatives.values() if c.sha256 == sha256), None)
        if creative is None:
            return None
        path = self.media.path(sha256)
        return (path, _media_type(creative)) if path is not None else None

    def _compute(self, screen: Screen, old: _ScreenPlan | None, catalog: AdsCatalog, now_ms: int,
                 reset: bool) -> _ScreenPlan:
        kept: list[tuple[int, int, str, str | None]] = []
        start_ms = now_ms
        if old is not None and old.end_ms > now_ms:
            if reset:
                kept = [it for it in old.items if it[0] <= now_ms < it[1]
                        and (it[2] in catalog.creatives or it[2] == WELCOME.creative_id)]
            else:
                kept = [it for it in old.items if it[1] > now_ms]
            if kept:
                start_ms = kept[-1][1]
        history: dict[str, list[int]] = {}
        if self.scorer is not None:
            for creative_id, _, s in self.plays.recent(screen.id, start_ms - HOUR_MS):
                history.setdefault(creative_id, []).append(s)
            if old is not None:
                for s, _, creative_id, _ in old.items:
                    if start_ms - HOUR_MS <= s < start_ms:
                        history.setdefault(creative_id, []).append(s)
            for starts in history.values():
                starts.sort()
        planned = plan(catalog, screen, datetime.fromtimestamp(start_ms / 1000, timezone.utc),
                       self.plan_window / 3600.0, self.tz, seed=zlib.crc32(screen.id.encode()),
                       chooser=self._chooser(history, self._live_state(screen.id) if self._scoring() else None,
                                             now_ms))
        ms = planned.starts_ms
        items = kept + [(ms[i], ms[i + 1], c, k) for i, (c, k) in enumerate(planned.pairs)]
        return self._document(screen, catalog, items)

    def _document(self, screen: Screen, catalog: AdsCatalog, items: list) -> _ScreenPlan:
        out = []
        for s, e, creative_id, campaign_id in items:
            creative = catalog.creatives.get(creative_id) or (WELCOME if creative_id == WELCOME.creative_id else None)
            entry: dict[str, Any] = {"creative_id": creative_id, "campaign_id": campaign_id,
                                     "type": creative.type if creative else None,
                                     "media_url": creative.media_url if creative else None,
                                     "duration": (e - s) / 1000, "start": from_ms(s), "end": from_ms(e)}
            if creative is not None and creative.sha256:
                entry["sha256"] = creative.sha256
                local_url = self._local_url(screen.id, creative)  # issue 6 (media)
                if local_url is not None:
                    entry["local_url"] = local_url
            if creative is not None and creative.text:
                entry["text"] = creative.text
            out.append(entry)
        body = {"screen": screen.id, "catalog_version": catalog.version,
                "valid_until": from_ms(items[-1][1]) if items else None, "items": out}
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]
        version = f"v{catalog.version}-{digest}"
        return _ScreenPlan(items, {"version": version, **body}, f'"{version}"')

    def _scoring(self) -> bool:
        """A scoring model is loaded (else the planner's chooser is not used)."""
        return self.scorer is not None and getattr(self.scorer, "scorer", None) is not None

    def _live_state(self, screen_id: str) -> ScreenState | None:
        """What the screen's camera sees now (audience, mean dwell, crowd); None without a meter, or
        when it fails (a quick read under the meter's lock)."""
        meter = self._meter(screen_id)
        if meter is None:
            return None
        try:
            now = meter.current(self.clock().timestamp(), max_age_s=LIVE_MAX_AGE_S)  # none if the camera is down
            audience = max(0, int(now.audience))
            return ScreenState(screen_id, audience=audience, dwell_s=float(now.dwell_s), crowd=_crowd(audience))
        except Exception:
            log.exception("screen %s: the audience meter failed; audience unknown", screen_id)
            return None

    def _meter(self, screen_id: str) -> Any:
        if self.audience is None:
            return None
        try:
            return self.audience(screen_id)
        except Exception:
            log.exception("screen %s: no audience meter", screen_id)
            return None

    def _chooser(self, history: dict[str, list[int]], live: ScreenState | None = None, now_ms: int = 0):
        """The planner's chooser: the scorer's ranking (None without a loaded model). Spots starting
        within LIVE_HORIZON_S of `now_ms` (when the plan is computed) are ranked with the `live`
        screen state, later ones with the neutral state."""
        if not self._scoring():
            return None
        holder = self.scorer
        live_until = now_ms + round(LIVE_HORIZON_S * 1000)

        def choose(moment: datetime, screen: Screen, candidates):
            at = to_ms(moment)
            infos = []
            for campaign, creative in candidates:
                starts = [s for s in history.get(creative.creative_id, ()) if s <= at]
                infos.append(CandidateInfo(
                    creative_id=creative.creative_id, campaign_id=campaign.campaign_id,
                    category=campaign.category or "other", type=creative.type, duration=creative.duration,
                    plays_last_hour=sum(1 for s in starts if s > at - HOUR_MS),
                    seconds_since_last_play=(at - starts[-1]) / 1000 if starts else None))
            state = live if live is not None and at <= live_until else ScreenState(screen.id)
            return holder.rank(moment, state, infos)

        return choose

    # ---------------------------------------------------------------------------- interrupts

    async def on_door_opened(self, event: Event) -> None:
        """Bus subscriber for the internal `door.opened` {door, person_id, method}."""
        door = event.data.get("door")
        if door is None:
            return
        at = self.clock()
        person = event.data.get("person_id")
        tier: str | None = None
        if person is not None and self.member_tier is not None and any(
                r.screen.door == door for r in self._screens.values()):
            tier = await asyncio.to_thread(self._tier, str(person))  # a ledger read: off the loop
        for runtime in list(self._screens.values()):
            if runtime.screen.door != door:
                continue
            if tier:  # the member is in front of this screen for a while: live spots for their tier
                runtime.tiers[tier] = to_ms(at) + round(LIVE_PRESENCE_S * 1000)
            recent = [i for i in runtime.interrupts if to_ms(i.start) > to_ms(at) - 2 * HOUR_MS]
            context = Context(member_tiers=frozenset({tier}) if tier else frozenset(),
                              crowd=self._crowd_now(runtime.screen.id))
            item = interrupt(self.catalog, runtime.screen, "door_opened", at, self.tz, recent=recent,
                             context=context)
            if item is None:
                continue
            runtime.interrupts.append(item)
            runtime.busy_until_ms = to_ms(item.end)
            self.counts["interrupts"] += 1
            self._notify(runtime, "interrupt", self._interrupt_message(item, runtime.screen.id, "door_opened", door))

    async def check_live(self) -> int:
        """Play a live spot on each screen whose live context matches a live-targeted campaign now
        (see `planner.live_spot`): the crowd its camera sees, the member tiers recognised at its
        door in the last LIVE_PRESENCE_S. Not while an interrupt plays, not within LIVE_GAP_S of
        the last live spot, never over a loop spot of a higher priority, not on signs. The number
        of spots started."""
        at = self.clock()
        now_ms = to_ms(at)
        started = 0
        for runtime in list(self._screens.values()):
            screen = runtime.screen
            runtime.tiers = {t: until for t, until in runtime.tiers.items() if until > now_ms}
            if screen.sign is not None or now_ms < max(runtime.busy_until_ms, runtime.next_live_ms):
                continue
            crowd = self._crowd_now(screen.id)
            if crowd is None and not runtime.tiers:
                continue  # nothing known of who is there
            playing = self._campaign_playing(runtime, now_ms)
            recent = [i for i in runtime.interrupts if to_ms(i.start) > now_ms - 2 * HOUR_MS]
            item = live_spot(self.catalog, screen, at, self.tz, Context(frozenset(runtime.tiers), crowd),
                             recent=recent, min_priority=playing.priority if playing is not None else None)
            if item is None:
                continue
            runtime.interrupts.append(item)
            runtime.busy_until_ms = to_ms(item.end)
            runtime.next_live_ms = now_ms + round(LIVE_GAP_S * 1000)
            self.counts["live_spots"] += 1
            started += 1
            self._notify(runtime, "interrupt", self._interrupt_message(item, screen.id, "live"))
        return started

    def _campaign_playing(self, runtime: _ScreenRuntime, at_ms: int) -> Campaign | None:
        """The campaign of the loop spot playing now (None: the default loop, or no plan)."""
        item = _item_at(runtime, at_ms)
        return self.catalog.campaigns.get(item[3]) if item is not None and item[3] else None

    def _tier(self, person: str) -> str | None:
        """The person's member tier (as last synced); None for an unknown person or a failed lookup."""
        try:
            tier = self.member_tier(person)
        except Exception:
            log.exception("the member tier of %s could not be read; interrupt without a tier", person)
            return None
        return str(tier) if tier else None

    def _crowd_now(self, screen_id: str) -> str | None:
        """The crowd in front of the screen now (low / medium / high), None without a camera."""
        state = self._live_state(screen_id)
        return state.crowd if state is not None else None

    def _interrupt_message(self, item: PlanItem, screen_id: str | None, trigger: str,
                           door: str | None = None) -> dict[str, Any]:
        """The SSE `interrupt` message: `trigger` "door_opened" (with its `door`) or "live"."""
        creative = self.catalog.creatives.get(item.creative_id)
        message = {"creative_id": item.creative_id, "campaign_id": item.campaign_id,
                   "type": creative.type if creative else None,
                   "media_url": creative.media_url if creative else None,
                   "duration": (item.end - item.start).total_seconds(), "trigger": trigger,
                   "at": utc_timestamp(item.start)}
        if door is not None:
            message["door"] = door
        if creative is not None and creative.sha256:
            message["sha256"] = creative.sha256
            local_url = self._local_url(screen_id, creative) if screen_id is not None else None
            if local_url is not None:  # issue 6 (media)
                message["local_url"] = local_url
        if creative is not None and creative.text:
            message["text"] = creative.text
        return message

    def interrupts(self, screen_id: str) -> list[PlanItem]:
        runtime = self._screens.get(screen_id)
        return list(runtime.interrupts) if runtime is not None else []

    # ----------------------------------------------------------------------------- listeners

    def subscribe(self, screen_id: str) -> asyncio.Queue:
        """A queue of (kind, data) messages for an SSE stream; None in it: the stream ends."""
        queue: asyncio.Queue = asyncio.Queue(MAX_LISTENER_BACKLOG)
        runtime = self._screens.get(screen_id)
        if runtime is None:  # removed by a reload meanwhile: the stream ends at once
            queue.put_nowait(None)
        else:
            runtime.listeners.add(queue)
        return queue

    def unsubscribe(self, screen_id: str, queue: asyncio.Queue) -> None:
        runtime = self._screens.get(screen_id)
        if runtime is not None:
            runtime.listeners.discard(queue)

    def _notify(self, runtime: _ScreenRuntime, kind: str, data: dict[str, Any]) -> None:
        for queue in list(runtime.listeners):
            try:
                queue.put_nowait((kind, data))
            except asyncio.QueueFull:
                log.warning("screen %s: a listener is not reading; %s dropped", runtime.screen.id, kind)

    # ------------------------------------------------------------------------- proof of play

    def too_late_ms(self) -> int:
        """Plays of hours before this (UTC ms) are refused as expired: they are about to be pruned."""
        return (self._now_ms() - round(self.keep_plays * 1000)) // HOUR_MS * HOUR_MS + HOUR_MS

    async def add_plays(self, screen_id: str, records: list[PlayRecord]) -> dict[str, int]:
        """Store a player's records: {accepted, duplicates, expired (older than keep_plays)}."""
        now_ms = self._now_ms()
        horizon = self.too_late_ms()
        fresh = [self._with_audience(screen_id, r) for r in records if r.start_ms // HOUR_MS * HOUR_MS >= horizon]
        accepted, duplicates = await asyncio.to_thread(self.plays.add, screen_id, fresh, now_ms)
        expired = len(records) - len(fresh)
        self.counts["plays_accepted"] += accepted
        self.counts["plays_duplicates"] += duplicates
        self.counts["plays_expired"] += expired
        if accepted:
            self._pending = await asyncio.to_thread(self.plays.pending_count)
            cutoff = now_ms - round(self.report_delay * 1000)
            if any(r.start_ms // HOUR_MS * HOUR_MS + HOUR_MS <= cutoff for r in fresh):
                self._wake.set()  # a late play of an hour already due: report it soon
        return {"accepted": accepted, "duplicates": duplicates, "expired": expired}

    def _with_audience(self, screen_id: str, record: PlayRecord) -> PlayRecord:
        """The record with the audience the screen's camera measured during the play, when the
        player sent none and the camera saw the window (a play older than the meter's horizon, or
        with the camera down, stays unmeasured)."""
        if record.impressions is not None or self.audience is None:
            return record
        meter = self.audience(screen_id)
        if meter is None:
            return record
        measured = meter.window(record.start_ms / 1000, record.end_ms / 1000)
        if not measured.frames:
            return record
        return dataclasses.replace(record, impressions=measured.impressions,
                                   attention_s=round(measured.attention_s, 3))

    async def aggregate(self, interim: bool = False) -> int:
        """Publish `ad.played` for the changed groups of complete hours (final), and with `interim`
        those of the hours in progress (totals so far, not final); the number published."""
        now_ms = self._now_ms()
        due = await asyncio.to_thread(self.plays.due, now_ms - round(self.report_delay * 1000),
                                      now_ms if interim else None)
        if due:
            self._publish(due)
            await asyncio.to_thread(self.plays.mark_reported, due, now_ms)
        self._pending = await asyncio.to_thread(self.plays.pending_count)
        return len(due)

    async def report_before_stop(self) -> int:
        """At a graceful stop (players can post no more): an interim report of what changed since the
        last one, when interim reports are on, so the platform has the latest figures while the
        gateway is down. Never raises: the stop goes on."""
        if not self.report_partial:
            return 0
        try:
            return await self.aggregate(interim=True)
        except Exception:
            log.exception("ads: the report before stopping failed; it is made after the restart")
            return 0

    def _publish(self, aggregates: list[Aggregate]) -> None:
        for a in aggregates:
            self.bus.publish(Event("ad.played", a.screen, a.as_data(), event_id=a.event_id(self.site_id)))
        self.counts["ad_played_events"] += len(aggregates)

    async def prune(self) -> int:
        removed = await asyncio.to_thread(self.plays.prune, self._now_ms() - round(self.keep_plays * 1000))
        if removed:
            log.info("plays: %d records older than %gs forgotten", removed, self.keep_plays)
        return removed

    async def resend_command(self, args: dict) -> dict:
        """The `ads.resend` downlink {from, to} (ISO-8601 with a zone): the reported `ad.played` of the
        hours starting in [from, to) again, with their event ids (after reporting what is due)."""
        try:
            start = iso_to_ms(normalise_timestamp(str(args["from"])))
            end = iso_to_ms(normalise_timestamp(str(args["to"])))
        except KeyError as exc:
            raise CommandError(f"ads.resend needs {exc.args[0]!r} (ISO-8601 with a zone)") from None
        except (ValueError, OverflowError) as exc:
            raise CommandError(f"ads.resend: {exc}") from None
        if end <= start:
            raise CommandError("ads.resend: `to` must be after `from`")
        await self.aggregate()
        found = await asyncio.to_thread(self.plays.reported, start // HOUR_MS * HOUR_MS, end)
        self._publish(found)
        return {"events": len(found), "from": from_ms(start // HOUR_MS * HOUR_MS), "to": from_ms(end)}

    # -------------------------------------------------------------------------------- health

    def status(self) -> dict[str, Any]:
        return {
            "catalog_version": self.catalog.version,
            "screens": [{"id": r.screen.id, "version": r.plan.doc["version"] if r.plan else None,
                         "valid_until": r.plan.doc["valid_until"] if r.plan else None,
                         "listeners": len(r.listeners)} for r in self._screens.values()],
            "plays_pending": self._pending,
            **self.counts,
            "media": self.media.status() if self.media is not None else None,  # issue 6 (media)
        }


_MEDIA_TYPES = {"image": "image/jpeg", "video": "video/mp4"}  # issue 6 (media): when the URL does not say


def _item_at(runtime: _ScreenRuntime, at_ms: int) -> tuple[int, int, str, str | None] | None:
    """The plan item (start ms, end ms, creative_id, campaign_id) playing at `at_ms`, if any."""
    if runtime.plan is None:
        return None
    items = runtime.plan.items  # back to back, by start
    i = bisect.bisect_right(items, at_ms, key=operator.itemgetter(0)) - 1
    return items[i] if i >= 0 and at_ms < items[i][1] else None


def _media_type(creative: Creative) -> str:
    """The Content-Type of a creative's file: guessed from its URL's path, else from its type."""
    import mimetypes
    from urllib.parse import urlsplit
    guessed, _ = mimetypes.guess_type(urlsplit(creative.media_url or "").path)
    if guessed is not None:
        return guessed
    return _MEDIA_TYPES.get(creative.type, "application/octet-stream")


def _crowd(faces: int) -> str:
    """The crowd level of a number of faces facing a screen (CROWD_LOW_BELOW, CROWD_HIGH_FROM)."""
    if faces < CROWD_LOW_BELOW:
        return "low"
    return "high" if faces >= CROWD_HIGH_FROM else "medium"


def _put(queue: asyncio.Queue, item) -> None:
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(item)
