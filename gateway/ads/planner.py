"""The rotation planner: what each screen plays, spot after spot, from the synced catalog.

`plan(catalog, screen, start, hours, tz)` gives the spots (`PlanItem`: start, end, creative_id,
campaign_id, None for the default loop) back to back from `start`; the last one starts before
`start + hours` and may end after it (the next plan starts where it ends). Pure and
deterministic: the same catalog, screen, window, `tz`, `seed` and `context` give the same plan.
Times are computed in whole milliseconds; the items' datetimes are in UTC.

Which campaigns may play in a spot starting at instant t (all must hold):
- it targets the screen (`screens` / `screen_groups`, both empty: every screen);
- t's local date (site time zone `tz`) is within its `flight`, and t's local wall-clock time is
  within one of its `dayparts` (none: all day) and, if given, `targeting.hours`. Local time is read
  as the access rules do: on a DST change a daypart follows the wall clock (a repeated hour is in
  the daypart twice, a skipped one never). Only the start of a spot is checked: a spot that starts
  in a daypart may run past its end (by less than its own duration);
- it has no `trigger` (triggered campaigns only play through `interrupt`), and it has no live
  targeting (`member_tiers`, `crowd`) unless the `context` given to `plan` matches it (a tier in
  `context.member_tiers`; `context.crowd` equal to its crowd);
- its frequency cap allows it: with `frequency_cap_per_hour` = n, two starts of the campaign on a
  screen are at least ceil(3600/n) s apart, so no rolling hour ever holds more than n starts.
  A plan knows nothing of plays before its `start`.

Priority: tiers, strict preemption. Among the campaigns that may play at t, only those of the
highest `priority` are candidates; lower tiers get the spots a higher tier leaves, i.e. outside its
dayparts and flight, on screens it does not target, and while its frequency caps hold all its
campaigns back. A sponsorship is a high priority with a cap (it takes its n plays an hour first);
a house ad is a low priority that fills what is left. When no campaign may play, the screen's
`default_loop` plays in turn (else the catalog's default loop, else a built-in Welcome text).

Share of voice within a tier: start-time fair queueing on played seconds. Each campaign has a
virtual time vt = seconds it played / weight; the candidate with the lowest vt plays next (ties by a
seeded hash of the campaign id), then its vt grows by duration / weight. A campaign entering
(a daypart or flight starting) starts at the tier's current virtual time, so it neither bursts to
catch up nor is starved. Over any stretch where the same campaigns are candidates, each one's
played seconds stay within about one spot (max duration / weight, H below, times its weight) of
weight / sum of weights of the total; over a day that is far inside 5 %. A campaign held back by its
cap falls behind in vt and plays as soon as the cap lets it, which gives evenly spaced plays.
Creatives of a campaign play in turn (from a seeded starting point).

The `chooser` hook (a scoring model): `chooser(moment, screen, candidates)` with `moment` the spot's
start in the site's time zone and `candidates` a list of (Campaign, Creative) (the creative each
would play), returns one score per candidate (higher plays first) or None. It is asked only when
the scheme allows more than one candidate, and its freedom is exactly this: it may pick any
candidate of the top tier, not held back by its cap, whose vt after this spot would not exceed the
lowest vt + H, where H = the largest (longest creative / weight) among the tier's current
campaigns, i.e. campaigns at most about one spot ahead of the one the scheme would pick. That keeps
the vt of every campaign within H of the others whatever it answers, so the share of voice, the
caps, priority and dayparts hold all the same. Scores that are not a list of one finite number per
candidate, None, or an exception: the deterministic choice (lowest vt). Equal scores: lowest vt.

`interrupt(catalog, screen, trigger, at, tz)` picks the spot for a trigger (a gate screen's
`door_opened`): campaigns with that `trigger`, targeting the screen, in flight and daypart at `at`
(and matching `context` if live-targeted), whose cap allows a play at `at` given the screen's
`recent` plays; the highest priority first, then, within a priority, the more specific spot: a
live-targeted campaign (`member_tiers` / `crowd`) that matches `context` before an untargeted one,
then the fewest plays in the last hour per weight, then a stable order. (Specificity never beats
priority: a targeted campaign of a lower priority waits for the higher tier.) It plays for the
campaign's `trigger_duration` (default 5 s), its creatives in turn.

`live_spot(catalog, screen, at, tz, context)` is how live-targeted loop campaigns (no trigger) play:
left out of the plans made ahead, one is played at once as an interrupt when the screen's live
context matches it, by the same rules and order, for its creative's duration.
"""

