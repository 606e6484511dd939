"""The screen API of a real Gateway running in-process, over TCP with httpx: per-screen tokens,
the playlist's ETag and 304, proof of play (202, 422, duplicates), and SSE interrupts after a
door.opened on the bus."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import yaml

from gateway.config import parse_config
from gateway.events import Event
from simulator.brokers import free_port
from simulator.process import RunningGateway

TOKEN = "site-token-0123456789abcdef"
LOBBY = "lobby-token-0123456789abcdef"
GATE = "gate-token-0123456789abcdef"
SHA = "cd" * 32


def site_config(db_path, uplink_port: int):
    return parse_config(yaml.safe_dump({
        "site_id": "mall-1", "gateway_id": "gw-1",
        "uplink": {"host": "127.0.0.1", "port": uplink_port, "reconnect_min": "100ms", "reconnect_max": "1s"},
        "storage": {"path": str(db_path)},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN, "max_body_bytes": 400_000},
        "devices": [{"id": "reader-1", "kind": "http_ingest", "stale_after": "1h"}],
        "access": {"doors": [{"id": "staff", "device": "reader-1"}]},
        "screens": [{"id": "lobby", "token": LOBBY, "groups": ["floor-1"]},
                    {"id": "gate-1", "token": GATE, "groups": ["gates"], "door": "staff"},
                    {"id": "dark"}],
    }), "test-site.yaml", env={})


def creative(cid: str, duration: int = 10) -> dict:
    return {"creative_id": cid, "type": "video", "duration": duration,
            "media_url": f"https://cdn.example.com/{cid}.mp4", "sha256": SHA}


def catalog(version: int) -> dict:
    return {"version": version, "mode": "snapshot",
            "creatives": [creative("c1"), creative("c2", 20), creative("g1", 30), creative(f"v{version}")],
            "campaigns": [{"campaign_id": "k1", "creatives": ["c1", "c2", f"v{version}"]},
                          {"campaign_id": "gate", "creatives": ["g1"], "trigger": "door_opened",
                           "trigger_duration": 4, "screens": ["gate-1"]}]}


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    gw = RunningGateway(site_config(tmp_path_factory.mktemp("screens") / "gateway.db", free_port())).start()
    yield gw
    gw.stop()


def on_loop(running, coro):
    return asyncio.run_coroutine_threadsafe(coro, running.gateway._loop).result(30)


@pytest.fixture(scope="module")
def client(running):
    on_loop(running, running.gateway.ads.sync_command(catalog(1)))
    with httpx.Client(base_url=f"http://127.0.0.1:{running.gateway.api_port}", timeout=30) as client:
        yield client


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def a_play(**fields) -> dict:
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    return {"play_id": str(uuid.uuid4()), "creative_id": "c1", "campaign_id": "k1",
            "start": start.isoformat(), "end": (start + timedelta(seconds=10)).isoformat(), **fields}


# ------------------------------------------------------------------------------------ auth


@pytest.mark.parametrize("method,path", [("GET", "playlist"), ("POST", "plays"), ("GET", "events")])
def test_auth(client, method, path):
    url = f"/v1/screens/lobby/{path}"
    body = {"json": {"plays": [a_play()]}} if method == "POST" else {}
    assert client.request(method, "/v1/screens/nope/" + path, headers=bearer(LOBBY), **body).status_code == 404
    for headers in ({}, {"Authorization": "Bearer"}, bearer("wrong-0123456789abcdef"),
                    {"Authorization": f"Basic {LOBBY}"}):
        response = client.request(method, url, headers=headers, **body)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.request(method, url, headers=bearer(GATE), **body).status_code == 403  # another screen's
    # The site token reads any screen (engineers) but does not post plays.
    if method == "GET" and path == "playlist":
        assert client.get(url, headers=bearer(TOKEN)).status_code == 200
        # A screen without a token of its own: only the site token reads it.
        assert client.get("/v1/screens/dark/playlist", headers=bearer(TOKEN)).status_code == 200
        assert client.get("/v1/screens/dark/playlist", headers=bearer(LOBBY)).status_code == 403
    if method == "POST":
        assert client.post(url, headers=bearer(TOKEN), **body).status_code == 403


def test_401_before_the_body_is_read(client):
    response = client.post("/v1/screens/lobby/plays", content=b"x" * 500_000, headers={"Content-Type": "application/json"})
    assert response.status_code == 401


# -------------------------------------------------------------------------------- playlist


def test_playlist_etag_and_304(running, client):
    response = client.get("/v1/screens/lobby/playlist", headers=bearer(LOBBY))
    assert response.status_code == 200 and response.headers["cache-control"] == "no-cache"
    etag = response.headers["etag"]
    doc = response.json()
    assert etag == f'"{doc["version"]}"' and doc["screen"] == "lobby" and doc["valid_until"]
    item = doc["items"][-1]
    assert item["campaign_id"] == "k1" and item["type"] == "video" and item["media_url"].startswith("https://")
    assert set(item) >= {"creative_id", "campaign_id", "type", "media_url", "duration", "start", "end"}

    again = client.get("/v1/screens/lobby/playlist", headers={**bearer(LOBBY), "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    weak = client.get("/v1/screens/lobby/playlist", headers={**bearer(LOBBY), "If-None-Match": f'"x", W/{etag}'})
    assert weak.status_code == 304
    stale = client.get("/v1/screens/lobby/playlist", headers={**bearer(LOBBY), "If-None-Match": '"v0-old"'})
    assert stale.status_code == 200 and stale.headers["etag"] == etag

    version = running.gateway.ads.catalog.version
    on_loop(running, running.gateway.ads.sync_command(catalog(version + 1)))
    changed = client.get("/v1/screens/lobby/playlist", headers={**bearer(LOBBY), "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    health = client.get("/v1/health").json()["ads"]
    assert health["catalog_version"] == version + 1 and {s["id"] for s in health["screens"]} == {"lobby", "gate-1", "dark"}
    assert "plays_pending" in health


# ---------------------------------------------------------------------------------- plays


def test_plays_202_duplicates_and_late_backfill(client):
    plays = [a_play(impressions=2, attention_s=3.5), a_play(campaign_id=None),
             a_play(start="2026-01-02T03:04:05+08:00", end="2026-01-02T03:04:15+08:00")]
    days_ago = datetime.now(timezone.utc) - timedelta(days=3)
    plays.append(a_play(start=days_ago.isoformat(), end=(days_ago + timedelta(seconds=8)).isoformat()))
    response = client.post("/v1/screens/lobby/plays", json={"plays": plays}, headers=bearer(LOBBY))
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": 3, "duplicates": 0, "expired": 1}  # January is past keep_plays
    again = client.post("/v1/screens/lobby/plays", json={"plays": plays[:2] + [a_play()]}, headers=bearer(LOBBY))
    assert again.status_code == 202 and again.json() == {"accepted": 1, "duplicates": 2, "expired": 0}


@pytest.mark.parametrize("body,where", [
    ({"plays": []}, "plays"),
    ({"plays": [a_play(play_id="not-a-uuid")]}, "play_id"),
    ({"plays": [a_play(start="2026-11-22T10:00:00")]}, "start"),  # no zone
    ({"plays": [a_play(end="2020-01-01T00:00:00Z")]}, "end is before start"),
    ({"plays": [a_play(impressions=-1)]}, "impressions"),
    ({"plays": [a_play(extra=1)]}, "extra"),
    ({"plays": [a_play(start=(datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(),
                       end=(datetime.now(timezone.utc) + timedelta(hours=1, seconds=5)).isoformat())]}, "future"),
    ({"plays": [a_play() for _ in range(1001)]}, "plays"),
], ids=["empty", "uuid", "zone", "order", "negative", "unknown-key", "future", "too-many"])
def test_plays_422_with_reasons(client, body, where):
    response = client.post("/v1/screens/lobby/plays", json=body, headers=bearer(LOBBY))
    assert response.status_code == 422
    assert where in json.dumps(response.json()["detail"])


def test_plays_413_for_a_large_body(client):
    response = client.post("/v1/screens/lobby/plays", content=b"x" * 500_000,
                           headers={**bearer(LOBBY), "Content-Type": "application/json"})
    assert response.status_code == 413


# ------------------------------------------------------------------------------------ SSE


def _read_events(url: str, headers: dict, out: queue.Queue, stop: threading.Event) -> None:
    with httpx.Client(timeout=httpx.Timeout(30, read=60)) as c, c.stream("GET", url, headers=headers) as response:
        out.put(("status", response.status_code, response.headers.get("content-type"), time.monotonic()))
        kind = None
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                out.put((kind, json.loads(line[6:]), None, time.monotonic()))


def test_sse_interrupt_after_door_opened(running, client):
    base = f"http://127.0.0.1:{running.gateway.api_port}"
    gate, lobby, stop = queue.Queue(), queue.Queue(), threading.Event()
    for screen, token, out in (("gate-1", GATE, gate), ("lobby", LOBBY, lobby)):
        threading.Thread(target=_read_events, args=(f"{base}/v1/screens/{screen}/events", bearer(token), out, stop),
                         daemon=True).start()
    try:
        for out in (gate, lobby):
            status = out.get(timeout=30)
            assert status[:3] == ("status", 200, "text/event-stream; charset=utf-8")
            first = out.get(timeout=30)
            assert first[0] == "playlist" and first[1]["etag"].startswith('"v')
        published = time.monotonic()
        running.gateway.bus.publish(Event("door.opened", "reader-1", {"door": "staff", "person_id": "P-1",
                                                                     "method": "card"}, internal=True))
        kind, message, _, arrived = gate.get(timeout=10)  # generous: the figure is measured below
        assert kind == "interrupt"
        assert message["creative_id"] == "g1" and message["campaign_id"] == "gate"
        assert message["trigger"] == "door_opened" and message["duration"] == 4 and message["type"] == "video"
        assert message["media_url"] == "https://cdn.example.com/g1.mp4" and message["at"].endswith("Z")
        print(f"interrupt reached the player {1000 * (arrived - published):.1f} ms after door.opened")

        # A catalog change reaches both players as a playlist event.
        version = running.gateway.ads.catalog.version
        on_loop(running, running.gateway.ads.sync_command(catalog(version + 1)))
        for out in (gate, lobby):
            kind, message, _, _ = out.get(timeout=10)
            assert kind == "playlist" and message["version"].startswith(f"v{version + 1}-")
        assert lobby.empty()  # no interrupt for the lobby: it serves no door
    finally:
        stop.set()
