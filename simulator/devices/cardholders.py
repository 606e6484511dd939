"""People swiping cards at a virtual OSDP reader: mostly known staff cards, now and then an unknown one."""

from __future__ import annotations

from gateway.access.wiegand import encode_h10301

from ..osdp_reader import VirtualOsdpReader
from .base import VirtualDevice

FACILITY = 21
STAFF_CARDS = [1001, 1002, 1003, 1004, 1005]
UNKNOWN_CARDS = [4040, 5050]


def site_access_sync(doors: list) -> dict:
    """The access.sync snapshot the platform stand-in sends in the demo, for the configured doors:
    five staff (cards; three also enrolled faces, whose face credential is their person id) who may
    use every staff door, and lounge members (face credentials = their member numbers on the lounge
    terminal) who may use the doors of the `lounge` devices."""
    from .face_visitors import LOUNGE_MEMBERS, STAFF_FACES

    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    windows = [{"day": d, "start": "00:00", "end": "24:00"} for d in days]
    staff = [f"staff-{card}" for card in STAFF_CARDS]
    credentials = [{"kind": "card", "value": f"h10301:{FACILITY}:{card}", "person_id": f"staff-{card}"}
                   for card in STAFF_CARDS]
    credentials += [{"kind": "face", "value": person, "person_id": person} for person in STAFF_FACES]
    credentials += [{"kind": "face", "value": member, "person_id": member} for member in LOUNGE_MEMBERS]
    rules = []
    for door in doors:
        group = "members" if "lounge" in door.device else "staff"
        rules.append({"rule_id": f"{group}-{door.id}", "door_id": door.id, "group": group, "windows": windows,
                      "methods": ["card", "pin", "qr", "face"]})
    return {"version": 1, "mode": "snapshot",
            "persons": [{"person_id": p, "groups": ["staff"]} for p in staff]
                       + [{"person_id": m, "groups": ["members"]} for m in LOUNGE_MEMBERS],
            "credentials": credentials, "rules": rules}


class CardHolders(VirtualDevice):
    kind = "osdp"

    def __init__(self, device_id: str, reader: VirtualOsdpReader, interval: float = 4.0, seed: int | None = None):
        super().__init__(device_id, interval, seed)
        self.reader = reader
        self.swipes = 0

    def step(self) -> None:
        card = self.random.choice(UNKNOWN_CARDS) if self.random.random() < 0.2 else self.random.choice(STAFF_CARDS)
        bits, data = encode_h10301(FACILITY, card)
        if self.reader.swipe(data.hex(), bits):
            self.swipes += 1
