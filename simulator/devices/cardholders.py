"""People swiping cards at a virtual OSDP reader: mostly known staff cards, now and then an unknown one."""

from __future__ import annotations

from gateway.access.wiegand import encode_h10301

from ..osdp_reader import VirtualOsdpReader
from .base import VirtualDevice

FACILITY = 21
STAFF_CARDS = [1001, 1002, 1003, 1004, 1005]
UNKNOWN_CARDS = [4040, 5050]


def staff_access_sync(door_id: str) -> dict:
    """The access.sync snapshot the platform stand-in sends in the demo: five staff, one door."""
    days = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    return {
        "version": 1, "mode": "snapshot",
        "persons": [{"person_id": f"staff-{card}", "groups": ["staff"]} for card in STAFF_CARDS],
        "credentials": [{"kind": "card", "value": f"h10301:{FACILITY}:{card}", "person_id": f"staff-{card}"}
                        for card in STAFF_CARDS],
        "rules": [{"rule_id": "staff-entrance", "door_id": door_id, "group": "staff",
                   "windows": [{"day": d, "start": "00:00", "end": "24:00"} for d in days]}],
    }


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
