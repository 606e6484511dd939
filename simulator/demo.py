"""`gateway demo`: a whole simulated site on one machine.

An MQTT broker (embedded amqtt on loopback, unless --broker names one), the central-platform
stand-in, the gateway itself, and a virtual device for every configured device that has one; a live
summary line shows events produced, stored, delivered, the backlog and the devices online.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

from gateway.app import Gateway
from gateway.config import ConfigError, SiteConfigBase, load_config

from .brokers import EmbeddedBroker
from .camera import MjpegCamera
from .devices.cardholders import CardHolders, site_access_sync
from .devices.face_visitors import LoungeMembers, enrol_commands, gate_visitors
from .devices.shoppers import Shoppers, members_sync
from .till import VirtualPrinter, VirtualScanner, VirtualTill
from .face_terminals import VirtualHikvisionTerminal
from .gate_camera import GateCamera
from .osdp_reader import VirtualOsdpReader
from .demo_screens import DemoScreens
from .devices import GatewayEndpoints, VirtualDevice, virtual_device_for
from .platform import PlatformStandIn
from .brokers import free_port


def _serve_readers(config: SiteConfigBase) -> tuple[SiteConfigBase, dict[str, VirtualOsdpReader]]:
    """Each OSDP bus gets a virtual reader (its first configured one) on a pseudo-terminal."""
    readers, devices = {}, []
    for device in config.devices:
        if device.kind == "osdp" and device.readers:
            first = device.readers[0]
            reader = VirtualOsdpReader(first.address, scbk=bytes.fromhex(first.scbk) if first.scbk else None).start()
            readers[device.id] = reader
            print(f"virtual OSDP reader {device.id}/{first.address} on {reader.port}", flush=True)
            device = device.model_copy(update={"port": reader.port})
        devices.append(device)
    return config.model_copy(update={"devices": devices}), readers


def _serve_cameras(config: SiteConfigBase) -> tuple[SiteConfigBase, list]:
    """Cameras configured with a video file are played by a virtual IP camera (MJPEG over HTTP), so
    that the demo goes through the same network path as a real camera; a camera configured with a
    folder of face photos is a gate camera: people from those photos walk up to it."""
    cameras, devices = [], []
    for device in config.devices:
        if device.kind == "camera" and "://" not in device.url:
            source = Path(device.url)
            if not source.exists():
                print(f"camera {device.id}: {device.url} not found; it will show as offline", flush=True)
            else:
                camera = GateCamera(gate_visitors(), fps=device.fps) if source.is_dir() else \
                    MjpegCamera(device.url, loop=True)
                cameras.append(camera.start())
                print(f"virtual camera {device.id}: {device.url} served at {camera.url}", flush=True)
                device = device.model_copy(update={"url": camera.url})
        devices.append(device)
    return config.model_copy(update={"devices": devices}), cameras


def _serve_terminals(config: SiteConfigBase) -> tuple[SiteConfigBase, dict[str, VirtualHikvisionTerminal]]:
    """Each Hikvision terminal device gets a virtual terminal (its first configured one) on loopback,
    pushing to the gateway's listener on a free port."""
    terminals, devices = {}, []
    for device in config.devices:
        if device.kind == "hikvision_terminal":
            first = device.terminals[0]
            listen_port = free_port()
            terminal = VirtualHikvisionTerminal(f"http://127.0.0.1:{listen_port}{device.path}", host="127.0.0.1",
                                                username=first.username,
                                                password=first.password.get_secret_value()).start()
            terminals[device.id] = terminal
            print(f"virtual Hikvision terminal {device.id}/{first.id} on 127.0.0.1:{terminal.port}", flush=True)
            first = first.model_copy(update={"host": "127.0.0.1", "port": terminal.port})
            device = device.model_copy(update={"listen_host": "127.0.0.1", "listen_port": listen_port,
                                               "terminals": [first, *device.terminals[1:]]})
        devices.append(device)
    return config.model_copy(update={"devices": devices}), terminals


