"""The driver supervisor on a real asyncio loop with the real EventBus and HealthRegistry: crashed
drivers are restarted with backoff while the others carry on, status changes are published once
each, `apply` restarts changed devices and stops removed ones, and the HTTP-ingest driver's
online/offline tracking."""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

import pytest

import gateway.config
from drivers import registry
from drivers.base import DeviceConfig, Driver
from drivers.http_ingest import HttpIngestSettings
from gateway.bus import EventBus
from gateway.events import Event
from gateway.health import DeviceHealth, DeviceState, HealthRegistry
from gateway.supervisor import Backoff, Supervisor

WAIT = 10.0  # how long a `wait_for` may take before the test fails (never reached when it works)


# ------------------------------------------------------------------------------ test drivers


class CrashySettings(DeviceConfig):
    kind: Literal["test_crashy"]
    crashes: int = 2  # runs that fail before one stays up
    label: str = "a"


class CrashyDriver(Driver):
    """Fails its first `crashes` runs (per device id), then goes online and stays up."""

    kind = "test_crashy"
    Settings = CrashySettings
    runs: ClassVar[dict[str, int]] = {}
    started: ClassVar[list[tuple[str, str]]] = []  # (device id, label) of runs that stayed up
    cancelled: ClassVar[list[tuple[str, str]]] = []
    before_crash: ClassVar = None  # optional coroutine function awaited before each crash

    async def run(self) -> None:
        device_id = self.settings.id
        n = self.runs[device_id] = self.runs.get(device_id, 0) + 1
        if n <= self.settings.crashes:
            if CrashyDriver.before_crash is not None:
                await CrashyDriver.before_crash()
            raise RuntimeError(f"boom {n}")
        self.ctx.set_online()
        self.started.append((device_id, self.settings.label))
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append((device_id, self.settings.label))
            raise


class SteadySettings(DeviceConfig):
    kind: Literal["test_steady"]


class SteadyDriver(Driver):
    """Emits `test.tick` with a counter and reports online on every tick (the same state again)."""

    kind = "test_steady"
    Settings = SteadySettings

    async def run(self) -> None:
        n = 0
        while True:
            n += 1
            self.ctx.emit("test.tick", {"n": n})
            self.ctx.set_online()
            await asyncio.sleep(0.002)


@pytest.fixture(autouse=True)
def test_drivers():
    registry.register(CrashyDriver)
    registry.register(SteadyDriver)
    CrashyDriver.runs, CrashyDriver.started, CrashyDriver.cancelled = {}, [], []
    CrashyDriver.before_crash = None
    yield
    registry.unregister("test_crashy")
    registry.unregister("test_steady")
    CrashyDriver.before_crash = None
    gateway.config._site_model_for.cache_clear()


# ---------------------------------------------------------------------------------- harness


class Site:
    """Bus, health and supervisor wired as Gateway.run wires them, plus a record of the bus."""

    def __init__(self) -> None:
        self.bus = EventBus()
        self.health = HealthRegistry()
        self.supervisor = Supervisor(self.bus, self.health, Backoff(initial=0.01, maximum=0.05))
        self.events: list[Event] = []

    async def __aenter__(self) -> "Site":
        await self.bus.start()
        self.bus.subscribe("record", self.events.append)
        self.health.on_change(self._publish_status)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.supervisor.stop()
        await self.bus.stop()

    def _publish_status(self, health: DeviceHealth) -> None:  # as Gateway._device_status_changed
        self.bus.publish(Event("device.status", health.device_id, health.as_dict()))

    def statuses(self, device_id: str) -> list[dict]:
        return [e.data for e in self.events if e.type == "device.status" and e.device_id == device_id]

    def ticks(self) -> list[int]:
        return [e.data["n"] for e in self.events if e.type == "test.tick"]

    def state(self, device_id: str) -> DeviceState | None:
        health = self.health.get(device_id)
        return health.state if health else None


