"""A signage box's player, in Python: the stand-in for a screen the demo has no browser for.

It speaks the same player API as the reference web player (gateway/ads/player/player.js):

- fetches `GET /v1/screens/{id}/playlist` with `If-None-Match` every POLL_S seconds, and at once when
  the screen's Server-Sent Events stream announces a new `playlist`;
- listens to `GET /v1/screens/{id}/events` in a thread: an `interrupt` preempts the loop for its
  duration, then the loop resumes at whatever the playlist plays at that moment;
- "plays" the item whose [start, end) holds the current time, and when the screen changes (item
  over, or an interrupt) it queues a proof-of-play record with a fresh `play_id` and the true times;
- posts the queued records (`POST /v1/screens/{id}/plays`); a failed post keeps them for the next
  try, so plays made while the gateway is unreachable are backfilled.

Nothing is rendered: `current` says what would be on screen, `played` counts the records the
gateway accepted, `interrupts` the interrupts shown.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone

import httpx

from gateway.events import utc_timestamp

from .devices.base import GatewayEndpoints, VirtualDevice

POLL_S = 5.0  # seconds between playlist checks (If-None-Match: a 304 costs little)
MIN_PLAY_S = 0.5  # a spot cut shorter than this (a re-plan at its start) is not reported


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class VirtualScreenPlayer(VirtualDevice):
    kind = "screen_player"

    def __init__(self, screen_id: str, endpoints: GatewayEndpoints, token: str, interval: float = 0.2):
        super().__init__(f"player-{screen_id}", interval)
        self.screen_id = screen_id
        self.client = httpx.Client(base_url=f"{endpoints.api_url}/v1/screens/{screen_id}",
                                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
        self.items: list[tuple[datetime, datetime, dict]] = []  # (start, end, item), parsed once
        self.etag: str | None = None
        self.current: tuple[dict, datetime] | None = None  # (item or interrupt, when it began)
        self.queue: list[dict] = []  # records not yet accepted by the gateway
        self.played = 0
        self.interrupts = 0
        self._interrupt: tuple[dict, datetime] | None = None  # (message, its end)
        self._refetch = threading.Event()
        self._refetch.set()
        self._last_fetch = 0.0
        self._lock = threading.Lock()
        self._events = threading.Thread(target=self._listen, name=f"sim-{self.device_id}-sse", daemon=True)

    def start(self) -> "VirtualScreenPlayer":
        self._events.start()
        return super().start()  # type: ignore[return-value]

    # ------------------------------------------------------------------------------- playing

    def step(self) -> None:
        if self._refetch.is_set() or time.monotonic() - self._last_fetch >= POLL_S:
            self._fetch()
        now = datetime.now(timezone.utc)
        showing = self._showing(now)
        with self._lock:
            if self.current is not None and (showing is None or showing is not self.current[0]):
                self._record(*self.current, now)
                self.current = None
            if showing is not None and self.current is None:
                self.current = (showing, now)
        self._flush()

    def _showing(self, now: datetime) -> dict | None:
        with self._lock:
            if self._interrupt is not None:
                message, end = self._interrupt
                if now < end:
                    return message
                self._interrupt = None
        for start, end, item in self.items:
            if start <= now < end:
                return item
        return None

    def _record(self, item: dict, start: datetime, end: datetime) -> None:
        if (end - start).total_seconds() < MIN_PLAY_S or not item.get("creative_id"):
            return
        self.queue.append({"play_id": str(uuid.uuid4()), "creative_id": item["creative_id"],
                           "campaign_id": item.get("campaign_id"), "start": utc_timestamp(start),
                           "end": utc_timestamp(end)})

    def _fetch(self) -> None:
        self._refetch.clear()
        self._last_fetch = time.monotonic()
        headers = {"If-None-Match": self.etag} if self.etag else {}
        response = self.client.get("/playlist", headers=headers)
        if response.status_code == 200:
            self.items = [(_time(it["start"]), _time(it["end"]), it) for it in response.json()["items"]]
            self.etag = response.headers.get("etag")
        elif response.status_code != 304:
            response.raise_for_status()

    def _flush(self) -> None:
        with self._lock:
            batch = list(self.queue)
        if not batch:
            return
        response = self.client.post("/plays", json={"plays": batch})
        response.raise_for_status()  # kept for the next step
        with self._lock:
            del self.queue[:len(batch)]
        accepted = response.json()["accepted"]
        self.played += accepted
        self.produced += accepted

    # ----------------------------------------------------------------------------- interrupts

    def _listen(self) -> None:
        """The SSE stream, reconnected after a pause whenever it ends or fails, until stopped."""
        while not self._stop.is_set():
            try:
                with self.client.stream("GET", "/events", timeout=httpx.Timeout(10, read=30)) as response:
                    response.raise_for_status()
                    kind = None
                    for line in response.iter_lines():
                        if self._stop.is_set():
                            return
                        if line.startswith("event:"):
                            kind = line[6:].strip()
                        elif line.startswith("data:") and kind is not None:
                            self._on_message(kind, json.loads(line[5:]))
                        elif not line:
                            kind = None
            except Exception as exc:  # the gateway restarting, or stopping: try again
                self.log.debug("events: %s", exc)
            self._stop.wait(1.0)

    def _on_message(self, kind: str, data: dict) -> None:
        if kind == "playlist" and data.get("etag") != self.etag:
            self._refetch.set()
        elif kind == "interrupt":
            end = datetime.now(timezone.utc).timestamp() + float(data.get("duration") or 0)
            with self._lock:
                self._interrupt = (dict(data), datetime.fromtimestamp(end, timezone.utc))
                self.interrupts += 1

    def close(self) -> None:
        self._events.join(2.0)
        self.client.close()
