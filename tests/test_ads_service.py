"""The ads service: playlists from the synced catalog, ETags, door-triggered interrupts, proof of play
(idempotent, kept across a restart), hourly ad.played with revisions for late plays, ads.resend."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from gateway.ads.audience import AudienceNow
from gateway.ads.model import Screen
from gateway.ads.plays import PlayRecord, PlaysStore, to_ms
from gateway.ads.scorer import ScreenState
from gateway.ads.service import (CROWD_HIGH_FROM, CROWD_LOW_BELOW, LIVE_GAP_S, LIVE_HORIZON_S, LIVE_MAX_AGE_S,
                                 LIVE_PRESENCE_S, AdsService, _crowd)
from gateway.ads.store import AdsStore, AdsSyncError
from gateway.bus import EventBus
from gateway.commands import CommandError
from gateway.events import Event, envelope_json
from test_docs import assert_valid_event

SHA = "ab" * 32
T0 = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)


def creative(cid: str, duration: int = 10) -> dict:
    return {"creative_id": cid, "type": "image", "duration": duration,
            "media_url": f"https://cdn.example.com/{cid}.jpg", "sha256": SHA}


def snapshot(version: int = 1, extra: list | None = None) -> dict:
    return {"version": version, "mode": "snapshot",
            "creatives": [creative("c1"), creative("c2", 15), creative("g1", 30), *(extra or [])],
            "campaigns": [{"campaign_id": "k1", "creatives": ["c1"], "category": "food"},
                          {"campaign_id": "k2", "creatives": ["c2"], "weight": 2},
                          {"campaign_id": "gate", "creatives": ["g1"], "trigger": "door_opened",
                           "trigger_duration": 6, "screen_groups": ["gates"]}]}


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Harness:
    def __init__(self, tmp_path, clock: Clock, scorer=None, audience=None, member_tier=None):
        self.tmp_path = tmp_path
        self.clock = clock
        self.audience = audience
        self.member_tier = member_tier
        self.bus = EventBus()
        self.played: list[Event] = []
        self.scorer = scorer
        self.service: AdsService | None = None

    async def __aenter__(self) -> "Harness":
        await self.bus.start()
        self.bus.subscribe("capture", self.played.append, ["ad"])
        self.store = AdsStore(self.tmp_path / "ads.db")
        self.plays = PlaysStore(self.tmp_path / "plays.db")
        screens = [Screen(id="lobby", groups=["floor-1"]), Screen(id="gate-1", groups=["gates"], door="staff")]
        self.service = AdsService(self.bus, self.store, self.plays, screens, "Asia/Shanghai", "mall-1", "gw-1",
                                  self.scorer, clock=self.clock, report_delay=300, audience=self.audience,
                                  member_tier=self.member_tier)
        await self.service.start()
        self.bus.subscribe("ads", self.service.on_door_opened, ["door.opened"])
        return self

    async def __aexit__(self, *exc) -> None:
        await self.bus.stop()
        self.store.close()
        self.plays.close()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self.bus._subscriptions)), 5)


def play(start: datetime, seconds: float = 10, creative_id: str = "c1", campaign_id: str | None = "k1",
         play_id: str | None = None, **extra) -> PlayRecord:
    return PlayRecord(play_id or str(uuid.uuid4()), creative_id, campaign_id, to_ms(start),
                      to_ms(start + timedelta(seconds=seconds)), **extra)


def run(coro):
    return asyncio.run(coro)


# ------------------------------------------------------------------------------- playlists


def test_sync_gives_a_playlist_and_the_etag_follows_the_content(tmp_path):
    async def main():
        async with Harness(tmp_path, Clock()) as h:
            ads = h.service
            doc, etag = ads.playlist("lobby")
            assert doc["catalog_version"] == 0 and {i["creative_id"] for i in doc["items"]} == {"builtin:welcome"}
            result = await ads.sync_command(snapshot())
            assert result["applied"] and ads.catalog.version == 1
            doc, etag1 = ads.playlist("lobby")
            assert etag1 != etag and doc["version"].startswith("v1-") and etag1 == f'"{doc["version"]}"'
            items = doc["items"]
            # The spot playing at the sync is kept (the Welcome text, 10 s); then the campaigns.
            assert items[0]["creative_id"] == "builtin:welcome" and items[0]["type"] == "text"
            assert {i["campaign_id"] for i in items[1:]} == {"k1", "k2"}  # triggered campaigns never loop
            first = items[1]
            assert set(first) >= {"creative_id", "campaign_id", "type", "media_url", "duration", "start", "end"}
            assert first["start"] == "2026-11-22T10:00:10.000Z" and first["type"] == "image"
            assert all(a["end"] == b["start"] for a, b in zip(items, items[1:]))
            assert doc["valid_until"] == items[-1]["end"] >= "2026-11-22T12:00:00.000Z"
            # Nothing changed: the same ETag, also after a repeat of the same sync and a housekeeping pass.
            assert (await ads.sync_command(snapshot()))["applied"] is False
            await ads.replan(reset=False)
            assert ads.playlist("lobby")[1] == etag1
            # The catalog changes: a new ETag.
            await ads.sync_command(snapshot(2, [creative("c3")]))
            assert ads.playlist("lobby")[1] != etag1

    run(main())


def test_same_catalog_same_moment_same_playlist(tmp_path):
    async def planned(path):
        async with Harness(path, Clock()) as a:
            await a.service.sync_command(snapshot())
        async with Harness(path, Clock()) as b:  # restarted on the same files: planned from the stored catalog
            assert b.service.catalog.version == 1
            return b.service.playlist("lobby"), b.service.playlist("gate-1")

    async def main():
        first, second = await planned(tmp_path / "a"), await planned(tmp_path / "b")
        assert first == second  # deterministic seed per screen
        assert first[0][0]["items"][0]["start"] == "2026-11-22T10:00:00.000Z"
        assert first[0][0]["screen"] == "lobby" and first[0][1] != first[1][1]

    run(main())


def test_plan_is_extended_when_it_runs_low_and_keeps_what_plays_now(tmp_path):
    async def main():
        clock = Clock()
        async with Harness(tmp_path, clock) as h:
            await h.service.sync_command(snapshot())
            doc, etag = h.service.playlist("lobby")
            clock.now = T0 + timedelta(minutes=30)
            await h.service.replan(reset=False)
            assert h.service.playlist("lobby")[1] == etag  # 1.5 h left: unchanged
            clock.now = T0 + timedelta(minutes=61, seconds=3)
            await h.service.replan(reset=False)
            new, new_etag = h.service.playlist("lobby")
            assert new_etag != etag
            old_items = [i for i in doc["items"] if i["end"] > "2026-11-22T11:01:03.000Z"]
            assert new["items"][:len(old_items)] == old_items  # nothing already announced changes
            assert new["valid_until"] > doc["valid_until"]

    run(main())


def test_a_refused_sync_leaves_the_catalog(tmp_path):
    async def main():
        async with Harness(tmp_path, Clock()) as h:
            await h.service.sync_command(snapshot())
            before = h.service.playlist("lobby")
            bad = snapshot(2)
            bad["campaigns"][0]["creatives"] = ["nope"]
            with pytest.raises(AdsSyncError):
                await h.service.sync_command(bad)
            with pytest.raises(CommandError):
                await h.service.sync_command({"version": 3, "mode": "delta"})  # not version + 1
            with pytest.raises(CommandError):
                await h.service.sync_command({"version": "x"})
            assert h.service.catalog.version == 1 and h.store.version == 1
            assert h.service.playlist("lobby") == before

    run(main())


def test_the_scorer_is_asked_with_the_campaign_category(tmp_path):
    class FakeHolder:
        scorer = object()

        def __init__(self):
            self.calls = []

        def rank(self, moment, screen, candidates):
            self.calls.append(list(candidates))
            return [1.0 if c.creative_id == "c1" else 0.0 for c in candidates]

    holder = FakeHolder()

    async def main():
        async with Harness(tmp_path, Clock(), scorer=holder) as h:
            await h.service.sync_command(snapshot())
            assert holder.calls
            categories = {c.campaign_id: c.category for call in holder.calls for c in call}
            assert categories == {"k1": "food", "k2": "other"}

    run(main())


# ------------------------------------------------------------------------------ interrupts


def test_door_opened_queues_an_interrupt_for_the_gate_screen(tmp_path):
    async def main():
        async with Harness(tmp_path, Clock()) as h:
            await h.service.sync_command(snapshot())
            gate = h.service.subscribe("gate-1")
            lobby = h.service.subscribe("lobby")
            h.bus.publish(Event("door.opened", "osdp-1", {"door": "staff", "person_id": "P-1", "method": "card"},
                                internal=True))
            h.bus.publish(Event("door.opened", "osdp-1", {"door": "other", "person_id": "P-2", "method": "card"},
                                internal=True))
            await h.settle()
            kind, message = await asyncio.wait_for(gate.get(), 5)
            assert kind == "interrupt"
            assert message["creative_id"] == "g1" and message["campaign_id"] == "gate"
            assert message["trigger"] == "door_opened" and 3 <= message["duration"] <= 8
            assert message["duration"] == 6 and message["media_url"].endswith("g1.jpg")
            assert message["at"] == "2026-11-22T10:00:00.000Z"
            assert gate.empty() and lobby.empty()
            assert len(h.service.interrupts("gate-1")) == 1 and h.service.counts["interrupts"] == 1
            assert not h.service.interrupts("lobby")

    run(main())


# -------------------------------------------------------------------------- proof of play


def test_plays_are_idempotent_and_kept_across_a_restart(tmp_path):
    async def main():
        records = [play(T0 + timedelta(seconds=10 * i)) for i in range(5)]
        async with Harness(tmp_path, Clock(T0 + timedelta(minutes=5))) as h:
            assert await h.service.add_plays("lobby", records) == {"accepted": 5, "duplicates": 0, "expired": 0}
            again = await h.service.add_plays("lobby", records[3:] + [play(T0 + timedelta(minutes=1))])
            assert again == {"accepted": 1, "duplicates": 2, "expired": 0}
        async with Harness(tmp_path, Clock(T0 + timedelta(minutes=6))) as h:
            assert h.plays.count() == 6
            assert (await h.service.add_plays("lobby", records))["duplicates"] == 5
            old = play(T0 - timedelta(days=31))
            assert (await h.service.add_plays("lobby", [old]))["expired"] == 1

    run(main())


def test_hourly_aggregation_late_revision_and_resend(tmp_path):
    async def main():
        clock = Clock(T0 + timedelta(minutes=50))
        async with Harness(tmp_path, clock) as h:
            ads = h.service
            await ads.add_plays("lobby", [
                play(T0 + timedelta(minutes=1), 10, impressions=3, attention_s=4.5),
                play(T0 + timedelta(minutes=2), 10, impressions=1, attention_s=2.0),
                play(T0 + timedelta(minutes=59, seconds=55), 10),  # ends in the next hour: counts in its start's
                play(T0 + timedelta(minutes=3), 15, "c2", "k2"),
                play(T0 + timedelta(minutes=4), 10, "w", None),
            ])
            assert await ads.aggregate() == 0  # the hour is not over
            clock.now = T0 + timedelta(hours=1, minutes=2)
            assert await ads.aggregate() == 0  # over, but within the report delay
            clock.now = T0 + timedelta(hours=1, minutes=5)
            assert await ads.aggregate() == 3
            await h.settle()
            by_key = {(e.data["creative_id"], e.data["campaign_id"]): e for e in h.played}
            c1 = by_key[("c1", "k1")]
            assert c1.type == "ad.played" and c1.device_id == "lobby" and c1.stream == "ad" and not c1.internal
            assert c1.data == {"screen": "lobby", "creative_id": "c1", "campaign_id": "k1",
                               "hour": "2026-11-22T10:00:00Z", "plays": 3, "seconds": 30.0, "impressions": 4,
                               "attention_s": 6.5, "revision": 0, "final": True}
            assert by_key[("c2", "k2")].data["seconds"] == 15.0 and by_key[("c2", "k2")].data["impressions"] is None
            assert by_key[("w", None)].data["plays"] == 1
            for seq, event in enumerate(h.played, 1):  # the documented schema holds for real events
                assert_valid_event(json.loads(envelope_json(event, site_id="mall-1", gateway_id="gw-1", seq=seq)))
            assert await ads.aggregate() == 0  # reported once
            assert ads.status()["plays_pending"] == 0

            # A late play (backfilled days later) for the reported hour: the hour again, revision 1.
            clock.now = T0 + timedelta(days=3)
            late = play(T0 + timedelta(minutes=30), 20, impressions=2)
            assert (await ads.add_plays("lobby", [late]))["accepted"] == 1
            assert await ads.aggregate() == 1
            await h.settle()
            revised = h.played[-1]
            assert revised.data["revision"] == 1 and revised.data["plays"] == 4 and revised.data["seconds"] == 50.0
            assert revised.data["impressions"] == 6 and revised.event_id != c1.event_id
            assert (await ads.add_plays("lobby", [late]))["duplicates"] == 1
            assert await ads.aggregate() == 0  # a duplicate changes nothing

            # ads.resend: the range's last reports, with the same event ids.
            count = len(h.played)
            result = await ads.resend_command({"from": "2026-11-22T10:30:00Z", "to": "2026-11-22T11:00:00Z"})
            assert result["events"] == 3 and result["from"] == "2026-11-22T10:00:00.000Z"
            await h.settle()
            again = {e.event_id: e.data for e in h.played[count:]}
            assert again[revised.event_id] == revised.data
            assert again[by_key[("c2", "k2")].event_id] == by_key[("c2", "k2")].data
            assert (await ads.resend_command({"from": "2026-11-23T00:00:00Z", "to": "2026-11-24T00:00:00Z"}))[
                "events"] == 0
            for bad in ({}, {"from": "yesterday", "to": "2026-11-24T00:00:00Z"},
                        {"from": "2026-11-24T00:00:00Z", "to": "2026-11-23T00:00:00Z"}):
                with pytest.raises(CommandError):
                    await ads.resend_command(bad)

    run(main())


def test_interim_reports_of_the_hour_in_progress_then_the_final_one(tmp_path):
    """`aggregate(interim=True)` reports the hour in progress (final false, the totals so far); a
    group with nothing new since is reported again as final once its hour is over; the platform's
    rule (keep the highest revision) ends with the complete totals."""
    async def main():
        clock = Clock(T0 + timedelta(minutes=20))
        async with Harness(tmp_path, clock) as h:
            ads = h.service
            await ads.add_plays("lobby", [play(T0 + timedelta(minutes=1), 10), play(T0 + timedelta(minutes=2), 10)])
            assert await ads.aggregate() == 0  # not over: nothing without interim
            assert await ads.aggregate(interim=True) == 1
            await h.settle()
            first = h.played[-1].data
            assert (first["final"], first["revision"], first["plays"]) == (False, 0, 2)
            assert await ads.aggregate(interim=True) == 0  # nothing new since

            clock.now = T0 + timedelta(minutes=40)
            await ads.add_plays("lobby", [play(T0 + timedelta(minutes=30), 10), play(T0 + timedelta(minutes=31), 10,
                                                                                   "c2", "k2")])
            assert await ads.aggregate(interim=True) == 2
            await h.settle()
            second = {e.data["creative_id"]: e.data for e in h.played[-2:]}
            assert (second["c1"]["revision"], second["c1"]["plays"], second["c1"]["final"]) == (1, 3, False)
            assert (second["c2"]["revision"], second["c2"]["final"]) == (0, False)

            clock.now = T0 + timedelta(hours=1, minutes=2)  # over, within the report delay: still interim
            assert await ads.aggregate() == 0
            clock.now = T0 + timedelta(hours=1, minutes=5)
            assert await ads.aggregate() == 2  # both final, though neither received plays since
            await h.settle()
            final = {e.data["creative_id"]: e.data for e in h.played[-2:]}
            assert (final["c1"]["revision"], final["c1"]["plays"], final["c1"]["final"]) == (2, 3, True)
            assert (final["c2"]["revision"], final["c2"]["plays"], final["c2"]["final"]) == (1, 1, True)
            assert await ads.aggregate(interim=True) == 0  # all said
            assert len({e.event_id for e in h.played}) == len(h.played)
            for seq, event in enumerate(h.played, 1):
                assert_valid_event(json.loads(envelope_json(event, site_id="mall-1", gateway_id="gw-1", seq=seq)))

    run(main())


def test_a_graceful_stop_reports_the_hour_so_far(tmp_path):
    async def main():
        async with Harness(tmp_path, Clock(T0 + timedelta(minutes=20))) as h:
            ads = h.service
            await ads.add_plays("lobby", [play(T0 + timedelta(minutes=1), 10)])
            assert await ads.report_before_stop() == 1
            await h.settle()
            assert h.played[-1].data["final"] is False and h.played[-1].data["plays"] == 1
            assert await ads.report_before_stop() == 0  # nothing new
            await ads.add_plays("lobby", [play(T0 + timedelta(minutes=2), 10)])
            ads.report_partial = None  # interim reports off: only complete hours are reported
            assert await ads.report_before_stop() == 0

    run(main())


def test_a_plays_db_from_before_interim_reports_is_upgraded(tmp_path):
    path = tmp_path / "plays.db"
    with sqlite3.connect(path) as db:  # the table as it was: no `final` column
        db.execute("CREATE TABLE plays_reported (screen TEXT NOT NULL, creative_id TEXT NOT NULL, "
                   "campaign_id TEXT NOT NULL, hour_ms INTEGER NOT NULL, revision INTEGER NOT NULL, "
                   "plays INTEGER NOT NULL, seconds REAL NOT NULL, impressions INTEGER, attention_s REAL, "
                   "reported_ms INTEGER NOT NULL, PRIMARY KEY (screen, creative_id, campaign_id, hour_ms))")
        db.execute("INSERT INTO plays_reported VALUES ('lobby', 'c1', 'k1', 0, 0, 2, 20.0, NULL, NULL, 5)")
    with PlaysStore(path) as store:
        [old] = store.reported()
        assert old.final and old.plays == 2
        assert store.due(10**13) == []  # a final report is not made again


def test_event_ids_are_deterministic_and_reports_are_resent_after_a_restart(tmp_path):
    async def main():
        clock = Clock(T0 + timedelta(minutes=10))
        async with Harness(tmp_path, clock) as h:
            await h.service.add_plays("lobby", [play(T0)])
            clock.now = T0 + timedelta(hours=1, minutes=6)
            assert await h.service.aggregate() == 1
            await h.settle()
            first = h.played[-1]
        clock.now += timedelta(seconds=30)
        async with Harness(tmp_path, clock) as h:  # a crash right after the report: it is sent again
            await h.settle()
            assert [(e.event_id, e.data) for e in h.played] == [(first.event_id, first.data)]
        clock.now += timedelta(minutes=10)
        async with Harness(tmp_path, clock) as h:  # long after: not again
            await h.settle()
            assert h.played == []

    run(main())


def test_prune_forgets_old_hours(tmp_path):
    async def main():
        clock = Clock(T0)
        async with Harness(tmp_path, clock) as h:
            await h.service.add_plays("lobby", [play(T0), play(T0 + timedelta(hours=2))])
            clock.now = T0 + timedelta(days=30, minutes=90)
            assert await h.service.prune() == 1
            assert h.plays.count() == 1

    run(main())


def test_the_audience_measured_by_the_screens_camera_is_attached_to_plays(tmp_path):
    """A play the player reports without an audience gets what the screen's camera measured (a real
    AudienceMeter fed real YuNet detections of a face held for two seconds)."""
    from gateway.ads.audience import AudienceMeter
    from gateway.vision.detect import FaceDetector
    from simulator.gate_camera import frames, identity_photos
    from support import MODELS, need

    need(MODELS / "face_detection_yunet_2026may.onnx")
    detector = FaceDetector.from_model("yunet", MODELS)
    meter = AudienceMeter()
    photo = identity_photos()["id00"][0]
    start = T0.timestamp()
    held = list(frames([photo], fps=10))[-10:-5] * 5  # the face at the screen, 25 frames (2.4 s)
    for n, image in enumerate(held):
        meter.observe(detector.detect(image), start + n / 10)

    async def main():
        clock = Clock(T0 + timedelta(minutes=5))
        async with Harness(tmp_path, clock, audience=lambda screen: meter if screen == "lobby" else None) as h:
            result = await h.service.add_plays("lobby", [play(T0, 10), play(T0, 10, impressions=7, attention_s=1.0),
                                                         play(T0 + timedelta(minutes=1), 10)])
            assert result["accepted"] == 3

    asyncio.run(main())
    with sqlite3.connect(tmp_path / "plays.db") as db:
        rows = db.execute("SELECT start_ms, impressions, attention_s FROM plays ORDER BY start_ms, impressions").fetchall()
    measured = meter.window(start, start + 10)
    assert measured.impressions == 1 and measured.attention_s > 1.0
    # The first play gets the camera's figures; the player's own figures are kept; a play after the
    # camera saw anything (no frames in its window) stays unmeasured.
    assert rows == [(to_ms(T0), 1, round(measured.attention_s, 3)), (to_ms(T0), 7, 1.0),
                    (to_ms(T0 + timedelta(minutes=1)), None, None)]


# ---------------------------------------------------------------------------- live context


class FakeMeter:
    """An audience meter that sees `audience` faces with a mean dwell of `dwell_s` seconds now."""

    def __init__(self, audience: int, dwell_s: float):
        self.now = AudienceNow(audience, dwell_s)
        self.calls = 0

    def current(self, now=None, max_age_s=None):
        self.calls += 1
        self.asked = (now, max_age_s)
        return self.now


def live_snapshot() -> dict:
    body = snapshot()
    body["creatives"] += [creative("gold1", 30), creative("busy1", 30)]
    body["campaigns"] += [{"campaign_id": "gate-gold", "creatives": ["gold1"], "trigger": "door_opened",
                           "trigger_duration": 4, "screen_groups": ["gates"], "targeting": {"member_tiers": ["gold"]}},
                          {"campaign_id": "gate-busy", "creatives": ["busy1"], "trigger": "door_opened",
                           "screen_groups": ["gates"], "targeting": {"crowd": "high"}}]
    return body


def test_door_opened_by_a_gold_member_plays_the_gold_spot(tmp_path):
    tiers = {"P-gold": "gold", "P-std": "standard"}
    asked = []

    def member_tier(person):
        asked.append(person)
        if person == "P-broken":
            raise RuntimeError("ledger closed")
        return tiers.get(person)

    async def main():
        clock = Clock()
        async with Harness(tmp_path, clock, member_tier=member_tier) as h:
            await h.service.sync_command(live_snapshot())
            gate = h.service.subscribe("gate-1")
            got = []
            for person in ("P-gold", None, "P-std", "P-unknown", "P-broken", "P-gold"):
                clock.now += timedelta(minutes=1)
                h.bus.publish(Event("door.opened", "osdp-1", {"door": "staff", "person_id": person, "method": "card"},
                                    internal=True))
                await h.settle()
                kind, message = await asyncio.wait_for(gate.get(), 5)
                assert kind == "interrupt"
                got.append(message["campaign_id"])
            # The gold member gets the gold spot (twice: the more specific spot wins over fairness);
            # nobody, a standard member, a stranger and a failed lookup get the untargeted one. No
            # camera at the gate: the crowd is unknown, so the crowd-targeted spot never plays.
            assert got == ["gate-gold", "gate", "gate", "gate", "gate", "gate-gold"]
            assert asked == ["P-gold", "P-std", "P-unknown", "P-broken", "P-gold"]
            assert h.service.counts["interrupts"] == 6

    run(main())


def test_door_opened_interrupt_gets_the_crowd_of_the_screens_camera(tmp_path):
    meter = FakeMeter(12, 5.0)

    async def main():
        clock = Clock()
        async with Harness(tmp_path, clock, audience=lambda screen: meter if screen == "gate-1" else None) as h:
            await h.service.sync_command(live_snapshot())
            gate = h.service.subscribe("gate-1")
            got = []
            for faces in (12, 10, 9, 2):  # high from 10 faces; 3..9 medium; below 3 low
                meter.now = AudienceNow(faces, 5.0)
                clock.now += timedelta(minutes=1)
                h.bus.publish(Event("door.opened", "osdp-1", {"door": "staff", "person_id": None, "method": "button"},
                                    internal=True))
                await h.settle()
                got.append((await asyncio.wait_for(gate.get(), 5))[1]["campaign_id"])
            assert got == ["gate-busy", "gate-busy", "gate", "gate"]
            # Asked at the service's clock, the camera's latest frame counting if recent enough.
            assert meter.asked == (clock.now.timestamp(), LIVE_MAX_AGE_S)

    run(main())


def live_loop_snapshot() -> dict:
    """The lobby's loop (k1, k2), plus two live-targeted loop campaigns (no trigger): a busy-hour
    spot for a high crowd (capped at 2 an hour) and a gold-members spot."""
    body = snapshot()
    body["creatives"] += [creative("crowd1", 8), creative("gold1", 12)]
    body["campaigns"] += [{"campaign_id": "crowd", "creatives": ["crowd1"], "targeting": {"crowd": "high"},
                           "frequency_cap_per_hour": 2},
                          {"campaign_id": "gold", "creatives": ["gold1"], "targeting": {"member_tiers": ["gold"]}}]
    return body


def test_live_targeted_campaigns_play_as_live_spots_when_the_context_matches(tmp_path):
    meter = FakeMeter(2, 1.0)

    async def main():
        clock = Clock()
        async with Harness(tmp_path, clock, audience=lambda screen: meter if screen == "lobby" else None,
                           member_tier=lambda person: "gold" if person == "P-gold" else None) as h:
            ads = h.service
            await ads.sync_command(live_loop_snapshot())
            planned = {it["campaign_id"] for it in ads.playlist("lobby")[0]["items"]}
            assert "crowd" not in planned and "gold" not in planned  # never in the plan made ahead
            lobby, gate = ads.subscribe("lobby"), ads.subscribe("gate-1")
            for q in (lobby, gate):
                while not q.empty():
                    q.get_nowait()  # the playlist announcements

            assert await ads.check_live() == 0  # a low crowd: nothing matches
            meter.now = AudienceNow(12, 4.0)
            assert await ads.check_live() == 1
            kind, message = lobby.get_nowait()
            assert kind == "interrupt" and message["campaign_id"] == "crowd" and message["trigger"] == "live"
            assert message["duration"] == 8 and "door" not in message
            clock.now += timedelta(seconds=5)
            assert await ads.check_live() == 0  # the live spot is still playing
            clock.now += timedelta(seconds=LIVE_GAP_S)
            assert await ads.check_live() == 0  # its cap: 2 an hour, so 30 minutes apart
            clock.now = T0 + timedelta(minutes=30)
            assert await ads.check_live() == 1
            assert lobby.get_nowait()[1]["campaign_id"] == "crowd"
            assert ads.counts["live_spots"] == 2 and ads.counts["interrupts"] == 0

            # The gold member who opens the staff door: the door spot, then, once it is over, the
            # gold members' spot on the gate screen while they are there.
            h.bus.publish(Event("door.opened", "osdp-1", {"door": "staff", "person_id": "P-gold", "method": "face"},
                                internal=True))
            await h.settle()
            assert (await asyncio.wait_for(gate.get(), 5))[1]["campaign_id"] == "gate"
            assert await ads.check_live() == 0  # not over the door spot (6 s)
            clock.now += timedelta(seconds=7)
            assert await ads.check_live() == 1
            kind, message = gate.get_nowait()
            assert message["campaign_id"] == "gold" and message["trigger"] == "live"
            clock.now += timedelta(seconds=LIVE_PRESENCE_S + LIVE_GAP_S)
            assert await ads.check_live() == 0  # the member has left
            assert [i.campaign_id for i in ads.interrupts("gate-1")] == ["gate", "gold"]

    run(main())


def test_a_live_spot_never_cuts_a_loop_spot_of_a_higher_priority(tmp_path):
    meter = FakeMeter(12, 4.0)

    async def main():
        clock = Clock()
        async with Harness(tmp_path, clock, audience=lambda screen: meter if screen == "lobby" else None) as h:
            body = live_loop_snapshot()
            for campaign in body["campaigns"]:
                if campaign["campaign_id"] in ("k1", "k2"):
                    campaign["priority"] = 5  # a sponsorship tier above the crowd campaign's 0
            await h.service.sync_command(body)
            clock.now += timedelta(seconds=15)  # past the Welcome spot kept at the sync: k1/k2 play
            assert await h.service.check_live() == 0
            for campaign in body["campaigns"]:
                if campaign["campaign_id"] == "crowd":
                    campaign["priority"] = 5
            body["version"] = 2
            await h.service.sync_command(body)
            clock.now += timedelta(seconds=15)
            assert await h.service.check_live() == 1

    run(main())


def test_the_crowd_levels():
    assert [_crowd(n) for n in (0, CROWD_LOW_BELOW - 1, CROWD_LOW_BELOW, CROWD_HIGH_FROM - 1, CROWD_HIGH_FROM)] == \
        ["low", "low", "medium", "medium", "high"]


def test_the_scorer_gets_the_live_audience_for_near_spots_only(tmp_path):
    class RecordingHolder:
        scorer = object()

        def __init__(self):
            self.states = []

        def rank(self, moment, screen, candidates):
            self.states.append((moment, screen))
            return [0.0] * len(candidates)

    holder = RecordingHolder()
    meter = FakeMeter(12, 4.5)

    async def main():
        async with Harness(tmp_path, Clock(), scorer=holder, audience=lambda s: meter if s == "lobby" else None) as h:
            before = meter.calls
            holder.states.clear()
            await h.service.sync_command(snapshot())
            assert meter.calls - before == 1  # once per plan of the lobby, not per spot

    run(main())
    horizon = T0 + timedelta(seconds=LIVE_HORIZON_S)
    lobby = [(m, s) for m, s in holder.states if s.screen_id == "lobby"]
    near = [s for m, s in lobby if m <= horizon]
    far = [s for m, s in lobby if m > horizon]
    assert near and far
    assert all(s.audience == 12 and s.dwell_s == 4.5 and s.crowd == "high" for s in near)
    assert all(s == ScreenState("lobby") for s in far)
    # The gate screen has no camera: the neutral state throughout.
    gate = [s for m, s in holder.states if s.screen_id == "gate-1"]
    assert gate and all(s == ScreenState("gate-1") for s in gate)
