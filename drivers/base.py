"""The one interface every device driver implements.

A driver knows its wire protocol and nothing else: it turns what the device says into typed events
(`ctx.emit`) and reports whether the device is reachable (`ctx.set_online` / `ctx.set_offline`). It
holds no business rules and never touches the store or the uplink. The supervisor runs each driver
as its own task; if `run` raises or returns, the driver is restarted with backoff.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol, TypeVar

from pydantic import Field

from gateway.events import DEVICE_ID_PATTERN, Event
from gateway.validation import StrictModel

T = TypeVar("T")


class DeviceConfig(StrictModel):
    """What every device has; each driver kind extends it with its own settings."""

    id: str = Field(..., pattern=DEVICE_ID_PATTERN.pattern)
    kind: str
    enabled: bool = True
    name: str | None = None


class DriverContext(Protocol):
    """What the runtime offers a driver (implemented by the supervisor)."""

    device_id: str
    log: logging.Logger

    def emit(self, type: str, data: dict[str, Any], *, ts: str | None = None, internal: bool = False) -> Event:
        """Put an event on the bus; safe to call from any thread."""

    def set_online(self) -> None:
        """The device answers."""

    def set_offline(self, reason: str) -> None:
        """The device stopped answering (unplugged, no heartbeat); the driver itself is fine."""

    def last_activity(self) -> float | None:
        """Monotonic time the device was last heard from through a shared endpoint (HTTP push)."""

    def offer_frames(self, source: Any | None) -> None:
        """Cameras: let the analysing services read the newest frame (None withdraws it)."""


class Driver(ABC):
    kind: ClassVar[str]
    Settings: ClassVar[type[DeviceConfig]]

    def __init__(self, settings: DeviceConfig, ctx: DriverContext):
        self.settings = settings
        self.ctx = ctx

    @abstractmethod
    async def run(self) -> None:
        """Talk to the device until cancelled. Raising means the driver failed and is restarted."""

    @staticmethod
    async def blocking(func: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (serial read, socket accept) without stalling the other drivers."""
        return await asyncio.to_thread(func, *args)