class DemoTills:
    """Each POS device gets a virtual till: on a pseudo-terminal with a virtual printer behind the tap
    (`pos_serial`), or printing over TCP to the gateway's listener (`pos_tcp`); a `barcode_scanner`
    gets a virtual scanner. Receipt numbers start from the clock, so that a demo run after another
    (same data folder) prints new receipts rather than repeats."""

    def __init__(self) -> None:
        self.tills: dict[str, VirtualTill] = {}
        self.scanners: dict[str, VirtualScanner] = {}  # till device id -> its scanner
        self._others: list = []

    def serve(self, config: SiteConfigBase) -> SiteConfigBase:
        first_no = int(time.time()) % 100_000 * 100
        devices = []
        for n, device in enumerate(config.devices):
            if device.kind == "pos_serial":
                till = VirtualTill(seed=n, lang="zh", first_no=first_no).start()
                printer = VirtualPrinter().start()
                self.tills[device.id], self._others = till, self._others + [printer]
                device = device.model_copy(update={"port": till.port, "printer_port": printer.port})
                print(f"virtual till {device.id} on {till.port} (its printer on {printer.port})", flush=True)
            elif device.kind == "pos_tcp":
                port = free_port()
                self.tills[device.id] = VirtualTill(seed=n, lang="en", first_no=first_no,
                                                    tcp=("127.0.0.1", port)).start()
                device = device.model_copy(update={"listen_host": "127.0.0.1", "listen_port": port,
                                                   "allow": ["127.0.0.1"], "printer_host": None})
                print(f"virtual till {device.id} printing to 127.0.0.1:{port}", flush=True)
            elif device.kind == "barcode_scanner":
                scanner = VirtualScanner().start()
                self.scanners[device.till] = scanner
                device = device.model_copy(update={"port": scanner.port})
            devices.append(device)
        return config.model_copy(update={"devices": devices})

    def shoppers(self) -> list[VirtualDevice]:
        return [Shoppers(device_id, till, self.scanners.get(device_id), seed=n).start()
                for n, (device_id, till) in enumerate(self.tills.items())]

    def stop(self) -> None:
        for device in [*self.tills.values(), *self.scanners.values(), *self._others]:
            device.stop()


def _demo_config(config: SiteConfigBase, host: str, port: int, protocol: str, data_dir: Path,
                 api_port: int) -> SiteConfigBase:
    """The site's config, pointed at the demo's broker and data folder."""
    uplink = config.uplink.model_copy(update={"host": host, "port": port, "protocol": protocol, "tls": None,
                                              "username": None, "password": None})
    storage = config.storage.model_copy(update={"path": data_dir / f"{config.site_id}-gateway.db"})
    api = config.api.model_copy(update={"port": api_port, "host": "127.0.0.1"})
    return config.model_copy(update={"uplink": uplink, "storage": storage, "api": api})


def played(platform: PlatformStandIn, site_id: str, gateway_id: str) -> dict[tuple, dict]:
    """The platform's view of proof of play: per (screen, creative, campaign, hour), the `ad.played`
    with the highest revision (interim or final)."""
    latest: dict[tuple, dict] = {}
    for event in platform.events(type="ad.played", site_id=site_id, gateway_id=gateway_id):
        d = event["data"]
        key = (d["screen"], d["creative_id"], d["campaign_id"], d["hour"])
        if key not in latest or d["revision"] > latest[key]["revision"]:
            latest[key] = d
    return latest


