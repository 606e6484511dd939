"""A stand-in for the central platform: the far end of the gateway's MQTT link.

It records everything the gateway sends in SQLite so that tests and benchmarks
can check the gateway's delivery guarantees from the outside:

* events arrive at least once; the platform keeps one row per ``event_id``
  (``events``) and also every arrival (``deliveries``), so a test can see
  duplicates and check that a redelivered event always carries the same seq;
* command acks, retained gateway status and malformed messages (``rejects``)
  are kept too. A malformed message is recorded, never raised: a real
  platform must survive a buggy gateway.

Topics (``prefix`` defaults to "site")::

    {prefix}/{site_id}/gw/{gateway_id}/up/{stream}    event batches {"events": [envelope, ...]}
    {prefix}/{site_id}/gw/{gateway_id}/up/ack         command acks
    {prefix}/{site_id}/gw/{gateway_id}/status         retained status {"state": "online"|"offline", ...}
    {prefix}/{site_id}/gw/{gateway_id}/down/{command} commands sent by send_command()

paho runs the network loop in its own thread and writes to SQLite from there;
queries run on the caller's thread. One connection guarded by a lock serves both.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

START_TIMEOUT_S = 10.0
PUBLISH_TIMEOUT_S = 10.0
PAYLOAD_PREFIX_CHARS = 200
# Envelope keys a batch entry must have; device_id may be null (gateway-level events).
ENVELOPE_KEYS = ("event_id", "type", "ts", "site_id", "gateway_id", "device_id", "seq", "data")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, site_id TEXT, gateway_id TEXT, device_id TEXT, type TEXT, ts TEXT,
    seq INTEGER, data TEXT, received_at REAL, deliveries INTEGER NOT NULL DEFAULT 1);
CREATE INDEX IF NOT EXISTS events_by_seq ON events(seq);
CREATE TABLE IF NOT EXISTS deliveries (event_id TEXT, seq INTEGER, received_at REAL);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries(event_id);
CREATE TABLE IF NOT EXISTS acks (
    command_id TEXT PRIMARY KEY, site_id TEXT, gateway_id TEXT, ok INTEGER, error TEXT, result TEXT, received_at REAL);
CREATE TABLE IF NOT EXISTS status (
    site_id TEXT, gateway_id TEXT, payload TEXT, received_at REAL, PRIMARY KEY (site_id, gateway_id));
CREATE TABLE IF NOT EXISTS rejects (topic TEXT, payload_prefix TEXT, reason TEXT, received_at REAL);
"""


class MalformedMessage(ValueError):
    """A message the platform refuses; its text becomes the ``rejects.reason``."""


def validate_envelope(envelope: Any, site_id: str, gateway_id: str) -> dict:
    """Check one event envelope against the contract; return it or raise MalformedMessage."""
    if not isinstance(envelope, dict):
        raise MalformedMessage(f"envelope is not an object: {type(envelope).__name__}")
    missing = [key for key in ENVELOPE_KEYS if key not in envelope]
    if missing:
        raise MalformedMessage(f"envelope missing {', '.join(missing)}")
    try:
        uuid.UUID(str(envelope["event_id"]))
    except ValueError:
        raise MalformedMessage(f"event_id is not a UUID: {envelope['event_id']!r}") from None
    if not isinstance(envelope["type"], str) or not envelope["type"]:
        raise MalformedMessage(f"type is not a non-empty string: {envelope['type']!r}")
    try:
        ts = datetime.fromisoformat(envelope["ts"])
    except (TypeError, ValueError):
        raise MalformedMessage(f"ts is not ISO-8601: {envelope['ts']!r}") from None
    if ts.utcoffset() != timedelta(0):
        raise MalformedMessage(f"ts is not UTC: {envelope['ts']!r}")
    if not isinstance(envelope["seq"], int) or isinstance(envelope["seq"], bool):
        raise MalformedMessage(f"seq is not an integer: {envelope['seq']!r}")
    if not isinstance(envelope["data"], dict):
        raise MalformedMessage(f"data is not an object: {envelope['data']!r}")
    if envelope["device_id"] is not None and not isinstance(envelope["device_id"], str):
        raise MalformedMessage(f"device_id is not a string or null: {envelope['device_id']!r}")
    if (envelope["site_id"], envelope["gateway_id"]) != (site_id, gateway_id):
        raise MalformedMessage(
            f"envelope is for {envelope['site_id']}/{envelope['gateway_id']} but arrived on the topic of {site_id}/{gateway_id}"
        )
    return envelope


