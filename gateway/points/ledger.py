"""The points ledger: every award and reversal made on this gateway, and the platform's view of balances.

One SQLite file (WAL, `synchronous=FULL` by default), so points are awarded with the uplink down and
survive a power cut. Each operation is one transaction under one lock (writes); a second connection
serves the quick reads (a member's code, tier or balance) so that a long `points.sync` never holds up
a till.

Entries (`points_entries`) are append-only, numbered by `seq` (AUTOINCREMENT: never reused), and
carry a unique idempotency key:

- a purchase: `sale:<site>:<store>:<receipt_no>`: the same receipt (a reprint, a re-sent receipt, a
  duplicated webhook) never earns twice; the second award returns the first entry;
- a refund: `refund:<site>:<store>:<refund receipt_no>`: a refund is reversed once;
- a door opening: `door:<member>:<local day>:<n>`, the n-th door award of that member that day.

A refund reverses the purchase it names (`original_receipt_no`, same store), else the most recent
purchase of the same member at the same store with the same amount that is not fully reversed yet.
It takes back the points the refunded amount earned, in proportion to the original sale: after
refunds totalling R of a sale of amount A that earned P, P x min(R, A) / A points (half up) are
reversed in all; so a full refund takes back exactly P, partial refunds add up to P, and no receipt
ever contributes less than zero. A refund whose original is not found writes nothing (logged).

Balances: the `points.sync` downlink gives the platform's view of members
`{"members": [{"member_id", "balance", "tier", "codes"}], "included_through": k, "replace": false}`,
where k is the highest ledger `seq` the platform had counted in those balances (the events carry
`seq`). A member's balance here is their synced balance + their entries with seq > k (pending on top).
k is kept per member, so a sync naming only some members leaves the others' view as it was.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Literal

import sqlite_utils
from pydantic import Field, ValidationError, model_validator

from ..commands import CommandError
from ..events import utc_timestamp
from ..sqlite import SQLiteStore
from ..validation import StrictModel

log = logging.getLogger("gateway.points")

Reason = Literal["purchase", "door_open", "refund"]
DEFAULT_TIER = "standard"
MAX_ERRORS_SHOWN = 5

_ENTRY_COLUMNS = ("seq, entry_id, key, member_id, points, reason, store, receipt_no, door, day, created_at, rule, "
                  "amount, refers_to")


def sale_key(site_id: str, store: str, receipt_no: str) -> str:
    return f"sale:{site_id}:{store}:{receipt_no}"


def refund_key(site_id: str, store: str, receipt_no: str) -> str:
    return f"refund:{site_id}:{store}:{receipt_no}"


def door_key(member_id: str, day: str, n: int) -> str:
    return f"door:{member_id}:{day}:{n}"


def canonical_amount(amount: Decimal) -> str:
    """One text per value ("100", "12.5"), so amounts compare as text in SQL."""
    text = format(Decimal(amount).normalize(), "f")
    return "0" if text in ("-0", "") else text


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    entry_id: str
    key: str
    member_id: str
    points: int  # signed: negative for a refund
    reason: str
    store: str | None
    receipt_no: str | None
    door: str | None
    day: str  # local date, YYYY-MM-DD
    created_at: str  # UTC
    rule: str
    amount: str | None  # a purchase: the sale's amount; a refund: the part of the sale it refunds
    refers_to: int | None  # a refund: the seq of the purchase it reverses


@dataclass(frozen=True, slots=True)
class Recorded:
    """What an award or reversal did: the entry (new, or the one already there) and the balance after it."""

    entry: Entry
    created: bool
    balance: int
    original: Entry | None = None  # a refund: the purchase it reverses


# ----------------------------------------------------------------------------------- points.sync


class PointsSyncError(CommandError):
    """A `points.sync` refused; nothing applied."""


class SyncedMember(StrictModel):
    member_id: str = Field(..., min_length=1, max_length=128)
    balance: int = Field(..., strict=True, description="the platform's balance through included_through")
    tier: str = Field(DEFAULT_TIER, min_length=1, max_length=64)
    codes: list[str] = Field(default_factory=list, description="member codes scanned at tills")


class PointsSync(StrictModel):
    """The body of a `points.sync` command."""

    members: list[SyncedMember] = Field(default_factory=list)
    included_through: int = Field(..., ge=0, strict=True,
                                  description="the highest ledger seq the platform has counted, or 0")
    replace: bool = Field(False, description="true: members not listed are forgotten (a full snapshot)")

    @model_validator(mode="after")
    def _unique(self) -> "PointsSync":
        ids = [m.member_id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError("a member_id is given more than once")
        codes = [c for m in self.members for c in m.codes]
        if len(set(codes)) != len(codes):
            raise ValueError("a member code is given to more than one member")
        if any(not c for c in codes):
            raise ValueError("a member code is empty")
        return self


def parse_points_sync(message: object) -> PointsSync:
    """The validated body of a `points.sync`, or PointsSyncError saying what is wrong."""
    try:
        return PointsSync.model_validate(message)
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in e['loc']) or 'message'}: {e['msg']}"
                 for e in exc.errors()[:MAX_ERRORS_SHOWN]]
        more = exc.error_count() - len(parts)
        raise PointsSyncError("malformed points.sync: " + "; ".join(parts)
                              + (f" (and {more} more)" if more > 0 else "")) from None


# ----------------------------------------------------------------------------------- the ledger


class PointsLedger(SQLiteStore):
    def __init__(self, path: str | Path, synchronous: str = "full"):
        super().__init__(path, synchronous)  # `_lock`: writes, one transaction at a time
        self._create_schema(self._conn)
        reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        reader.execute("PRAGMA busy_timeout=30000")
        self._reader = reader
        self._read_lock = threading.Lock()

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        conn.executescript("""
            CREATE TABLE IF NOT EXISTS points_entries (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                entry_id TEXT NOT NULL UNIQUE,
                key TEXT NOT NULL UNIQUE,
                member_id TEXT NOT NULL,
                points INTEGER NOT NULL,
                reason TEXT NOT NULL CHECK (reason IN ('purchase', 'door_open', 'refund')),
                store TEXT,
                receipt_no TEXT,
                door TEXT,
                day TEXT NOT NULL,
                created_at TEXT NOT NULL,
                rule TEXT NOT NULL,
                amount TEXT,
                refers_to INTEGER REFERENCES points_entries (seq)
            );
            CREATE INDEX IF NOT EXISTS points_entries_member ON points_entries (member_id, seq);
            CREATE INDEX IF NOT EXISTS points_entries_day ON points_entries (member_id, day, reason);
            CREATE INDEX IF NOT EXISTS points_entries_refers_to ON points_entries (refers_to);
        """)
        db = sqlite_utils.Database(conn)
        db["points_members"].create({"member_id": str, "balance": int, "tier": str, "included_through": int,
                                     "synced_at": str}, pk="member_id", not_null={"balance", "tier",
                                                                                   "included_through"},
                                    if_not_exists=True)
        db["points_codes"].create({"code": str, "member_id": str}, pk="code", if_not_exists=True)
        db["points_codes"].create_index(["member_id"], if_not_exists=True)

    def close(self) -> None:
        with self._read_lock:
            self._reader.close()
        super().close()

    # ------------------------------------------------------------------------------ reads

    def member_for_code(self, code: str) -> str | None:
        """The member a code scanned at a till belongs to (as last synced), else None."""
        with self._read_lock:
            row = self._reader.execute("SELECT member_id FROM points_codes WHERE code = ?", (code,)).fetchone()
        return row[0] if row else None

    def tier_of(self, member_id: str) -> str:
        """The member's tier as last synced; `standard` for a member not synced yet (they still earn)."""
        with self._read_lock:
            row = self._reader.execute("SELECT tier FROM points_members WHERE member_id = ?",
                                       (member_id,)).fetchone()
        return row[0] if row else DEFAULT_TIER

    def synced_tier(self, member_id: str) -> str | None:
        """The member's tier as last synced; None for a member never synced (not a known member)."""
        with self._read_lock:
            row = self._reader.execute("SELECT tier FROM points_members WHERE member_id = ?",
                                       (member_id,)).fetchone()
        return row[0] if row else None

    def balance(self, member_id: str) -> int:
        """Synced balance + the member's entries the platform had not counted yet."""
        with self._read_lock:
            self._reader.execute("BEGIN")
            try:
                return self._balance(self._reader, member_id)
            finally:
                self._reader.execute("COMMIT")

    def entries(self, member_id: str | None = None) -> list[Entry]:
        """Entries in seq order (a member's, or all)."""
        query = f"SELECT {_ENTRY_COLUMNS} FROM points_entries"
        params: tuple = ()
        if member_id is not None:
            query, params = query + " WHERE member_id = ?", (member_id,)
        with self._read_lock:
            rows = self._reader.execute(query + " ORDER BY seq", params).fetchall()
        return [Entry(*row) for row in rows]

    def entry(self, key: str) -> Entry | None:
        with self._read_lock:
            return self._entry_by_key(self._reader, key)

    def last_seq(self) -> int:
        with self._read_lock:
            return self._last_seq(self._reader)

    def pending_entries(self) -> int:
        """Entries the platform has not counted for their member yet."""
        with self._read_lock:
            return self._reader.execute(
                "SELECT count(*) FROM points_entries e LEFT JOIN points_members m USING (member_id) "
                "WHERE e.seq > COALESCE(m.included_through, 0)").fetchone()[0]

    @staticmethod
    def _last_seq(conn: sqlite3.Connection) -> int:
        return conn.execute("SELECT COALESCE(MAX(seq), 0) FROM points_entries").fetchone()[0]

    @staticmethod
    def _entry_by_key(conn: sqlite3.Connection, key: str) -> Entry | None:
        row = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM points_entries WHERE key = ?", (key,)).fetchone()
        return Entry(*row) if row else None

    @staticmethod
    def _balance(conn: sqlite3.Connection, member_id: str) -> int:
        row = conn.execute("SELECT balance, included_through FROM points_members WHERE member_id = ?",
                           (member_id,)).fetchone()
        synced, through = row if row else (0, 0)
        (pending,) = conn.execute("SELECT COALESCE(SUM(points), 0) FROM points_entries "
                                  "WHERE member_id = ? AND seq > ?", (member_id, through)).fetchone()
        return synced + pending

    # ------------------------------------------------------------------------------ writes

    def _insert(self, conn: sqlite3.Connection, *, key: str, member_id: str, points: int, reason: Reason,
                store: str | None, receipt_no: str | None, door: str | None, day: str, rule: str,
                amount: str | None = None, refers_to: int | None = None) -> Entry:
        entry_id = str(uuid.uuid4())
        created_at = utc_timestamp()
        cursor = conn.execute(
            "INSERT INTO points_entries (entry_id, key, member_id, points, reason, store, receipt_no, door, day, "
            "created_at, rule, amount, refers_to) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (entry_id, key, member_id, points, reason, store, receipt_no, door, day, created_at, rule, amount,
             refers_to))
        return Entry(cursor.lastrowid, entry_id, key, member_id, points, reason, store, receipt_no, door, day,
                     created_at, rule, amount, refers_to)

    def award(self, key: str, member_id: str, points: int, reason: Reason, *, day: str, rule: str,
              store: str | None = None, receipt_no: str | None = None, door: str | None = None,
              amount: Decimal | None = None) -> Recorded:
        """Add `points` (> 0) once per key; a repeat of the key returns the first entry (created False)."""
        if not isinstance(points, int) or points <= 0:
            raise ValueError(f"an award is a positive number of points, got {points!r}")
        with self._writing() as conn:
            existing = self._entry_by_key(conn, key)
            if existing is not None:
                return Recorded(existing, False, self._balance(conn, existing.member_id))
            entry = self._insert(conn, key=key, member_id=member_id, points=points, reason=reason, store=store,
                                 receipt_no=receipt_no, door=door, day=day, rule=rule,
                                 amount=None if amount is None else canonical_amount(amount))
            return Recorded(entry, True, self._balance(conn, member_id))

    def reverse_refund(self, key: str, *, store: str, receipt_no: str, amount: Decimal, day: str,
                       original_key: str | None = None, member_id: str | None = None) -> Recorded | None:
        """Take back what a refund of `amount` at `store` undoes, once per key (see the module's doc).

        The original is the entry under `original_key` when given, else the newest purchase of
        `member_id` at `store` with the same amount not fully reversed yet. None when there is none
        (nothing written). The new entry may carry 0 points (a small partial refund that rounds to
        nothing): it still counts the refunded amount for the next partial refund.
        """
        amount = Decimal(amount)
        if amount <= 0:
            raise ValueError(f"a refund amount is positive, got {amount}")
        with self._writing() as conn:
            existing = self._entry_by_key(conn, key)
            if existing is not None:
                original = self._entry_by_seq(conn, existing.refers_to)
                return Recorded(existing, False, self._balance(conn, existing.member_id), original)
            original = self._find_original(conn, store, amount, original_key, member_id)
            if original is None:
                return None
            refunded, reversed_points = self._reversed_so_far(conn, original.seq)
            original_amount = Decimal(original.amount)
            counted = min(original_amount - refunded, amount)  # never more than the sale's amount in all
            total = min(original_amount, refunded + counted)
            target = int((original.points * total / original_amount).to_integral_value(rounding=ROUND_HALF_UP))
            points = max(0, min(target, original.points) - reversed_points)
            rule = (f"refund {canonical_amount(total)} of {canonical_amount(original_amount)} "
                    f"(receipt {original.receipt_no}, {original.points} points)")
            entry = self._insert(conn, key=key, member_id=original.member_id, points=-points, reason="refund",
                                 store=store, receipt_no=receipt_no, door=None, day=day, rule=rule,
                                 amount=canonical_amount(max(counted, Decimal(0))), refers_to=original.seq)
            return Recorded(entry, True, self._balance(conn, original.member_id), original)

    @staticmethod
    def _entry_by_seq(conn: sqlite3.Connection, seq: int | None) -> Entry | None:
        if seq is None:
            return None
        row = conn.execute(f"SELECT {_ENTRY_COLUMNS} FROM points_entries WHERE seq = ?", (seq,)).fetchone()
        return Entry(*row) if row else None

    @staticmethod
    def _reversed_so_far(conn: sqlite3.Connection, seq: int) -> tuple[Decimal, int]:
        """(amount refunded, points taken back) against the purchase `seq`."""
        rows = conn.execute("SELECT amount, points FROM points_entries WHERE refers_to = ?", (seq,)).fetchall()
        return sum((Decimal(a) for a, _ in rows), Decimal(0)), -sum(p for _, p in rows)

    def _find_original(self, conn: sqlite3.Connection, store: str, amount: Decimal, original_key: str | None,
                       member_id: str | None) -> Entry | None:
        if original_key is not None:
            original = self._entry_by_key(conn, original_key)
            return original if original is not None and original.reason == "purchase" else None
        if member_id is None:
            return None
        rows = conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM points_entries WHERE member_id = ? AND store = ? AND amount = ? "
            "AND reason = 'purchase' ORDER BY seq DESC", (member_id, store, canonical_amount(amount))).fetchall()
        for row in rows:
            candidate = Entry(*row)
            refunded, _ = self._reversed_so_far(conn, candidate.seq)
            if refunded < Decimal(candidate.amount):
                return candidate
        return None

    def award_door(self, member_id: str, door: str, day: str, points: int, daily_cap: int,
                   rule: str) -> Recorded | None:
        """Points for the member's first opening of `door` on local `day`, within the day's cap; else None."""
        with self._writing() as conn:
            rows = conn.execute("SELECT door, points FROM points_entries WHERE member_id = ? AND day = ? "
                                "AND reason = 'door_open'", (member_id, day)).fetchall()
            if any(d == door for d, _ in rows):
                return None
            remaining = daily_cap - sum(p for _, p in rows)
            if remaining <= 0 or points <= 0:
                return None
            given = min(points, remaining)
            if given < points:
                rule += f", cut to the daily cap {daily_cap}"
            entry = self._insert(conn, key=door_key(member_id, day, len(rows) + 1), member_id=member_id,
                                 points=given, reason="door_open", store=None, receipt_no=None, door=door, day=day,
                                 rule=rule)
            return Recorded(entry, True, self._balance(conn, member_id))

    def apply_sync(self, sync: PointsSync) -> dict:
        """Apply a parsed `points.sync` in one transaction: `{"members", "included_through", "pending_entries"}`."""
        synced_at = utc_timestamp()
        with self._writing() as conn:
            last = self._last_seq(conn)
            if sync.included_through > last:
                raise PointsSyncError(f"included_through {sync.included_through} is beyond this ledger's last "
                                      f"entry {last} (a ledger replaced since?): nothing applied")
            if sync.replace:
                conn.execute("DELETE FROM points_codes")
                conn.execute("DELETE FROM points_members")
            conn.executemany(
                "INSERT OR REPLACE INTO points_members (member_id, balance, tier, included_through, synced_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(m.member_id, m.balance, m.tier, sync.included_through, synced_at) for m in sync.members])
            conn.executemany("DELETE FROM points_codes WHERE member_id = ?", [(m.member_id,) for m in sync.members])
            conn.executemany("INSERT OR REPLACE INTO points_codes (code, member_id) VALUES (?, ?)",
                             [(code, m.member_id) for m in sync.members for code in m.codes])
            (pending,) = conn.execute("SELECT count(*) FROM points_entries WHERE seq > ?",
                                      (sync.included_through,)).fetchone()
        return {"members": len(sync.members), "included_through": sync.included_through, "pending_entries": pending}