from __future__ import annotations

import heapq
import logging
import math
import operator
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

from .model import DAY_SECONDS, WELCOME, AdsCatalog, Campaign, Creative, Screen

log = logging.getLogger("gateway.ads.planner")

UTC = timezone.utc
DAY_MS = DAY_SECONDS * 1000
HOUR_MS = 3_600_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DATE = date(1970, 1, 1)
_EPOCH_ORDINAL = _EPOCH_DATE.toordinal()
_EPS = 1e-9


class PlanItem(NamedTuple):
    start: datetime
    end: datetime
    creative_id: str
    campaign_id: str | None  # None: the default loop

    def as_json(self, tz: tzinfo | None = None) -> dict:
        start, end = (self.start, self.end) if tz is None else (self.start.astimezone(tz), self.end.astimezone(tz))
        return {"start": start.isoformat(), "end": end.isoformat(), "creative_id": self.creative_id,
                "campaign_id": self.campaign_id}


@dataclass(frozen=True)
class Context:
    """Who is in front of the screen, for live-targeted campaigns (`targeting.member_tiers`, `crowd`)."""

    member_tiers: frozenset[str] = frozenset()
    crowd: str | None = None

    def matches(self, campaign: Campaign) -> bool:
        targeting = campaign.targeting
        if targeting is None:
            return True
        if targeting.member_tiers is not None and not self.member_tiers.intersection(targeting.member_tiers):
            return False
        return targeting.crowd is None or targeting.crowd == self.crowd


Chooser = Callable[[datetime, Screen, list[tuple[Campaign, Creative]]], "Sequence[float] | None"]


# ------------------------------------------------------------------------------ the compiled catalog


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for s1, e1 in a:
        for s2, e2 in b:
            s, e = max(s1, s2), min(e1, e2)
            if s < e:
                out.append((s, e))
    return out


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return tuple((s, e) for s, e in out)


@dataclass(eq=False)
class _Compiled:
    """A campaign as the planner uses it (seconds of the local day, ms durations, epoch-day flight)."""

    campaign: Campaign
    creatives: tuple[Creative, ...]
    durations: tuple[int, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]  # weekday -> ((start s, end s), ...)
    first_day: int | None  # flight as days since 1970-01-01
    last_day: int | None

    @classmethod
    def of(cls, campaign: Campaign, creatives: Mapping[str, Creative]) -> _Compiled:
        chosen = tuple(creatives[cid] for cid in campaign.creatives)
        days: list[list[tuple[int, int]]] = [[] for _ in range(7)]
        if campaign.dayparts:
            for part in campaign.dayparts:
                for day, start, end in part.spans():
                    days[day].append((start, end))
        else:
            days = [[(0, DAY_SECONDS)] for _ in range(7)]
        hours = campaign.targeting.hours if campaign.targeting is not None else None
        if hours is not None:
            allowed = [(h * 3600, h * 3600 + 3600) for h in hours]
            days = [_intersect(d, allowed) for d in days]
        flight = campaign.flight
        return cls(campaign, chosen, tuple(c.duration_ms for c in chosen), tuple(_merge(d) for d in days),
                   None if flight is None else flight.start.toordinal() - _EPOCH_ORDINAL,
                   None if flight is None else flight.end.toordinal() - _EPOCH_ORDINAL)

    def in_flight(self, day: int) -> bool:
        return (self.first_day is None or day >= self.first_day) and (self.last_day is None or day <= self.last_day)

    def open_at(self, local: datetime) -> bool:
        day = local.date().toordinal() - _EPOCH_ORDINAL
        second = local.hour * 3600 + local.minute * 60 + local.second
        return self.in_flight(day) and any(s <= second < e for s, e in self.spans[local.weekday()])


@dataclass(eq=False)
class _Index:
    compiled: list[_Compiled]
    everywhere: list[int]
    by_screen: dict[str, list[int]]
    by_group: dict[str, list[int]]
    intervals: dict = field(default_factory=dict)  # (tz, lo, hi, context) -> [intervals per campaign]

    def for_screen(self, screen: Screen) -> list[int]:
        found = set(self.everywhere)
        found.update(self.by_screen.get(screen.id, ()))
        for group in screen.groups:
            found.update(self.by_group.get(group, ()))
        return sorted(found)


