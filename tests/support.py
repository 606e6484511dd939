"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

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