async def wait_for(condition, what: str) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)
    try:
        await asyncio.wait_for(poll(), WAIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


def crashy(device_id: str = "crashy-1", **settings) -> CrashySettings:
    return CrashySettings(id=device_id, kind="test_crashy", **settings)


def steady(device_id: str = "steady-1") -> SteadySettings:
    return SteadySettings(id=device_id, kind="test_steady")


# -------------------------------------------------------------------------------- restarts


def test_crashing_driver_goes_to_error_is_restarted_then_online():
    async def scenario():
        async with Site() as site:
            await site.supervisor.apply([crashy(crashes=2)])
            await wait_for(lambda: site.state("crashy-1") == DeviceState.ONLINE, "crashy-1 online")
            await asyncio.sleep(0)  # let the recorder catch up with the bus
            await wait_for(lambda: len(site.statuses("crashy-1")) == 3, "three status events")

            health = site.health.get("crashy-1")
            assert health.restarts == 2
            assert health.last_error == "RuntimeError: boom 2"  # kept while online, for the engineer
            assert CrashyDriver.runs["crashy-1"] == 3
            assert CrashyDriver.started == [("crashy-1", "a")]
            assert [(s["state"], s["last_error"]) for s in site.statuses("crashy-1")] == [
                ("error", "RuntimeError: boom 1"),
                ("error", "RuntimeError: boom 2"),
                ("online", "RuntimeError: boom 2"),
            ]
            assert [s["restarts"] for s in site.statuses("crashy-1")] == [0, 1, 2]
            assert all(s["kind"] == "test_crashy" for s in site.statuses("crashy-1"))

    asyncio.run(scenario())


def test_well_behaved_driver_keeps_running_while_another_crashes():
    async def scenario():
        async with Site() as site:
            ticks_at_crash: list[int] = []

            async def let_the_other_tick():
                # Each crash waits for three more ticks of the steady driver: they interleave.
                start = len(site.ticks())
                ticks_at_crash.append(start)
                await wait_for(lambda: len(site.ticks()) >= start + 3, "steady ticks")

            CrashyDriver.before_crash = let_the_other_tick
            await site.supervisor.apply([steady(), crashy(crashes=3)])
            await wait_for(lambda: site.state("crashy-1") == DeviceState.ONLINE, "crashy-1 online")
            online_at = len(site.ticks())
            await wait_for(lambda: len(site.ticks()) > online_at + 3, "steady ticks after")

            ticks = site.ticks()
            assert ticks == list(range(1, len(ticks) + 1))  # one uninterrupted run, nothing lost
            assert len(ticks_at_crash) == 3 and ticks_at_crash == sorted(ticks_at_crash)
            assert ticks_at_crash[-1] > ticks_at_crash[0]  # ticking went on between the crashes
            steady_health = site.health.get("steady-1")
            assert (steady_health.state, steady_health.restarts, steady_health.last_error) == (
                DeviceState.ONLINE, 0, None)
            assert site.health.get("crashy-1").restarts == 3

    asyncio.run(scenario())


def test_status_published_on_change_only():
    async def scenario():
        async with Site() as site:
            await site.supervisor.apply([steady()])
            await wait_for(lambda: len(site.ticks()) >= 20, "20 ticks")  # 20 x set_online
            assert [s["state"] for s in site.statuses("steady-1")] == ["online"]

            site.health.set("steady-1", DeviceState.ERROR, "first")
            site.health.set("steady-1", DeviceState.ERROR, "first")  # same state, same error
            site.health.set("steady-1", DeviceState.ERROR, "second")  # same state, new error
            await wait_for(lambda: len(site.statuses("steady-1")) >= 4, "status after set")
            await wait_for(lambda: len(site.ticks()) >= 40, "more ticks")
            states = [(s["state"], s["last_error"]) for s in site.statuses("steady-1")]
            assert states == [("online", None), ("error", "first"), ("error", "second"), ("online", "second")]

    asyncio.run(scenario())


def test_backoff_delays():
    backoff = Backoff(initial=0.01, maximum=0.05)
    for attempt, base in [(0, 0.01), (1, 0.02), (2, 0.04), (3, 0.05), (10, 0.05), (100, 0.05)]:
        delay = backoff.delay(attempt)
        assert base * 0.8 <= delay <= base


class QuitterSettings(DeviceConfig):
    kind: Literal["test_quitter"]


class Quitter(Driver):
    """Returns at once: `run` returning is a failure too."""

    kind = "test_quitter"
    Settings = QuitterSettings

    async def run(self) -> None:
        return None


def test_driver_returning_is_treated_as_a_failure():
    registry.register(Quitter)
    try:
        async def scenario():
            async with Site() as site:
                await site.supervisor.apply([QuitterSettings(id="q-1", kind="test_quitter")])
                await wait_for(lambda: site.health.get("q-1").restarts >= 2, "restarts")
                health = site.health.get("q-1")
                assert (health.state, health.last_error) == (DeviceState.ERROR, "driver stopped on its own")
                await asyncio.sleep(0)
                assert len(site.statuses("q-1")) == 1  # the same error again is not news

        asyncio.run(scenario())
    finally:
        registry.unregister("test_quitter")


# ----------------------------------------------------------------------------------- apply


def test_apply_restarts_a_changed_device_and_leaves_the_others():
    async def scenario():
        async with Site() as site:
            changes = await site.supervisor.apply([crashy(crashes=0, label="a"), steady()])
            assert changes == {"started": ["crashy-1", "steady-1"], "stopped": [], "restarted": []}
            await wait_for(lambda: CrashyDriver.started == [("crashy-1", "a")], "first run")

            unchanged = await site.supervisor.apply([crashy(crashes=0, label="a"), steady()])
            assert unchanged == {"started": [], "stopped": [], "restarted": []}
            assert CrashyDriver.runs["crashy-1"] == 1

            ticks_before = len(site.ticks())
            changes = await site.supervisor.apply([crashy(crashes=0, label="b"), steady()])
            assert changes == {"started": [], "stopped": [], "restarted": ["crashy-1"]}
            assert CrashyDriver.cancelled == [("crashy-1", "a")]  # the old run was stopped first
            await wait_for(lambda: len(CrashyDriver.started) == 2, "second run")
            assert CrashyDriver.started == [("crashy-1", "a"), ("crashy-1", "b")]
            await wait_for(lambda: len(site.ticks()) > ticks_before + 3, "steady ticks")
            assert site.ticks() == list(range(1, len(site.ticks()) + 1))  # steady-1 was not restarted
            assert sorted(site.supervisor.running()) == ["crashy-1", "steady-1"]

    asyncio.run(scenario())


def test_apply_stops_a_removed_device():
    async def scenario():
        async with Site() as site:
            await site.supervisor.apply([crashy(crashes=0), steady()])
            await wait_for(lambda: CrashyDriver.started, "crashy-1 up")

            changes = await site.supervisor.apply([steady()])
            assert changes == {"started": [], "stopped": ["crashy-1"], "restarted": []}
            assert CrashyDriver.cancelled == [("crashy-1", "a")]
            assert site.supervisor.running() == ["steady-1"]
            assert site.health.get("crashy-1") is None
            assert [h.device_id for h in site.health.all()] == ["steady-1"]

    asyncio.run(scenario())


def test_apply_treats_a_disabled_device_as_removed_and_can_add_it_back():
    async def scenario():
        async with Site() as site:
            await site.supervisor.apply([crashy(crashes=0)])
            await wait_for(lambda: CrashyDriver.started, "crashy-1 up")
            changes = await site.supervisor.apply([crashy(crashes=0, enabled=False)])
            assert changes["stopped"] == ["crashy-1"] and site.supervisor.running() == []
            changes = await site.supervisor.apply([crashy(crashes=0)])
            assert changes["started"] == ["crashy-1"]
            await wait_for(lambda: len(CrashyDriver.started) == 2, "crashy-1 up again")

    asyncio.run(scenario())


def test_stop_cancels_every_driver():
    async def scenario():
        async with Site() as site:
            await site.supervisor.apply([crashy("c-1", crashes=0), crashy("c-2", crashes=0)])
            await wait_for(lambda: len(CrashyDriver.started) == 2, "both up")
            await site.supervisor.stop()
            assert sorted(CrashyDriver.cancelled) == [("c-1", "a"), ("c-2", "a")]
            assert site.supervisor.running() == []

    asyncio.run(scenario())


# ----------------------------------------------------------------------------- HTTP ingest


def test_http_ingest_offline_until_touched_then_stale():
    async def scenario():
        async with Site() as site:
            settings = HttpIngestSettings(id="pos-1", kind="http_ingest", stale_after=0.2)
            await site.supervisor.apply([settings])
            await wait_for(lambda: site.state("pos-1") == DeviceState.OFFLINE, "offline at start")

            site.health.touch("pos-1")
            await wait_for(lambda: site.state("pos-1") == DeviceState.ONLINE, "online after touch")

            await wait_for(lambda: site.state("pos-1") == DeviceState.OFFLINE, "offline when stale")
            await asyncio.sleep(0)
            states = [(s["state"], s["last_error"]) for s in site.statuses("pos-1")]
            assert states == [("offline", "nothing posted yet"), ("online", "nothing posted yet"),
                              ("offline", "nothing posted for 0.2s")]
            assert site.health.get("pos-1").restarts == 0

            site.health.touch("pos-1")
            await wait_for(lambda: site.state("pos-1") == DeviceState.ONLINE, "online after a new touch")

    asyncio.run(scenario())


def test_test_kinds_appear_in_the_config_model():
    config = gateway.config.parse_config(
        "site_id: s\ngateway_id: g\napi: {token: a-token-of-24-characters}\n"
        "devices:\n  - {id: c1, kind: test_crashy, crashes: 5}\n  - {id: h1, kind: http_ingest}\n", env={})
    assert isinstance(config.devices[0], CrashySettings) and config.devices[0].crashes == 5
    assert isinstance(config.devices[1], HttpIngestSettings)


def test_the_outbox_subscriber_stores_good_events_even_when_a_driver_emits_a_bad_one(tmp_path):
    """Batched recording: an unencodable event is logged and dropped, its neighbours are stored."""
    import asyncio

    from gateway.app import Gateway
    from gateway.config import parse_config
    from gateway.events import Event

    config = parse_config(f"site_id: s1\ngateway_id: g1\napi: {{enabled: false, token: 0123456789abcdef}}\n"
                          f"storage: {{path: {tmp_path / 'gw.db'}}}\nuplink: {{port: 1}}\n")
    gateway = Gateway(config)

    async def scenario() -> list:
        task = asyncio.create_task(gateway.run())
        await gateway.running.wait()
        for i in range(5):
            gateway.bus.publish(Event("visit.entry", "cam-1", {"i": i}))
        gateway.bus.publish(Event("visit.entry", "cam-1", {"bad": object()}))
        gateway.bus.publish(Event("door.opened", "door-1", {"door": "D1"}, internal=True))
        for i in range(5, 10):
            gateway.bus.publish(Event("visit.entry", "cam-1", {"i": i}))
        await asyncio.sleep(0.5)
        gateway.request_stop()
        await task
        return gateway.outbox.stats()

    stats = asyncio.run(scenario())
    assert stats.counters["accepted"] == 10  # 10 good ones; the bad and the internal one are not stored
