"""Proof of play: what the screens' players say they played, kept in SQLite and reported hourly.

A player posts its plays (`POST /v1/screens/{id}/plays`): each record has a `play_id` (a UUID the
player makes, so a re-sent batch is not counted twice), the creative and campaign, the start and
end, and optionally `impressions` (faces that looked) and `attention_s` (seconds they looked). The
records are kept `ads.keep_plays` (30 days by default) and pruned hourly.

Hourly aggregation: the plays of one (screen, creative, campaign, hour) become one `ad.played`
event once the hour is over (a play counts in the hour of its start, UTC):

    {"screen", "creative_id", "campaign_id", "hour": "2026-11-22T07:00:00Z", "plays", "seconds",
     "impressions", "attention_s", "revision", "final"}

Interim reports: while an hour is in progress (and until it is reported as complete), the service
may report its totals so far (`ads.report_partial`, every 15 minutes by default) as an `ad.played`
with `final: false`; the report made once the hour is over says `final: true`, also for a group
that received nothing after its last interim report. Interim and final reports are revisions like
any other: each carries the totals so far, one revision higher than the last.

(`campaign_id` null for the default loop; `impressions` / `attention_s` null when no record of the
group carried them.) A creative shown for two campaigns in one hour gives two events.

Late plays (a player that was offline posts days later): the records are accepted while they are
within `keep_plays`. When an hour that was already reported receives new records, its totals are
reported again as a new `ad.played` whose `revision` is one higher and which carries the complete
totals of the hour (not the difference): the platform keeps, per (site, screen, creative,
campaign, hour), the event with the highest revision. Event ids are derived (uuid5) from (site,
screen, creative, campaign, hour, revision), so sending the same revision twice (a re-send after a
crash, `ads.resend`) is the same event, dropped by the platform's de-duplication.

The store only remembers which groups changed (`pending`) and what was last reported (`reported`);
the service (`AdsService.aggregate`) decides when an hour is complete and publishes the events.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..events import utc_timestamp
from ..sqlite import SQLiteStore

HOUR_MS = 3_600_000
PLAYED_NAMESPACE = uuid.UUID("3b0c8a7e-5f1d-4c52-9d7e-2a1f6b9e4c31")  # ad.played event ids (uuid5)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS plays (
    play_id TEXT PRIMARY KEY, screen TEXT NOT NULL, creative_id TEXT NOT NULL, campaign_id TEXT NOT NULL,
    start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, hour_ms INTEGER NOT NULL,
    impressions INTEGER, attention_s REAL, received_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS plays_group ON plays (screen, creative_id, campaign_id, hour_ms);
CREATE INDEX IF NOT EXISTS plays_screen_start ON plays (screen, start_ms);
CREATE INDEX IF NOT EXISTS plays_start ON plays (start_ms);
CREATE TABLE IF NOT EXISTS plays_pending (
    screen TEXT NOT NULL, creative_id TEXT NOT NULL, campaign_id TEXT NOT NULL, hour_ms INTEGER NOT NULL,
    PRIMARY KEY (screen, creative_id, campaign_id, hour_ms));
CREATE TABLE IF NOT EXISTS plays_reported (
    screen TEXT NOT NULL, creative_id TEXT NOT NULL, campaign_id TEXT NOT NULL, hour_ms INTEGER NOT NULL,
    revision INTEGER NOT NULL, plays INTEGER NOT NULL, seconds REAL NOT NULL, impressions INTEGER,
    attention_s REAL, reported_ms INTEGER NOT NULL, final INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (screen, creative_id, campaign_id, hour_ms));
CREATE INDEX IF NOT EXISTS plays_reported_at ON plays_reported (reported_ms);
"""


@dataclass(frozen=True)
class PlayRecord:
    """One proof-of-play record (times as UTC epoch milliseconds)."""

    play_id: str
    creative_id: str
    campaign_id: str | None
    start_ms: int
    end_ms: int
    impressions: int | None = None
    attention_s: float | None = None


