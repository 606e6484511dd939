"""The synced credential and rule set, kept in SQLite (WAL) so doors keep working without the uplink.

The platform sends the set with the `access.sync` downlink command:

    {"version": 7, "mode": "snapshot" | "delta",
     "persons": [...], "credentials": [...], "rules": [...], "anti_passback": [...],
     "remove": {"persons": [person ids], "credentials": [values], "rules": [rule ids],
                "anti_passback": [{"entry_door": ..., "exit_door": ...}]}}

Rules it keeps:
- Versions are ordered. A snapshot replaces everything and may jump to any higher version; a delta
  must be exactly the current version + 1 (else `SyncError` says which version is expected, so the
  platform can send the missing deltas or a snapshot). A lower version is refused.
- A repeat of the current version (QoS 1 redelivery, a retried command) is acknowledged without
  change, provided it is the same message: the digest of the applied message is kept, and the same
  version with other content is refused.
- A message is validated completely (pydantic) before anything is written, and applied in one
  transaction: a refused or failed sync leaves the previous set and version untouched.
- In a delta, removals are applied before upserts. Removing a person removes their credentials and
  the rules naming them. A credential must name a person in the resulting set.
- Credential values are unique across kinds: a credential with the value of another replaces it.
  Removing an id that is not there is not an error (a delta may be built from a stale view).
- Each row holds the item's validated JSON; `load_policy` rebuilds the in-memory `AccessPolicy` (at
  start); after each applied sync, `apply_to_policy` brings the live policy to the same state
  without reading the database again.
"""

from __future__ import annotations

from pathlib import Path

import sqlite_utils
from pydantic import ValidationError, model_validator

from ..validation import StrictModel, duplicates
from ..versioned_sync import MAX_ERRORS_SHOWN, VersionedStore, VersionedSync, VersionedSyncError, describe
from .rules import AccessPolicy, AntiPassback, Credential, DoorRule, PassageState, Person

class SyncError(VersionedSyncError):
    """An `access.sync` refused: malformed, out of order, stale, or inconsistent. Nothing applied."""


class DoorPair(StrictModel):
    entry_door: str
    exit_door: str


class Removals(StrictModel):
    persons: list[str] = []
    credentials: list[str] = []
    rules: list[str] = []
    anti_passback: list[DoorPair] = []

    def empty(self) -> bool:
        return not (self.persons or self.credentials or self.rules or self.anti_passback)


class AccessSync(VersionedSync):
    """The body of an `access.sync` command (`version`, `mode` and the digest: gateway.versioned_sync)."""

    persons: list[Person] = []
    credentials: list[Credential] = []
    rules: list[DoorRule] = []
    anti_passback: list[AntiPassback] = []
    remove: Removals = Removals()

    @model_validator(mode="after")
    def _consistent(self):
        if self.mode == "snapshot" and not self.remove.empty():
            raise ValueError("a snapshot replaces everything: `remove` must be empty")
        for what, keys in (("person_id", [p.person_id for p in self.persons]),
                           ("credential value", [c.value for c in self.credentials]),
                           ("rule_id", [r.rule_id for r in self.rules]),
                           ("anti_passback pair", [a.key for a in self.anti_passback])):
            repeated = duplicates(keys)
            if repeated:
                raise ValueError(f"{what} given more than once: {repeated[:MAX_ERRORS_SHOWN]}")
        return self


def parse_sync(message: dict) -> AccessSync:
    """The validated body of an `access.sync` command, or SyncError saying what is wrong."""
    try:
        sync = AccessSync.model_validate(message)
    except ValidationError as exc:
        raise SyncError(f"malformed access.sync: {describe(exc)}") from None
    return sync


def apply_to_policy(sync: AccessSync, policy: AccessPolicy) -> AccessPolicy:
    """The policy after an applied sync, the same as `load_policy` would give.

    A delta updates `policy` in place (microseconds for a few items: do it on the thread that
    decides); a snapshot builds a new policy (seconds for 100k credentials: do it in a worker
    thread, then swap) that takes over the anti-passback state.
    """
    if sync.mode == "snapshot":
        return AccessPolicy(sync.persons, sync.credentials, sync.rules, sync.anti_passback, policy.passages)
    remove = sync.remove
    policy.update(sync.persons, sync.credentials, sync.rules, sync.anti_passback,
                  remove_persons=remove.persons, remove_credentials=remove.credentials,
                  remove_rules=remove.rules,
                  remove_anti_passback=[(p.entry_door, p.exit_door) for p in remove.anti_passback])
    return policy


