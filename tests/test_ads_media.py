"""The screens' media cache (gateway.ads.media): real bytes from a real HTTP server on loopback,
fetched, checked against their sha256, stored by sha256, evicted LRU (never what a playlist needs),
found again after a restart; and served to the players by a real gateway (auth as the playlist)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from types import SimpleNamespace

import httpx
import pytest
import yaml

from gateway.ads.media import MediaCache
from gateway.config import parse_config
from simulator.brokers import free_port
from simulator.files import FileServer
from simulator.process import RunningGateway

TOKEN = "site-token-0123456789abcdef"
LOBBY = "lobby-token-0123456789abcdef"
GATE = "gate-token-0123456789abcdef"


@pytest.fixture
def server():
    """The CDN: path -> bytes, counting the requests per path."""
    with FileServer() as files:
        yield files


def sha(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def item(url: str, digest: str):
    return SimpleNamespace(media_url=url, sha256=digest)


def run(coro):
    return asyncio.run(coro)


async def until(predicate, timeout: float = 20.0):
    """Wait for a condition (a generous bound against hangs; nothing is timed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------------------- the cache alone


def test_fetch_verify_store_by_sha256(tmp_path, server):
    body = os.urandom(300_000)
    url = server.put("a.mp4", body)
    cached: list[str] = []

    async def main():
        cache = MediaCache(tmp_path / "media", 10_000_000, on_cached=cached.append)
        await cache.start()
        assert cache.path(sha(body)) is None
        cache.ensure([item(url, sha(body)), SimpleNamespace(media_url=None, sha256=None)])
        await until(lambda: cache.has(sha(body)))
        path = cache.path(sha(body))
        assert path == tmp_path / "media" / sha(body)[:2] / sha(body)
        assert path.read_bytes() == body
        assert cached == [sha(body)]
        cache.ensure([item(url, sha(body))])  # already there: not fetched again
        await asyncio.sleep(0.05)
        status = cache.status()
        assert status["files"] == 1 and status["bytes"] == len(body)
        assert status["pending"] == 0 and status["failed"] == 0
        assert not list((tmp_path / "media").rglob("*.part"))
        await cache.close()

    run(main())
    assert server.hits["/a.mp4"] == 1


def test_a_sha256_mismatch_is_never_stored_and_is_retried(tmp_path, server):
    good = b"the real file " * 1000
    url = server.put("b.jpg", b"a tampered file " * 1000)
    cached: list[str] = []

    async def main():
        cache = MediaCache(tmp_path / "media", 10_000_000, retry_min=0.05, retry_max=0.2, on_cached=cached.append)
        await cache.start()
        cache.ensure([item(url, sha(good))])
        await until(lambda: server.hits.get("/b.jpg", 0) >= 3)  # retried, with backoff
        assert not cache.has(sha(good)) and cache.path(sha(good)) is None and cached == []
        status = cache.status()
        assert status["failed"] == 1 and status["pending"] == 1 and status["mismatches"] >= 2
        assert "sha256 mismatch" in status["errors"][0]["error"]
        # Nothing kept on disk (the next retry may be writing its `.part` right now: that is not kept).
        assert not [p for p in (tmp_path / "media").rglob("*") if p.is_file() and p.suffix != ".part"]
        server.files["/b.jpg"] = good  # the CDN is fixed: the next retry stores it
        await until(lambda: cache.has(sha(good)))
        assert cache.path(sha(good)).read_bytes() == good and cached == [sha(good)]
        assert cache.status()["failed"] == 0
        await cache.close()

    run(main())


def test_http_errors_and_files_too_large_are_failures(tmp_path, server):
    big = os.urandom(5000)
    big_url = server.put("big.mp4", big)
    missing = f"{server.url}/missing.mp4"

    async def main():
        cache = MediaCache(tmp_path / "media", 10_000_000, max_file_bytes=4096, retry_min=60)
        await cache.start()
        cache.ensure([item(big_url, sha(big)), item(missing, "0" * 64)])
        await until(lambda: cache.status()["failed"] == 2)
        errors = {e["url"]: e["error"] for e in cache.status()["errors"]}
        assert "limit" in errors[big_url] and "HTTP 404" in errors[missing]
        assert cache.status()["files"] == 0
        cache.ensure([])  # no longer wanted: forgotten, no retry
        assert cache.status()["failed"] == 0 and cache.status()["pending"] == 0
        await cache.close()

    run(main())


def test_eviction_lru_keeps_the_total_under_max_and_never_evicts_pinned(tmp_path, server):
    bodies = {name: os.urandom(1000) for name in ("p1", "p2", "x1", "x2", "x3")}
    urls = {name: server.put(name, body) for name, body in bodies.items()}
    items = {name: item(urls[name], sha(body)) for name, body in bodies.items()}

    async def main():
        cache = MediaCache(tmp_path / "media", 3500)
        await cache.start()
        # x1, x2 and x3 are fetched while wanted (x1 used last); then the plans move on to p1, p2.
        cache.ensure([items["x1"], items["x2"], items["x3"]])
        await until(lambda: all(cache.has(sha(bodies[n])) for n in ("x1", "x2", "x3")))
        for name in ("x2", "x3", "x1"):
            cache.path(sha(bodies[name]))
            await asyncio.sleep(0.01)
        cache.ensure([items["p1"], items["p2"]])
        await until(lambda: cache.has(sha(bodies["p1"])) and cache.has(sha(bodies["p2"])))
        status = cache.status()
        assert status["bytes"] <= 3500 and status["files"] == 3
        assert cache.has(sha(bodies["x1"]))  # the most recently used of the unpinned
        assert not cache.has(sha(bodies["x2"])) and not cache.has(sha(bodies["x3"]))
        assert not (tmp_path / "media" / sha(bodies["x2"])[:2] / sha(bodies["x2"])).exists()

        # Pinned files stay even when they alone exceed the limit.
        cache.max_bytes = 1500
        cache.ensure([items["p1"], items["p2"]])
        assert cache.has(sha(bodies["p1"])) and cache.has(sha(bodies["p2"]))
        assert not cache.has(sha(bodies["x1"]))
        assert cache.status()["evicted"] == 3
        await cache.close()

    run(main())


def test_a_restart_finds_the_files_and_drops_corrupted_ones(tmp_path, server):
    good, bad = os.urandom(2000), os.urandom(2000)
    urls = [server.put("good", good), server.put("bad", bad)]

    async def first():
        cache = MediaCache(tmp_path / "media", 10_000_000)
        await cache.start()
        cache.ensure([item(urls[0], sha(good)), item(urls[1], sha(bad))])
        await until(lambda: cache.status()["files"] == 2)
        await cache.close()

    run(first())
    corrupted = tmp_path / "media" / sha(bad)[:2] / sha(bad)
    corrupted.write_bytes(b"x" + bad[1:])  # a flipped byte on disk
    leftover = tmp_path / "media" / sha(good)[:2] / f"{sha(good)}.1234abcd.part"
    leftover.write_bytes(b"half a download")
    old = time.time() - 3600
    os.utime(tmp_path / "media" / sha(good)[:2] / sha(good), (old, old))

    async def second():
        cache = MediaCache(tmp_path / "media", 10_000_000)
        await cache.start()
        assert cache.has(sha(good)) and cache.path(sha(good)).read_bytes() == good
        assert not cache.has(sha(bad)) and not corrupted.exists() and not leftover.exists()
        assert cache.status()["dropped_at_start"] == 1
        # The use survives the restart as the file's mtime.
        assert abs(cache._entries[sha(good)].used - time.time()) < 600
        await cache.close()

    run(second())


# ------------------------------------------------------------------- through a real gateway


def site_config(tmp_path, uplink_port: int):
    return parse_config(yaml.safe_dump({
        "site_id": "mall-1", "gateway_id": "gw-1",
        "uplink": {"host": "127.0.0.1", "port": uplink_port, "reconnect_min": "100ms", "reconnect_max": "1s"},
        "storage": {"path": str(tmp_path / "gateway.db")},
        "api": {"host": "127.0.0.1", "port": 0, "token": TOKEN},
        "ads": {"media_dir": str(tmp_path / "cache"), "media_max_bytes": "10MiB"},
        "screens": [{"id": "lobby", "token": LOBBY}, {"id": "gate-1", "token": GATE}, {"id": "dark"}],
    }), "test-site.yaml", env={})


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_the_gateway_serves_the_media_of_the_playlist(tmp_path, server):
    video, image = os.urandom(200_000), os.urandom(50_000)
    video_url = server.put("spots/latte.mp4", video)
    image_url = server.put("spots/poster", image)  # no extension: the type says image
    gw = RunningGateway(site_config(tmp_path, free_port())).start()
    try:
        sync = {"version": 1, "mode": "snapshot",
                "creatives": [{"creative_id": "latte", "type": "video", "duration": 10, "media_url": video_url,
                               "sha256": sha(video)},
                              {"creative_id": "poster", "type": "image", "duration": 10, "media_url": image_url,
                               "sha256": sha(image)}],
                "campaigns": [{"campaign_id": "k1", "creatives": ["latte", "poster"]}]}
        asyncio.run_coroutine_threadsafe(gw.gateway.ads.sync_command(sync), gw.gateway._loop).result(30)
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.gateway.api_port}", timeout=30) as client:
            deadline = time.monotonic() + 30  # a bound against hangs, not a measurement
            while True:
                doc = client.get("/v1/screens/lobby/playlist", headers=bearer(LOBBY)).json()
                media_items = [i for i in doc["items"] if i.get("sha256")]  # not the spot of before the sync
                if media_items and all("local_url" in i for i in media_items):
                    break
                assert time.monotonic() < deadline, (doc, client.get("/v1/health").json()["ads"]["media"])
                time.sleep(0.05)
            urls = {i["creative_id"]: i["local_url"] for i in media_items}
            assert urls["latte"] == f"/v1/screens/lobby/media/{sha(video)}"
            assert media_items[0]["media_url"].startswith(server.url)  # still there for the fallback

            response = client.get(urls["latte"], headers=bearer(LOBBY))
            assert response.status_code == 200 and response.content == video
            assert response.headers["content-type"] == "video/mp4"
            assert response.headers["etag"] == f'"{sha(video)}"'
            assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
            poster = client.get(urls["poster"], headers=bearer(LOBBY))
            assert poster.content == image and poster.headers["content-type"] == "image/jpeg"
            part = client.get(urls["latte"], headers={**bearer(LOBBY), "Range": "bytes=100-199"})
            assert part.status_code == 206 and part.content == video[100:200]
            again = client.get(urls["latte"], headers={**bearer(LOBBY), "If-None-Match": f'"{sha(video)}"'})
            assert again.status_code == 304 and again.content == b""

            # Auth as the playlist: 404 unknown screen, 401 no or wrong token, 403 another screen's.
            path = f"/media/{sha(video)}"
            assert client.get("/v1/screens/nope" + path, headers=bearer(LOBBY)).status_code == 404
            for headers in ({}, {"Authorization": "Bearer"}, bearer("wrong-0123456789abcdef")):
                response = client.get("/v1/screens/lobby" + path, headers=headers)
                assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
            assert client.get("/v1/screens/lobby" + path, headers=bearer(GATE)).status_code == 403
            assert client.get("/v1/screens/dark" + path, headers=bearer(LOBBY)).status_code == 403
            assert client.get("/v1/screens/lobby" + path, headers=bearer(TOKEN)).status_code == 200
            assert client.get("/v1/screens/dark" + path, headers=bearer(TOKEN)).status_code == 200
            # Not cached (or not a sha256): 404, the player uses media_url.
            assert client.get(f"/v1/screens/lobby/media/{'0' * 64}", headers=bearer(LOBBY)).status_code == 404
            assert client.get("/v1/screens/lobby/media/..%2Fgateway.db", headers=bearer(LOBBY)).status_code == 404

            media = client.get("/v1/health").json()["ads"]["media"]
            assert media["files"] == 2 and media["bytes"] == len(video) + len(image) and media["failed"] == 0
    finally:
        gw.stop()
    assert server.hits["/spots/latte.mp4"] == 1
    assert (tmp_path / "cache" / sha(video)[:2] / sha(video)).read_bytes() == video