def _json_object(payload: bytes) -> dict:
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"bad JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedMessage(f"payload is not a JSON object: {type(value).__name__}")
    return value


class PlatformStandIn:
    """Subscribes to every gateway's uplink and status under ``topic_prefix`` and stores them in SQLite.

    ``protocol``: "5" or "3.1.1". ``client_id``: defaults to a random one.
    ``persistent_session``: ask the broker to keep the subscription and queue
    QoS 1 messages while the stand-in is disconnected (with a restarted
    mosquitto this only helps if it runs with persistence). Without it,
    messages published while the stand-in is (re)connecting are lost to it,
    just as on a real broker.
    ``message_log``: called (on paho's thread) with a one-line summary of each
    received message; the CLI prints these.
    """

    def __init__(
        self,
        host: str,
        port: int,
        db_path: str | Path,
        topic_prefix: str = "site",
        protocol: str = "5",
        client_id: str | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: dict | None = None,
        persistent_session: bool = False,
        message_log: Callable[[str], None] | None = None,
    ) -> None:
        if protocol not in ("5", "3.1.1"):
            raise ValueError(f'protocol must be "5" or "3.1.1", not {protocol!r}')
        self.host, self.port = host, port
        self.db_path = Path(db_path)
        self.topic_prefix = topic_prefix.rstrip("/")
        self.protocol = protocol
        self.client_id = client_id or f"platform-standin-{uuid.uuid4().hex[:12]}"
        self.persistent_session = persistent_session
        self.message_log = message_log

        self.messages_received = 0
        self.events_received = 0  # valid envelopes, duplicates included
        self.subscription_count = 0  # subscriptions acknowledged: 1 after start(), +1 per reconnect
        self._last_connect_error: str | None = None
        self._state_changed = threading.Condition()

        self._db_lock = threading.Lock()
        self._db = sqlite3.connect(self.db_path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # a stand-in need not survive power loss; keeps it off the benchmark critical path
        self._db.executescript(SCHEMA)

        self._client = self._make_client(username, password, tls)

    # ---------------------------------------------------------------- MQTT

    def _make_client(self, username: str | None, password: str | None, tls: dict | None) -> mqtt.Client:
        if self.protocol == "5":
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(
                mqtt.CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=not self.persistent_session,
            )
        if username is not None:
            client.username_pw_set(username, password)
        if tls:
            client.tls_set(ca_certs=tls.get("cafile"), certfile=tls.get("certfile"), keyfile=tls.get("keyfile"))
        # Quick retries so a restarted broker is picked up within about a second.
        client.reconnect_delay_set(min_delay=0.2, max_delay=2)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    @property
    def subscriptions(self) -> list[str]:
        return [f"{self.topic_prefix}/+/gw/+/up/#", f"{self.topic_prefix}/+/gw/+/status"]

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            with self._state_changed:
                self._last_connect_error = f"broker refused connection: {reason_code}"
                self._state_changed.notify_all()
            return
        # Subscribe on every (re)connect: a restarted broker without persistence has forgotten us.
        client.subscribe([(topic, 1) for topic in self.subscriptions])

    def _on_subscribe(self, client, userdata, mid, reason_code_list, properties) -> None:
        with self._state_changed:
            failures = [str(code) for code in reason_code_list if code.is_failure]
            if failures:
                self._last_connect_error = f"broker refused subscription: {', '.join(failures)}"
            else:
                self.subscription_count += 1
            self._state_changed.notify_all()

    def wait_subscribed(self, after: int = 0, timeout: float = START_TIMEOUT_S) -> bool:
        """Wait until ``subscription_count`` exceeds ``after``.

        After a broker restart, pass the count read before the restart to know
        the stand-in is listening again.
        """
        with self._state_changed:
            return self._state_changed.wait_for(lambda: self.subscription_count > after, timeout)

    def start(self) -> "PlatformStandIn":
        """Connect, subscribe, and return once the broker has acknowledged the subscription."""
        self._last_connect_error = None
        properties = None
        if self.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600 if self.persistent_session else 0
        try:
            self._client.connect(
                self.host,
                self.port,
                keepalive=10,
                clean_start=not self.persistent_session if self.protocol == "5" else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                properties=properties,
            )
        except OSError as exc:
            raise RuntimeError(f"platform stand-in cannot reach the broker at {self.host}:{self.port}: {exc}") from exc
        self._client.loop_start()
        with self._state_changed:
            self._state_changed.wait_for(lambda: self.subscription_count > 0 or self._last_connect_error, START_TIMEOUT_S)
            error, subscribed = self._last_connect_error, self.subscription_count > 0
        if not subscribed:
            self.stop()
            raise RuntimeError(
                f"platform stand-in not subscribed at {self.host}:{self.port} within {START_TIMEOUT_S} s: "
                f"{error or 'no SUBACK'}"
            )
        return self

    def stop(self) -> None:
        """Disconnect, stop paho's thread and close the database."""
        self._client.disconnect()
        self._client.loop_stop()
        with self._db_lock:
            self._db.close()

    def __enter__(self) -> "PlatformStandIn":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ----------------------------------------------------- incoming messages

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        """Store one message. Never raises: paho would re-raise and kill its network thread."""
        self.messages_received += 1
        topic, payload = message.topic, message.payload
        try:
            summary = self._handle(topic, payload)
        except MalformedMessage as exc:
            summary = f"REJECT {topic}: {exc}"
            self._record_reject(topic, payload, str(exc))
        except Exception as exc:  # a bug here must not stop the stand-in receiving
            summary = f"REJECT {topic}: internal error {exc!r}"
            self._record_reject(topic, payload, f"internal error: {exc!r}")
        if self.message_log is not None:
            try:
                self.message_log(summary)
            except Exception:
                pass

    def _handle(self, topic: str, payload: bytes) -> str:
        if not topic.startswith(self.topic_prefix + "/"):
            raise MalformedMessage("topic outside the prefix")
        parts = topic[len(self.topic_prefix) + 1 :].split("/")
        if len(parts) < 4 or parts[1] != "gw":
            raise MalformedMessage("unexpected topic layout")
        site_id, gateway_id, kind, rest = parts[0], parts[2], parts[3], parts[4:]
        if kind == "status" and not rest:
            return self._store_status(site_id, gateway_id, payload)
        if kind == "up" and rest == ["ack"]:
            return self._store_ack(site_id, gateway_id, payload)
        if kind == "up" and rest:
            return self._store_batch(topic, site_id, gateway_id, payload)
        raise MalformedMessage("unexpected topic layout")

    def _store_batch(self, topic: str, site_id: str, gateway_id: str, payload: bytes) -> str:
        batch = _json_object(payload)
        if not isinstance(batch.get("events"), list):
            raise MalformedMessage('batch has no "events" list')
        now = time.time()
        new = duplicates = 0
        bad: list[str] = []
        with self._db_lock, self._db:
            for envelope in batch["events"]:
                try:
                    validate_envelope(envelope, site_id, gateway_id)
                except MalformedMessage as exc:
                    bad.append(str(exc))
                    continue
                self.events_received += 1
                self._db.execute(
                    "INSERT INTO deliveries(event_id, seq, received_at) VALUES (?, ?, ?)",
                    (envelope["event_id"], envelope["seq"], now),
                )
                inserted = self._db.execute(
                    "INSERT OR IGNORE INTO events(event_id, site_id, gateway_id, device_id, type, ts, seq, data,"
                    " received_at, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (
                        envelope["event_id"], site_id, gateway_id, envelope["device_id"], envelope["type"],
                        envelope["ts"], envelope["seq"], json.dumps(envelope["data"]), now,
                    ),
                ).rowcount
                if inserted:
                    new += 1
                else:
                    duplicates += 1
                    self._db.execute(
                        "UPDATE events SET deliveries = deliveries + 1 WHERE event_id = ?", (envelope["event_id"],)
                    )
        # Good envelopes of a partly bad batch are kept; each bad one is rejected on its own.
        for reason in bad:
            self._record_reject(topic, payload, reason)
        summary = f"batch {site_id}/{gateway_id}: {new} new, {duplicates} duplicate"
        return summary + (f", {len(bad)} rejected" if bad else "")

    def _store_ack(self, site_id: str, gateway_id: str, payload: bytes) -> str:
        ack = _json_object(payload)
        if not isinstance(ack.get("ok"), bool):
            raise MalformedMessage('ack has no boolean "ok"')
        command_id = ack.get("command_id")
        if command_id is not None and not isinstance(command_id, str):
            raise MalformedMessage(f"ack command_id is not a string or null: {command_id!r}")
        with self._db_lock, self._db:
            # The first ack for a command wins; an ack redelivered by at-least-once is ignored.
            self._db.execute(
                "INSERT OR IGNORE INTO acks(command_id, site_id, gateway_id, ok, error, result, received_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (command_id, site_id, gateway_id, ack["ok"], ack.get("error"), json.dumps(ack.get("result")), time.time()),
            )
        with self._state_changed:
            self._state_changed.notify_all()
        return f"ack {site_id}/{gateway_id}: command {command_id} ok={ack['ok']}"

    def _store_status(self, site_id: str, gateway_id: str, payload: bytes) -> str:
        if not payload:  # an empty retained message clears the status
            with self._db_lock, self._db:
                self._db.execute("DELETE FROM status WHERE site_id = ? AND gateway_id = ?", (site_id, gateway_id))
            return f"status {site_id}/{gateway_id}: cleared"
        status = _json_object(payload)
        if not isinstance(status.get("state"), str):
            raise MalformedMessage('status has no "state" string')
        with self._db_lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO status(site_id, gateway_id, payload, received_at) VALUES (?, ?, ?, ?)",
                (site_id, gateway_id, json.dumps(status), time.time()),
            )
        return f"status {site_id}/{gateway_id}: {status['state']}"

    def _record_reject(self, topic: str, payload: bytes, reason: str) -> None:
        prefix = payload[:PAYLOAD_PREFIX_CHARS].decode("utf-8", errors="replace")
        with self._db_lock, self._db:
            self._db.execute(
                "INSERT INTO rejects(topic, payload_prefix, reason, received_at) VALUES (?, ?, ?, ?)",
                (topic, prefix, reason, time.time()),
            )

    # -------------------------------------------------------------- commands

    def send_raw(self, site_id: str, gateway_id: str, command: str, payload: bytes) -> None:
        """Publish ``payload`` as-is on the command topic (QoS 1).

        When connected, waits for the broker's PUBACK (up to 10 s) so the command
        is on the broker when this returns. While disconnected, paho queues it and
        sends it after reconnecting.
        """
        topic = f"{self.topic_prefix}/{site_id}/gw/{gateway_id}/down/{command}"
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            info.wait_for_publish(PUBLISH_TIMEOUT_S)

    def send_command(
        self, site_id: str, gateway_id: str, command: str, args: dict | None = None, command_id: str | None = None
    ) -> str:
        """Send ``{"command_id", "args"}`` to a gateway; return the command_id (a new uuid4 if not given)."""
        command_id = command_id or str(uuid.uuid4())
        body = json.dumps({"command_id": command_id, "args": args or {}}).encode()
        self.send_raw(site_id, gateway_id, command, body)
        return command_id

    def wait_ack(self, command_id: str, timeout: float = 10) -> dict:
        """Return the ack ``{command_id, ok, error, result}`` for a command; raise TimeoutError if none arrives."""
        with self._state_changed:
            found = self._state_changed.wait_for(lambda: self._ack(command_id), timeout)
        if not found:
            raise TimeoutError(f"no ack for command {command_id} within {timeout} s")
        return found

    # --------------------------------------------------------------- queries

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._db_lock:
            return self._db.execute(sql, params).fetchall()

    @staticmethod
    def _event_filter(type=None, type_prefix=None, site_id=None, gateway_id=None) -> tuple[str, tuple]:
        clauses, params = [], []
        for column, value in (("type", type), ("site_id", site_id), ("gateway_id", gateway_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if type_prefix is not None:
            clauses.append("substr(type, 1, ?) = ?")  # not LIKE: "_" in a type is not a wildcard
            params += [len(type_prefix), type_prefix]
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)

    def events(self, type=None, type_prefix=None, site_id=None, gateway_id=None) -> list[dict]:
        """Distinct events (first delivery of each), ordered by seq, as envelopes with ``data`` parsed."""
        where, params = self._event_filter(type, type_prefix, site_id, gateway_id)
        rows = self._query(
            "SELECT event_id, type, ts, site_id, gateway_id, device_id, seq, data FROM events"
            f"{where} ORDER BY seq, site_id, gateway_id",
            params,
        )
        keys = ("event_id", "type", "ts", "site_id", "gateway_id", "device_id", "seq", "data")
        return [dict(zip(keys, row[:-1] + (json.loads(row[-1]),))) for row in rows]

    def event_ids(self, type=None, type_prefix=None, site_id=None, gateway_id=None) -> set[str]:
        where, params = self._event_filter(type, type_prefix, site_id, gateway_id)
        return {row[0] for row in self._query(f"SELECT event_id FROM events{where}", params)}

    def count(self, type=None, type_prefix=None, site_id=None, gateway_id=None) -> int:
        """Number of distinct events matching the filters."""
        where, params = self._event_filter(type, type_prefix, site_id, gateway_id)
        return self._query(f"SELECT count(*) FROM events{where}", params)[0][0]

    def duplicate_deliveries(self) -> int:
        """Arrivals beyond the first, over all events."""
        return self._query("SELECT coalesce(sum(deliveries - 1), 0) FROM events")[0][0]

    def deliveries_of(self, event_id: str) -> list[dict]:
        """Every arrival of one event, oldest first: [{event_id, seq, received_at}, ...]."""
        rows = self._query(
            "SELECT event_id, seq, received_at FROM deliveries WHERE event_id = ? ORDER BY rowid", (event_id,)
        )
        return [{"event_id": e, "seq": s, "received_at": r} for e, s, r in rows]

    def status(self, site_id: str, gateway_id: str) -> dict | None:
        """The gateway's last retained status payload, or None."""
        rows = self._query("SELECT payload FROM status WHERE site_id = ? AND gateway_id = ?", (site_id, gateway_id))
        return json.loads(rows[0][0]) if rows else None

    def _ack(self, command_id: str) -> dict | None:
        rows = self._query("SELECT command_id, ok, error, result FROM acks WHERE command_id = ?", (command_id,))
        if not rows:
            return None
        command_id, ok, error, result = rows[0]
        return {"command_id": command_id, "ok": bool(ok), "error": error, "result": json.loads(result)}

    def acks(self) -> list[dict]:
        """All acks in arrival order, each {command_id, ok, error, result, site_id, gateway_id}."""
        rows = self._query("SELECT command_id, ok, error, result, site_id, gateway_id FROM acks ORDER BY rowid")
        keys = ("command_id", "ok", "error", "result", "site_id", "gateway_id")
        return [dict(zip(keys, (c, bool(ok), e, json.loads(r), s, g))) for c, ok, e, r, s, g in rows]

    def rejects(self) -> list[dict]:
        """Malformed messages in arrival order, each {topic, payload_prefix, reason, received_at}."""
        rows = self._query("SELECT topic, payload_prefix, reason, received_at FROM rejects ORDER BY rowid")
        return [dict(zip(("topic", "payload_prefix", "reason", "received_at"), row)) for row in rows]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30, interval: float = 0.1) -> bool:
        """Poll ``predicate`` until it is true (return True) or ``timeout`` passes (return False)."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(interval)

    def wait_for_count(self, n: int, timeout: float = 30, **filters) -> int:
        """Wait until at least ``n`` distinct events match ``filters``; return the count reached."""
        self.wait_for(lambda: self.count(**filters) >= n, timeout)
        return self.count(**filters)