class Summary:
    def __init__(self, gateway: Gateway, platform: PlatformStandIn, devices: list[VirtualDevice]):
        self.gateway, self.platform, self.devices = gateway, platform, devices
        self.started = time.monotonic()

    def screens(self) -> str:
        reports = played(self.platform, self.gateway.config.site_id, self.gateway.config.gateway_id).values()
        plays = sum(r["plays"] for r in reports)
        impressions = sum(r["impressions"] or 0 for r in reports)
        spots = self.gateway.ads.counts["interrupts"] if self.gateway.ads is not None else 0
        return f"ads played {plays} (impressions {impressions}) gate spots {spots}"

    def line(self) -> str:
        gw = self.gateway
        stats = gw.outbox.stats()
        health = gw.health.summary()
        cfg = gw.config
        delivered = self.platform.count(site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        produced = sum(d.produced for d in self.devices) + gw.bus.published
        uplink = "up" if gw.uplink and gw.uplink.connected else ("stopped" if not gw.running.is_set() else "DOWN")
        visits = self.platform.count(type="visit.entry", site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        granted_events = self.platform.events(type="access.granted", site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        granted = len(granted_events)
        by_face = sum(1 for e in granted_events if e["data"].get("method") == "face")
        sales = self.platform.count(type="sale.captured", site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        awarded = sum(e["data"]["points"] for e in self.platform.events(
            type="points.awarded", site_id=cfg.site_id, gateway_id=cfg.gateway_id))
        reversed_ = sum(e["data"]["points"] for e in self.platform.events(
            type="points.reversed", site_id=cfg.site_id, gateway_id=cfg.gateway_id))
        denied = self.platform.count(type="access.denied", site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        exits = self.platform.count(type="visit.exit", site_id=cfg.site_id, gateway_id=cfg.gateway_id)
        return (f"[{time.monotonic() - self.started:6.0f}s] produced {produced:6d} | stored {stats.counters.get('accepted', 0):6d}"
                f" | delivered {delivered:6d} | backlog {stats.backlog_events:5d} | devices online"
                f" {health['online']}/{health['total']} | people in {visits} out {exits} | doors opened {granted} (by face {by_face}) denied {denied} | sales {sales} points +{awarded} -{reversed_} | {self.screens()} | uplink {uplink}")


async def _run(gateway: Gateway, platform: PlatformStandIn, duration: float | None, cameras: int = 0,
               readers: dict[str, VirtualOsdpReader] | None = None,
               terminals: dict[str, VirtualHikvisionTerminal] | None = None,
               tills: DemoTills | None = None, screens: DemoScreens | None = None,
               browser: bool = True, data_dir: Path | None = None) -> list[VirtualDevice]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, gateway.request_stop)
    gateway_task = loop.create_task(gateway.run())
    while not gateway.running.is_set():
        if gateway_task.done():
            gateway_task.result()
        await asyncio.sleep(0.05)

    endpoints = GatewayEndpoints(f"http://127.0.0.1:{gateway.api_port}", gateway.config.api.token.get_secret_value())
    devices = [d.start() for d in (virtual_device_for(c, endpoints) for c in gateway.config.devices) if d]
    cfg = gateway.config
    if screens is not None and cfg.screens:  # the platform sends its campaigns; the players start
        ack = await asyncio.to_thread(platform.wait_ack, platform.send_command(
            cfg.site_id, cfg.gateway_id, "ads.sync", screens.catalog()), 15)
        if not (ack or {}).get("ok"):
            print(f"ads.sync: {(ack or {}).get('error')}", flush=True)
        devices.extend(await asyncio.to_thread(screens.players, cfg, endpoints,
                                               (data_dir or Path(".")) / "chromium-profile", browser))
    if cfg.access.doors:  # the platform sends who may pass, and enrols the staff's faces
        await asyncio.to_thread(platform.wait_ack, platform.send_command(
            cfg.site_id, cfg.gateway_id, "access.sync", site_access_sync(cfg.access.doors)), 15)
        if cfg.faces.enabled:
            for enrolment in enrol_commands():
                ack = await asyncio.to_thread(platform.wait_ack, platform.send_command(
                    cfg.site_id, cfg.gateway_id, "faces.enroll", enrolment), 30)
                if not (ack or {}).get("ok"):
                    print(f"faces.enroll {enrolment['person_id']}: {(ack or {}).get('error')}", flush=True)
    for device_id, reader in (readers or {}).items():  # then people swipe cards and walk up
        if any(door.device == device_id and door.camera is None for door in cfg.access.doors):
            devices.append(CardHolders(device_id, reader).start())
    for device_id, terminal in (terminals or {}).items():
        devices.append(LoungeMembers(device_id, terminal).start())
    if tills is not None and tills.tills:
        if cfg.points.enabled:  # the platform sends the members' balances, tiers and codes
            await asyncio.to_thread(platform.wait_ack, platform.send_command(
                cfg.site_id, cfg.gateway_id, "points.sync", members_sync()), 15)
        devices.extend(tills.shoppers())
    summary = Summary(gateway, platform, devices)
    tty = sys.stdout.isatty()
    print(f"demo site {gateway.config.site_id}: gateway API http://127.0.0.1:{gateway.api_port}/docs, "
          f"{len(devices)} simulated devices, {cameras} virtual cameras. Ctrl-C stops.", flush=True)
    deadline = time.monotonic() + duration if duration else None
    last_print = 0.0
    while not gateway_task.done():
        if deadline and time.monotonic() >= deadline:
            gateway.request_stop()
            break
        # The line reads the platform's database: in a thread, not on the gateway's event loop.
        if tty:
            print("\r" + await asyncio.to_thread(summary.line), end="", flush=True)
        elif time.monotonic() - last_print >= 5:
            print(await asyncio.to_thread(summary.line), flush=True)
            last_print = time.monotonic()
        await asyncio.sleep(1.0)
    shot = None
    if screens is not None and screens.browser is not None and data_dir is not None:
        path = data_dir / f"player-{screens.browser_screen}.png"
        creative = await asyncio.to_thread(screens.screenshot, path)
        shot = f"web player {screens.browser_screen} showed {creative or 'nothing'}: screenshot {path}"
    for device in devices:
        await asyncio.to_thread(device.stop)
    await gateway_task
    gateway.running.clear()
    # Give the platform a moment to take in the last batches before the final line.
    await asyncio.to_thread(platform.wait_for, lambda: gateway.outbox.stats().backlog_events == 0, 3)
    if screens is not None:
        for sign, text in screens.sign_texts().items():
            print(("\n" if tty else "") + f"LED sign {sign} shows: {text!r}", flush=True)
            tty = False
    if shot:
        print(("\n" if tty else "") + shot, flush=True)
        tty = False
    print(("\n" if tty else "") + "final: " + summary.line(), flush=True)
    return devices


def run_demo(config_path: Path, broker: str | None, duration: float | None, data_dir: Path, api_port: int,
             browser: bool = True) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    if broker:
        host, _, port = broker.rpartition(":")
        host, port_number, protocol = host or "127.0.0.1", int(port), config.uplink.protocol
    else:
        embedded = EmbeddedBroker().start()
        host, port_number, protocol = embedded.host, embedded.port, "3.1.1"  # amqtt speaks MQTT 3.1.1
        print(f"embedded MQTT broker (amqtt) on {host}:{port_number}", flush=True)
    platform = PlatformStandIn(host, port_number, data_dir / "platform.db", topic_prefix=config.uplink.topic_prefix,
                               protocol=protocol).start()
    config, cameras = _serve_cameras(config)
    config, readers = _serve_readers(config)
    config, terminals = _serve_terminals(config)
    tills = DemoTills()
    config = tills.serve(config)
    screens = DemoScreens()
    config = screens.serve(config)
    gateway = Gateway(_demo_config(config, host, port_number, protocol, data_dir, api_port))
    try:
        asyncio.run(_run(gateway, platform, duration, len(cameras), readers, terminals, tills, screens, browser,
                         data_dir))
    finally:
        screens.stop()
        tills.stop()
        for camera in cameras:
            camera.stop()
        for reader in readers.values():
            reader.stop()
        for terminal in terminals.values():
            terminal.stop()
        platform.stop()
        if embedded:
            embedded.stop()
    return 0
