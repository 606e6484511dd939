"""Headless Chromium (Debian's `chromium`) for the reference web player: in the demo, as the atrium
screen's signage box, and in the web player's tests.

`find_chromium()` finds the browser; `headless(...)` is its command line; `Browser` runs one and
drives it over the DevTools protocol (CDP, on a websocket: `websockets` comes with amqtt), enough
to open a page, evaluate JavaScript and take screenshots.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from .brokers import free_port

WIDTH, HEIGHT = 640, 360


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def headless(chromium: str, profile: str | Path, *args: str, width: int = WIDTH, height: int = HEIGHT) -> list[str]:
    return [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--mute-audio", f"--user-data-dir={profile}", f"--window-size={width},{height}",
            "--hide-scrollbars", *args]


class Browser:
    """Headless Chromium driven over the DevTools protocol, on `url` (about:blank by default)."""

    def __init__(self, chromium: str, profile: str | Path, url: str = "about:blank",
                 width: int = WIDTH, height: int = HEIGHT, start_timeout: float = 60):
        from websockets.sync.client import connect

        self.port = free_port()
        self.process = subprocess.Popen(headless(chromium, profile, f"--remote-debugging-port={self.port}", url,
                                                 width=width, height=height),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{self.port}/json/list", timeout=5).json()
                page = next(t for t in targets if t["type"] == "page")
                break
            except Exception:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium's DevTools did not come up")
                time.sleep(0.2)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = 0
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def send(self, method: str, **params):
        self.ids += 1
        self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.ids:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def eval(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def screenshot_png(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        ws = getattr(self, "ws", None)
        if ws is not None:
            try:
                ws.close()
            except Exception:
                pass
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)
