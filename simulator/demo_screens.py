"""The demo's screens: the platform's campaigns and CDN, the LED signs, and the players.

- **Campaigns.** `DemoScreens.catalog()` is the `ads.sync` the simulated platform sends: two loop
  campaigns with image creatives (drawn here, served by a stand-in CDN on loopback, with their
  sha256), a door-triggered 5 s spot for gate screens, and a text campaign for LED signs.
- **Signs.** Each `led_sign` device gets a virtual sign on a pseudo-terminal (simulator/led_sign.py).
- **Players.** The first screen that is neither a sign nor a gate screen is played by the reference
  web player in headless Chromium when Chromium is installed (the web player's own plays and a
  screenshot at the end); every other web screen, and that one without Chromium, by a Python
  player speaking the same API (simulator/screen_player.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from gateway.config import SiteConfigBase

from .browser import Browser, find_chromium
from .devices import GatewayEndpoints, VirtualDevice
from .files import FileServer
from .led_sign import VirtualLedSign
from .screen_player import VirtualScreenPlayer

SPOT_S = 5  # the loop's spots are short, so that a demo of a minute shows many plays

# (creative id, campaign, background BGR, two lines of text)
_IMAGES = [
    ("autumn-sale-1", "autumn-sale", (40, 60, 200), ("Autumn sale", "30% off fashion, level 2")),
    ("autumn-sale-2", "autumn-sale", (30, 110, 220), ("Autumn sale", "Members: double points Tuesday")),
    ("food-court-1", "food-court", (40, 150, 60), ("B1 food court", "Hot pot lunch set 68 yuan")),
    ("gate-hello", "gate-hello", (150, 80, 20), ("Welcome back", "Coffee at S101: 2x points today")),
]


def _image(colour: tuple[int, int, int], lines: tuple[str, str], size=(1280, 720)) -> bytes:
    """A poster: a flat colour with two lines of white text (a PNG)."""
    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = colour
    for n, (text, scale) in enumerate(zip(lines, (3.0, 1.6))):
        (w, h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, scale, 4)
        y = height // 2 - 40 + n * 140
        cv2.putText(image, text, ((width - w) // 2, y), cv2.FONT_HERSHEY_DUPLEX, scale, (255, 255, 255), 4,
                    cv2.LINE_AA)
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


class DemoScreens:
    def __init__(self) -> None:
        self.signs: dict[str, VirtualLedSign] = {}
        self.cdn: FileServer | None = None
        self.browser: Browser | None = None
        self.browser_screen: str | None = None
        self.colours: dict[str, tuple[int, int, int]] = {c: colour for c, _, colour, _ in _IMAGES}

    # ------------------------------------------------------------------------ before the gateway

    def serve(self, config: SiteConfigBase) -> SiteConfigBase:
        """Virtual LED signs on pseudo-terminals in place of the configured serial ports."""
        devices = []
        for device in config.devices:
            if device.kind == "led_sign":
                sign = VirtualLedSign(device.id, address=device.address).start()
                self.signs[device.id] = sign
                device = device.model_copy(update={"port": sign.port})
                print(f"virtual LED sign {device.id} on {sign.port}", flush=True)
            devices.append(device)
        return config.model_copy(update={"devices": devices})

    def catalog(self) -> dict:
        """The platform's `ads.sync`: its media on the stand-in CDN (started here)."""
        self.cdn = self.cdn or FileServer().start()
        creatives = []
        for creative_id, _, colour, lines in _IMAGES:
            data = _image(colour, lines)
            creatives.append({"creative_id": creative_id, "type": "image", "duration": SPOT_S,
                              "media_url": self.cdn.put(f"ads/{creative_id}.png", data),
                              "sha256": hashlib.sha256(data).hexdigest(), "width": 1280, "height": 720})
        creatives += [{"creative_id": "sign-welcome", "type": "text", "duration": 20,
                       "text": "Welcome! {weekday} {time} - free parking after 8 pm"},
                      {"creative_id": "sign-food", "type": "text", "duration": 20,
                       "text": "B1 food court: hot pot lunch set 68 yuan"}]
        by_campaign: dict[str, list[str]] = {}
        for creative_id, campaign, _, _ in _IMAGES:
            by_campaign.setdefault(campaign, []).append(creative_id)
        campaigns = [
            {"campaign_id": "autumn-sale", "creatives": by_campaign["autumn-sale"], "weight": 3,
             "category": "fashion", "screen_groups": ["atrium", "gates"]},
            {"campaign_id": "food-court", "creatives": by_campaign["food-court"], "weight": 2,
             "category": "food", "screen_groups": ["atrium", "gates"]},
            {"campaign_id": "gate-hello", "creatives": by_campaign["gate-hello"], "trigger": "door_opened",
             "trigger_duration": 5, "priority": 10, "category": "food", "screen_groups": ["gates"]},
            {"campaign_id": "sign-ticker", "creatives": ["sign-welcome", "sign-food"], "screen_groups": ["signs"]},
        ]
        return {"version": 1, "mode": "snapshot", "creatives": creatives, "campaigns": campaigns}

    # ------------------------------------------------------------------------- with the gateway

    def players(self, config: SiteConfigBase, endpoints: GatewayEndpoints, profile: Path,
                browser: bool = True) -> list[VirtualDevice]:
        """Start the players of the web screens (those with a token, neither signs)."""
        devices: list[VirtualDevice] = []
        chromium = find_chromium() if browser else None
        for screen in config.screens:
            if screen.sign is not None or screen.token is None:
                continue
            token = screen.token.get_secret_value()
            url = f"{endpoints.api_url}/player/{screen.id}#token={token}"
            if chromium and self.browser is None and screen.door is None:
                try:
                    self.browser = Browser(chromium, profile, url, width=1280, height=720)
                    self.browser_screen = screen.id
                    print(f"web player of {screen.id} in headless Chromium: {url}", flush=True)
                    continue
                except RuntimeError as exc:
                    print(f"Chromium did not start ({exc}); a simulated player plays {screen.id}", flush=True)
            print(f"{screen.id} is played by a simulated player; its web player (open it in a browser to watch): "
                  f"{url}", flush=True)
            devices.append(VirtualScreenPlayer(screen.id, endpoints, token).start())
        return devices

    def sign_texts(self) -> dict[str, str | None]:
        return {device_id: sign.current_text for device_id, sign in self.signs.items()}

    def screenshot(self, path: Path) -> str | None:
        """The web player's screen as a PNG at `path`, and the creative it showed; None without a browser."""
        if self.browser is None:
            return None
        path.write_bytes(self.browser.screenshot_png())
        return self.browser.eval("document.body && document.body.dataset.creative") or ""

    def stop(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self.cdn is not None:
            self.cdn.stop()
        for sign in self.signs.values():
            sign.stop()