def _index(catalog: AdsCatalog) -> _Index:
    index = catalog._cache.get("planner")
    if index is None:
        compiled, everywhere, by_screen, by_group = [], [], {}, {}
        for campaign_id in sorted(catalog.campaigns):
            campaign = catalog.campaigns[campaign_id]
            if any(cid not in catalog.creatives for cid in campaign.creatives):
                log.warning("campaign %s names unknown creatives; left out", campaign_id)
                continue
            i = len(compiled)
            compiled.append(_Compiled.of(campaign, catalog.creatives))
            if not campaign.screens and not campaign.screen_groups:
                everywhere.append(i)
            for s in campaign.screens:
                by_screen.setdefault(s, []).append(i)
            for g in campaign.screen_groups:
                by_group.setdefault(g, []).append(i)
        index = catalog._cache["planner"] = _Index(compiled, everywhere, by_screen, by_group)
    return index


# ------------------------------------------------------------------------------------ local time


def _zone(tz: tzinfo | str) -> tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _offset_ms(zone: tzinfo, ms: int) -> int:
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone).utcoffset() // timedelta(milliseconds=1)


def _offset_pieces(zone: tzinfo, lo: int, hi: int) -> list[tuple[int, int, int]]:
    """[(from ms, to ms, UTC offset ms)] covering [lo, hi), split where the offset changes."""
    pieces, a, offset = [], lo, _offset_ms(zone, lo)
    probe = lo
    while probe < hi:
        nxt = min(probe + HOUR_MS, hi)
        o = _offset_ms(zone, nxt) if nxt < hi else offset
        if o != offset:  # a change in (probe, nxt]: find its second
            left, right = probe, nxt
            while right - left > 1000:
                mid = (left + right) // 2 // 1000 * 1000
                if mid <= left:
                    break
                if _offset_ms(zone, mid) == offset:
                    left = mid
                else:
                    right = mid
            pieces.append((a, right, offset))
            a, offset = right, o
        probe = nxt
    pieces.append((a, hi, offset))
    return pieces


