"""Loyalty points on the spot: sales and door openings earn points on the gateway, uplink or not.

- `rules`: `PointsConfig` (the `points:` config section) and `compute_purchase_points`, pure.
- `ledger`: `PointsLedger`, the entries (idempotent by key) and the synced balances, in SQLite.
- `service`: `PointsService`, on the event bus (`sale.captured`, `door.opened`) and `points.sync`.

Dependencies run one way: service -> ledger, rules; ledger -> gateway.commands (its error class).
"""

from .ledger import (Entry, PointsLedger, PointsSync, PointsSyncError, Recorded, SyncedMember, door_key,
                     parse_points_sync, refund_key, sale_key)
from .rules import Campaign, DateRange, DoorOpenRule, PointsConfig, TimeOfDay, compute_purchase_points
from .service import DOOR_EVENT, SALE_EVENT, PointsService, Sale

__all__ = [
    "Campaign", "DOOR_EVENT", "DateRange", "DoorOpenRule", "Entry", "PointsConfig", "PointsLedger",
    "PointsService", "PointsSync", "PointsSyncError", "Recorded", "SALE_EVENT", "Sale", "SyncedMember",
    "TimeOfDay", "compute_purchase_points", "door_key", "parse_points_sync", "refund_key", "sale_key",
]
