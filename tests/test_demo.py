"""The README's main command: `gateway demo` runs a whole simulated site and stops cleanly."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_a_site_end_to_end_and_stops(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "20", "--api-port", "0",
         "--data-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    final = [line for line in result.stdout.splitlines() if line.startswith("final:")]
    assert final, result.stdout
    numbers = dict(re.findall(r"(produced|stored|delivered|backlog)\s+(\d+)", final[0]))
    assert int(numbers["stored"]) > 5
    assert int(numbers["delivered"]) == int(numbers["stored"])  # everything stored reached the platform
    assert int(numbers["backlog"]) == 0
    online, total = map(int, re.search(r"devices online (\d+)/(\d+)", final[0]).groups())
    # Two car parks, the entrance camera, the staff entrance's reader bus, the staff face gate's reader
    # bus and camera, the lounge's face terminal, two tills and a member-code scanner.
    assert total == 10
    # The cameras play ../shared/data (always there in CI); without it, they are rightly offline.
    shared = ROOT.parent / "shared" / "data"
    assert online == 10 - (not (shared / "video").exists()) - (not (shared / "faces").exists())
    opened, by_face, denied = map(int, re.search(r"doors opened (\d+) \(by face (\d+)\) denied (\d+)",
                                                 final[0]).groups())
    assert opened + denied >= 1  # a card was swiped at the staff entrance and decided
    assert by_face >= 1  # a face opened a door: the lounge terminal's, or the staff gate's by the gateway
    sales, awarded = map(int, re.search(r"sales (\d+) points \+(\d+)", final[0]).groups())
    assert sales >= 1 and awarded >= 1  # tills printed receipts, and members earned points
    if (shared / "faces").exists():  # the gate camera's staff were recognised by the gateway itself
        with sqlite3.connect(tmp_path / "access.db") as db:
            gate = db.execute("SELECT count(*) FROM access_log WHERE door = 'staff-face-gate' AND method = 'face' "
                              "AND granted = 1").fetchone()[0]
        assert gate >= 1
    assert "Traceback" not in result.stderr
