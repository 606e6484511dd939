"""What every virtual device shares: a thread that acts at a pace until stopped, and counters."""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class GatewayEndpoints:
    """Where a virtual device reaches the gateway it talks to."""

    api_url: str  # e.g. http://127.0.0.1:8080
    api_token: str


class VirtualDevice:
    """Calls `step()` about every `interval` seconds (jittered) in its own thread."""

    kind = "virtual"

    def __init__(self, device_id: str, interval: float = 1.0, seed: int | None = None):
        self.device_id = device_id
        self.interval = interval
        self.random = random.Random(seed)
        self.log = logging.getLogger(f"simulator.{device_id}")
        self.produced = 0  # events the device handed over and the gateway accepted
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "VirtualDevice":
        self._thread = threading.Thread(target=self._run, name=f"sim-{self.device_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self.close()

    def close(self) -> None:
        """Release connections; called once the thread has stopped."""

    def _run(self) -> None:
        while not self._stop.wait(self.interval * self.random.uniform(0.5, 1.5)):
            try:
                self.step()
            except Exception as exc:  # a virtual device keeps going, like a real one would
                self.failures += 1
                self.log.debug("step failed: %s", exc)

    def step(self) -> None:
        raise NotImplementedError
