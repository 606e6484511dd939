"""The MQTT uplink: moves committed events from the outbox to the broker, and commands back.

One thread owns one paho client at a time and does everything on it (connect, publish, read acks),
so a PUBACK can never race the bookkeeping of the message it acknowledges. The thread is supervised:
our code decides when to reconnect (with backoff), and a watchdog replaces the thread if its loop
stops turning. Delivery is at least once; each envelope carries its `event_id`, so the platform
de-duplicates and the result is exactly once.

Topics (prefix `site` by default):
  {prefix}/{site_id}/gw/{gateway_id}/up/{stream}   batches {"events": [envelope, ...]}, QoS 1
  {prefix}/{site_id}/gw/{gateway_id}/up/ack        command acks {command_id, ok, error, result}
  {prefix}/{site_id}/gw/{gateway_id}/status        retained; Last Will sets it offline
  {prefix}/{site_id}/gw/{gateway_id}/down/{command} commands to us
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from .config import UplinkConfig
from .events import utc_timestamp
from .outbox import Outbox, PendingRow

log = logging.getLogger("gateway.uplink")

CONNACK_TIMEOUT = 15.0
STABLE_CONNECTION = 10.0  # a connection that lasted this long resets the reconnect backoff

CommandDispatcher = Callable[[str, bytes, Callable[[dict], None]], None]


@dataclass
class UplinkStats:
    connected: bool = False
    connect_attempts: int = 0
    connects: int = 0
    disconnects: int = 0
    messages_published: int = 0
    events_published: int = 0
    events_acknowledged: int = 0
    commands_received: int = 0
    last_error: str | None = None


class Topics:
    def __init__(self, prefix: str, site_id: str, gateway_id: str):
        self.base = f"{prefix}/{site_id}/gw/{gateway_id}"
        self.status = f"{self.base}/status"
        self.ack = f"{self.base}/up/ack"
        self.down = f"{self.base}/down/+"
        self.down_prefix = f"{self.base}/down/"

    def up(self, stream: str) -> str:
        return f"{self.base}/up/{stream}"


@dataclass
class _Message:
    seqs: list[int]
    topic: str
    payload: bytes


@dataclass
class _Connection:
    """State that lives exactly as long as one MQTT connection."""

    client: mqtt.Client
    connected: bool = False
    failed: str | None = None
    cursor: int = 0  # highest seq handed to this connection
    inflight: dict[int, list[int]] = field(default_factory=dict)  # mid -> seqs
    partial_since: float | None = None
    opened: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    delivered_any: bool = False

    def lasted(self) -> bool:
        """Was this a working connection (so a reconnect may be tried at once) or a failed attempt?"""
        if self.connected_at is None:
            return False
        return self.delivered_any or time.monotonic() - self.connected_at >= STABLE_CONNECTION


def batch_messages(rows: list[PendingRow], topics: Topics, max_events: int, max_bytes: int) -> list[_Message]:
    """Group a page of rows by stream, in seq order, into payloads bounded by count and bytes."""
    by_stream: dict[str, list[PendingRow]] = {}
    for row in rows:
        by_stream.setdefault(row.stream, []).append(row)
    messages = []
    for stream, stream_rows in by_stream.items():
        chunk: list[PendingRow] = []
        size = 0
        for row in stream_rows:
            if chunk and (len(chunk) >= max_events or size + row.size + 1 > max_bytes):
                messages.append(_encode(chunk, topics.up(stream)))
                chunk, size = [], 0
            chunk.append(row)
            size += row.size + 1
        if chunk:
            messages.append(_encode(chunk, topics.up(stream)))
    return messages


def _encode(rows: list[PendingRow], topic: str) -> _Message:
    payload = b'{"events":[' + b",".join(r.body for r in rows) + b"]}"
    return _Message([r.seq for r in rows], topic, payload)


class Uplink:
    def __init__(
        self,
        config: UplinkConfig,
        *,
        site_id: str,
        gateway_id: str,
        outbox: Outbox,
        status: Callable[[], dict],
        commands: CommandDispatcher | None = None,
        watchdog_interval: float = 5.0,
    ):
        self.config = config
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.outbox = outbox
        self.status_payload = status
        self.commands = commands
        self.topics = Topics(config.topic_prefix, site_id, gateway_id)
        self.stats = UplinkStats()
        self.watchdog_interval = watchdog_interval
        # A dead loop is one that has not turned for this long (connect attempts are bounded by
        # paho's connect timeout, so a healthy loop never stays away that long).
        self.stall_after = max(30.0, 3 * config.keepalive)

        self._stopping = threading.Event()
        self._acks: queue.Queue[dict] = queue.Queue()
        self._status_dirty = threading.Event()
        self._generation = 0
        self._heartbeat = time.monotonic()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._logged_state: str | None = None

    # --------------------------------------------------------------------------- public API

    def start(self) -> None:
        self._stopping.clear()
        self._spawn_loop()
        self._watchdog = threading.Thread(target=self._watch, name="uplink-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Say we are going offline (retained), disconnect cleanly, stop the threads."""
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout)
        if self._watchdog:
            self._watchdog.join(timeout)

    def status_changed(self) -> None:
        self._status_dirty.set()

    def send_ack(self, ack: dict) -> None:
        """Queue a command ack (called from whichever thread finished the command)."""
        self._acks.put(ack)

    @property
    def connected(self) -> bool:
        return self.stats.connected

    # -------------------------------------------------------------------------- supervision

    def _spawn_loop(self) -> None:
        self._generation += 1
        self._heartbeat = time.monotonic()
        self._thread = threading.Thread(
            target=self._run, args=(self._generation,), name=f"uplink-{self._generation}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stopping.wait(self.watchdog_interval):
            thread = self._thread
            stalled = time.monotonic() - self._heartbeat > self.stall_after
            if thread is not None and (not thread.is_alive() or stalled):
                reason = "stopped turning" if stalled else "died"
                log.error("uplink network loop %s; starting a new one", reason)
                self.stats.last_error = f"network loop {reason}"
                self._spawn_loop()

    def _log_state(self, state: str, message: str, *args, level: int = logging.INFO) -> None:
        """Log a connection state change once, not on every retry."""
        if state != self._logged_state:
            self._logged_state = state
            log.log(level, message, *args)

    # ------------------------------------------------------------------------------ the loop

    def _run(self, generation: int) -> None:
        failures = 0  # connections in a row that failed or did not last
        conn: _Connection | None = None
        try:
            while not self._stopping.is_set() and generation == self._generation:
                self._heartbeat = time.monotonic()
                if conn is None:
                    conn = self._connect()
                    if conn is None:
                        failures += 1
                        self._stopping.wait(self._backoff(failures))
                        continue
                if conn.failed is not None:
                    failures = 0 if conn.lasted() else failures + 1
                    self._drop_connection(conn, conn.failed)
                    conn = None
                    if failures:  # refused, rejected or dropped at once: don't hammer the broker
                        self._stopping.wait(self._backoff(failures))
                    continue
                if conn.connected:
                    self._send_acks(conn)
                    if self._status_dirty.is_set():
                        self._status_dirty.clear()
                        self._publish_status(conn.client)
                    busy = self._fill_window(conn)
                else:
                    busy = False
                    if time.monotonic() - conn.opened > CONNACK_TIMEOUT:
                        conn.failed = f"no answer (CONNACK) from the broker within {CONNACK_TIMEOUT:g}s"
                rc = conn.client.loop(timeout=0.0 if busy else 0.02)
                if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN) and conn.failed is None:
                    conn.failed = f"network loop: {mqtt.error_string(rc)}"
        except Exception as exc:  # the watchdog starts a new loop; say why this one ended
            log.exception("uplink loop crashed")
            self.stats.last_error = f"loop crashed: {exc}"
        finally:
            if conn is not None:
                self._close(conn, clean=self._stopping.is_set() and generation == self._generation)

    def _backoff(self, failures: int) -> float:
        return min(self.config.reconnect_max, self.config.reconnect_min * 2 ** (failures - 1))

    def _connect(self) -> _Connection | None:
        cfg = self.config
        client_id = cfg.client_id or f"gw-{self.site_id}-{self.gateway_id}"
        if cfg.protocol == "5":
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                 clean_session=True)
        conn = _Connection(client)
        self.stats.connect_attempts += 1
        client.max_inflight_messages_set(cfg.max_inflight + 8)  # our own window is the limit
        client.max_queued_messages_set(0)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=str(cfg.tls.ca) if cfg.tls.ca else None,
                certfile=str(cfg.tls.cert) if cfg.tls.cert else None,
                keyfile=str(cfg.tls.key) if cfg.tls.key else None,
                cert_reqs=ssl.CERT_NONE if cfg.tls.insecure_skip_verify else ssl.CERT_REQUIRED,
            )
            if cfg.tls.insecure_skip_verify:
                client.tls_insecure_set(True)
        client.will_set(self.topics.status, json.dumps(self._status(online=False, reason="connection lost")),
                        qos=1, retain=True)
        client.on_connect = lambda c, u, flags, rc, props: self._on_connect(conn, rc)
        client.on_disconnect = lambda c, u, flags, rc, props: self._on_disconnect(conn, rc)
        client.on_publish = lambda c, u, mid, rc, props: self._on_publish(conn, mid, rc)
        client.on_message = lambda c, u, msg: self._on_message(msg)
        try:
            if cfg.protocol == "5":
                client.connect(cfg.host, cfg.port, keepalive=int(cfg.keepalive), clean_start=True)
            else:
                client.connect(cfg.host, cfg.port, keepalive=int(cfg.keepalive))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.stats.last_error = f"connect to {cfg.host}:{cfg.port} failed: {exc}"
            self._log_state("connect-failed", "uplink: cannot connect to %s:%s: %s (retrying with backoff)",
                            cfg.host, cfg.port, exc, level=logging.WARNING)
            return None
        return conn

    def _on_connect(self, conn: _Connection, reason_code) -> None:
        if reason_code.is_failure:
            conn.failed = f"broker refused the connection: {reason_code}"
            return
        conn.connected = True
        conn.connected_at = time.monotonic()
        conn.cursor = 0  # everything still in the outbox goes (again) on this connection
        self.stats.connected = True
        self.stats.connects += 1
        self.stats.last_error = None
        conn.client.subscribe(self.topics.down, qos=1)
        self._publish_status(conn.client)
        self._log_state("connected", "uplink: connected to %s:%s (MQTT %s)", self.config.host, self.config.port,
                        self.config.protocol)

    def _on_disconnect(self, conn: _Connection, reason_code) -> None:
        if conn.failed is None:
            conn.failed = f"disconnected: {reason_code}"

    def _drop_connection(self, conn: _Connection, reason: str) -> None:
        was_connected = conn.connected
        self._close(conn, clean=False)
        self.stats.last_error = reason
        if was_connected:
            self.stats.disconnects += 1
            self._log_state("disconnected", "uplink: connection lost (%s); %d batches unacknowledged will be sent "
                            "again", reason, len(conn.inflight), level=logging.WARNING)
        else:
            self._log_state("connect-failed", "uplink: cannot connect to %s:%s: %s (retrying with backoff)",
                            self.config.host, self.config.port, reason, level=logging.WARNING)

    def _close(self, conn: _Connection, clean: bool) -> None:
        conn.connected = False
        self.stats.connected = False
        try:
            if clean:
                info = conn.client.publish(self.topics.status,
                                           json.dumps(self._status(online=False, reason="stopped")), qos=1,
                                           retain=True)
                deadline = time.monotonic() + 2.0
                while not info.is_published() and time.monotonic() < deadline:
                    conn.client.loop(timeout=0.05)
                conn.client.disconnect()
                conn.client.loop(timeout=0.05)
                self._log_state("stopped", "uplink: disconnected cleanly")
            else:
                conn.client.disconnect()
                conn.client.loop(timeout=0)  # lets paho close the socket
        except Exception:  # the socket may already be gone; nothing to save here
            pass

    # -------------------------------------------------------------------------- publishing

    def _fill_window(self, conn: _Connection) -> bool:
        """Publish batches while the in-flight window has room; True if more work is waiting."""
        cfg = self.config
        while len(conn.inflight) < cfg.max_inflight:
            if self.outbox.stats().last_seq <= conn.cursor:
                conn.partial_since = None
                return False
            room = cfg.max_inflight - len(conn.inflight)
            rows = self.outbox.pending_after(conn.cursor, cfg.batch_max_events * min(room, 4))
            if not rows:
                conn.partial_since = None
                return False
            if len(rows) < cfg.batch_max_events:
                # A small backlog: give it `linger` to grow into a fuller batch.
                now = time.monotonic()
                if conn.partial_since is None:
                    conn.partial_since = now
                if now - conn.partial_since < cfg.linger:
                    return False
            conn.partial_since = None
            for message in batch_messages(rows, self.topics, cfg.batch_max_events, cfg.batch_max_bytes):
                info = conn.client.publish(message.topic, message.payload, qos=1)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:
                    conn.failed = f"publish failed: {mqtt.error_string(info.rc)}"
                    return False
                conn.inflight[info.mid] = message.seqs
                self.stats.messages_published += 1
                self.stats.events_published += len(message.seqs)
            conn.cursor = rows[-1].seq
        return True

    def _on_publish(self, conn: _Connection, mid: int, reason_code) -> None:
        seqs = conn.inflight.pop(mid, None)
        if seqs is None:
            return  # a status or ack message
        if reason_code is not None and getattr(reason_code, "is_failure", False):
            # The broker refused the batch (not authorised, quota...): keep the events and start over
            # on a fresh connection after backoff (see _run) rather than lose them.
            conn.failed = f"broker rejected a batch: {reason_code}"
            return
        conn.delivered_any = True
        self.stats.events_acknowledged += len(seqs)
        self.outbox.delivered(seqs)

    def _publish_status(self, client: mqtt.Client) -> None:
        client.publish(self.topics.status, json.dumps(self._status(online=True)), qos=1, retain=True)

    def _status(self, online: bool, reason: str | None = None) -> dict:
        status = {"state": "online" if online else "offline", "site_id": self.site_id,
                  "gateway_id": self.gateway_id, "ts": utc_timestamp()}
        if reason:
            status["reason"] = reason
        try:
            status.update(self.status_payload())
        except Exception:
            log.exception("status provider failed")
        status["state"] = "online" if online else "offline"
        return status

    # ---------------------------------------------------------------------------- commands

    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        if not msg.topic.startswith(self.topics.down_prefix):
            return
        command = msg.topic[len(self.topics.down_prefix):]
        self.stats.commands_received += 1
        if self.commands is None:
            self.send_ack({"command_id": None, "ok": False, "error": "commands are not enabled", "result": None})
            return
        try:
            self.commands(command, msg.payload, self.send_ack)
        except Exception as exc:  # a bad downlink must never take the uplink down
            log.exception("command %s failed to dispatch", command)
            self.send_ack({"command_id": None, "ok": False, "error": f"internal error: {exc}", "result": None})

    def _send_acks(self, conn: _Connection) -> None:
        while True:
            try:
                ack = self._acks.get_nowait()
            except queue.Empty:
                return
            conn.client.publish(self.topics.ack, json.dumps(ack, default=str), qos=1)
