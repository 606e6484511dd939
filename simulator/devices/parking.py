"""A car park's own system that hands entries and exits to the gateway over POST /v1/ingest.

Like a real local system it numbers its own events (UUIDs) and retries a batch that was not
acknowledged with the same ids, relying on the gateway's idempotent ingest.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone

import httpx

from .base import GatewayEndpoints, VirtualDevice


class ParkingSystem(VirtualDevice):
    kind = "http_ingest"

    def __init__(self, device_id: str, endpoints: GatewayEndpoints, *, capacity: int = 300,
                 interval: float = 1.0, seed: int | None = None):
        super().__init__(device_id, interval, seed)
        self.endpoints = endpoints
        self.capacity = capacity
        self.occupied = capacity // 3
        self._http = httpx.Client(base_url=endpoints.api_url, timeout=5.0,
                                  headers={"Authorization": f"Bearer {endpoints.api_token}"})
        self._unsent: list[dict] = []

    def close(self) -> None:
        self._http.close()

    def _plate_token(self) -> str:
        # The car park pseudonymises plates before they leave it; so do we.
        plate = f"沪A{self.random.randint(10000, 99999)}"
        return hashlib.sha256(plate.encode()).hexdigest()[:16]

    def next_events(self) -> list[dict]:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        entering = self.random.random() < (1 - self.occupied / self.capacity)
        self.occupied += 1 if entering else -1
        self.occupied = max(0, min(self.capacity, self.occupied))
        kind = "parking.entry" if entering else "parking.exit"
        events = [{"event_id": str(uuid.uuid4()), "type": kind, "device_id": self.device_id, "ts": now,
                   "data": {"plate_token": self._plate_token(), "lane": self.random.choice(["A", "B"])}}]
        if self.random.random() < 0.2:
            events.append({"event_id": str(uuid.uuid4()), "type": "parking.occupancy", "device_id": self.device_id,
                           "ts": now, "data": {"occupied": self.occupied, "capacity": self.capacity}})
        return events

    def step(self) -> None:
        if not self._unsent:
            self._unsent = self.next_events()
        response = self._http.post("/v1/ingest", json={"events": self._unsent})
        if response.status_code != 202:
            raise RuntimeError(f"ingest answered {response.status_code}: {response.text[:200]}")
        self.produced += response.json()["accepted"]
        self._unsent = []
