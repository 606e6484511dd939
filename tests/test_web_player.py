"""The reference web player (gateway/ads/player/) in headless Chromium against a real Gateway running
in-process: the page shows the playlist's image full-screen (a screenshot taken by Chromium, read
with cv2), `data-creative` names it, its plays reach the gateway, a door.opened interrupt shows the
gate's creative and the loop resumes after it, and with the network cut it keeps playing from its
cache and queues its plays until the gateway is back.

Chromium is Debian's `chromium` (scripts/test.sh installs it); these tests are skipped only when it
cannot be found nor installed."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import time
from datetime import datetime, timezone

import cv2
import httpx
import numpy as np
import pytest

from gateway.events import Event
import simulator.browser
from simulator.brokers import free_port
from simulator.browser import HEIGHT, WIDTH, find_chromium, headless
from simulator.files import FileServer
from test_api import RunningGateway
from test_screen_api import GATE, LOBBY, site_config

RED, BLUE = (0, 0, 255), (255, 0, 0)  # BGR


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env={**os.environ,
                       "DEBIAN_FRONTEND": "noninteractive"}, capture_output=True, timeout=900)
        path = find_chromium()
    if path is None:
        pytest.skip("Debian's chromium is not installed and could not be installed "
                    "(run 'apt-get install chromium' as root, or bash scripts/test.sh)")
    return path


def png(colour) -> bytes:
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    image[:] = colour
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


@pytest.fixture(scope="module")
def media():
    """A tiny HTTP server for the creatives' media (the platform's CDN stand-in)."""
    files = {"/red.png": png(RED), "/blue.png": png(BLUE)}

    server = FileServer(files).start()
    yield {path: (f"{server.url}{path}", hashlib.sha256(body).hexdigest()) for path, body in files.items()}
    server.stop()


def catalog(media) -> dict:
    red_url, red_sha = media["/red.png"]
    blue_url, blue_sha = media["/blue.png"]
    return {"version": 1, "mode": "snapshot",
            "creatives": [{"creative_id": "red", "type": "image", "duration": 2, "media_url": red_url, "sha256": red_sha},
                          {"creative_id": "blue", "type": "image", "duration": 5, "media_url": blue_url,
                           "sha256": blue_sha}],
            "campaigns": [{"campaign_id": "loop", "creatives": ["red"]},
                          {"campaign_id": "gate", "creatives": ["blue"], "trigger": "door_opened",
                           "trigger_duration": 6, "screens": ["gate-1"]}]}


@pytest.fixture(scope="module")
def running(tmp_path_factory, media):
    gw = RunningGateway(site_config(tmp_path_factory.mktemp("player") / "gateway.db", free_port())).start()
    asyncio.run_coroutine_threadsafe(gw.gateway.ads.sync_command(catalog(media)), gw.gateway._loop).result(30)
    # The spot playing at the sync (the built-in "Welcome", up to 10 s) is kept; wait for the catalog's.
    deadline = time.monotonic() + 60
    while not all(playing_now(gw, screen) == "red" for screen in ("lobby", "gate-1")):
        assert time.monotonic() < deadline, "the catalog's spots did not start"
        time.sleep(0.1)
    yield gw
    gw.stop()


def playing_now(gw, screen: str) -> str | None:
    now = datetime.now(timezone.utc)
    for item in gw.gateway.ads.playlist(screen)[0]["items"]:
        if datetime.fromisoformat(item["start"].replace("Z", "+00:00")) <= now < datetime.fromisoformat(
                item["end"].replace("Z", "+00:00")):
            return item["creative_id"]
    return None


def base(running) -> str:
    return f"http://127.0.0.1:{running.gateway.api_port}"


def plays_of(running, screen: str, creative: str) -> int:
    return sum(1 for c, _, _ in running.gateway.ads.plays.recent(screen, 0) if c == creative)


def share(image, colour, tolerance: int = 40) -> float:
    return float(np.mean(np.all(np.abs(image.astype(int) - colour) <= tolerance, axis=2)))


# ---------------------------------------------------------------------------------- serving


def test_the_page_and_its_files_are_served(running):
    with httpx.Client(base_url=base(running), timeout=30) as client:
        page = client.get("/player/lobby")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "/player/static/player.js" in page.text and page.headers["referrer-policy"] == "no-referrer"
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        js = client.get("/player/static/player.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert client.get("/player/nope").status_code == 404
        assert client.get("/player/static/../api.py").status_code == 404
        assert client.get("/player/static/secret.txt").status_code == 404


# ------------------------------------------------------------------- the command-line run


def test_screenshot_dom_and_plays(running, chromium, tmp_path):
    url = f"{base(running)}/player/lobby#token={LOBBY}"
    shot = tmp_path / "lobby.png"
    # --virtual-time-budget: the page's timers run 8 virtual seconds (4 two-second spots), then the
    # screenshot is taken.
    subprocess.run(headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--virtual-time-budget=8000",
                            url), capture_output=True, timeout=120, check=True)
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (HEIGHT, WIDTH)
    assert share(image, RED) > 0.95, f"the screenshot is not the red creative: mean BGR {image.mean(axis=(0, 1))}"

    dom = subprocess.run(headless(chromium, tmp_path / "profile", "--dump-dom", "--virtual-time-budget=8000", url),
                         capture_output=True, timeout=120, check=True, text=True).stdout
    assert 'data-creative="red"' in dom and "<img" in dom
    # Each spot that ended was posted with its true times: the gateway has them.
    deadline = time.monotonic() + 60
    while plays_of(running, "lobby", "red") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert plays_of(running, "lobby", "red") >= 2
    assert running.gateway.ads.status()["plays_accepted"] >= 2


# -------------------------------------------------------------- driven over DevTools (CDP)


class Browser(simulator.browser.Browser):
    """The shared headless Chromium (simulator/browser.py), with the waits these tests need."""

    def wait(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.eval(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not true within {timeout} s: {expression}; state: {self.eval('JSON.stringify(window.playerState)')}")

    def screenshot(self):
        return cv2.imdecode(np.frombuffer(self.screenshot_png(), np.uint8), cv2.IMREAD_COLOR)

    def painted(self, colour, timeout: float = 10.0):
        """A screenshot once the screen shows `colour`: the DOM can change a frame before the
        compositor paints it, so a screenshot right after the DOM check may still show the last
        frame. The last screenshot if it never does (the caller's assertion says so)."""
        deadline = time.monotonic() + timeout
        while True:
            image = self.screenshot()
            if share(image, colour) > 0.95 or time.monotonic() > deadline:
                return image
            time.sleep(0.1)


@pytest.fixture
def browser(chromium, tmp_path):
    b = Browser(chromium, tmp_path / "profile")
    yield b
    b.close()


def shown(creative: str) -> str:
    """JS: the creative is on screen, its image loaded."""
    return (f"document.body && document.body.dataset.creative === '{creative}' && "
            "!!document.querySelector('#stage img') && document.querySelector('#stage img').complete && "
            "document.querySelector('#stage img').naturalWidth > 0")


def test_interrupt_then_the_loop_resumes(running, browser):
    browser.send("Page.enable")
    browser.send("Page.navigate", url=f"{base(running)}/player/gate-1#token={GATE}")
    browser.wait(shown("red") + " && window.playerState.sse")
    assert share(browser.painted(RED), RED) > 0.95

    running.gateway.bus.publish(Event("door.opened", "reader-1", {"door": "staff", "person_id": "P-1",
                                                                   "method": "card", "credential": "c-1"}))
    browser.wait(shown("blue"), timeout=30)
    image = browser.painted(BLUE)
    assert share(image, BLUE) > 0.95, f"the interrupt is not on screen: mean BGR {image.mean(axis=(0, 1))}"
    assert browser.eval("window.playerState.interrupts") == 1
    # After its 6 s the loop comes back, and the interrupt's play reaches the gateway.
    browser.wait("document.body.dataset.creative === 'red'", timeout=30)
    deadline = time.monotonic() + 30
    while plays_of(running, "gate-1", "blue") < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert plays_of(running, "gate-1", "blue") == 1


def test_offline_keeps_playing_and_queues_plays(running, browser):
    browser.send("Page.enable")
    browser.send("Network.enable")
    browser.send("Page.navigate", url=f"{base(running)}/player/lobby#token={LOBBY}")
    browser.wait(shown("red") + " && window.playerState.playlistVersion")
    assert browser.eval("!!localStorage.getItem('player.lobby.playlist')")
    before = plays_of(running, "lobby", "red")

    browser.send("Network.emulateNetworkConditions", offline=True, latency=0, downloadThroughput=-1,
                 uploadThroughput=-1)
    # Spots keep changing on screen from the cached playlist; their plays wait in the queue.
    browser.wait("window.playerState.queued >= 2 && window.playerState.online === false", timeout=30)
    assert browser.eval("document.body.dataset.creative") == "red"
    assert share(browser.painted(RED), RED) > 0.95
    queued = browser.eval("window.playerState.queued")
    assert browser.eval("JSON.parse(localStorage.getItem('player.lobby.plays')).length") >= queued

    browser.send("Network.emulateNetworkConditions", offline=False, latency=0, downloadThroughput=-1,
                 uploadThroughput=-1)
    browser.wait("window.playerState.queued === 0", timeout=90)  # the backoff is at most 60 s
    assert plays_of(running, "lobby", "red") >= before + queued


def test_a_reload_while_the_gateway_is_down_still_opens_the_player(tmp_path, media, browser):
    """The service worker (/player/sw.js) keeps the page and player.js: with the gateway stopped, a
    reload still opens the player, which plays its last playlist (kept in localStorage)."""
    gw = RunningGateway(site_config(tmp_path / "gateway.db", free_port())).start()
    try:
        asyncio.run_coroutine_threadsafe(gw.gateway.ads.sync_command(catalog(media)), gw.gateway._loop).result(30)
        url = f"http://127.0.0.1:{gw.gateway.api_port}/player/lobby#token={LOBBY}"
        worker = httpx.get(url.split("#")[0].replace("/lobby", "/sw.js"), timeout=30)
        assert worker.status_code == 200 and "javascript" in worker.headers["content-type"]
        browser.send("Page.enable")
        browser.send("Page.navigate", url=url)
        browser.wait("window.playerState && window.playerState.serviceWorker === true "
                     "&& !!navigator.serviceWorker.controller")
        browser.wait(shown("red"))  # after the spot kept at the sync (up to 10 s)
    finally:
        gw.stop()
    with pytest.raises(httpx.HTTPError):  # the gateway is gone
        httpx.get(url.split("#")[0], timeout=5)
    browser.send("Page.reload", ignoreCache=False)
    browser.wait("window.playerState && window.playerState.online === false && !!window.playerState.lastError")
    browser.wait(shown("red"))
    assert share(browser.painted(RED), RED) > 0.95


def test_media_from_the_gateways_copy(running, browser):
    """Once the gateway has cached the image (its sha256 checked), the playlist names its `local_url`;
    the player fetches it with the token, keeps it in the Cache API and shows it from an object URL."""
    deadline = time.monotonic() + 60
    while not all("local_url" in item for item in running.gateway.ads.playlist("lobby")[0]["items"]
                  if item.get("sha256")):
        assert time.monotonic() < deadline, "the gateway did not cache the media"
        time.sleep(0.2)
    browser.send("Page.enable")
    browser.send("Page.navigate", url=f"{base(running)}/player/lobby#token={LOBBY}")
    browser.wait(shown("red") + " && document.querySelector('#stage img').src.startsWith('blob:')")
    assert browser.eval("window.playerState.localMedia") >= 1
    assert share(browser.painted(RED), RED) > 0.95
    cached = browser.send("Runtime.evaluate", awaitPromise=True, returnByValue=True, expression=(
        "caches.open('player-media-v1').then(c => c.keys()).then(k => k.map(r => r.url))"))["result"]["value"]
    sha = running.gateway.ads.playlist("lobby")[0]["items"][-1]["sha256"]
    assert any(url.endswith(f"/v1/screens/lobby/media/{sha}") for url in cached), cached
