"""The README's main command: `gateway demo` runs a whole simulated site and stops cleanly."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from simulator.browser import find_chromium
from simulator.demo_screens import DemoScreens

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_a_site_end_to_end_and_stops(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "30", "--api-port", "0",
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
    # bus and camera, the lounge's face terminal, two tills, a member-code scanner and an LED sign.
    assert total == 11
    # The cameras play ../shared/data (always there in CI); without it, they are rightly offline.
    shared = ROOT.parent / "shared" / "data"
    assert online == 11 - (not (shared / "video").exists()) - (not (shared / "faces").exists())
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
    # Screens: proof of play reached the platform (interim reports every 10 s in the demo config).
    plays, impressions, spots = map(int, re.search(r"ads played (\d+) \(impressions (\d+)\) gate spots (\d+)",
                                                   final[0]).groups())
    assert plays >= 2
    if (shared / "faces").exists():  # faces at the staff gate: its door opened, its screen played a spot
        assert spots >= 1  # and the gate's camera saw people watching it
        assert impressions >= 1
    with sqlite3.connect(tmp_path / "platform.db") as db:
        screens = {row[0] for row in db.execute("SELECT json_extract(data, '$.screen') FROM events "
                                                "WHERE type = 'ad.played'")}
    assert "atrium-1" in screens  # the atrium's player (the web player in Chromium, else a simulated one)
    sign = re.search(r"LED sign sign-lobby shows: '(.*)'", result.stdout)
    assert sign and sign.group(1).startswith(("Welcome! ", "B1 food court"))
    if find_chromium():  # the web player played the campaign: its screenshot shows the creative it named
        shot = re.search(r"web player atrium-1 showed (\S+): screenshot (\S+)", result.stdout)
        assert shot, result.stdout
        creative, path = shot.groups()
        colours = DemoScreens().colours
        assert creative in colours
        image = cv2.imread(path)
        background = np.mean(np.all(np.abs(image.astype(int) - colours[creative]) <= 30, axis=2))
        assert background > 0.6, f"the screenshot is not {creative}: mean BGR {image.mean(axis=(0, 1))}"
    assert "Traceback" not in result.stderr
