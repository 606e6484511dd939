"""The rotation planner: share of voice, caps, dayparts and flights in local time, priority, the
default loop, determinism, the chooser's bounded freedom, interrupts, and `gateway ads plan`."""

from __future__ import annotations

import argparse
import json
import math
import random
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.access.rules import TimeWindow
from gateway.ads import cli as ads_cli
from gateway.ads.model import AdsCatalog, Screen
from gateway.ads.planner import Context, Plan, PlanItem, interrupt, live_spot, plan

SHA = "cd" * 32
SHANGHAI, BERLIN = ZoneInfo("Asia/Shanghai"), ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 3, 2, tzinfo=SHANGHAI)  # a Monday, local midnight
SCREEN = Screen(id="lobby-1", groups=["floor-1", "entrance"])
SLOW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def creative(cid: str, duration: float) -> dict:
    return {"creative_id": cid, "type": "image", "duration": duration,
            "media_url": f"https://cdn.example.com/{cid}.jpg", "sha256": SHA}


def catalog(campaigns: list[dict], durations: dict[str, float] | None = None, default_loop=None) -> AdsCatalog:
    durations = dict(durations or {})
    for c in campaigns:
        for cid in c["creatives"]:
            durations.setdefault(cid, 15)
    for cid in default_loop or ():
        durations.setdefault(cid, 20)
    body = {"version": 1, "mode": "snapshot", "creatives": [creative(k, d) for k, d in durations.items()],
            "campaigns": campaigns}
    if default_loop is not None:
        body["default_loop"] = default_loop
    return AdsCatalog.from_sync(body)


def seconds_by_campaign(items) -> dict:
    played = defaultdict(float)
    for item in items:
        played[item.campaign_id] += (item.end - item.start).total_seconds()
    return played


def starts_by_campaign(items) -> dict:
    starts = defaultdict(list)
    for item in items:
        starts[item.campaign_id].append(item.start)
    return starts


def assert_back_to_back(items, start: datetime, hours: float) -> None:
    end = start.astimezone(timezone.utc) + timedelta(hours=hours)  # elapsed hours, also across DST
    assert items[0].start == start and items[-1].start < end <= items[-1].end
    assert all(a.end == b.start and a.start < a.end for a, b in zip(items, items[1:]))


def assert_caps(items, caps: dict[str, int]) -> None:
    for campaign_id, starts in starts_by_campaign(items).items():
        cap = caps.get(campaign_id)
        if cap is None:
            continue
        assert all(b - a >= timedelta(seconds=3600 / cap) for a, b in zip(starts, starts[1:]))
        for i, s in enumerate(starts):  # every rolling hour that starts at a play
            assert sum(1 for x in starts[i:] if x < s + timedelta(hours=1)) <= cap


def assert_share_of_voice(items, weights: dict[str, float], tolerance: float = 0.05) -> None:
    played = seconds_by_campaign(items)
    total = sum(played[c] for c in weights)
    for campaign_id, weight in weights.items():
        target = weight / sum(weights.values())
        assert abs(played[campaign_id] / total - target) <= tolerance * target, (campaign_id, played, weights)


# ------------------------------------------------------------------------------------- share of voice

campaign_sets = st.lists(
    st.tuples(st.integers(1, 10), st.lists(st.sampled_from([5, 10, 15, 20, 30, 60]), min_size=1, max_size=3)),
    min_size=2, max_size=5)


def sov_catalog(spec) -> tuple[AdsCatalog, dict[str, float]]:
    campaigns, durations = [], {}
    for i, (weight, lengths) in enumerate(spec):
        ids = [f"c{i}-{k}" for k in range(len(lengths))]
        durations.update(zip(ids, lengths))
        campaigns.append({"campaign_id": f"k{i}", "creatives": ids, "weight": weight})
    return catalog(campaigns, durations), {f"k{i}": w for i, (w, _) in enumerate(spec)}


@SLOW
@given(campaign_sets, st.integers(0, 1000))
def test_share_of_voice_over_a_day_is_within_5_percent_of_the_weights(spec, seed):
    ads, weights = sov_catalog(spec)
    items = plan(ads, SCREEN, MONDAY, 24, "Asia/Shanghai", seed=seed)
    assert_back_to_back(items, MONDAY, 24)
    assert_share_of_voice(items, weights)


