"""Runs every driver isolated, restarting a crashed one with exponential backoff.

Like a connector in ThingsBoard's gateway, each driver is its own asyncio task: an exception in one
is logged, turns its device to `error` with the message, and the driver is started again after a
delay that doubles up to a cap (and resets once a run has stayed up for a while); the other drivers
never notice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

from drivers.base import DeviceConfig, Driver
from drivers.registry import driver_for

from .bus import EventBus
from .events import Event
from .frames import FrameHub
from .health import DeviceState, HealthRegistry

log = logging.getLogger("gateway.supervisor")


class DriverContextImpl:
    """What a driver sees of the runtime (see drivers.base.DriverContext)."""

    def __init__(self, device_id: str, bus: EventBus, health: HealthRegistry, frames: FrameHub):
        self.device_id = device_id
        self.log = logging.getLogger(f"drivers.{device_id}")
        self._bus = bus
        self._health = health
        self._frames = frames

    def emit(self, type: str, data: dict[str, Any], *, ts: str | None = None, internal: bool = False) -> Event:
        event = Event(type, self.device_id, data, internal=internal) if ts is None else Event(
            type, self.device_id, data, ts=ts, internal=internal)
        self._bus.publish(event)
        return event

    def set_online(self) -> None:
        self._health.set(self.device_id, DeviceState.ONLINE)

    def set_offline(self, reason: str) -> None:
        current = self._health.get(self.device_id)
        if current is None or current.state != DeviceState.OFFLINE:
            self.log.info("%s offline: %s", self.device_id, reason)
        self._health.set(self.device_id, DeviceState.OFFLINE, reason)

    def last_activity(self) -> float | None:
        return self._health.last_activity(self.device_id)

    def offer_frames(self, source: Any | None) -> None:
        self._frames.attach(self.device_id, source)


@dataclass
class Backoff:
    initial: float = 1.0
    maximum: float = 60.0
    stable_after: float = 30.0  # a run that lasted this long resets the delay

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * (2 ** attempt))
        return base * random.uniform(0.8, 1.0)  # jitter, so drivers sharing a fault don't retry in step


class Supervisor:
    def __init__(self, bus: EventBus, health: HealthRegistry, backoff: Backoff | None = None,
                 frames: FrameHub | None = None):
        self.bus = bus
        self.health = health
        self.frames = frames or FrameHub()
        self.backoff = backoff or Backoff()
        self._tasks: dict[str, asyncio.Task] = {}
        self._configs: dict[str, DeviceConfig] = {}
        # The live driver object of each running device, for services that command devices
        # (the access service opening a door through its reader's driver).
        self.drivers: dict[str, Driver] = {}

    async def apply(self, devices: list[DeviceConfig]) -> dict[str, list[str]]:
        """Bring the running drivers in line with a device list (start, stop, restart the changed)."""
        wanted = {d.id: d for d in devices if d.enabled}
        changes: dict[str, list[str]] = {"started": [], "stopped": [], "restarted": []}
        for device_id in list(self._tasks):
            if device_id not in wanted:
                await self._stop(device_id)
                self.health.remove(device_id)
                changes["stopped"].append(device_id)
            elif wanted[device_id] != self._configs[device_id]:
                await self._stop(device_id)
                changes["restarted"].append(device_id)
        for device_id, config in wanted.items():
            if device_id not in self._tasks:
                self._start(config)
                if device_id not in changes["restarted"]:
                    changes["started"].append(device_id)
        return changes

    async def stop(self) -> None:
        for device_id in list(self._tasks):
            await self._stop(device_id)

    def running(self) -> list[str]:
        return list(self._tasks)

    def _start(self, config: DeviceConfig) -> None:
        self._configs[config.id] = config
        self.health.add(config.id, config.kind)
        self._tasks[config.id] = asyncio.get_running_loop().create_task(
            self._run_with_restarts(config), name=f"driver:{config.id}")

    async def _stop(self, device_id: str) -> None:
        task = self._tasks.pop(device_id, None)
        self._configs.pop(device_id, None)
        if task:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run_with_restarts(self, config: DeviceConfig) -> None:
        ctx = DriverContextImpl(config.id, self.bus, self.health, self.frames)
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                driver: Driver = driver_for(config.kind)(config, ctx)
                self.drivers[config.id] = driver
                await driver.run()
                error = "driver stopped on its own"
            except asyncio.CancelledError:
                self.drivers.pop(config.id, None)
                raise
            except Exception as exc:  # any failure of one driver stays inside it
                error = f"{type(exc).__name__}: {exc}"
                log.error("driver %s (%s) failed: %s", config.id, config.kind, error,
                          exc_info=log.isEnabledFor(logging.DEBUG))
            self.frames.attach(config.id, None)  # a dead driver's frames must not look live
            self.drivers.pop(config.id, None)
            self.health.set(config.id, DeviceState.ERROR, error)
            if time.monotonic() - started >= self.backoff.stable_after:
                attempt = 0
            delay = self.backoff.delay(attempt)
            attempt += 1
            self.health.count_restart(config.id)
            log.info("restarting driver %s in %.1fs (attempt %d)", config.id, delay, attempt)
            await asyncio.sleep(delay)
