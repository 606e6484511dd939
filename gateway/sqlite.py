"""Opening the gateway's SQLite files the one way they are all used.

Every store (outbox aside, which has its own writer thread) holds one connection shared by the
event loop and worker threads under a lock: autocommit (`isolation_level=None`, transactions are
explicit), WAL so readers never wait for the writer, the durability level the site chose
(`storage.synchronous`), and a generous busy timeout for the command-line tools that open the
same file while the gateway runs.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def open_database(path: str | Path, synchronous: str = "full") -> sqlite3.Connection:
    """The connection to `path` (its folder created), in WAL mode with `synchronous` set."""
    if synchronous.upper() not in SYNCHRONOUS:
        raise ValueError(f"synchronous must be off, normal, full or extra, got {synchronous!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error:
        conn.close()
        raise
    return conn
