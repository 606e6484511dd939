"""LED text signs as screens: each plays its plan's text creatives, shown by the sign's driver.

A sign is a screen (`screens[].sign`: the `led_sign` device that drives it) whose campaigns carry
text creatives (welcomes, promotions). `SignPlayer` follows the screen's plan: when the item
playing now changes, it asks the driver to show the creative's text, with a few placeholders
filled in at that moment (`{time}`, `{date}`, `{weekday}` in the site's local time). Image, video
and web creatives cannot be shown on a sign: the sign keeps its last text through them (target
signs with text campaigns; a sign's default loop is the built-in Welcome text).
"""

from __future__ import annotations

import asyncio
import logging
import string
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

from .model import Creative

log = logging.getLogger("gateway.ads.signs")

CHECK_INTERVAL = 0.5  # seconds between looks at the plan
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


class SignDriver(Protocol):
    def show(self, text: str, mode: str | None = None) -> bool: ...


class _Blank(dict):
    """Unknown placeholders stay as written, so a typo shows rather than breaking the sign."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(text: str, moment: datetime) -> str:
    """The text with `{time}` (HH:MM), `{date}` (YYYY-MM-DD) and `{weekday}` (Mon) of `moment`."""
    values = _Blank(time=moment.strftime("%H:%M"), date=moment.strftime("%Y-%m-%d"),
                    weekday=_WEEKDAYS[moment.weekday()])
    try:
        return string.Formatter().vformat(text, (), values)
    except (ValueError, IndexError):  # stray braces: the text as written
        return text


class SignPlayer:
    """Shows on one sign the text creative its plan says is playing now.

    `now_playing(moment)` returns the creative playing at `moment` (None: nothing to show);
    `driver()` returns the sign's running driver (None while it is down: shown when it is back).
    """

    def __init__(self, screen_id: str, now_playing: Callable[[datetime], Creative | None],
                 driver: Callable[[], SignDriver | None], tz: str,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.screen_id = screen_id
        self.now_playing = now_playing
        self.driver = driver
        self.tz = ZoneInfo(tz)
        self.clock = clock
        self.shown: str | None = None  # the text the sign last accepted
        self.shows = 0

    def step(self) -> str | None:
        """Show what plays now if the sign does not show it yet; the text shown, else None."""
        moment = self.clock()
        creative = self.now_playing(moment)
        if creative is None or creative.type != "text" or not creative.text:
            return None
        text = fill(creative.text, moment.astimezone(self.tz))
        if text == self.shown:
            return None
        driver = self.driver()
        if driver is None:
            return None
        try:
            accepted = driver.show(text)
        except Exception as exc:  # a driver refusing must not end the player
            log.warning("sign %s: show failed: %s", self.screen_id, exc)
            return None
        if not accepted:
            return None
        self.shown, self.shows = text, self.shows + 1
        return text

    async def run(self) -> None:
        while True:
            self.step()
            await asyncio.sleep(CHECK_INTERVAL)
