"""The in-process event bus between drivers and services.

Drivers publish from any thread (a serial reader, a camera grabber, the asyncio loop). Each
subscriber gets its own queue and its own task on the gateway's asyncio loop, so that a slow or
failing service never holds up the others, and each sees events in publish order.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Union

from .events import Event

log = logging.getLogger("gateway.bus")

Handler = Callable[[Event], Union[None, Awaitable[None]]]
MAX_BATCH = 500
# A driver thread that publishes faster than the services keep up is held back (it waits in
# `publish`) once this many events are waiting, so that a burst costs time, not unbounded memory.
HIGH_WATER = 10_000


@dataclass
class Subscription:
    name: str
    handler: Handler
    patterns: tuple[str, ...]  # exact types, stream prefixes ("access"), or "*"
    batch: bool = False  # handler takes a list of whatever is queued (up to MAX_BATCH), in order
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    task: asyncio.Task | None = None
    delivered: int = 0
    failed: int = 0

    def wants(self, event_type: str) -> bool:
        return any(p == "*" or event_type == p or event_type.startswith(p + ".") for p in self.patterns)


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self.published = 0
        self._handed_over = 0  # by other threads, not yet dispatched on the loop: published lags this

    def subscribe(self, name: str, handler: Handler, patterns: Iterable[str] = ("*",), *,
                  batch: bool = False) -> Subscription:
        sub = Subscription(name, handler, tuple(patterns), batch)
        self._subscriptions.append(sub)
        if self._loop is not None:
            sub.task = self._loop.create_task(self._consume(sub), name=f"bus:{name}")
        return sub

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        for sub in self._subscriptions:
            if sub.task is None:
                sub.task = self._loop.create_task(self._consume(sub), name=f"bus:{sub.name}")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Let subscribers finish what is queued, then stop them."""
        try:
            await asyncio.wait_for(asyncio.gather(*(s.queue.join() for s in self._subscriptions)), drain_timeout)
        except asyncio.TimeoutError:
            log.warning("bus: subscribers did not drain within %gs", drain_timeout)
        for sub in self._subscriptions:
            if sub.task:
                sub.task.cancel()
        await asyncio.gather(*(s.task for s in self._subscriptions if s.task), return_exceptions=True)
        self._loop = None

    def publish(self, event: Event) -> None:
        """Hand an event to every interested subscriber; safe from any thread."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the event bus is not running")
        if threading.get_ident() == self._loop_thread:
            self._dispatch(event)
            return
        while self.waiting() > HIGH_WATER and self._loop is not None:
            time.sleep(0.001)  # backpressure on the publishing thread; the loop is never blocked
        self._handed_over += 1  # only other threads write it; a lost increment only loosens the bound
        loop.call_soon_threadsafe(self._dispatch, event)

    def waiting(self) -> int:
        """Events published and not yet handled by the slowest subscriber (approximate)."""
        deepest = max((s.queue.qsize() for s in self._subscriptions), default=0)
        return max(0, self._handed_over - self.published) + deepest

    def _dispatch(self, event: Event) -> None:
        self.published += 1
        for sub in self._subscriptions:
            if sub.wants(event.type):
                sub.queue.put_nowait(event)

    async def _consume(self, sub: Subscription) -> None:
        while True:
            events = [await sub.queue.get()]
            while sub.batch and len(events) < MAX_BATCH and not sub.queue.empty():
                events.append(sub.queue.get_nowait())
            try:
                result = sub.handler(events if sub.batch else events[0])
                if inspect.isawaitable(result):
                    await result
                sub.delivered += len(events)
            except Exception:
                sub.failed += len(events)
                log.exception("bus subscriber %s failed on %s %s%s", sub.name, events[0].type, events[0].event_id,
                              f" and {len(events) - 1} more" if len(events) > 1 else "")
            finally:
                for _ in events:
                    sub.queue.task_done()

    def backlog(self) -> dict[str, int]:
        return {s.name: s.queue.qsize() for s in self._subscriptions}