def test_share_of_voice_holds_over_a_short_window_too():
    ads = catalog([{"campaign_id": "a", "creatives": ["a1"], "weight": 3},
                   {"campaign_id": "b", "creatives": ["b1", "b2"], "weight": 1}], {"a1": 15, "b1": 10, "b2": 20})
    items = plan(ads, SCREEN, MONDAY, 0.5, SHANGHAI)
    assert_share_of_voice(items, {"a": 3, "b": 1}, tolerance=0.05)
    order = [i.campaign_id for i in items[:8]]
    assert max(len(run) for run in "".join(order).split("b")) <= 4  # interleaved, not in blocks


# ------------------------------------------------------------------------------------ frequency caps


@SLOW
@given(st.lists(st.integers(1, 40), min_size=1, max_size=4), st.integers(1, 5), st.integers(0, 100))
def test_caps_are_never_exceeded_in_any_rolling_hour_and_plays_are_spaced(caps, fillers, seed):
    campaigns = [{"campaign_id": f"cap{i}", "creatives": [f"x{i}"], "weight": 50, "frequency_cap_per_hour": cap}
                 for i, cap in enumerate(caps)]
    campaigns += [{"campaign_id": f"fill{i}", "creatives": [f"f{i}"]} for i in range(fillers)]
    items = plan(catalog(campaigns), SCREEN, MONDAY, 6, SHANGHAI, seed=seed)
    capped = {f"cap{i}": cap for i, cap in enumerate(caps)}
    assert_caps(items, capped)
    starts = starts_by_campaign(items)
    for campaign_id, cap in capped.items():
        # the heavy weight plays as soon as its cap lets it: after the spot then on (15 s) and the
        # other capped campaigns released at the same moment
        assert len(starts[campaign_id]) >= 6 * 3600 // (math.ceil(3600 / cap) + 15 * len(caps)) - 1


def test_a_capped_sponsorship_preempts_and_is_spaced_evenly():
    ads = catalog([{"campaign_id": "sponsor", "creatives": ["s1"], "priority": 10, "frequency_cap_per_hour": 4},
                   {"campaign_id": "shop", "creatives": ["p1"]}])
    items = plan(ads, SCREEN, MONDAY, 24, SHANGHAI)
    starts = starts_by_campaign(items)["sponsor"]
    assert len(starts) == 96
    gaps = {b - a for a, b in zip(starts, starts[1:])}
    assert all(timedelta(minutes=15) <= g < timedelta(minutes=15, seconds=15) for g in gaps)


# ------------------------------------------------------------------------- dayparts and flights, local


def reference_open(campaign, moment: datetime, zone) -> bool:
    """The access rules' reading of local time, campaign by campaign."""
    local = moment.astimezone(zone)
    if campaign.flight is not None and not campaign.flight.start <= local.date() <= campaign.flight.end:
        return False
    if not campaign.dayparts:
        return True
    second = local.hour * 3600 + local.minute * 60 + local.second
    for part in campaign.dayparts:
        for day in part.days:
            for weekday, start, end in TimeWindow(day=day, start=part.start, end=part.end).spans():
                if weekday == local.weekday() and start <= second < end:
                    return True
    return False


DAYPARTED = [
    {"campaign_id": "late", "creatives": ["l1"], "dayparts": [{"days": ["fri", "sat"], "start": "22:00", "end": "02:00"}]},
    {"campaign_id": "lunch", "creatives": ["u1"], "dayparts": [{"start": "11:00", "end": "14:00"}],
     "flight": {"start": "2026-03-28", "end": "2026-03-29"}},
    {"campaign_id": "night", "creatives": ["n1"], "dayparts": [{"start": "01:30", "end": "03:30"}]},
    {"campaign_id": "morning", "creatives": ["m1"], "dayparts": [{"days": ["sun"], "start": "00:00", "end": "02:30"}],
     "targeting": {"hours": [0, 2]}},
]