class AccessStore(VersionedStore):
    PREFIX = "access"
    TABLES = ("persons", "credentials", "rules", "anti_passback")  # what a snapshot replaces
    ERROR = SyncError

    def __init__(self, path: str | Path, synchronous: str = "full"):
        # `_lock`: apply_sync may run in a worker thread, load_policy in another.
        super().__init__(path, synchronous)
        self._db = sqlite_utils.Database(self._conn)
        self._create_schema(self._db)

    @staticmethod
    def _create_schema(db: sqlite_utils.Database) -> None:
        db["access_meta"].create({"name": str, "value": str}, pk="name", if_not_exists=True)
        db["access_persons"].create({"person_id": str, "body": str}, pk="person_id", if_not_exists=True)
        db["access_credentials"].create(
            {"value": str, "person_id": str, "body": str}, pk="value", if_not_exists=True)
        db["access_credentials"].create_index(["person_id"], if_not_exists=True)
        db["access_rules"].create(
            {"rule_id": str, "person_id": str, "body": str}, pk="rule_id", if_not_exists=True)
        db["access_rules"].create_index(["person_id"], if_not_exists=True)
        db["access_anti_passback"].create(
            {"entry_door": str, "exit_door": str, "body": str}, pk=("entry_door", "exit_door"),
            if_not_exists=True)
        # The local log of decisions (for engineers on site; pruned after access.keep_events) and
        # the record numbers of terminal events already decided (terminals resend when unsure).
        db["access_log"].create({"id": int, "at": str, "door": str, "method": str, "person_id": str,
                                 "granted": int, "reason": str}, pk="id", if_not_exists=True)
        db["access_log"].create_index(["at"], if_not_exists=True)
        db["access_log"].create_index(["person_id"], if_not_exists=True)
        db["access_terminal_seen"].create({"device": str, "reader": str, "serial": str, "at": str},
                                          pk=("device", "reader", "serial"), if_not_exists=True)
        db["access_terminal_seen"].create_index(["at"], if_not_exists=True)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return self._counts()

    def _counts(self) -> dict[str, int]:
        return {name: self._conn.execute(f"SELECT count(*) FROM access_{name}").fetchone()[0]
                for name in ("persons", "credentials", "rules", "anti_passback")}

    def apply_sync(self, message: dict) -> dict:
        """Apply an `access.sync` body; the ack's result, or SyncError with nothing applied."""
        return self.apply(parse_sync(message))

    def _remove(self, sync: AccessSync) -> None:
        remove, conn = sync.remove, self._conn
        persons = [(p,) for p in remove.persons]
        conn.executemany("DELETE FROM access_credentials WHERE person_id = ?", persons)
        conn.executemany("DELETE FROM access_rules WHERE person_id = ?", persons)
        conn.executemany("DELETE FROM access_persons WHERE person_id = ?", persons)
        conn.executemany("DELETE FROM access_credentials WHERE value = ?", [(v,) for v in remove.credentials])
        conn.executemany("DELETE FROM access_rules WHERE rule_id = ?", [(r,) for r in remove.rules])
        conn.executemany("DELETE FROM access_anti_passback WHERE entry_door = ? AND exit_door = ?",
                         [(p.entry_door, p.exit_door) for p in remove.anti_passback])

    def _upsert(self, sync: AccessSync) -> None:
        conn = self._conn
        conn.executemany("INSERT OR REPLACE INTO access_persons (person_id, body) VALUES (?, ?)",
                         [(p.person_id, p.model_dump_json()) for p in sync.persons])
        conn.executemany("INSERT OR REPLACE INTO access_credentials (value, person_id, body) VALUES (?, ?, ?)",
                         [(c.value, c.person_id, c.model_dump_json()) for c in sync.credentials])
        conn.executemany("INSERT OR REPLACE INTO access_rules (rule_id, person_id, body) VALUES (?, ?, ?)",
                         [(r.rule_id, r.person_id, r.model_dump_json()) for r in sync.rules])
        conn.executemany(
            "INSERT OR REPLACE INTO access_anti_passback (entry_door, exit_door, body) VALUES (?, ?, ?)",
            [(a.entry_door, a.exit_door, a.model_dump_json()) for a in sync.anti_passback])

    def _check_references(self) -> None:
        orphans = self._conn.execute(
            "SELECT value, person_id FROM access_credentials WHERE person_id NOT IN "
            "(SELECT person_id FROM access_persons) LIMIT ?", (MAX_ERRORS_SHOWN,)).fetchall()
        if orphans:
            listed = ", ".join(f"{value!r} -> {person!r}" for value, person in orphans)
            raise SyncError(f"credentials name persons not in the set: {listed}")

    # ------------------------------------------------------------------ the local decision log

    def append_log(self, decisions: list[tuple[str, str, str, str | None, bool, str]],
                   seen: list[tuple[str, str, str, str]] = ()) -> None:
        """Record decisions `(at, door, method, person_id, granted, reason)` and terminal record
        numbers `(device, reader, serial, at)` in one transaction."""
        with self._writing() as conn:
            conn.executemany("INSERT INTO access_log (at, door, method, person_id, granted, reason) "
                             "VALUES (?, ?, ?, ?, ?, ?)", [(a, d, m, p, int(g), r) for a, d, m, p, g, r in decisions])
            conn.executemany("INSERT OR IGNORE INTO access_terminal_seen (device, reader, serial, at) "
                             "VALUES (?, ?, ?, ?)", list(seen))

    def prune_log(self, before: str) -> int:
        """Forget decisions and terminal record numbers older than `before` (an ISO UTC time)."""
        with self._writing() as conn:
            removed = conn.execute("DELETE FROM access_log WHERE at < ?", (before,)).rowcount
            conn.execute("DELETE FROM access_terminal_seen WHERE at < ?", (before,))
        return removed

    def log_entries(self, door: str | None = None, person_id: str | None = None, limit: int = 100) -> list[dict]:
        """The newest decisions first."""
        query, params = "SELECT at, door, method, person_id, granted, reason FROM access_log WHERE 1=1", []
        if door is not None:
            query, params = query + " AND door = ?", params + [door]
        if person_id is not None:
            query, params = query + " AND person_id = ?", params + [person_id]
        with self._lock:
            rows = self._conn.execute(query + " ORDER BY id DESC LIMIT ?", (*params, int(limit))).fetchall()
        return [{"at": at, "door": d, "method": m, "person_id": p, "granted": bool(g), "reason": r}
                for at, d, m, p, g, r in rows]

    def terminal_serials(self, since: str) -> list[tuple[str, str, str]]:
        """(device, reader, serial) of terminal events decided since `since`."""
        with self._lock:
            return self._conn.execute("SELECT device, reader, serial FROM access_terminal_seen WHERE at >= ? "
                                      "ORDER BY at", (since,)).fetchall()

    def delete_face_records(self, person_id: str) -> int:
        """Forget a person's decisions taken by face (part of deleting their face data)."""
        with self._lock:
            return self._conn.execute("DELETE FROM access_log WHERE person_id = ? AND method = 'face'",
                                      (person_id,)).rowcount

    def load_policy(self, passages: PassageState | None = None) -> AccessPolicy:
        """The stored set as an AccessPolicy; pass the old policy's `passages` to keep anti-passback state."""
        with self._reading() as conn:  # one consistent read of all four tables
            persons = [Person.model_validate_json(b) for (b,) in conn.execute("SELECT body FROM access_persons")]
            credentials = [Credential.model_validate_json(b)
                           for (b,) in conn.execute("SELECT body FROM access_credentials")]
            rules = [DoorRule.model_validate_json(b) for (b,) in conn.execute("SELECT body FROM access_rules")]
            pairs = [AntiPassback.model_validate_json(b)
                     for (b,) in conn.execute("SELECT body FROM access_anti_passback")]
        return AccessPolicy(persons, credentials, rules, pairs, passages)