def _intervals(index: _Index, zone: tzinfo, lo: int, hi: int, context: Context | None) -> list:
    """Per compiled campaign, the UTC ms intervals within [lo, hi) in which it may start a loop
    spot (flight, dayparts, hours, live targeting; not caps or screens). Cached per window."""
    key = (str(zone), lo, hi, context)
    found = index.intervals.get(key)
    if found is not None:
        return found
    pieces = _offset_pieces(zone, lo, hi)
    result: list[list[tuple[int, int]]] = []
    for compiled in index.compiled:
        campaign = compiled.campaign
        spans: list[tuple[int, int]] = []
        result.append(spans)
        if campaign.trigger is not None:
            continue
        if campaign.targeting is not None and campaign.targeting.live and (
                context is None or not context.matches(campaign)):
            continue
        for a, b, offset in pieces:
            for day in range((a + offset) // DAY_MS, (b + offset - 1) // DAY_MS + 1):
                if not compiled.in_flight(day):
                    continue
                base = day * DAY_MS - offset
                for s, e in compiled.spans[(day + 3) % 7]:  # 1970-01-01 was a Thursday
                    u0, u1 = max(base + s * 1000, a), min(base + e * 1000, b)
                    if u0 < u1:
                        spans.append((u0, u1))
    if len(index.intervals) > 32:
        index.intervals.clear()
    index.intervals[key] = result
    return result


def _tiebreak(seed: int, key: str) -> int:
    return zlib.crc32(f"{seed}:{key}".encode())


def _default_loop(catalog: AdsCatalog, screen: Screen) -> list[Creative]:
    for ids in (screen.default_loop, catalog.default_loop):
        loop = [catalog.creatives[c] for c in ids if c in catalog.creatives]
        if loop:
            return loop
    return [WELCOME]


def _scores(chooser: Chooser, moment: datetime, screen: Screen, candidates: list) -> list[float] | None:
    try:
        scores = chooser(moment, screen, candidates)
        if scores is None:
            return None
        scores = list(scores)
        if len(scores) != len(candidates):
            raise ValueError(f"{len(scores)} scores for {len(candidates)} candidates")
        out = []
        for s in scores:
            if isinstance(s, bool) or not isinstance(s, (int, float)):
                raise ValueError(f"score {s!r} is not a number")
            s = float(s)
            if not math.isfinite(s):
                raise ValueError(f"score {s!r} is not finite")
            out.append(s)
        return out
    except Exception as exc:  # a model's failure never stops a screen
        log.debug("chooser failed (%s); deterministic order", exc)
        return None


# ------------------------------------------------------------------------------------- planning


class Plan(Sequence[PlanItem]):
    """The spots of a plan: a read-only sequence of PlanItem (len, indexing, slices, iteration, ==).

    The schedule is kept as whole milliseconds and the items are built when read (a player asks for
    the next few spots; building 5,000 datetimes per screen up front would cost more than the
    planning). `list(plan)` gives a list; `starts_ms` and `pairs` give the raw schedule."""

    __slots__ = ("starts_ms", "pairs")

    def __init__(self, starts_ms: list[int], pairs: list[tuple[str, str | None]]):
        self.starts_ms = starts_ms  # the start of each spot, then the end of the last one
        self.pairs = pairs  # (creative_id, campaign_id) of each spot

    def __len__(self) -> int:
        return len(self.pairs)

    def _item(self, i: int) -> PlanItem:
        ms = self.starts_ms
        creative_id, campaign_id = self.pairs[i]
        return PlanItem(_from_ms(ms[i]), _from_ms(ms[i + 1]), creative_id, campaign_id)

    def __getitem__(self, i):
        n = len(self.pairs)
        if isinstance(i, slice):
            return [self._item(k) for k in range(*i.indices(n))]
        i = operator.index(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("plan index out of range")
        return self._item(i)

    def __iter__(self):
        ms, fromts = self.starts_ms, datetime.fromtimestamp
        end = fromts(ms[0] / 1000, UTC) if ms else None
        for k, (creative_id, campaign_id) in enumerate(self.pairs):
            start, end = end, fromts(ms[k + 1] / 1000, UTC)
            yield PlanItem(start, end, creative_id, campaign_id)

    def __eq__(self, other):
        if isinstance(other, Plan):
            return self.starts_ms == other.starts_ms and self.pairs == other.pairs
        if isinstance(other, Sequence) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<Plan of {len(self)} spots>"


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)  # exact: ms / 1000 rounds to the same microsecond


def plan(catalog: AdsCatalog, screen: Screen, start: datetime, hours: float, tz: tzinfo | str,
         seed: int = 0, chooser: Chooser | None = None, *, context: Context | None = None) -> Plan:
    """The spots `screen` plays from `start` for `hours` (see the module's docstring)."""
    if not hours > 0 or not math.isfinite(hours):
        raise ValueError("hours must be a positive number")
    zone = _zone(tz)
    lo = _ms(start)
    hi = lo + max(1, round(hours * HOUR_MS))
    index = _index(catalog)
    intervals = _intervals(index, zone, lo, hi, context)
    members = [i for i in index.for_screen(screen) if intervals[i]]
    return _schedule(index, members, intervals, _default_loop(catalog, screen), screen, zone, lo, hi, seed,
                     chooser)


def _schedule(index: _Index, members: list[int], intervals: list, default: list[Creative], screen: Screen,
              zone: tzinfo, lo: int, hi: int, seed: int, chooser: Chooser | None) -> Plan:
    n = len(members)
    compiled = [index.compiled[i] for i in members]
    camp_ids = [c.campaign.campaign_id for c in compiled]
    prio = [c.campaign.priority for c in compiled]
    invw = [1.0 / c.campaign.weight for c in compiled]
    gap = [c.campaign.gap_ms for c in compiled]
    # per campaign, per creative: (duration ms, duration / weight, (creative_id, campaign_id), next index)
    pattern = [tuple((d, d * w, (cr.creative_id, cid), (k + 1) % len(c.creatives))
                     for k, (d, cr) in enumerate(zip(c.durations, c.creatives)))
               for c, w, cid in zip(compiled, invw, camp_ids)]
    tb = [_tiebreak(seed, cid) for cid in camp_ids]
    rot = [_tiebreak(seed + 1, cid) % len(c.creatives) for cid, c in zip(camp_ids, compiled)]
    hspan = [max(c.durations) * w for c, w in zip(compiled, invw)]
    vt = [0.0] * n
    next_ok = [lo] * n
    vclock: dict[int, float] = {}  # priority -> the tier's virtual time (for entering campaigns)
    default_pattern = [(c.duration_ms, (c.creative_id, None)) for c in default]
    ndef, dpos = len(default), _tiebreak(seed, screen.id) % len(default)

    events = sorted((edge, delta, j) for j in range(n) for s, e in intervals[members[j]]
                    for edge, delta in ((s, 1), (e, -1)))
    count = [0] * n
    active: set[int] = set()
    ei, nev = 0, len(events)

    starts: list[int] = []
    pairs: list[tuple[str, str | None]] = []
    s_append, p_append = starts.append, pairs.append
    heappush, heappop, heapreplace = heapq.heappush, heapq.heappop, heapq.heapreplace

    t = lo
    heaps: list[list] = [[]]
    tier_of = [0] * n
    tier_prio: list[int] = []
    tier_h: list[float] = [0.0]
    wait: list = []
    while t < hi:
        if ei < nev and events[ei][0] <= t:
            # eligibility changes: rebuild the tiers from the campaigns active now
            for r, h in enumerate(heaps[:len(tier_prio)]):  # the tiers' virtual time so far
                if h and h[0][0] > vclock.get(tier_prio[r], 0.0):
                    vclock[tier_prio[r]] = h[0][0]
            while ei < nev and events[ei][0] <= t:
                _, delta, j = events[ei]
                count[j] += delta
                ei += 1
            now_active = {j for j in range(n) if count[j] > 0}
            for j in now_active - active:
                v = vclock.get(prio[j], 0.0)
                if vt[j] < v:
                    vt[j] = v
            active = now_active
            tier_prio = sorted({prio[j] for j in active}, reverse=True)
            rank = {p: r for r, p in enumerate(tier_prio)}
            heaps = [[] for _ in tier_prio] or [[]]
            tier_h = [0.0] * len(heaps)
            wait = []
            for j in sorted(active):
                r = tier_of[j] = rank[prio[j]]
                if hspan[j] > tier_h[r]:
                    tier_h[r] = hspan[j]
                if next_ok[j] <= t:
                    heaps[r].append((vt[j], tb[j], j))
                else:
                    wait.append((next_ok[j], j))
            for h in heaps:
                heapq.heapify(h)
            heapq.heapify(wait)
        limit = events[ei][0] if ei < nev and events[ei][0] < hi else hi
        top = heaps[0]
        ntiers = len(heaps)

        while t < limit:
            while wait and wait[0][0] <= t:
                _, j = heappop(wait)
                heappush(heaps[tier_of[j]], (vt[j], tb[j], j))
            h, r = top, 0
            if not h:
                r = 1
                while r < ntiers and not heaps[r]:
                    r += 1
                if r == ntiers:  # nothing may play: the default loop
                    d, pair = default_pattern[dpos % ndef]
                    dpos += 1
                    s_append(t)
                    p_append(pair)
                    t += d
                    continue
                h = heaps[r]
            entry = h[0]
            if chooser is not None and len(h) > 1:
                entry = _choose(h, tier_h[r], chooser, screen, zone, t, compiled, pattern, rot)
            v, b, j = entry
            k = rot[j]
            d, dv, pair, rot[j] = pattern[j][k]
            nv = vt[j] = v + dv
            g = gap[j]
            if entry is not h[0]:
                h.remove(entry)
                heapq.heapify(h)
                if g:
                    next_ok[j] = t + g
                    heappush(wait, (t + g, j))
                else:
                    heappush(h, (nv, b, j))
            elif g:
                heappop(h)
                next_ok[j] = t + g
                heappush(wait, (t + g, j))
            else:
                heapreplace(h, (nv, b, j))
            s_append(t)
            p_append(pair)
            t += d
    starts.append(t)
    return Plan(starts, pairs)


def _choose(h: list, slack: float, chooser: Chooser, screen: Screen, zone: tzinfo, t: int, compiled, pattern,
            rot):
    """The heap entry to play: the chooser's pick among the equally entitled, else the lowest vt."""
    limit = h[0][0] + slack + _EPS
    allowed = sorted(e for e in h if e[0] + pattern[e[2]][rot[e[2]]][1] <= limit)
    if len(allowed) < 2:
        return h[0]
    moment = datetime.fromtimestamp(t / 1000, UTC).astimezone(zone)
    candidates = [(compiled[j].campaign, compiled[j].creatives[rot[j]]) for _, _, j in allowed]
    scores = _scores(chooser, moment, screen, candidates)
    if scores is None:
        return h[0]
    best = max(range(len(allowed)), key=lambda i: (scores[i], -i))
    return allowed[best] if best else h[0]


# ------------------------------------------------------------------------------------ interrupts


def interrupt(catalog: AdsCatalog, screen: Screen, trigger: str, at: datetime, tz: tzinfo | str, *,
              recent: Iterable[PlanItem] = (), context: Context | None = None) -> PlanItem | None:
    """The spot to play now that `trigger` fired on `screen`, or None (see the module's docstring).

    `recent`: what the screen played in the last hour or more (loop spots and interrupts), so the
    frequency caps hold; plays of other screens must not be passed. `context`: who is in front of
    the screen (the recognised member's tier, the crowd); None: live-targeted campaigns never play.

    Order: the highest priority; then, within it, a live-targeted campaign matching `context` before
    an untargeted one (the more specific spot wins); then the fewest plays in the last hour per
    weight (fairness); then a stable order."""
    return _spot(catalog, screen, at, tz, recent, context, lambda c: c.trigger == trigger, triggered=True)


def live_spot(catalog: AdsCatalog, screen: Screen, at: datetime, tz: tzinfo | str, context: Context, *,
              recent: Iterable[PlanItem] = (), min_priority: int | None = None) -> PlanItem | None:
    """A spot of a live-targeted loop campaign (`targeting.member_tiers` / `crowd`, no `trigger`)
    that `context` matches now, to play at once as an interrupt; None when none may.

    Such campaigns are left out of the plans made ahead; this is how they play. Same rules and order
    as `interrupt` (targeting, flight, dayparts, caps over `recent`, priority, fairness), but only
    campaigns of at least `min_priority` (so that a live spot never cuts a loop spot of a higher
    tier), and the spot lasts its creative's duration."""
    def eligible(campaign: Campaign) -> bool:
        return (campaign.trigger is None and campaign.targeting is not None and campaign.targeting.live
                and (min_priority is None or campaign.priority >= min_priority))

    return _spot(catalog, screen, at, tz, recent, context, eligible, triggered=False)


def _spot(catalog: AdsCatalog, screen: Screen, at: datetime, tz: tzinfo | str, recent: Iterable[PlanItem],
          context: Context | None, eligible: Callable[[Campaign], bool], triggered: bool) -> PlanItem | None:
    at_ms = _ms(at)
    local = at.astimezone(_zone(tz))
    index = _index(catalog)
    history: dict[str, list[int]] = {}
    for item in recent:
        if item.campaign_id is not None:
            history.setdefault(item.campaign_id, []).append(_ms(item.start))
    best, best_key = None, None
    for i in index.for_screen(screen):
        compiled = index.compiled[i]
        campaign = compiled.campaign
        if not eligible(campaign) or not compiled.open_at(local):
            continue
        specific = campaign.targeting is not None and campaign.targeting.live
        if specific and (context is None or not context.matches(campaign)):
            continue
        plays = history.get(campaign.campaign_id, [])
        gap = campaign.gap_ms
        if gap and any(at_ms - gap < s <= at_ms for s in plays):
            continue
        last_hour = sum(1 for s in plays if at_ms - HOUR_MS < s <= at_ms)
        key = (-campaign.priority, not specific, last_hour / campaign.weight, _tiebreak(0, campaign.campaign_id))
        if best_key is None or key < best_key:
            best, best_key = compiled, key
    if best is None:
        return None
    creative = best.creatives[len(history.get(best.campaign.campaign_id, ())) % len(best.creatives)]
    seconds = best.campaign.interrupt_seconds if triggered else creative.duration
    start = datetime.fromtimestamp(at_ms / 1000, UTC)
    end = start + timedelta(milliseconds=round(seconds * 1000))
    return PlanItem(start, end, creative.creative_id, best.campaign.campaign_id)
