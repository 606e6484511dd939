"""The event bus: order, isolation between subscribers, batches, and backpressure on flooding threads."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway import bus as bus_module
from gateway.bus import EventBus
from gateway.events import Event


def run(coro):
    return asyncio.run(coro)


def test_each_subscriber_gets_matching_events_in_order_and_a_failing_one_hurts_nobody():
    async def scenario():
        bus = EventBus()
        seen_all, seen_access, seen_failing = [], [], []

        def failing(event):
            seen_failing.append(event)
            raise RuntimeError("service bug")

        bus.subscribe("all", seen_all.append)
        bus.subscribe("access", seen_access.append, ["access"])
        failing_sub = bus.subscribe("failing", failing, ["visit.entry"])
        await bus.start()
        for i in range(5):
            bus.publish(Event("visit.entry", "cam-1", {"i": i}))
            bus.publish(Event("access.granted", "door-1", {"i": i}))
        await bus.stop()
        return seen_all, seen_access, seen_failing, failing_sub

    seen_all, seen_access, seen_failing, failing_sub = run(scenario())
    assert [(e.type, e.data["i"]) for e in seen_all] == [(t, i) for i in range(5)
                                                         for t in ("visit.entry", "access.granted")]
    assert [e.data["i"] for e in seen_access] == list(range(5))
    assert len(seen_failing) == 5 and failing_sub.failed == 5


def test_batch_subscribers_get_lists_in_order():
    async def scenario():
        bus = EventBus()
        batches = []
        bus.subscribe("batched", batches.append, batch=True)
        await bus.start()
        for i in range(1200):
            bus.publish(Event("visit.entry", "cam-1", {"i": i}))
        await bus.stop()
        return batches

    batches = run(scenario())
    assert [e.data["i"] for batch in batches for e in batch] == list(range(1200))
    assert max(len(b) for b in batches) <= bus_module.MAX_BATCH and len(batches) >= 3


def test_a_flooding_driver_thread_is_held_back_instead_of_filling_memory(monkeypatch):
    monkeypatch.setattr(bus_module, "HIGH_WATER", 50)

    async def scenario():
        bus = EventBus()
        gate = asyncio.Event()
        received = []

        async def slow(event):
            await gate.wait()
            received.append(event.data["i"])

        bus.subscribe("slow", slow)
        await bus.start()
        sent = []

        def driver():
            for i in range(500):
                bus.publish(Event("visit.entry", "cam-1", {"i": i}))
                sent.append(i)

        thread = threading.Thread(target=driver)
        thread.start()
        await asyncio.sleep(0.5)
        held_at = len(sent)
        gate.set()
        await asyncio.to_thread(thread.join, 30)
        await bus.stop(drain_timeout=30)
        return held_at, received

    held_at, received = run(scenario())
    assert held_at <= 50 + 5  # the thread waited near the high-water mark while the service was stuck
    assert received == list(range(500))  # and nothing was lost or reordered


def test_publish_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="not running"):
        EventBus().publish(Event("visit.entry", "cam-1", {}))