@pytest.mark.parametrize("zone, start", [
    (SHANGHAI, datetime(2026, 3, 27, 12, tzinfo=SHANGHAI)),
    (BERLIN, datetime(2026, 3, 27, 12, tzinfo=BERLIN)),   # spring forward on Sunday 29 March, 02:00 -> 03:00
    (BERLIN, datetime(2026, 10, 23, 12, tzinfo=BERLIN)),  # fall back on Sunday 25 October, 03:00 -> 02:00
])
def test_dayparts_and_flights_follow_local_time_across_midnight_and_dst(zone, start):
    ads = catalog(DAYPARTED)
    items = plan(ads, SCREEN, start, 72, zone)
    assert_back_to_back(items, start, 72)
    played = set()
    for item in items:
        if item.campaign_id is not None:
            assert reference_open(ads.campaigns[item.campaign_id], item.start, zone), item
            played.add(item.campaign_id)
        else:  # the default loop only when no campaign could start
            assert not any(reference_open(c, item.start, zone) for c in ads.campaigns.values()), item
    expected = {"late", "night", "morning"} | ({"lunch"} if start.month == 3 else set())
    assert played == expected
    late = [i.start.astimezone(zone) for i in items if i.campaign_id == "late"]
    assert {(d.weekday(), d.hour) for d in late} >= {(4, 22), (4, 23), (5, 0), (5, 1), (5, 22), (6, 1)}


