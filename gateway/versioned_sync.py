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
built from), `check_order` the decision, `describe` a short text of a pydantic ValidationError.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import Field, PrivateAttr, ValidationError, model_validator

from .commands import CommandError
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
