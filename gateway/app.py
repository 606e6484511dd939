"""The gateway runtime: wires drivers, bus, outbox, uplink and HTTP API for one site.

    driver --emit--> EventBus --"outbox" subscriber--> Outbox (SQLite) --> Uplink (MQTT) --> platform
    local system --POST /v1/ingest--------------------> Outbox
    platform --down/{command}--> Uplink --> CommandRouter --> handlers on the asyncio loop

Everything runs in one process on one asyncio loop, except the outbox writer and the MQTT loop,
which have a thread each so that disk and network waits never stall the drivers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import uvicorn

from drivers.http_listener import EmbeddedServer, wait_started

from . import __version__
from .access.service import READ_EVENT_TYPES, AccessService
from .access.store import AccessStore
from .ads.plays import PlaysStore
from .ads.audience import AudienceService
from .ads.media import MediaCache
from .ads.model_downlink import load_scorer, model_command
from .ads.scorer import ScorerHolder
from .ads.service import AdsService
from .ads.signs import SignPlayer
from .ads.store import AdsStore
from .api import create_app
from .bus import EventBus
from .commands import CommandError, CommandRouter
from .config import ConfigError, SiteConfigBase, load_config
from .events import Event, utc_timestamp
from .faces.service import FaceService
from .points.ledger import PointsLedger
from .pos.sales import SalesService, SalesStore
from .points.service import PointsService
from .frames import FrameHub
from .health import DeviceHealth, DeviceState, HealthRegistry
from .outbox import Outbox
from .supervisor import Supervisor
from .models import models_dir
from .uplink import Uplink
from .visits import VisitService

log = logging.getLogger("gateway")

OUTBOX_QUEUE_HIGH_WATER = 20_000
SHUTDOWN_SEND_GRACE = 3.0  # seconds a clean stop waits for the backlog to go up


class Gateway:
    def __init__(self, config: SiteConfigBase, config_path: str | Path | None = None):
        self.config = config
        self.config_path = Path(config_path) if config_path else None
        self.started_at = utc_timestamp()
        self._started = time.monotonic()
        self.bus = EventBus()
        self.health = HealthRegistry()
        self.frames = FrameHub()
        self.supervisor = Supervisor(self.bus, self.health, frames=self.frames)
        self.visits = VisitService(self.bus, self.frames, models_dir(config.models.dir), config.models.threads)
        storage = config.storage
        self.outbox = Outbox(
            storage.path, site_id=config.site_id, gateway_id=config.gateway_id,
            max_bytes=int(storage.max_bytes), max_age=storage.max_age, synchronous=storage.synchronous,
            never_drop=storage.never_drop, drop_first=storage.drop_first,
            dedupe_window=storage.ingest_dedupe_window,
        )
        self.uplink: Uplink | None = None
        self.commands: CommandRouter | None = None
        self.access: AccessService | None = None
        self.faces: FaceService | None = None
        self.points: PointsService | None = None
        self.sales: SalesService | None = None
        self.ads: AdsService | None = None
        self.audience: AudienceService | None = None
        self._sign_players: list[asyncio.Task] = []
        self._signs_started: tuple | None = None  # (time zone, sign screens) the sign players run for
        self._scorer_path = config.storage.path.parent / "ad_scorer.onnx"
        self.api_server: EmbeddedServer | None = None
        self.api_port: int | None = None
        self._stop: asyncio.Event | None = None
        self._background: list[asyncio.Task] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.running = asyncio.Event()

    # ------------------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        """Run until `request_stop` (or a signal handler calling it), then shut down in order."""
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.outbox.open()
        await self.bus.start()
        self.bus.subscribe("outbox", self._record, batch=True)
        self.health.on_change(self._device_status_changed)

        self.commands = CommandRouter(self._loop)
        self.commands.register("ping", self._ping)
        self.commands.register("reload-config", self._reload_command)
        access_store = await asyncio.to_thread(AccessStore, self.config.access_store_path)
        policy = await asyncio.to_thread(access_store.load_policy)  # seconds for a big site: off the loop
        self.access = AccessService(self.bus, access_store, policy, self.config.access.doors, self.config.timezone,
                                    self.supervisor.drivers, self.config.access.keep_events)
        await asyncio.to_thread(self.access.load_seen)
        self.bus.subscribe("access", self.access.on_read, READ_EVENT_TYPES)
        self._background.append(asyncio.create_task(self.access.run_housekeeping(), name="access-log"))
        self.commands.register("access.sync", self.access.sync_command)
        self.faces = FaceService(self.bus, self.frames, self.config, self.config.gateway_id, self.access)
        self.commands.register("faces.enroll", self.faces.enroll_command)
        self.commands.register("faces.delete", self.faces.delete_command)
        self.commands.register("points.sync", self._points_sync)
        if self.config.points.enabled:
            ledger = await asyncio.to_thread(PointsLedger, self.config.points_store_path, self.config.storage.synchronous)
            self.points = PointsService(self.bus, ledger, self.config.points, self.config.site_id,
                                        self.config.gateway_id, self.config.timezone)
            self.points.subscribe()
        sales_store = await asyncio.to_thread(SalesStore, self.config.pos_store_path)
        self.sales = SalesService(self.bus, sales_store, self.config.site_id, self.config.pos.templates,
                                  self.config.pos.attribution_window, self.config.timezone,
                                  member_for_code=self._member_for_code, category_of=self._category_of)
        self.bus.subscribe("sales", self.sales.on_receipt, ["pos.receipt"])
        self.bus.subscribe("sales-members", self.sales.on_member_seen, ["pos.member_scan", "member.identified"])
        # Issue 6: screens (playlists, door-triggered interrupts, proof of play).
        ads_store = await asyncio.to_thread(AdsStore, self.config.ads_store_path, self.config.storage.synchronous)
        plays_store = await asyncio.to_thread(PlaysStore, self.config.plays_store_path, self.config.storage.synchronous)
        self.audience = AudienceService(self.frames, models_dir(self.config.models.dir), self.config.models.threads)
        # The ad scorer: the one last sent by `ads.model`, else the one shipped; the holder exists
        # even without a model, so that a model sent later can be swapped in.
        self._scorer = await asyncio.to_thread(load_scorer, self._scorer_path) or ScorerHolder()
        # Issue 6 (media): the creatives' files, fetched, checked and served to the players.
        media = MediaCache(self.config.ads_media_dir, self.config.ads.media_max_bytes,
                           max_file_bytes=self.config.ads.media_max_file_bytes)
        await media.start()
        self.ads = AdsService(self.bus, ads_store, plays_store, self.config.screens, self.config.timezone,
                              self.config.site_id, self.config.gateway_id, scorer=self._scorer,
                              keep_plays=self.config.ads.keep_plays, plan_window=self.config.ads.plan_window,
                              audience=self.audience.meter, media=media,
                              member_tier=self.points.ledger.synced_tier if self.points is not None else None,
                              report_partial=self.config.ads.report_partial)
        await self.ads.start()
        await asyncio.to_thread(self.audience.apply, _screen_cameras(self.config))
        self._start_sign_players()
        self.bus.subscribe("ads", self.ads.on_door_opened, ["door.opened"])
        self._background.append(asyncio.create_task(self.ads.run(), name="ads"))
        self.commands.register("ads.sync", self.ads.sync_command)
        self.commands.register("ads.resend", self.ads.resend_command)
        self.commands.register("ads.model", lambda args: model_command(self._scorer, self._scorer_path, args))
        self.uplink = Uplink(self.config.uplink, site_id=self.config.site_id, gateway_id=self.config.gateway_id,
                             outbox=self.outbox, status=self._status_summary, commands=self.commands.dispatch)
        self.uplink.start()
        await self.supervisor.apply(self.config.devices)
        self.visits.apply(self.config.devices)
        await asyncio.to_thread(self.faces.start)
        api_task = await self._start_api() if self.config.api.enabled else None
        log.info("gateway %s/%s running (%d devices)", self.config.site_id, self.config.gateway_id,
                 len(self.supervisor.running()))
        self.running.set()
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(api_task)

    def request_stop(self) -> None:
        """Safe from any thread and from signal handlers."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)

    async def _start_api(self) -> asyncio.Task:
        api = self.config.api
        server = EmbeddedServer(uvicorn.Config(create_app(self), host=api.host, port=api.port,
                                               log_level="warning", access_log=False, lifespan="off"))
        self.api_server = server
        task = asyncio.get_running_loop().create_task(server.serve(), name="http-api")
        await wait_started(server, task, "the HTTP API")  # raises the bind error, e.g. port in use
        self.api_port = server.servers[0].sockets[0].getsockname()[1]
        log.info("HTTP API on http://%s:%d (OpenAPI at /docs)", api.host, self.api_port)
        return task

    async def _shutdown(self, api_task: asyncio.Task | None) -> None:
        log.info("gateway stopping")
        if self.ads is not None:
            self.ads.close_streams()  # open SSE responses would hold the HTTP server's shutdown
        if api_task is not None and self.api_server is not None:
            self.api_server.should_exit = True
            await asyncio.gather(api_task, return_exceptions=True)
        if self.ads is not None:  # no more plays can arrive: the platform gets the hour's figures so far
            await self.ads.report_before_stop()
        await asyncio.to_thread(self.visits.stop)
        if self.faces is not None:
            await asyncio.to_thread(self.faces.stop)
        if self.audience is not None:
            await asyncio.to_thread(self.audience.stop)
        for task in self._sign_players:
            task.cancel()
        await asyncio.gather(*self._sign_players, return_exceptions=True)
        await self.supervisor.stop()
        await self.bus.stop()  # what drivers emitted reaches the outbox queue
        for task in self._background:  # after the bus: the last decisions reach the access log
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._let_uplink_catch_up(SHUTDOWN_SEND_GRACE)
        if self.uplink is not None:
            await asyncio.to_thread(self.uplink.stop)
        await asyncio.to_thread(self.outbox.close)  # commits what is queued
        if self.access is not None:
            self.access.store.close()
        if self.points is not None:
            self.points.ledger.close()
        if self.sales is not None:
            self.sales.store.close()
        if self.ads is not None:  # issue 6 (media)
            await self.ads.media.close()
        if self.ads is not None:  # after the bus and the background tasks: the last reports are out
            self.ads.store.close()
            self.ads.plays.close()
        log.info("gateway stopped")

    def _start_sign_players(self) -> None:
        """A SignPlayer per screen that is an LED sign (`screens[].sign`), showing its plan's texts;
        restarted only when the signs or the time zone change (a new player shows its text again)."""
        signs = (self.config.timezone, tuple((s.id, s.sign) for s in self.config.screens if s.sign is not None))
        if signs == self._signs_started:
            return
        self._signs_started = signs
        for task in self._sign_players:
            task.cancel()
        self._sign_players = []
        for screen in self.config.screens:
            if screen.sign is None or self.ads is None:
                continue
            player = SignPlayer(screen.id, lambda moment, sid=screen.id: self.ads.now_playing(sid, moment),
                                lambda device=screen.sign: self.supervisor.drivers.get(device), self.config.timezone)
            self._sign_players.append(asyncio.create_task(player.run(), name=f"sign-{screen.id}"))

    async def _let_uplink_catch_up(self, timeout: float) -> None:
        """On a clean stop, give the last events (final counts, statuses) a moment to go up now
        rather than at the next start; whatever is left stays in the outbox, safe."""
        deadline = time.monotonic() + timeout
        while (self.uplink is not None and self.uplink.connected and time.monotonic() < deadline
               and (self.outbox.queued_events or self.outbox.stats().backlog_events)):
            await asyncio.sleep(0.05)

    # ------------------------------------------------------------------------ event plumbing

    async def _record(self, events: list[Event]) -> None:
        """Bus subscriber: everything not internal goes to the outbox (committed in groups)."""
        events = [e for e in events if not e.internal]
        if not events:
            return
        future = self.outbox.submit(events)
        if future.done() and isinstance(future.exception(), ValueError):
            # A driver made an event that cannot be JSON (refused at once, at submit): store the
            # others one by one so that only the bad one is lost, and logged.
            for event in events:
                self.outbox.submit([event]).add_done_callback(_log_rejection)
            return
        future.add_done_callback(_log_rejection)
        if self.outbox.queued_events > OUTBOX_QUEUE_HIGH_WATER:
            # The disk is behind: wait for this commit, so the backlog stays on the bus, whose
            # high-water mark then holds back the drivers that flood it.
            await asyncio.wrap_future(future)

    def _device_status_changed(self, health: DeviceHealth) -> None:
        try:
            self.bus.publish(Event("device.status", health.device_id, health.as_dict()))
        except RuntimeError:
            return  # the bus has stopped: we are shutting down
        if self.uplink is not None:
            self.uplink.status_changed()

    # ---------------------------------------------------------------------------- reporting

    def uptime(self) -> float:
        return round(time.monotonic() - self._started, 3)

    def _status_summary(self) -> dict[str, Any]:
        return {"version": __version__, "started_at": self.started_at, "devices": self.health.summary()}

    def health_report(self) -> dict[str, Any]:
        stats = self.outbox.stats()
        devices = self.health.all()
        connected = bool(self.uplink and self.uplink.connected)
        cameras = self.visits.cameras()
        faces = self.faces.status() if self.faces is not None else {"enabled": False, "enrolled": 0, "gates": []}
        degraded = (not connected or any(d.state == DeviceState.ERROR for d in devices)
                    or any(c["state"] == "error" for c in cameras) or any(g["state"] == "error" for g in faces["gates"]))
        return {
            "status": "degraded" if degraded else "ok",
            "version": __version__,
            "site_id": self.config.site_id,
            "gateway_id": self.config.gateway_id,
            "started_at": self.started_at,
            "uptime_s": self.uptime(),
            "uplink": {
                "connected": connected,
                "broker": f"{self.config.uplink.host}:{self.config.uplink.port}",
                "last_error": self.uplink.stats.last_error if self.uplink else None,
                "events_acknowledged": self.uplink.stats.events_acknowledged if self.uplink else 0,
            },
            "backlog": {"events": stats.backlog_events, "bytes": stats.backlog_bytes},
            "counters": stats.counters,
            "devices": [d.as_dict() for d in devices],
            "cameras": [{"id": c["id"], "state": c["state"], "error": c["error"]} for c in cameras],
            "faces": faces,
            "ads": self.ads.status() if self.ads is not None else None,
            "audience": self.audience.status() if self.audience is not None else [],
        }

    # ----------------------------------------------------------------------------- commands

    async def _ping(self, args: dict) -> dict:
        return {"pong": True, "ts": utc_timestamp(), "version": __version__, "uptime_s": self.uptime()}

    def _member_for_code(self, code: str) -> str | None:
        """A member code scanned at a till: the member `points.sync` gave it to."""
        return self.points.ledger.member_for_code(code) if self.points is not None else None

    def _category_of(self, store: str) -> str | None:
        return self.config.points.stores.get(store)

    async def _points_sync(self, args: dict) -> dict:
        if self.points is None:
            raise CommandError("points are off at this gateway (points.enabled: false)")
        return await self.points.sync_command(args)

    async def _reload_command(self, args: dict) -> dict:
        return await self.reload()

    async def reload(self) -> dict:
        """Re-read the config file and apply what can change live (devices, API token)."""
        if self.config_path is None:
            raise CommandError("this gateway was not started from a config file")
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            raise CommandError(f"config not reloaded, it has problems:\n{exc}") from None
        old = self.config
        if (new.site_id, new.gateway_id) != (old.site_id, old.gateway_id):
            raise CommandError("site_id and gateway_id cannot change while running; restart the gateway")
        restart_required = [name for name in ("uplink", "storage", "models") if getattr(new, name) != getattr(old, name)]
        if new.access_store_path != old.access_store_path:
            restart_required.append("access.store")
        if new.pos_store_path != old.pos_store_path:
            restart_required.append("pos.store")
        if (new.ads_store_path, new.plays_store_path) != (old.ads_store_path, old.plays_store_path):
            restart_required.append("ads.store")
        if new.ads_media_dir != old.ads_media_dir:  # issue 6 (media)
            restart_required.append("ads.media_dir")
        if (new.points.enabled, new.points_store_path) != (old.points.enabled, old.points_store_path):
            restart_required.append("points")
        faces_at_start = ("enabled", "store", "key_file", "embedder")
        if any(getattr(new.faces, k) != getattr(old.faces, k) for k in faces_at_start):
            restart_required.append("faces")
            new = new.model_copy(update={"faces": new.faces.model_copy(
                update={k: getattr(old.faces, k) for k in faces_at_start})})
        api_live = new.api
        if (new.api.host, new.api.port, new.api.enabled) != (old.api.host, old.api.port, old.api.enabled):
            restart_required.append("api")
            api_live = old.api.model_copy(update={"token": new.api.token, "max_body_bytes": new.api.max_body_bytes})
        # What needs a restart keeps its running value, so that /v1/health shows what is really in use.
        self.config = new.model_copy(update={"uplink": old.uplink, "storage": old.storage, "models": old.models,
                                             "api": api_live})
        logging.getLogger().setLevel(new.log_level.upper())
        changes = await self.supervisor.apply(new.devices)
        if self.access is not None:
            self.access.reconfigure(new.access.doors, new.timezone, new.access.keep_events)
        await asyncio.to_thread(self.visits.apply, new.devices)
        if self.faces is not None:
            await asyncio.to_thread(self.faces.reconfigure, self.config)
        if self.points is not None:
            self.points.reconfigure(new.points, new.timezone)
        if self.sales is not None:
            self.sales.reconfigure(new.pos.templates, new.pos.attribution_window, new.timezone)
        if self.ads is not None:
            # issue 6 (media): the sizes apply at once
            self.ads.media.max_bytes = int(new.ads.media_max_bytes)
            self.ads.media.max_file_bytes = int(new.ads.media_max_file_bytes)
            await self.ads.reconfigure(new.screens, new.timezone, keep_plays=new.ads.keep_plays,
                                       plan_window=new.ads.plan_window, report_partial=new.ads.report_partial)
        if self.audience is not None:
            await asyncio.to_thread(self.audience.apply, _screen_cameras(new))
        self._start_sign_players()
        log.info("config reloaded: %s; restart required for: %s", changes, restart_required or "nothing")
        return {"devices": changes, "restart_required": restart_required}


def _screen_cameras(config: SiteConfigBase) -> dict[str, str]:
    """Screens whose camera measures their audience: screen id -> camera device id."""
    return {screen.id: screen.camera for screen in config.screens if screen.camera is not None}


def _log_rejection(future) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("event not stored: %s", exc)
