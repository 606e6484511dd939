"""The `ads.sync` store: version rules, idempotent repeats, references, nothing applied on refusal."""

from __future__ import annotations

import copy

import pytest

from gateway.ads.model import AdsCatalog, Creative
from gateway.ads.store import AdsStore, AdsSyncError, load_catalog_file, parse_sync
from gateway.commands import CommandError

SHA = "ab" * 32


def creative(cid: str, duration: int = 15) -> dict:
    return {"creative_id": cid, "type": "image", "duration": duration,
            "media_url": f"https://cdn.example.com/{cid}.jpg", "sha256": SHA}


def snapshot(version: int = 1) -> dict:
    return {"version": version, "mode": "snapshot",
            "creatives": [creative("c1"), creative("c2", 30),
                          {"creative_id": "t1", "type": "text", "duration": "10s", "text": "Sale on L2"}],
            "campaigns": [{"campaign_id": "k1", "creatives": ["c1", "c2"], "weight": 2,
                           "dayparts": [{"days": ["fri"], "start": "22:00", "end": "02:00"}]},
                          {"campaign_id": "k2", "creatives": ["t1"], "frequency_cap_per_hour": 4}],
            "default_loop": ["t1"]}


@pytest.fixture
def store(tmp_path):
    with AdsStore(tmp_path / "ads.db") as s:
        yield s


def state(store: AdsStore) -> tuple:
    catalog = store.load()
    return (catalog.version, dict(catalog.creatives), dict(catalog.campaigns), catalog.default_loop)


def test_snapshot_is_stored_and_loaded(store, tmp_path):
    result = store.apply_sync(snapshot())
    assert result == {"version": 1, "applied": True, "creatives": 3, "campaigns": 2}
    catalog = store.load()
    assert catalog.version == 1 and catalog.default_loop == ("t1",)
    assert catalog.creatives["t1"].duration == 10.0 and catalog.creatives["c1"].media_url.startswith("https://")
    assert catalog.campaigns["k1"].dayparts[0].spans() == [(4, 79200, 86400), (5, 0, 7200)]
    store.close()
    with AdsStore(tmp_path / "ads.db") as again:  # survives a restart
        assert again.version == 1 and state(again)[1:] == (catalog.creatives, catalog.campaigns, ("t1",))


def test_delta_must_follow_and_says_what_it_expects(store):
    store.apply_sync(snapshot(5))
    with pytest.raises(AdsSyncError) as refused:
        store.apply_sync({"version": 7, "mode": "delta", "creatives": [creative("c3")]})
    assert refused.value.expected_version == 6 and isinstance(refused.value, CommandError)
    result = store.apply_sync({"version": 6, "mode": "delta", "creatives": [creative("c3")],
                               "campaigns": [{"campaign_id": "k3", "creatives": ["c3", "c1"]}],
                               "remove": {"campaigns": ["k2", "not-there"]}})
    assert result == {"version": 6, "applied": True, "creatives": 4, "campaigns": 2}
    catalog = store.load()
    assert set(catalog.campaigns) == {"k1", "k3"} and catalog.default_loop == ("t1",)  # kept when absent
    with pytest.raises(AdsSyncError) as older:
        store.apply_sync(snapshot(3))
    assert older.value.expected_version == 7
    assert store.apply_sync(snapshot(10))["version"] == 10  # a snapshot jumps
    assert set(store.load().campaigns) == {"k1", "k2"}


def test_repeat_is_acknowledged_without_change_and_other_content_refused(store):
    store.apply_sync(snapshot(2))
    before = state(store)
    repeat = copy.deepcopy(snapshot(2))
    repeat["creatives"] = repeat["creatives"]  # same content, keys in another order below
    repeat = dict(reversed(list(repeat.items())))
    assert store.apply_sync(repeat) == {"version": 2, "applied": False, "creatives": 3, "campaigns": 2}
    assert state(store) == before
    other = snapshot(2)
    other["default_loop"] = ["c1"]
    with pytest.raises(AdsSyncError, match="already applied with other content") as refused:
        store.apply_sync(other)
    assert refused.value.expected_version == 3 and state(store) == before