@dataclass(frozen=True)
class Aggregate:
    """The totals of one (screen, creative, campaign, hour) and the revision they are reported as."""

    screen: str
    creative_id: str
    campaign_id: str | None
    hour_ms: int
    plays: int
    seconds: float
    impressions: int | None
    attention_s: float | None
    revision: int
    final: bool = True  # False: an interim report of an hour not complete yet

    @property
    def hour(self) -> str:
        """The start of the hour, UTC, e.g. 2026-11-22T07:00:00Z."""
        return datetime.fromtimestamp(self.hour_ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:00:00Z")

    def event_id(self, site_id: str) -> str:
        key = f"{site_id}\x1f{self.screen}\x1f{self.creative_id}\x1f{self.campaign_id or ''}\x1f{self.hour}" \
              f"\x1f{self.revision}"
        return str(uuid.uuid5(PLAYED_NAMESPACE, key))

    def as_data(self) -> dict[str, Any]:
        return {"screen": self.screen, "creative_id": self.creative_id, "campaign_id": self.campaign_id,
                "hour": self.hour, "plays": self.plays, "seconds": round(self.seconds, 3),
                "impressions": self.impressions,
                "attention_s": None if self.attention_s is None else round(self.attention_s, 3),
                "revision": self.revision, "final": self.final}


def to_ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("times must carry a time zone")
    return round(moment.timestamp() * 1000)


def from_ms(ms: int) -> str:
    return utc_timestamp(datetime.fromtimestamp(ms / 1000, timezone.utc))


def iso_to_ms(text: str) -> int:
    """UTC epoch milliseconds of an ISO-8601 time with a zone (`Z` allowed)."""
    return to_ms(datetime.fromisoformat(text.replace("Z", "+00:00")))


class PlaysStore(SQLiteStore):
    """`plays.db`: proof-of-play records, the groups not yet reported and what was reported."""

    def __init__(self, path: str | Path, synchronous: str = "full"):
        super().__init__(path, synchronous)
        conn = self._conn
        conn.executescript(_SCHEMA)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(plays_reported)")}
        if "final" not in columns:  # a plays.db from before interim reports: all its reports were final
            conn.execute("ALTER TABLE plays_reported ADD COLUMN final INTEGER NOT NULL DEFAULT 1")

    # ------------------------------------------------------------------------------- records

    def add(self, screen: str, records: Iterable[PlayRecord], now_ms: int | None = None) -> tuple[int, int]:
        """Store a batch in one transaction: (accepted, duplicates). A play_id already stored (from
        any screen, or earlier in the same batch) is a duplicate and changes nothing."""
        now_ms = to_ms(datetime.now(timezone.utc)) if now_ms is None else now_ms
        accepted = duplicates = 0
        with self._writing() as conn:
            for r in records:
                hour_ms = r.start_ms // HOUR_MS * HOUR_MS
                campaign = r.campaign_id or ""
                inserted = conn.execute(
                    "INSERT OR IGNORE INTO plays (play_id, screen, creative_id, campaign_id, start_ms, end_ms, "
                    "hour_ms, impressions, attention_s, received_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.play_id, screen, r.creative_id, campaign, r.start_ms, r.end_ms, hour_ms, r.impressions,
                     r.attention_s, now_ms)).rowcount
                if inserted:
                    accepted += 1
                    conn.execute("INSERT OR IGNORE INTO plays_pending (screen, creative_id, campaign_id, hour_ms) "
                                 "VALUES (?, ?, ?, ?)", (screen, r.creative_id, campaign, hour_ms))
                else:
                    duplicates += 1
        return accepted, duplicates

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM plays").fetchone()[0]

    def pending_count(self) -> int:
        """Groups with plays not yet reported (the current hour's among them)."""
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM plays_pending").fetchone()[0]

    def recent(self, screen: str, since_ms: int) -> list[tuple[str, str | None, int]]:
        """(creative_id, campaign_id, start ms) of the screen's plays that started at or after since_ms."""
        with self._lock:
            rows = self._conn.execute("SELECT creative_id, campaign_id, start_ms FROM plays WHERE screen = ? "
                                      "AND start_ms >= ? ORDER BY start_ms", (screen, since_ms)).fetchall()
        return [(c, k or None, s) for c, k, s in rows]

    # ----------------------------------------------------------------------------- aggregates

    def _totals(self, screen: str, creative_id: str, campaign: str, hour_ms: int) -> tuple:
        return self._conn.execute(
            "SELECT count(*), coalesce(sum(end_ms - start_ms), 0) / 1000.0, sum(impressions), sum(attention_s) "
            "FROM plays WHERE screen = ? AND creative_id = ? AND campaign_id = ? AND hour_ms = ?",
            (screen, creative_id, campaign, hour_ms)).fetchone()

    def due(self, complete_before_ms: int, interim_before_ms: int | None = None) -> list[Aggregate]:
        """What to report now, with the totals and the revision to report them as (0 the first time,
        else the last reported + 1). Read-only: `mark_reported` records them once published.

        Final reports: the changed groups whose hour ended at or before `complete_before_ms`, and
        the groups whose last report was interim and whose hour is now complete. With
        `interim_before_ms`, also interim reports (`final` False) of the changed groups of the
        later hours that started before it."""
        out = []
        with self._reading() as conn:
            keys = conn.execute(
                "SELECT screen, creative_id, campaign_id, hour_ms FROM plays_pending WHERE hour_ms + ? <= ? "
                "UNION SELECT screen, creative_id, campaign_id, hour_ms FROM plays_reported "
                "WHERE final = 0 AND hour_ms + ? <= ?",
                (HOUR_MS, complete_before_ms, HOUR_MS, complete_before_ms)).fetchall()
            if interim_before_ms is not None:
                keys += conn.execute(
                    "SELECT screen, creative_id, campaign_id, hour_ms FROM plays_pending "
                    "WHERE hour_ms + ? > ? AND hour_ms < ?",
                    (HOUR_MS, complete_before_ms, interim_before_ms)).fetchall()
            keys.sort(key=lambda k: (k[3], k[0], k[1], k[2]))
            for screen, creative_id, campaign, hour_ms in keys:
                plays, seconds, impressions, attention = self._totals(screen, creative_id, campaign, hour_ms)
                row = conn.execute("SELECT revision FROM plays_reported WHERE screen = ? AND creative_id = ? "
                                   "AND campaign_id = ? AND hour_ms = ?",
                                   (screen, creative_id, campaign, hour_ms)).fetchone()
                if not plays:  # pruned meanwhile
                    continue
                out.append(Aggregate(screen, creative_id, campaign or None, hour_ms, plays, seconds, impressions,
                                     attention, 0 if row is None else row[0] + 1,
                                     final=hour_ms + HOUR_MS <= complete_before_ms))
        return out

    def mark_reported(self, aggregates: Iterable[Aggregate], now_ms: int) -> None:
        """Remember what was published and clear those groups' pending marks, in one transaction.
        A group that received more plays since `due` read it stays pending (its totals differ)."""
        with self._writing() as conn:
            for a in aggregates:
                campaign = a.campaign_id or ""
                conn.execute(
                    "INSERT OR REPLACE INTO plays_reported (screen, creative_id, campaign_id, hour_ms, revision, "
                    "plays, seconds, impressions, attention_s, reported_ms, final) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (a.screen, a.creative_id, campaign, a.hour_ms, a.revision, a.plays, a.seconds,
                     a.impressions, a.attention_s, now_ms, int(a.final)))
                plays = self._totals(a.screen, a.creative_id, campaign, a.hour_ms)[0]
                if plays == a.plays:
                    conn.execute("DELETE FROM plays_pending WHERE screen = ? AND creative_id = ? AND "
                                 "campaign_id = ? AND hour_ms = ?", (a.screen, a.creative_id, campaign, a.hour_ms))

    def reported(self, from_ms: int | None = None, to_ms: int | None = None, *,
                 reported_since_ms: int | None = None) -> list[Aggregate]:
        """What was last reported: hours in [from_ms, to_ms), or reports made since reported_since_ms."""
        where, params = [], []
        if from_ms is not None:
            where.append("hour_ms >= ?")
            params.append(from_ms)
        if to_ms is not None:
            where.append("hour_ms < ?")
            params.append(to_ms)
        if reported_since_ms is not None:
            where.append("reported_ms >= ?")
            params.append(reported_since_ms)
        sql = ("SELECT screen, creative_id, campaign_id, hour_ms, plays, seconds, impressions, attention_s, revision, "
               "final FROM plays_reported" + (" WHERE " + " AND ".join(where) if where else "")
               + " ORDER BY hour_ms, screen, creative_id, campaign_id")
        with self._lock:
            rows = self._conn.execute(sql, params).fetchall()
        return [Aggregate(s, c, k or None, h, p, sec, imp, att, rev, bool(fin))
                for s, c, k, h, p, sec, imp, att, rev, fin in rows]

    def prune(self, horizon_ms: int) -> int:
        """Forget the hours that ended at or before horizon_ms: their plays, reports and pending marks
        (whole hours, so that an hour is never reported again from part of its plays)."""
        first_kept = horizon_ms // HOUR_MS * HOUR_MS
        with self._writing() as conn:
            removed = conn.execute("DELETE FROM plays WHERE hour_ms < ?", (first_kept,)).rowcount
            conn.execute("DELETE FROM plays_reported WHERE hour_ms < ?", (first_kept,))
            conn.execute("DELETE FROM plays_pending WHERE hour_ms < ?", (first_kept,))
        return removed
