"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.events import Event

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"  # real models and data, beside the repository (never committed)
MODELS = Path(os.environ.get("GATEWAY_MODELS_DIR") or SHARED / "models")
VIDEO_DIR = SHARED / "data" / "video"
ENTRANCE = VIDEO_DIR / "entrance_one_by_one.mp4"


def outbox_rows(db_path, where: str = "1", params: tuple = ()) -> list[dict]:
    """The outbox table as a separate connection (another process, an engineer) would read it."""
    conn = sqlite3.connect(db_path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM outbox WHERE {where} ORDER BY seq", params)]
    finally:
        conn.close()


def need(path: Path) -> Path:
    """The path of a shared model or data file; the test is skipped only where it is truly absent."""
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (see ../shared/README.md)")
    return path


ALL_WEEK = [{"day": d, "start": "00:00", "end": "24:00"} for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")]


class FakeReaderDriver:
    """Records what the access service asks of a reader's driver (the OSDP driver in production)."""

    def __init__(self):
        self.opened: list[tuple[int, float | None]] = []
        self.feedback_given: list[tuple[int, bool]] = []

    def open_door(self, reader_address: int, seconds: float | None) -> bool:
        self.opened.append((reader_address, seconds))
        return True

    def feedback(self, reader_address: int, granted: bool) -> bool:
        self.feedback_given.append((reader_address, granted))
        return True


# ------------------------------------------------------------------ running a driver in a test

DRIVER_WAIT = 10.0  # seconds a test waits for a driver's condition before failing


class FakeContext:
    """What a driver needs of the supervisor; records what it emits and its status (thread-safe)."""

    def __init__(self, device_id: str):
        self.device_id = device_id
        self.log = logging.getLogger(f"test.{device_id}")
        self.events: list[Event] = []
        self.status: list[tuple[bool, str | None]] = []
        self._lock = threading.Lock()

    def emit(self, type: str, data: dict[str, Any], *, ts: str | None = None, internal: bool = False) -> Event:
        json.dumps(data)  # what goes on the bus must be JSON (no bytes, no Decimal)
        event = Event(type, self.device_id, data, internal=internal)
        with self._lock:
            self.events.append(event)
        return event

    def set_online(self) -> None:
        with self._lock:
            if not self.status or self.status[-1] != (True, None):
                self.status.append((True, None))

    def set_offline(self, reason: str) -> None:
        with self._lock:
            self.status.append((False, reason))

    def last_activity(self) -> float | None:
        return None

    def offer_frames(self, source: Any | None) -> None:
        pass

    def of_type(self, type_: str) -> list[Event]:
        with self._lock:
            return [e for e in self.events if e.type == type_]

    def receipts(self) -> list[dict]:
        return [e.data for e in self.of_type("pos.receipt")]

    @property
    def online(self) -> bool:
        with self._lock:
            return bool(self.status) and self.status[-1][0]

    @property
    def last_reason(self) -> str | None:
        with self._lock:
            return self.status[-1][1] if self.status else None


def until(predicate, timeout: float = DRIVER_WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not met within {timeout}s")
        time.sleep(0.02)


class Running:
    """A driver's `run` on an event loop in a background thread; cancelled (and awaited) on exit."""

    def __init__(self, driver, ready=None):
        self.driver = driver
        self.ready = ready or (lambda d: True)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.task: asyncio.Task | None = None
        self.outcome = None  # concurrent future of the wrapper: done once the driver's task is

    async def _main(self) -> None:
        self.task = asyncio.current_task()
        await self.driver.run()

    def __enter__(self):
        self.thread.start()
        self.outcome = asyncio.run_coroutine_threadsafe(self._main(), self.loop)
        until(lambda: self.ready(self.driver) or self.outcome.done(), what="driver ready")
        if self.outcome.done():
            self.outcome.result()
        return self

    def call(self, func, *args):
        """Run `func(*args)` on the driver's loop (drivers' methods are called from the loop)."""
        async def on_loop():
            return func(*args)
        return asyncio.run_coroutine_threadsafe(on_loop(), self.loop).result(5)

    @property
    def alive(self) -> bool:
        return not self.outcome.done()

    def __exit__(self, *exc):
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        deadline = time.monotonic() + 10
        while self.task is not None and not self.task.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
