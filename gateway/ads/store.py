"""The synced ads catalog, kept in SQLite (WAL) so screens keep playing without the uplink.

The platform sends it with the `ads.sync` downlink command:

    {"version": 12, "mode": "snapshot" | "delta",
     "creatives": [...], "campaigns": [...], "default_loop": [creative ids] (optional),
     "remove": {"creatives": [creative ids], "campaigns": [campaign ids]}}

The version rules are those of `gateway.versioned_sync` (the same as `access.sync`): a snapshot may
jump to any higher version, a delta must be the current version + 1, a repeat of the current
version with the same content is acknowledged without change, anything else is refused with
`AdsSyncError` saying which version is expected.

A message is validated completely (pydantic) before anything is written and applied in one
transaction, so a refused or failed sync leaves the previous catalog and version untouched. In a
delta, removals come first, then upserts by id; removing an id that is not there is not an error.
After the changes every campaign and the default loop must name creatives of the catalog: a
campaign naming an unknown creative, or removing a creative a campaign still plays, is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from ..versioned_sync import MAX_ERRORS_SHOWN, VersionedStore, VersionedSyncError, describe
from .model import AdsCatalog, AdsSync, Campaign, Creative


class AdsSyncError(VersionedSyncError):
    """An `ads.sync` refused (malformed, out of order, stale, inconsistent); nothing applied.
    A CommandError; `expected_version` says which version the gateway expects."""


def parse_sync(message: dict) -> AdsSync:
    """The validated body of an `ads.sync` command, or AdsSyncError saying what is wrong with it."""
    try:
        return AdsSync.model_validate(message)
    except ValidationError as exc:
        raise AdsSyncError(f"malformed ads.sync: {describe(exc)}") from None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS ads_meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS ads_creatives (creative_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ads_campaigns (campaign_id TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ads_campaign_creatives (
    campaign_id TEXT NOT NULL, creative_id TEXT NOT NULL, PRIMARY KEY (campaign_id, creative_id));
CREATE INDEX IF NOT EXISTS ads_campaign_creatives_creative ON ads_campaign_creatives (creative_id);
CREATE TABLE IF NOT EXISTS ads_default_loop (position INTEGER PRIMARY KEY, creative_id TEXT NOT NULL);
"""


class AdsStore(VersionedStore):
    PREFIX = "ads"
    TABLES = ("creatives", "campaigns", "campaign_creatives", "default_loop")  # what a snapshot replaces
    ERROR = AdsSyncError

    def __init__(self, path: str | Path, synchronous: str = "full"):
        super().__init__(path, synchronous)
        self._conn.executescript(_SCHEMA)

    def _counts(self) -> dict[str, int]:
        return {name: self._conn.execute(f"SELECT count(*) FROM ads_{name}").fetchone()[0]
                for name in ("creatives", "campaigns")}

    def apply_sync(self, message: dict) -> dict:
        """Apply an `ads.sync` body: the ack's result, or AdsSyncError with nothing applied."""
        return self.apply(parse_sync(message))

    def _remove(self, sync: AdsSync) -> None:
        conn = self._conn
        campaigns = [(c,) for c in sync.remove.campaigns]
        conn.executemany("DELETE FROM ads_campaign_creatives WHERE campaign_id = ?", campaigns)
        conn.executemany("DELETE FROM ads_campaigns WHERE campaign_id = ?", campaigns)
        conn.executemany("DELETE FROM ads_creatives WHERE creative_id = ?", [(c,) for c in sync.remove.creatives])

    def _upsert(self, sync: AdsSync) -> None:
        conn = self._conn
        conn.executemany("INSERT OR REPLACE INTO ads_creatives (creative_id, body) VALUES (?, ?)",
                         [(c.creative_id, c.model_dump_json()) for c in sync.creatives])
        conn.executemany("DELETE FROM ads_campaign_creatives WHERE campaign_id = ?",
                         [(c.campaign_id,) for c in sync.campaigns])
        conn.executemany("INSERT OR REPLACE INTO ads_campaigns (campaign_id, body) VALUES (?, ?)",
                         [(c.campaign_id, c.model_dump_json()) for c in sync.campaigns])
        conn.executemany("INSERT INTO ads_campaign_creatives (campaign_id, creative_id) VALUES (?, ?)",
                         [(c.campaign_id, cid) for c in sync.campaigns for cid in c.creatives])
        if sync.default_loop is not None:
            conn.execute("DELETE FROM ads_default_loop")
            conn.executemany("INSERT INTO ads_default_loop (position, creative_id) VALUES (?, ?)",
                             list(enumerate(sync.default_loop)))

    def _check_references(self) -> None:
        missing = self._conn.execute(
            "SELECT 'campaign ' || campaign_id, creative_id FROM ads_campaign_creatives "
            "WHERE creative_id NOT IN (SELECT creative_id FROM ads_creatives) "
            "UNION ALL SELECT 'default_loop', creative_id FROM ads_default_loop "
            "WHERE creative_id NOT IN (SELECT creative_id FROM ads_creatives) LIMIT ?",
            (MAX_ERRORS_SHOWN,)).fetchall()
        if missing:
            listed = ", ".join(f"{who} -> {creative}" for who, creative in missing)
            raise AdsSyncError(f"unknown creatives (not in the catalog after this sync): {listed}")

    def load(self) -> AdsCatalog:
        """The stored catalog (one consistent read)."""
        with self._reading() as conn:
            version = int(self._meta("version") or 0)
            creatives = [Creative.model_validate_json(b)
                         for (b,) in conn.execute("SELECT body FROM ads_creatives ORDER BY creative_id")]
            campaigns = [Campaign.model_validate_json(b)
                         for (b,) in conn.execute("SELECT body FROM ads_campaigns ORDER BY campaign_id")]
            loop = tuple(c for (c,) in conn.execute("SELECT creative_id FROM ads_default_loop ORDER BY position"))
        return AdsCatalog({c.creative_id: c for c in creatives}, {c.campaign_id: c for c in campaigns},
                          loop, version)


def load_catalog_file(path: str | Path) -> AdsCatalog:
    """The catalog an `ads.sync` JSON file describes (ValueError with what is wrong)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if isinstance(body, dict) and "args" in body and "version" not in body:  # a whole downlink command
        body = body["args"]
    try:
        return AdsCatalog.from_sync(body)
    except ValidationError as exc:
        raise ValueError(f"{path}: malformed ads.sync: {describe(exc)}") from None
