"""The durable outbox: every event waiting to go up, in one SQLite file (WAL mode).

Rules it keeps:
- An event is *accepted* only once the transaction that holds it has committed; `submit` returns a
  future that resolves after the commit, never before.
- `seq` is assigned in the single writer thread at commit time, so it is strictly increasing in
  commit order; the high-water mark is stored in the same transaction, so a restart never re-uses
  or re-numbers a sequence number (rows are deleted once delivered, the mark stays).
- A row is deleted only when the uplink reports the broker's PUBACK for the message that carried it.
- Over the byte or age cap, the oldest LOW rows go first, then NORMAL ones; CRITICAL rows (access,
  sale, points...) are never dropped: an alarm event is raised instead and they are kept.

All writes go through one thread that groups whatever is queued into one transaction (group commit),
which is what makes tens of thousands of commits-per-second of events possible with fsync on.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import sqlite_utils

from .events import Event, Priority, envelope_parts

log = logging.getLogger("gateway.outbox")

MAX_EVENTS_PER_TRANSACTION = 5000
ALARM_EVENT_TYPE = "gateway.alarm"


class Accepted(NamedTuple):
    event_id: str
    seq: int
    duplicate: bool


class PendingRow(NamedTuple):
    seq: int
    stream: str
    body: bytes  # the envelope, UTF-8 JSON
    size: int


@dataclass
class OutboxStats:
    backlog_events: int = 0
    backlog_bytes: int = 0
    last_seq: int = 0
    counters: dict[str, int] = field(default_factory=dict)


class OutboxClosed(RuntimeError):
    pass


@dataclass
class _Op:
    kind: str  # insert | delete | prune | call
    future: Future
    events: list[tuple[Event, bytes, bytes]] | None = None  # (event, envelope head, tail) around the seq
    dedupe: bool = False
    seqs: list[int] | None = None
    call: Callable[[sqlite3.Connection], object] | None = None


class PriorityRules:
    """Which events may be dropped first and which never, from type or stream prefixes."""

    def __init__(self, never_drop: Iterable[str], drop_first: Iterable[str]):
        self.never_drop = tuple(never_drop)
        self.drop_first = tuple(drop_first)
        self.of = lru_cache(maxsize=4096)(self._classify)

    @staticmethod
    def _matches(event_type: str, patterns: tuple[str, ...]) -> bool:
        return any(event_type == p or event_type.startswith(p + ".") for p in patterns)

    def _classify(self, event_type: str) -> Priority:
        if self._matches(event_type, self.never_drop):
            return Priority.CRITICAL
        if self._matches(event_type, self.drop_first):
            return Priority.LOW
        return Priority.NORMAL


class Outbox:
    def __init__(
        self,
        path: str | Path,
        *,
        site_id: str,
        gateway_id: str,
        max_bytes: int = 1024**3,
        max_age: float = 30 * 86400,
        synchronous: str = "full",
        never_drop: Iterable[str] = ("access", "sale", "points", "gateway"),
        drop_first: Iterable[str] = ("visit.counts", "zone.occupancy", "device.status"),
        dedupe_window: float = 7 * 86400,
        prune_interval: float = 60.0,
    ):
        self.path = Path(path)
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.max_bytes = int(max_bytes)
        self.max_age = float(max_age)
        self.synchronous = synchronous.upper()
        self.priority = PriorityRules(never_drop, drop_first)
        self.dedupe_window = dedupe_window
        self.prune_interval = prune_interval

        self._ops: queue.Queue[_Op | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._readers = threading.local()
        self._closed = True
        self._next_seq = 1
        self._backlog_events = 0
        self._backlog_bytes = 0
        self._over_cap_alarmed = False
        self._age_alarmed = False
        self._queued_events = 0
        self._queued_lock = threading.Lock()
        self._counters: dict[str, int] = {}

    # ------------------------------------------------------------------------------ lifecycle

    def open(self) -> "Outbox":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        self._create_schema(db)
        conn = db.conn
        self._next_seq = self._read_counter(conn, "last_seq") + 1
        count, total = conn.execute("SELECT COUNT(*), TOTAL(size) FROM outbox").fetchone()
        self._backlog_events, self._backlog_bytes = count, int(total)
        self._counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        self._closed = False
        self._thread = threading.Thread(target=self._writer_loop, args=(db,), name="outbox-writer", daemon=True)
        self._thread.start()
        log.info(
            "outbox %s open: %d events (%d bytes) waiting, next seq %d",
            self.path, count, int(total), self._next_seq,
        )
        return self

    def close(self, timeout: float = 10.0) -> None:
        """Finish what was queued, then stop the writer."""
        if self._closed:
            return
        self._closed = True
        self._ops.put(None)
        if self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> "Outbox":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _connect(self) -> sqlite_utils.Database:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA busy_timeout=30000")
        return sqlite_utils.Database(conn)

    @staticmethod
    def _create_schema(db: sqlite_utils.Database) -> None:
        db["outbox"].create(
            {"seq": int, "event_id": str, "type": str, "stream": str, "priority": int,
             "created": float, "size": int, "body": bytes},
            pk="seq", not_null={"event_id", "type", "stream", "priority", "created", "size", "body"},
            if_not_exists=True,
        )
        db["outbox"].create_index(["priority", "seq"], index_name="outbox_priority_seq", if_not_exists=True)
        db["ingest_ids"].create(
            {"event_id": str, "seq": int, "accepted_at": float}, pk="event_id", if_not_exists=True
        )
        db["ingest_ids"].create_index(["accepted_at"], if_not_exists=True)
        db["counters"].create({"name": str, "value": int}, pk="name", if_not_exists=True)

    @staticmethod
    def _read_counter(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------------ producer side

    def submit(self, events: list[Event], *, dedupe: bool = False) -> Future:
        """Queue events for the next commit; the future gives one `Accepted` per event.

        With `dedupe`, an event_id seen before (within the dedupe window) is not stored again and is
        reported as a duplicate carrying the seq it was first given.
        """
        future: Future = Future()
        if self._closed:
            future.set_exception(OutboxClosed("the outbox is closed"))
            return future
        try:
            encoded = [(event, *envelope_parts(event, site_id=self.site_id, gateway_id=self.gateway_id))
                       for event in events]
        except ValueError as exc:  # refused here, alone, before it can share a transaction
            future.set_exception(exc)
            return future
        with self._queued_lock:
            self._queued_events += len(encoded)
        self._ops.put(_Op("insert", future, events=encoded, dedupe=dedupe))
        return future

    @property
    def queued_events(self) -> int:
        """Events submitted and not yet committed (or refused): how far the writer is behind."""
        return self._queued_events

    def accept(self, events: list[Event], *, dedupe: bool = False, timeout: float | None = 30) -> list[Accepted]:
        return self.submit(events, dedupe=dedupe).result(timeout)

    # ------------------------------------------------------------------------- uplink side

    def pending_after(self, seq: int, limit: int) -> list[PendingRow]:
        """Committed events with a seq above `seq`, oldest first (each thread reads on its own connection)."""
        conn = getattr(self._readers, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.execute("PRAGMA busy_timeout=30000")
            self._readers.conn = conn
        rows = conn.execute(
            "SELECT seq, stream, body, size FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        return [PendingRow(*row) for row in rows]

    def delivered(self, seqs: list[int]) -> Future:
        """The broker acknowledged these: remove them (in the writer thread)."""
        future: Future = Future()
        if self._closed:
            future.set_exception(OutboxClosed("the outbox is closed"))
            return future
        self._ops.put(_Op("delete", future, seqs=list(seqs)))
        return future

    def run_in_writer(self, call: Callable[[sqlite3.Connection], object]) -> Future:
        """Run `call(conn)` inside a write transaction of the writer thread (for maintenance and tests)."""
        future: Future = Future()
        if self._closed:  # no writer would ever take it: the future would never resolve
            future.set_exception(OutboxClosed("the outbox is closed"))
            return future
        self._ops.put(_Op("call", future, call=call))
        return future

    def stats(self) -> OutboxStats:
        return OutboxStats(
            backlog_events=self._backlog_events,
            backlog_bytes=self._backlog_bytes,
            last_seq=self._next_seq - 1,
            counters=dict(self._counters),
        )

    # --------------------------------------------------------------------------- writer thread

    def _writer_loop(self, db: sqlite_utils.Database) -> None:
        conn = db.conn
        last_prune = 0.0
        stopping = False
        while not stopping:
            try:
                first = self._ops.get(timeout=1.0)
            except queue.Empty:
                first = _Op("prune", Future()) if time.monotonic() - last_prune > self.prune_interval else None
                if first is None:
                    continue
            batch: list[_Op] = []
            if first is None:
                stopping = True
            else:
                batch.append(first)
            n_events = len(first.events or ()) if first else 0
            while n_events < MAX_EVENTS_PER_TRANSACTION:
                try:
                    op = self._ops.get_nowait()
                except queue.Empty:
                    break
                if op is None:
                    stopping = True
                    break
                batch.append(op)
                n_events += len(op.events or ())
            if time.monotonic() - last_prune > self.prune_interval:
                batch.append(_Op("prune", Future()))
                last_prune = time.monotonic()
            if batch:
                self._apply_batch(conn, batch)
        while True:  # anything that slipped in after close() is refused, not left hanging
            try:
                op = self._ops.get_nowait()
            except queue.Empty:
                break
            if op is not None and not op.future.done():
                op.future.set_exception(OutboxClosed("the outbox is closed"))
        conn.close()

    def _apply_batch(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[object] = []
        saved = (self._next_seq, self._backlog_events, self._backlog_bytes, dict(self._counters),
                 self._over_cap_alarmed, self._age_alarmed)
        rows: list[tuple] = []  # outbox rows of all inserts, written with one executemany
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                if op.kind == "insert":
                    results.append(self._insert(conn, op.events or [], op.dedupe, rows))
                elif op.kind == "delete":
                    results.append(self._delete(conn, op.seqs or []))
                elif op.kind == "prune":
                    results.append(self._prune_by_age(conn))
                else:
                    results.append(op.call(conn) if op.call else None)
            self._write_rows(conn, rows)
            self._enforce_byte_cap(conn)
            self._store_counters(conn)
            conn.execute("COMMIT")
        except Exception as exc:  # disk full, I/O error, a bad call: nothing in this batch is accepted
            log.error("outbox transaction failed, %d operations rejected: %s", len(batch), exc)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            (self._next_seq, self._backlog_events, self._backlog_bytes, self._counters,
             self._over_cap_alarmed, self._age_alarmed) = saved
            self._dequeued(batch)
            for op in batch:
                if not op.future.done():
                    op.future.set_exception(exc)
            return
        self._dequeued(batch)
        for op, result in zip(batch, results):
            if not op.future.done():
                op.future.set_result(result)

    def _dequeued(self, batch: list[_Op]) -> None:
        with self._queued_lock:
            self._queued_events -= sum(len(op.events or ()) for op in batch)

    def _insert(self, conn: sqlite3.Connection, events: list[tuple[Event, bytes, bytes]], dedupe: bool,
                rows: list[tuple]) -> list[Accepted]:
        """Number the events and add their rows to `rows` (written by `_write_rows` in this transaction)."""
        accepted: list[Accepted] = []
        now = time.time()
        for event, head, tail in events:
            if dedupe:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO ingest_ids(event_id, seq, accepted_at) VALUES (?, ?, ?)",
                    (event.event_id, self._next_seq, now),
                )
                if cur.rowcount == 0:
                    (seq,) = conn.execute(
                        "SELECT seq FROM ingest_ids WHERE event_id = ?", (event.event_id,)
                    ).fetchone()
                    accepted.append(Accepted(event.event_id, seq, True))
                    continue
            seq = self._next_seq
            self._next_seq += 1
            body = head + str(seq).encode() + tail
            size = len(body)
            rows.append((seq, event.event_id, event.type, event.stream, int(self.priority.of(event.type)),
                         now, size, body))
            accepted.append(Accepted(event.event_id, seq, False))
            self._backlog_bytes += size
        return accepted

    def _write_rows(self, conn: sqlite3.Connection, rows: list[tuple]) -> None:
        if rows:
            conn.executemany(
                "INSERT INTO outbox(seq, event_id, type, stream, priority, created, size, body)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            self._backlog_events += len(rows)
            self._count("accepted", len(rows))
            rows.clear()

    def _delete(self, conn: sqlite3.Connection, seqs: list[int]) -> int:
        if not seqs:
            return 0
        sizes = conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT value FROM json_each(?)) RETURNING size",
            (json.dumps(seqs),),
        ).fetchall()
        self._backlog_events -= len(sizes)
        self._backlog_bytes -= sum(s for (s,) in sizes)
        self._count("delivered", len(sizes))
        return len(sizes)

    def _drop_oldest(self, conn: sqlite3.Connection, priority: Priority, *, bytes_to_free: int | None = None,
                     older_than: float | None = None) -> int:
        """Drop the oldest rows of one priority, by bytes over the cap or by age."""
        dropped = 0
        while bytes_to_free is None or bytes_to_free > 0:
            where = "priority = ?" + (" AND created < ?" if older_than is not None else "")
            params = (int(priority),) + ((older_than,) if older_than is not None else ())
            victims = conn.execute(
                f"SELECT seq, size FROM outbox WHERE {where} ORDER BY seq LIMIT 1000", params
            ).fetchall()
            if not victims:
                break
            if bytes_to_free is not None:
                keep = []
                for seq, size in victims:
                    if bytes_to_free <= 0:
                        break
                    keep.append((seq, size))
                    bytes_to_free -= size
                victims = keep
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(seq,) for seq, _ in victims])
            self._backlog_events -= len(victims)
            self._backlog_bytes -= sum(size for _, size in victims)
            dropped += len(victims)
        if dropped:
            self._count(f"dropped_{priority.name.lower()}", dropped)
        return dropped

    def _enforce_byte_cap(self, conn: sqlite3.Connection) -> None:
        if self._backlog_bytes <= self.max_bytes:
            self._over_cap_alarmed = False
            return
        for priority in (Priority.LOW, Priority.NORMAL):
            dropped = self._drop_oldest(conn, priority, bytes_to_free=self._backlog_bytes - self.max_bytes)
            if dropped:
                log.warning("outbox over %d bytes: dropped %d oldest %s events", self.max_bytes, dropped,
                            priority.name.lower())
            if self._backlog_bytes <= self.max_bytes:
                return
        if not self._over_cap_alarmed:
            self._over_cap_alarmed = True
            self._raise_alarm(conn, "storage_full", max_bytes=self.max_bytes)

    def _prune_by_age(self, conn: sqlite3.Connection) -> int:
        cutoff = time.time() - self.max_age
        dropped = sum(self._drop_oldest(conn, p, older_than=cutoff) for p in (Priority.LOW, Priority.NORMAL))
        if dropped:
            log.warning("outbox: dropped %d events older than %gs", dropped, self.max_age)
        (old_critical,) = conn.execute(
            "SELECT COUNT(*) FROM outbox WHERE priority = ? AND created < ?", (int(Priority.CRITICAL), cutoff)
        ).fetchone()
        if old_critical and not self._age_alarmed:
            self._age_alarmed = True
            self._raise_alarm(conn, "critical_events_over_max_age", old_critical_events=old_critical,
                              max_age_seconds=self.max_age)
        self._age_alarmed = bool(old_critical)
        conn.execute("DELETE FROM ingest_ids WHERE accepted_at < ?", (time.time() - self.dedupe_window,))
        return dropped

    def _raise_alarm(self, conn: sqlite3.Connection, alarm: str, **details: object) -> None:
        data = {"alarm": alarm, "backlog_events": self._backlog_events, "backlog_bytes": self._backlog_bytes,
                **details}
        log.error("outbox alarm %s: %s", alarm, data)
        event = Event(ALARM_EVENT_TYPE, self.gateway_id, data)
        rows: list[tuple] = []
        self._insert(conn, [(event, *envelope_parts(event, site_id=self.site_id, gateway_id=self.gateway_id))],
                     False, rows)
        self._write_rows(conn, rows)
        self._count(f"alarm_{alarm}", 1)

    def _count(self, name: str, n: int) -> None:
        self._counters[name] = self._counters.get(name, 0) + n

    def _store_counters(self, conn: sqlite3.Connection) -> None:
        self._counters["last_seq"] = self._next_seq - 1
        conn.executemany(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            list(self._counters.items()),
        )


__all__ = ["Accepted", "Outbox", "OutboxClosed", "OutboxStats", "PendingRow", "PriorityRules"]
