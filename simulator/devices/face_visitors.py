"""The demo's people with faces: staff enrolled (with consent) for the staff face gate, and lounge
members recognised by a Hikvision terminal, plus strangers at both.

- `enrol_commands()`: the `faces.enroll` commands the platform stand-in sends, one per staff member
  with a face: two photos of a celebrities_13 identity (../shared/data/faces) and a consent record.
- `gate_visitors()`: what the staff gate camera plays: *other* photos of the enrolled staff (the
  gate must recognise them from a new picture) and a stranger now and then.
- `LoungeMembers`: people at the members' lounge terminal; the terminal recognises most of them
  (it pushes their member number) and pushes a stranger event for the rest.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from pathlib import Path

import cv2

from ..face_terminals import VirtualHikvisionTerminal
from ..gate_camera import identity_photos, read_photo
from .base import VirtualDevice

# staff id -> the celebrities_13 identity who plays them (the staff ids of cardholders.STAFF_CARDS)
STAFF_FACES = {"staff-1001": "id00", "staff-1002": "id01", "staff-1003": "id02"}
STRANGERS = ("id05",)
ENROL_PHOTOS = 2
ENROL_SIDE = 640
LOUNGE_MEMBERS = ["M-201", "M-202", "M-203"]
NOTICE_VERSION = "demo-2026-11"


def enrolment_photo(path: Path) -> str:
    """A photo as the platform sends it: at most ENROL_SIDE pixels a side, JPEG, base64 (a command
    is at most 1 MiB, so a few photos must fit in one)."""
    image = read_photo(path)
    scale = ENROL_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"cannot encode {path}")
    return base64.b64encode(jpeg.tobytes()).decode()


def enrol_commands() -> list[dict]:
    photos = identity_photos()
    now = datetime.now(timezone.utc).isoformat()
    return [{"person_id": person,
             "images": [enrolment_photo(p) for p in photos[identity][:ENROL_PHOTOS]],
             "consent": {"person_id": person, "scope": ["access"], "notice_version": NOTICE_VERSION,
                         "given_at": now, "method": "kiosk"}}
            for person, identity in STAFF_FACES.items()]


def gate_visitors() -> list[Path]:
    photos = identity_photos()
    visitors = [photos[identity][ENROL_PHOTOS] for identity in STAFF_FACES.values()]
    visitors.insert(2, photos[STRANGERS[0]][0])
    return visitors


class LoungeMembers(VirtualDevice):
    kind = "hikvision_terminal"

    def __init__(self, device_id: str, terminal: VirtualHikvisionTerminal, interval: float = 5.0,
                 seed: int | None = None):
        super().__init__(device_id, interval, seed)
        self.terminal = terminal
        self.serial = 0

    def step(self) -> None:
        self.serial += 1
        member = None if self.random.random() < 0.2 else self.random.choice(LOUNGE_MEMBERS)
        # Real terminals send the snapshot picture along; the gateway discards it on arrival.
        self.terminal.push_face(member, serial=self.serial, multipart="form-data")
