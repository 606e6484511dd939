"""The replay tool on real video with the real detector: counts, MOT tracks, events, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support import ENTRANCE, MODELS, ROOT

VIDEO = ENTRANCE

pytestmark = pytest.mark.skipif(not VIDEO.exists() or not (MODELS / "yolox_nano.onnx").exists(),
                                reason="needs ../shared/data/video and ../shared/models (present in CI)")


def replay(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway", "vision", "replay", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def entrance_replay(tmp_path_factory):
    """One replay of the whole entrance video with an entry line 12 px above the bottom edge."""
    out = tmp_path_factory.mktemp("replay")
    result = replay(str(VIDEO), "--line", "0,420,768,420", "--models-dir", str(MODELS),
                    "--tracks-out", str(out / "tracks.txt"), "--events-out", str(out / "events.jsonl"))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), out


def test_entrance_video_counts_exactly_six_entries(entrance_replay):
    summary, out = entrance_replay
    assert summary["frames"] == 1394
    assert summary["entries"] == 6  # counted by hand: six people, one at a time
    assert summary["exits"] == 0  # they leave by the right edge, not across this line
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    entries = [e for e in events if e["type"] == "visit.entry"]
    # Each entry falls in one of the hand-noted visible intervals (seconds), one per interval.
    intervals = [(6, 19), (23, 44), (50, 69), (75, 86), (92, 119), (123, 135)]
    hits = [next(i for i, (a, b) in enumerate(intervals) if a <= e["time_s"] <= b) for e in entries]
    assert sorted(hits) == list(range(6))
    assert all(e["line"] == "line" and e["frame"] >= 1 for e in entries)


def test_tracks_are_written_in_motchallenge_format(entrance_replay):
    _, out = entrance_replay
    rows = [line.split(",") for line in (out / "tracks.txt").read_text().splitlines()]
    assert len(rows) > 500
    for row in rows[:50]:
        assert len(row) == 10 and row[7:] == ["-1", "-1", "-1"]
        frame, track_id = int(row[0]), int(row[1])
        x, y, w, h, score = map(float, row[2:7])
        assert frame >= 1 and track_id >= 1 and w > 0 and h > 0 and 0 <= score <= 1
        assert -1 <= x <= 768 and -1 <= y <= 432
    frames = [int(r[0]) for r in rows]
    assert frames == sorted(frames)
    # One person at a time, so never two tracks in the same frame for long.
    per_frame: dict[int, int] = {}
    for f in frames:
        per_frame[f] = per_frame.get(f, 0) + 1
    assert sum(1 for n in per_frame.values() if n > 1) < 0.02 * len(per_frame)


def test_config_camera_with_entry_and_exit_lines_counts_six_and_six():
    result = replay(str(VIDEO), "--config", "configs/demo-mall.yaml", "--camera", "cam-entrance-1",
                    "--models-dir", str(MODELS))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["entries"], summary["exits"]) == (6, 6)


def test_a_missing_model_is_a_clear_error(tmp_path):
    result = replay(str(VIDEO), "--line", "0,420,768,420", "--models-dir", str(tmp_path))
    assert result.returncode == 1
    assert "yolox_nano.onnx not found in" in result.stderr and "gateway models fetch yolox_nano" in result.stderr


def test_a_corrupt_model_is_a_clear_error(tmp_path):
    (tmp_path / "yolox_nano.onnx").write_bytes(b"\x08\x01garbage" * 1000)
    result = replay(str(VIDEO), "--line", "0,420,768,420", "--models-dir", str(tmp_path))
    assert result.returncode == 1
    assert "yolox_nano" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_line_argument_is_refused():
    result = replay(str(VIDEO), "--line", "0,420,768")
    assert result.returncode == 2 and "X1,Y1,X2,Y2" in result.stderr
