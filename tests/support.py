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
