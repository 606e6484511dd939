"""The version rules shared by the downlink sets the platform pushes (`access.sync`, `ads.sync`).

A set is sent as a message `{"version": N, "mode": "snapshot" | "delta", ...}`:

- Versions are ordered. A snapshot replaces everything and may jump to any higher version; a delta
  must be exactly the current version + 1. A lower version is refused. A refusal says which
  version is expected (`expected_version`), so the platform can send the missing deltas or a
  snapshot.
- A repeat of the current version (QoS 1 redelivery, a retried command) is acknowledged without
  change, provided it is the same message: the digest of the applied message is kept (`digest`
  of the message as sent, keys sorted), and the same version with other content is refused.

`VersionedSync` is the pydantic base of such a message (it remembers the digest of the input it was
built from), `check_order` the decision, `describe` a short text of a pydantic ValidationError, and
`VersionedStore` the SQLite store that applies such messages.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from .commands import CommandError
from .sqlite import SQLiteStore
from .validation import StrictModel

MAX_ERRORS_SHOWN = 5


class VersionedSyncError(CommandError):
    """A sync refused: malformed, out of order, stale or inconsistent. Nothing applied."""

    def __init__(self, message: str, expected_version: int | None = None):
        super().__init__(message)
        self.expected_version = expected_version


def message_digest(message: dict) -> str:
    """sha256 of the message as sent (keys sorted, compact), to recognise a repeat."""
    return hashlib.sha256(json.dumps(message, sort_keys=True, separators=(",", ":"),
                                     default=str).encode()).hexdigest()


class VersionedSync(StrictModel):
    """Base of a sync message: `version`, `mode`, and the digest of the input (`_digest`)."""

    version: int = Field(ge=1, strict=True)
    mode: Literal["snapshot", "delta"]
    _digest: str = PrivateAttr("")

    @model_validator(mode="wrap")
    @classmethod
    def _digest_of_input(cls, data, handler):
        """A digest of the message as sent, not of the models (sets have no stable order)."""
        sync = handler(data)
        if isinstance(data, dict):
            sync._digest = message_digest(data)
        return sync


def check_order(version: int, mode: str, current: int, current_digest: str | None, digest: str,
                error: type[VersionedSyncError] = VersionedSyncError) -> bool:
    """True to apply, False for an idempotent repeat; raises `error` (with the expected version)
    when the message is out of order, stale, or repeats the current version with other content."""
    if version == current:
        if current_digest == digest:
            return False
        raise error(f"version {current} is already applied with other content; "
                    f"expected version {current + 1} (delta) or a higher snapshot",
                    expected_version=current + 1)
    if version < current:
        raise error(f"version {version} is older than the current version {current}; "
                    f"expected version {current + 1}", expected_version=current + 1)
    if mode == "delta" and version != current + 1:
        raise error(f"delta version {version} does not follow the current version "
                    f"{current}: expected version {current + 1} (or a snapshot)",
                    expected_version=current + 1)
    return True


def describe(exc: ValidationError) -> str:
    """The first few errors of a ValidationError as `location: message; ...`."""
    parts = []
    for err in exc.errors()[:MAX_ERRORS_SHOWN]:
        location = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{location}: {err['msg']}")
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


class VersionedStore(SQLiteStore):
    """A store that holds one versioned set: `{PREFIX}_meta` keeps its version and digest, and
    `apply` applies a parsed message by the rules above in one transaction (a refused one changes
    nothing). A subclass names `PREFIX`, the `TABLES` a snapshot empties (without the prefix) and its
    `ERROR` class, and writes with `_remove(sync)` (a delta's removals), `_upsert(sync)`,
    `_check_references()` (raises `ERROR` when the result is inconsistent) and `_counts()`."""

    PREFIX: str
    TABLES: tuple[str, ...]
    ERROR: type[VersionedSyncError] = VersionedSyncError

    def _meta(self, name: str) -> str | None:
        row = self._conn.execute(f"SELECT value FROM {self.PREFIX}_meta WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    @property
    def version(self) -> int:
        """The version of the set held; 0 before the first sync."""
        with self._lock:
            return int(self._meta("version") or 0)

    def apply(self, sync: VersionedSync) -> dict:
        """Apply a parsed sync: `{"version", "applied", **_counts()}`, or `ERROR` with nothing applied."""
        digest = sync._digest
        if not digest:
            raise ValueError(f"build the {type(sync).__name__} from the message (parse_sync), not field by field")
        with self._writing() as conn:
            current = int(self._meta("version") or 0)
            applied = check_order(sync.version, sync.mode, current, self._meta("digest"), digest, self.ERROR)
            if applied:
                if sync.mode == "snapshot":
                    for table in self.TABLES:
                        conn.execute(f"DELETE FROM {self.PREFIX}_{table}")
                else:
                    self._remove(sync)
                self._upsert(sync)
                self._check_references()
                conn.executemany(f"INSERT OR REPLACE INTO {self.PREFIX}_meta (name, value) VALUES (?, ?)",
                                 [("version", str(sync.version)), ("digest", digest)])
            return {"version": sync.version if applied else current, "applied": applied, **self._counts()}

    def _remove(self, sync: Any) -> None:
        raise NotImplementedError

    def _upsert(self, sync: Any) -> None:
        raise NotImplementedError

    def _check_references(self) -> None:
        raise NotImplementedError

    def _counts(self) -> dict[str, int]:
        raise NotImplementedError
