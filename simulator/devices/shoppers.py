"""Shoppers at the demo's tills: most show their member code before paying, now and then a receipt
is reprinted or a purchase refunded. The members and their codes are what the platform stand-in
sends with `points.sync`."""

from __future__ import annotations

import time

from ..till import VirtualScanner, VirtualTill
from .base import VirtualDevice

MEMBERS = [("M-201", "gold"), ("M-202", "standard"), ("M-203", "silver"), ("M-204", "standard")]


def member_code(member_id: str) -> str:
    return f"QR-{member_id}"


def members_sync() -> dict:
    """The points.sync the platform stand-in sends in the demo: balances, tiers and member codes."""
    return {"members": [{"member_id": member, "balance": 500, "tier": tier, "codes": [member_code(member)]}
                        for member, tier in MEMBERS],
            "included_through": 0}


class Shoppers(VirtualDevice):
    kind = "till"

    def __init__(self, device_id: str, till: VirtualTill, scanner: VirtualScanner | None, interval: float = 4.0,
                 seed: int | None = None):
        super().__init__(device_id, interval, seed)
        self.till, self.scanner = till, scanner

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.08 and self.till.receipts:
            self.till.reprint()  # the customer wants a copy: not a new sale
            return
        if roll < 0.14 and any(not r.refund for r in self.till.receipts):
            self._show_member_code()
            self.till.refund()
            return
        self._show_member_code()
        self.till.sale()

    def _show_member_code(self) -> None:
        if self.scanner is not None and self.random.random() < 0.75:
            self.scanner.scan(member_code(self.random.choice(MEMBERS)[0]))
            time.sleep(0.2)  # the receipt prints after the scan
