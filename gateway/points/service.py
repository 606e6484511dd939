"""The points service: sales and door openings on the bus become ledger entries and points events.

- `sale.captured` (from the sales service) with a member: a purchase earns points by the rules
  (`rules.compute_purchase_points`, campaigns in the site's local time at the sale's time); a refund
  takes back what the refunded amount earned (`PointsLedger.reverse_refund`). Published:
  `points.awarded` / `points.reversed`, from the till's device id.
- `door.opened` (internal, from the access service) with a person: the first opening of each listed
  door in a local day earns `door_open.points`, up to `door_open.daily_cap` a day.
- `points.sync` (downlink): the platform's balances, tiers and member codes.

Each decision is one ledger transaction in a worker thread (`asyncio.to_thread`); the event goes on
the bus right after the commit. A repeat (same receipt, same refund, same door and day) writes and
publishes nothing.

Event data (`points.awarded`, `points.reversed`; stream `points`):
`{"entry_id", "seq", "member_id", "points" (> 0; for a reversal the points taken back), "reason":
"purchase" | "door_open" | "refund", "store", "receipt_no", "door", "rule", "balance"}`, and for a
reversal `"original_receipt_no"` (the sale it reverses). `seq` is the ledger's entry number: the
platform answers with the highest seq it has counted as `included_through` in `points.sync`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..bus import EventBus
from ..events import Event
from .ledger import PointsLedger, Recorded, parse_points_sync, refund_key, sale_key
from .rules import PointsConfig, compute_purchase_points

log = logging.getLogger("gateway.points")

SALE_EVENT = "sale.captured"
DOOR_EVENT = "door.opened"


class Sale(BaseModel):
    """The part of a `sale.captured` event the points need (other keys are ignored)."""

    model_config = ConfigDict(extra="ignore")

    store: str = Field(..., min_length=1)
    till: str | None = None
    receipt_no: str = Field(..., min_length=1)
    time: str | None = None
    amount: Decimal = Field(..., gt=0)
    currency: str = "CNY"
    refund: bool = False
    member_id: str | None = None
    category: str | None = None
    original_receipt_no: str | None = None


class PointsService:
    def __init__(self, bus: EventBus, ledger: PointsLedger, rules: PointsConfig, site_id: str, gateway_id: str,
                 timezone: str):
        self.bus = bus
        self.ledger = ledger
        self.site_id = site_id
        self.gateway_id = gateway_id
        self.reconfigure(rules, timezone)
        self.awarded = 0
        self.reversed = 0
        self.repeats = 0  # a receipt, refund or door opening already in the ledger
        self.ignored = 0  # no member, below min_amount, another currency, no original, malformed

    def reconfigure(self, rules: PointsConfig, timezone: str) -> None:
        """A reload: the rules and the site's time zone apply to the next event."""
        self.rules = rules
        self.tz = ZoneInfo(timezone)

    def subscribe(self) -> None:
        """Subscribe `on_sale` and `on_door_opened` on the bus (once)."""
        self.bus.subscribe("points", self.on_event, [SALE_EVENT, DOOR_EVENT])

    async def on_event(self, event: Event) -> None:
        if event.type == SALE_EVENT:
            await self.on_sale(event)
        elif event.type == DOOR_EVENT:
            await self.on_door_opened(event)

    # ------------------------------------------------------------------------------ helpers

    def _local(self, text: str | None, fallback: str) -> datetime:
        """The site's local time of a sale (its own time, else the event's); a time without a zone is local."""
        for candidate in (text, fallback):
            if not candidate:
                continue
            try:
                moment = datetime.fromisoformat(candidate.replace("Z", "+00:00").replace("z", "+00:00"))
            except ValueError:
                log.warning("points: sale time %r is not ISO-8601; the event's time is used", candidate)
                continue
            if moment.tzinfo is None:
                return moment.replace(tzinfo=self.tz)
            return moment.astimezone(self.tz)
        return datetime.now(timezone.utc).astimezone(self.tz)

    def _publish(self, event_type: str, device_id: str, recorded: Recorded, points: int) -> None:
        entry = recorded.entry
        data: dict[str, Any] = {
            "entry_id": entry.entry_id, "seq": entry.seq, "member_id": entry.member_id, "points": points,
            "reason": entry.reason, "store": entry.store, "receipt_no": entry.receipt_no, "door": entry.door,
            "rule": entry.rule, "balance": recorded.balance}
        if event_type == "points.reversed":
            data["original_receipt_no"] = recorded.original.receipt_no if recorded.original else None
        self.bus.publish(Event(event_type, device_id, data))

    # ------------------------------------------------------------------------------ sales

    async def on_sale(self, event: Event) -> None:
        """Bus subscriber for `sale.captured`."""
        rules = self.rules
        if not rules.enabled:
            return
        try:
            sale = Sale.model_validate(event.data)
        except ValidationError as exc:
            self.ignored += 1
            log.warning("points: %s %s ignored: %s", event.type, event.event_id, exc.errors()[0]["msg"])
            return
        if sale.currency.upper() != rules.currency:
            self.ignored += 1
            log.info("points: receipt %s/%s in %s earns nothing (points are in %s)", sale.store, sale.receipt_no,
                     sale.currency, rules.currency)
            return
        local_time = self._local(sale.time, event.ts)
        if sale.refund:
            await self._refund(event, sale, local_time.date())
        else:
            await self._purchase(event, sale, rules, local_time)

    async def _purchase(self, event: Event, sale: Sale, rules: PointsConfig, local_time: datetime) -> None:
        if not sale.member_id:
            self.ignored += 1
            return
        if sale.amount < rules.min_amount:
            self.ignored += 1
            log.debug("points: receipt %s/%s of %s is below min_amount %s", sale.store, sale.receipt_no,
                      sale.amount, rules.min_amount)
            return
        category = rules.category_of(sale.store, sale.category)
        key = sale_key(self.site_id, sale.store, sale.receipt_no)
        member = sale.member_id

        def record() -> Recorded | None:
            points, rule = compute_purchase_points(rules, sale.amount, category, self.ledger.tier_of(member),
                                                   local_time)
            if points <= 0:
                existing = self.ledger.entry(key)  # e.g. a reprint after the rules changed
                return None if existing is None else Recorded(existing, False, self.ledger.balance(existing.member_id))
            return self.ledger.award(key, member, points, "purchase", day=local_time.date().isoformat(),
                                     rule=rule, store=sale.store, receipt_no=sale.receipt_no, amount=sale.amount)

        recorded = await asyncio.to_thread(record)
        if recorded is None:
            self.ignored += 1
            log.debug("points: receipt %s/%s earns no points", sale.store, sale.receipt_no)
        elif not recorded.created:
            self.repeats += 1
            log.info("points: receipt %s/%s already awarded (entry %s); not again", sale.store, sale.receipt_no,
                     recorded.entry.entry_id)
        else:
            self.awarded += 1
            self._publish("points.awarded", event.device_id, recorded, recorded.entry.points)

    async def _refund(self, event: Event, sale: Sale, day: date) -> None:
        original_key = (sale_key(self.site_id, sale.store, sale.original_receipt_no)
                        if sale.original_receipt_no else None)
        if original_key is None and not sale.member_id:
            self.ignored += 1
            log.info("points: refund %s/%s names no sale and no member: nothing reversed", sale.store,
                     sale.receipt_no)
            return
        recorded = await asyncio.to_thread(
            self.ledger.reverse_refund, refund_key(self.site_id, sale.store, sale.receipt_no), store=sale.store,
            receipt_no=sale.receipt_no, amount=sale.amount, day=day.isoformat(), original_key=original_key,
            member_id=sale.member_id)
        if recorded is None:
            self.ignored += 1
            log.info("points: refund %s/%s: no awarded sale found (%s): nothing reversed", sale.store,
                     sale.receipt_no, f"receipt {sale.original_receipt_no}" if original_key
                     else f"member {sale.member_id}, amount {sale.amount}")
        elif not recorded.created:
            self.repeats += 1
            log.info("points: refund %s/%s already reversed; not again", sale.store, sale.receipt_no)
        elif recorded.entry.points < 0:
            self.reversed += 1
            self._publish("points.reversed", event.device_id, recorded, -recorded.entry.points)

    # ------------------------------------------------------------------------------ doors

    async def on_door_opened(self, event: Event) -> None:
        """Bus subscriber for the internal `door.opened`."""
        rules = self.rules
        door_rule = rules.door_open
        if not rules.enabled or door_rule is None:
            return
        person, door = event.data.get("person_id"), event.data.get("door")
        if not person or not door or (door_rule.doors is not None and door not in door_rule.doors):
            return
        day = self._local(None, event.ts).date().isoformat()
        rule = f"door {door} first opening on {day}: {door_rule.points}"
        recorded = await asyncio.to_thread(self.ledger.award_door, str(person), str(door), day, door_rule.points,
                                           door_rule.cap, rule)
        if recorded is None:
            self.repeats += 1
            return
        self.awarded += 1
        self._publish("points.awarded", event.device_id, recorded, recorded.entry.points)

    # ------------------------------------------------------------------------------ balances

    async def sync_command(self, args: dict) -> dict:
        """The `points.sync` downlink: `{"members": n, "included_through": k, "pending_entries": m}`."""
        sync = parse_points_sync(args)  # PointsSyncError (a CommandError) when malformed
        return await asyncio.to_thread(self.ledger.apply_sync, sync)

    def balance(self, member_id: str) -> int:
        """The member's balance here: synced + pending (a quick read; blocking)."""
        return self.ledger.balance(member_id)

    def stats(self) -> dict[str, int]:
        return {"awarded": self.awarded, "reversed": self.reversed, "repeats": self.repeats, "ignored": self.ignored}
