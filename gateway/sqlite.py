"""Opening the gateway's SQLite files the one way they are all used.

Every store (outbox aside, which has its own writer thread) holds one connection shared by the
event loop and worker threads under a lock: autocommit (`isolation_level=None`, transactions are
explicit), WAL so readers never wait for the writer, the durability level the site chose
(`storage.synchronous`), and a generous busy timeout for the command-line tools that open the
same file while the gateway runs. `SQLiteStore` is the base of such a store.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Self

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


class SQLiteStore:
    """What every store shares: its one connection (`open_database`) and the lock the event loop and
    worker threads take around it; `close()`, `with`, write transactions (`_writing`) and consistent reads (`_reading`)."""

    def __init__(self, path: str | Path, synchronous: str = "full"):
        self.path = Path(path)
        self._conn = open_database(self.path, synchronous)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _check_open(self) -> None:
        """Called under the lock before each transaction: a store that refuses use once closed
        raises here (with its own error) rather than SQLite's."""

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction under the lock: committed when the block ends, rolled back if it raises."""
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """One consistent read under the lock (a read transaction: no writer's commit shows halfway)."""
        with self._lock:
            self._check_open()
            conn = self._conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")