@pytest.mark.parametrize("message, words", [
    ({"campaigns": [{"campaign_id": "k9", "creatives": ["nope"]}]}, "campaign k9 -> nope"),
    ({"remove": {"creatives": ["c1"]}}, "campaign k1 -> c1"),  # still played by k1
    ({"remove": {"creatives": ["t1"]}, "campaigns": [{"campaign_id": "k2", "creatives": ["c2"]}]},
     "default_loop -> t1"),
    ({"default_loop": ["ghost"]}, "default_loop -> ghost"),
])
def test_unknown_references_are_refused_and_nothing_changes(store, message, words):
    store.apply_sync(snapshot(1))
    before = state(store)
    with pytest.raises(AdsSyncError, match=words):
        store.apply_sync({"version": 2, "mode": "delta", **message})
    assert state(store) == before
    assert store.apply_sync({"version": 2, "mode": "delta", "creatives": [creative("c9")]})["applied"]


def test_a_snapshot_with_unknown_references_is_refused_before_any_write(store):
    store.apply_sync(snapshot(1))
    before = state(store)
    bad = snapshot(2)
    bad["campaigns"].append({"campaign_id": "k5", "creatives": ["c1", "missing"]})
    with pytest.raises(AdsSyncError, match="missing"):
        store.apply_sync(bad)
    assert state(store) == before


@pytest.mark.parametrize("change", [
    lambda m: m["creatives"][0].update(sha256="xyz"),
    lambda m: m["creatives"][0].update(media_url="ftp://example.com/a.jpg"),
    lambda m: m["creatives"][0].pop("sha256"),
    lambda m: m["creatives"][1].update(duration=0.5),
    lambda m: m["creatives"][1].update(duration="2h"),
    lambda m: m["creatives"][2].update(media_url="https://example.com/x"),
    lambda m: m["campaigns"][0].update(weight=0),
    lambda m: m["campaigns"][0].update(frequency_cap_per_hour=0),
    lambda m: m["campaigns"][0].update(flight={"start": "2026-03-02", "end": "2026-03-01"}),
    lambda m: m["campaigns"][0].update(dayparts=[{"start": "10:00", "end": "10:00"}]),
    lambda m: m["campaigns"][0].update(dayparts=[{"days": ["someday"], "start": "10:00", "end": "11:00"}]),
    lambda m: m["campaigns"][0].update(trigger_duration=5),  # without a trigger
    lambda m: m["campaigns"][0].update(trigger="door_opened", trigger_duration=12),
    lambda m: m["campaigns"][0].update(colour="red"),
    lambda m: m["campaigns"].append(m["campaigns"][0]),  # the same id twice
    lambda m: m.update(version=True),
    lambda m: m.update(mode="merge"),
    lambda m: m.update(remove={"creatives": ["c1"]}),  # removals in a snapshot
])
def test_a_malformed_sync_leaves_the_previous_catalog(store, change):
    store.apply_sync(snapshot(1))
    before = state(store)
    message = snapshot(2)
    change(message)
    with pytest.raises(AdsSyncError, match="malformed ads.sync"):
        store.apply_sync(message)
    assert state(store) == before and store.version == 1


def test_parse_sync_and_catalog_file(tmp_path):
    sync = parse_sync(snapshot(4))
    assert sync.version == 4 and isinstance(sync.creatives[0], Creative)
    path = tmp_path / "sync.json"
    import json
    path.write_text(json.dumps({"command_id": "x", "args": snapshot(4)}))
    catalog = load_catalog_file(path)
    assert isinstance(catalog, AdsCatalog) and catalog.version == 4 and set(catalog.campaigns) == {"k1", "k2"}
    path.write_text(json.dumps({**snapshot(4), "mode": "delta",
                                "campaigns": [{"campaign_id": "k", "creatives": ["zz"]}]}))
    with pytest.raises(ValueError, match="zz"):
        load_catalog_file(path)
