"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import sqlite3


def outbox_rows(db_path, where: str = "1", params: tuple = ()) -> list[dict]:
    """The outbox table as a separate connection (another process, an engineer) would read it."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM outbox WHERE {where} ORDER BY seq", params)]
    finally:
        conn.close()