def test_a_repeated_hour_at_fall_back_is_in_the_daypart_twice():
    ads = catalog([{"campaign_id": "early", "creatives": ["e1"], "dayparts": [{"start": "02:00", "end": "02:30"}]}])
    start = datetime(2026, 10, 25, 0, tzinfo=BERLIN)
    items = plan(ads, SCREEN, start, 4, BERLIN)
    utc_hours = {(i.start.hour, i.start.minute // 30) for i in items if i.campaign_id == "early"}
    assert utc_hours == {(0, 0), (1, 0)}  # 02:00-02:30 CEST (00:xx UTC) and again CET (01:xx UTC)


# ----------------------------------------------------------------------- priority and the default loop


def test_priority_preempts_lower_tiers_only_where_it_may_play():
    ads = catalog([{"campaign_id": "vip", "creatives": ["v1"], "priority": 10, "dayparts": [{"start": "12:00", "end": "14:00"}]},
                   {"campaign_id": "a", "creatives": ["a1"]}, {"campaign_id": "b", "creatives": ["b1"], "weight": 2},
                   {"campaign_id": "house", "creatives": ["h1"], "priority": -5}])
    items = plan(ads, SCREEN, MONDAY, 24, SHANGHAI)
    for item in items:
        hour = item.start.astimezone(SHANGHAI).hour
        assert (item.campaign_id == "vip") == (12 <= hour < 14)
        assert item.campaign_id != "house"
    outside = [i for i in items if i.campaign_id != "vip"]
    assert_share_of_voice(outside, {"a": 1, "b": 2})


def test_default_loop_when_nothing_may_play():
    future = [{"campaign_id": "later", "creatives": ["x1"], "flight": {"start": "2026-04-01", "end": "2026-04-30"}},
              {"campaign_id": "elsewhere", "creatives": ["x2"], "screen_groups": ["floor-3"]},
              {"campaign_id": "gold", "creatives": ["x3"], "targeting": {"member_tiers": ["gold"]}}]
    ads = catalog(future, default_loop=["d1", "d2"])
    items = plan(ads, SCREEN, MONDAY, 2, SHANGHAI)
    assert {i.campaign_id for i in items} == {None} and {i.creative_id for i in items} == {"d1", "d2"}
    own = Screen(id="lobby-1", groups=["floor-1"], default_loop=["x2", "unknown"])
    assert {i.creative_id for i in plan(ads, own, MONDAY, 1, SHANGHAI)} == {"x2"}
    bare = plan(catalog(future), SCREEN, MONDAY, 1, SHANGHAI)
    assert {(i.creative_id, i.campaign_id) for i in bare} == {("builtin:welcome", None)}
    assert len(bare) == 360  # 10 s each, back to back
    on_floor_3 = plan(ads, Screen(id="s3", groups=["floor-3"]), MONDAY, 1, SHANGHAI)
    assert {i.campaign_id for i in on_floor_3} == {"elsewhere"}
    gold = plan(ads, SCREEN, MONDAY, 1, SHANGHAI, context=Context(member_tiers=frozenset({"gold"})))
    assert {i.campaign_id for i in gold} == {"gold"}


def test_screen_targeting_by_id_and_group():
    ads = catalog([{"campaign_id": "mine", "creatives": ["m1"], "screens": ["lobby-1"]},
                   {"campaign_id": "entrance", "creatives": ["e1"], "screen_groups": ["entrance"]},
                   {"campaign_id": "other", "creatives": ["o1"], "screens": ["lobby-2"], "screen_groups": ["food"]}])
    assert {i.campaign_id for i in plan(ads, SCREEN, MONDAY, 1, SHANGHAI)} == {"mine", "entrance"}


# ------------------------------------------------------------------------------ determinism and chooser


def test_the_same_seed_gives_the_same_plan():
    ads, _ = sov_catalog([(3, [10, 20]), (1, [15]), (2, [30, 5, 10])])
    a = plan(ads, SCREEN, MONDAY, 6, SHANGHAI, seed=7)
    b = plan(AdsCatalog.from_sync({"version": 1, "mode": "snapshot", "creatives": [c.model_dump() for c in ads.creatives.values()],
                                   "campaigns": [c.model_dump(mode="json") for c in ads.campaigns.values()]}),
             SCREEN, MONDAY, 6, "Asia/Shanghai", seed=7)
    assert isinstance(a, Plan) and a == b and list(a) == list(b)
    assert a[:3] == list(a)[:3] and a[-1] == list(a)[-1] and isinstance(a[0], PlanItem)
    assert [i.creative_id for i in plan(ads, SCREEN, MONDAY, 6, SHANGHAI, seed=8)] != [i.creative_id for i in a]


KINDS = ["none", "string", "nan", "inf", "short", "long", "bool", "text", "raise", "fit", "random"]


def garbage_chooser(kinds: list[str], seed: int):
    """A chooser answering, call after call, from `kinds`: garbage, exceptions, or plausible scores
    that favour one campaign as much as it can."""
    rng = random.Random(seed)

    def chooser(moment, screen, candidates):
        kind = rng.choice(kinds)
        n = len(candidates)
        if kind == "raise":
            raise RuntimeError("model broke")
        if kind == "fit":
            return [1.0 if c.campaign_id in ("k0", "low") else 0.0 for c, _ in candidates]
        return {"none": None, "string": "nope", "nan": [math.nan] * n, "inf": [math.inf] + [0.0] * (n - 1),
                "short": [1.0] * (n - 1), "long": [1.0] * (n + 1), "bool": [True] * n, "text": ["1"] * n,
                "random": [rng.random() for _ in range(n)]}[kind]
    return chooser


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaign_sets, st.integers(1, 30), st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
       st.integers(0, 2**32))
def test_a_chooser_cannot_break_share_of_voice_caps_or_priority(spec, cap, kinds, seed):
    ads, weights = sov_catalog(spec)
    campaigns = [c.model_dump(mode="json") for c in ads.campaigns.values()]
    campaigns.append({"campaign_id": "capped", "creatives": [c for c in ads.campaigns["k0"].creatives],
                      "weight": 5, "frequency_cap_per_hour": cap})
    campaigns.append({"campaign_id": "low", "creatives": ["c0-0"], "priority": -1})
    ads = catalog(campaigns, {k: v.duration for k, v in ads.creatives.items()})
    items = plan(ads, SCREEN, MONDAY, 24, SHANGHAI, chooser=garbage_chooser(kinds, seed))
    assert_back_to_back(items, MONDAY, 24)
    assert_caps(items, {"capped": cap})
    assert "low" not in seconds_by_campaign(items)
    # the capped campaign takes what its cap allows; the others share the rest by weight
    assert_share_of_voice([i for i in items if i.campaign_id != "capped"], weights)


def test_a_chooser_orders_equally_entitled_campaigns_only():
    ads, weights = sov_catalog([(1, [15]), (1, [15]), (1, [15]), (1, [15])])
    asked = []

    def prefer_k3(moment, screen, candidates):
        asked.append((moment, [c.campaign_id for c, _ in candidates]))
        return [2.0 if c.campaign_id == "k3" else 1.0 for c, _ in candidates]

    items = plan(ads, SCREEN, MONDAY, 24, SHANGHAI, chooser=prefer_k3)
    assert asked and all(m.tzinfo is not None and m.utcoffset() == timedelta(hours=8) for m, _ in asked[:5])
    assert items[0].campaign_id == "k3"  # all equal at the start: the chooser decides
    assert_share_of_voice(items, weights)  # ... but k3 cannot take more than its share
    plain = plan(ads, SCREEN, MONDAY, 24, SHANGHAI)
    assert [i.campaign_id for i in items] != [i.campaign_id for i in plain]


# ------------------------------------------------------------------------------------------ interrupts


def test_interrupt_picks_a_triggered_spot_and_honours_its_cap():
    gate = Screen(id="gate-1", groups=["gate"])
    ads = catalog([{"campaign_id": "welcome", "creatives": ["w1", "w2"], "trigger": "door_opened", "trigger_duration": 6,
                    "screen_groups": ["gate"], "frequency_cap_per_hour": 2},
                   {"campaign_id": "evening", "creatives": ["e1"], "trigger": "door_opened", "priority": 5,
                    "dayparts": [{"start": "18:00", "end": "22:00"}]},
                   {"campaign_id": "loop", "creatives": ["l1"]}])
    at = datetime(2026, 3, 2, 10, tzinfo=SHANGHAI)
    first = interrupt(ads, gate, "door_opened", at, SHANGHAI)
    assert first.campaign_id == "welcome" and first.end - first.start == timedelta(seconds=6)
    assert interrupt(ads, gate, "door_opened", at + timedelta(minutes=10), SHANGHAI, recent=[first]) is None
    second = interrupt(ads, gate, "door_opened", at + timedelta(minutes=30), SHANGHAI, recent=[first])
    assert second.campaign_id == "welcome" and second.creative_id != first.creative_id
    assert interrupt(ads, Screen(id="hall"), "door_opened", at, SHANGHAI) is None  # not a gate screen
    evening = interrupt(ads, Screen(id="hall"), "door_opened", at.replace(hour=19), SHANGHAI)
    assert evening.campaign_id == "evening" and evening.end - evening.start == timedelta(seconds=5)
    assert interrupt(ads, gate, "door_opened", at.replace(hour=19), SHANGHAI).campaign_id == "evening"
    assert "welcome" not in seconds_by_campaign(plan(ads, gate, at, 2, SHANGHAI))  # never in the loop


def test_an_interrupt_for_a_members_tier_wins_over_an_untargeted_one_of_the_same_priority():
    gate = Screen(id="gate-1", groups=["gate"])
    at = datetime(2026, 3, 2, 10, tzinfo=SHANGHAI)
    spots = [{"campaign_id": "any", "creatives": ["a1"], "trigger": "door_opened", "priority": 3},
             {"campaign_id": "gold", "creatives": ["g1"], "trigger": "door_opened", "priority": 3,
              "targeting": {"member_tiers": ["gold"]}}]
    ads = catalog(spots)
    gold = interrupt(ads, gate, "door_opened", at, SHANGHAI, context=Context(member_tiers=frozenset({"gold"})))
    assert gold.campaign_id == "gold"
    standard = Context(member_tiers=frozenset({"standard"}))
    assert interrupt(ads, gate, "door_opened", at, SHANGHAI, context=standard).campaign_id == "any"
    assert interrupt(ads, gate, "door_opened", at, SHANGHAI, context=Context()).campaign_id == "any"
    assert interrupt(ads, gate, "door_opened", at, SHANGHAI).campaign_id == "any"
    # The more specific spot wins before fairness: gold played a minute ago, the untargeted one never
    # (so the stable tie-break is not what decides).
    first = interrupt(ads, gate, "door_opened", at, SHANGHAI, context=Context(member_tiers=frozenset({"gold"})))
    again = interrupt(ads, gate, "door_opened", at + timedelta(minutes=1), SHANGHAI, recent=[first],
                      context=Context(member_tiers=frozenset({"gold"})))
    assert again.campaign_id == "gold"
    # A crowd-targeted spot matching the context wins the same way.
    crowd = catalog([spots[0], {"campaign_id": "busy", "creatives": ["b1"], "trigger": "door_opened",
                                "priority": 3, "targeting": {"crowd": "high"}}])
    assert interrupt(crowd, gate, "door_opened", at, SHANGHAI, context=Context(crowd="high")).campaign_id == "busy"
    assert interrupt(crowd, gate, "door_opened", at, SHANGHAI, context=Context(crowd="low")).campaign_id == "any"
    # Specificity never beats priority: a targeted spot of a lower priority waits.
    ads = catalog([{**spots[0], "priority": 5}, spots[1]])
    chosen = interrupt(ads, gate, "door_opened", at, SHANGHAI, context=Context(member_tiers=frozenset({"gold"})))
    assert chosen.campaign_id == "any"


def test_a_live_spot_is_a_live_targeted_loop_campaign_that_matches_now():
    lobby = Screen(id="lobby", groups=["floor-1"])
    at = datetime(2026, 3, 2, 10, tzinfo=SHANGHAI)
    ads = catalog([{"campaign_id": "loop", "creatives": ["l1"]},
                   {"campaign_id": "door", "creatives": ["d1"], "trigger": "door_opened",
                    "targeting": {"crowd": "high"}},
                   {"campaign_id": "busy", "creatives": ["b1"], "targeting": {"crowd": "high"}, "priority": 2,
                    "dayparts": [{"start": "09:00", "end": "12:00"}]},
                   {"campaign_id": "gold", "creatives": ["g1"], "targeting": {"member_tiers": ["gold"]}}],
                  durations={"b1": 7, "g1": 12})
    busy = live_spot(ads, lobby, at, SHANGHAI, Context(crowd="high"))
    assert (busy.campaign_id, busy.creative_id, (busy.end - busy.start).total_seconds()) == ("busy", "b1", 7)
    # Only live-targeted loop campaigns: neither the untargeted loop nor a triggered one.
    assert live_spot(ads, lobby, at, SHANGHAI, Context(crowd="low")) is None
    assert live_spot(ads, lobby, at, SHANGHAI, Context(member_tiers=frozenset({"gold"}))).campaign_id == "gold"
    both = Context(member_tiers=frozenset({"gold"}), crowd="high")
    assert live_spot(ads, lobby, at, SHANGHAI, both).campaign_id == "busy"  # the higher priority
    assert live_spot(ads, lobby, at, SHANGHAI, both, min_priority=1).campaign_id == "busy"
    assert live_spot(ads, lobby, at + timedelta(hours=3), SHANGHAI, both).campaign_id == "gold"  # daypart over
    assert live_spot(ads, lobby, at, SHANGHAI, Context(member_tiers=frozenset({"gold"})), min_priority=1) is None


def test_times_must_be_aware():
    ads = catalog([{"campaign_id": "a", "creatives": ["a1"]}])
    with pytest.raises(ValueError):
        plan(ads, SCREEN, datetime(2026, 3, 2), 1, SHANGHAI)
    with pytest.raises(ValueError):
        plan(ads, SCREEN, MONDAY, 0, SHANGHAI)


# ------------------------------------------------------------------------------------- gateway ads plan


def test_cli_plan_from_a_catalog_file(tmp_path, capsys):
    body = {"version": 3, "mode": "snapshot", "creatives": [creative("a1", 30)],
            "campaigns": [{"campaign_id": "a", "creatives": ["a1"]}]}
    (tmp_path / "sync.json").write_text(json.dumps(body))
    site = tmp_path / "site.yaml"
    site.write_text(f"site_id: s\ngateway_id: g\napi: {{token: a-token-of-24-characters}}\n"
                    f"timezone: Asia/Shanghai\nstorage: {{path: {tmp_path / 'o.db'}}}\n"
                    f"screens:\n  - {json.dumps(SCREEN.model_dump(mode='json'))}\n")
    parser = argparse.ArgumentParser()
    ads_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["ads", "plan", "--config", str(site), "--screen", "lobby-1", "--start",
                              "2026-03-02T08:00:00", "--hours", "0.5", "--catalog", str(tmp_path / "sync.json")])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["version"] == 3 and len(out["items"]) == 60
    assert out["items"][0] == {"start": "2026-03-02T08:00:00+08:00", "end": "2026-03-02T08:00:30+08:00",
                               "creative_id": "a1", "campaign_id": "a"}
    args = parser.parse_args(["ads", "plan", "--config", str(site), "--screen", "nope", "--start",
                              "2026-03-02T08:00:00", "--hours", "1"])
    assert args.func(args) == 1 and "no screen 'nope'" in capsys.readouterr().err
    args = parser.parse_args(["ads", "plan", "--config", str(site), "--screen", "lobby-1", "--start",
                              "2026-03-02T08:00:00", "--hours", "1"])
    assert args.func(args) == 1 and "no ads store" in capsys.readouterr().err
