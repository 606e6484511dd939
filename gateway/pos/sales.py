"""The sales service: receipts captured at the tills become sales, credited to the member at the till.

Capture drivers (`pos_serial`, `pos_tcp`, `pos_webhook`) put an internal `pos.receipt` on the bus
for every receipt: the decoded text of an ESC/POS receipt, or the fields a till's webhook sent. For
each, this service

1. reads the fields with the till's template (`pos.templates`, else the built-in Chinese and
   English ones); a receipt that cannot be read is kept (its hash and text, in `pos.db`) and
   reported as `sale.unparsed` for review, never dropped;
2. drops reprints (a reprinted receipt is not a second sale) and receipts already seen (the same
   store and receipt number, a refund counted apart from its sale), so a re-sent receipt or a
   duplicated webhook is one sale;
3. attributes the sale to a member: the one member whose code was scanned at that till (or, where
   the till has a camera, whose face was recognised there) within `pos.attribution_window` before
   the receipt; two candidates or none means no member;
4. publishes `sale.captured`, which the points service turns into points.

The event id of a sale is derived from (site, store, receipt number, refund), so even a sale sent
twice from two gateway lives is one sale for the platform.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bus import EventBus
from ..events import Event, utc_timestamp
from ..sqlite import SQLiteStore
from .fields import BUILTIN_TEMPLATES, ParsedReceipt, ReceiptTemplate, extract

log = logging.getLogger("gateway.sales")

SALE_NAMESPACE = uuid.UUID("6f0f1c52-8d0e-4a53-9a57-0c6a3c1e9b21")  # for sale event ids (uuid5)
MAX_TEXT_UP = 4096  # characters of an unparsed receipt's text sent up for review
MAX_SCANS_PER_TILL = 32


class SalesStore(SQLiteStore):
    """`pos.db`: the sales seen (for de-duplication) and the receipts that could not be read."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self._conn.execute("CREATE TABLE IF NOT EXISTS sales_seen (key TEXT PRIMARY KEY, at TEXT NOT NULL)")
        self._conn.execute("CREATE TABLE IF NOT EXISTS unparsed_receipts (sha256 TEXT NOT NULL, till TEXT NOT NULL, "
                           "store TEXT NOT NULL, text TEXT NOT NULL, at TEXT NOT NULL, "
                           "PRIMARY KEY (sha256, till))")

    def seen(self, key: str) -> bool:
        with self._lock:
            return self._conn.execute("SELECT 1 FROM sales_seen WHERE key = ?", (key,)).fetchone() is not None

    def mark_seen(self, key: str) -> None:
        with self._lock:
            self._conn.execute("INSERT OR IGNORE INTO sales_seen (key, at) VALUES (?, ?)", (key, utc_timestamp()))

    def keep_unparsed(self, sha256: str, till: str, store: str, text: str) -> bool:
        """Keep a receipt that could not be read; False if the same one was kept already."""
        with self._lock:
            return self._conn.execute("INSERT OR IGNORE INTO unparsed_receipts (sha256, till, store, text, at) "
                                      "VALUES (?, ?, ?, ?, ?)", (sha256, till, store, text, utc_timestamp())).rowcount == 1

    def unparsed(self, limit: int = 100) -> list[dict]:
        with self._lock:
            rows = self._conn.execute("SELECT sha256, till, store, text, at FROM unparsed_receipts ORDER BY at DESC "
                                      "LIMIT ?", (limit,)).fetchall()
        return [dict(zip(("sha256", "till", "store", "text", "at"), row)) for row in rows]


class SalesService:
    def __init__(self, bus: EventBus, store: SalesStore, site_id: str, templates: list[ReceiptTemplate],
                 attribution_window: float, timezone: str, member_for_code: Callable[[str], str | None],
                 category_of: Callable[[str], str | None] = lambda store: None):
        self.bus = bus
        self.store = store
        self.site_id = site_id
        self.member_for_code = member_for_code
        self.category_of = category_of
        self.reconfigure(templates, attribution_window, timezone)
        self._seen_members: dict[str, deque[tuple[float, str]]] = {}  # till -> (monotonic time, member)
        self.counts = {"sales": 0, "unparsed": 0, "reprints": 0, "duplicates": 0}

    def reconfigure(self, templates: list[ReceiptTemplate], attribution_window: float, timezone: str) -> None:
        self.templates = {t.name: t for t in templates}
        self.attribution_window = attribution_window
        self.timezone = timezone

    # -------------------------------------------------------------------------- who is at the till

    async def on_member_seen(self, event: Event) -> None:
        """`pos.member_scan` {till, code}: a member code scanned at a till (a scanner);
        `member.identified` {till, member_id}: a member recognised by a till's camera."""
        till = str(event.data.get("till"))
        if event.type == "member.identified":
            member = event.data.get("member_id")
        else:
            code = str(event.data.get("code", "")).strip()
            member = self.member_for_code(code) if code else None
            if member is None:
                log.info("till %s: the code scanned is no known member (ignored)", till)
        if member:
            self._member_seen(till, str(member))

    def _member_seen(self, till: str, member: str) -> None:
        seen = self._seen_members.setdefault(till, deque(maxlen=MAX_SCANS_PER_TILL))
        seen.append((time.monotonic(), member))

    def _member_at(self, till: str) -> str | None:
        """The one member seen at the till within the window (consumed), else None."""
        seen = self._seen_members.get(till)
        if not seen:
            return None
        horizon = time.monotonic() - self.attribution_window
        recent = {member for at, member in seen if at >= horizon}
        seen.clear()  # a scan credits one receipt; stale ones go too
        if len(recent) == 1:
            return recent.pop()
        if recent:
            log.info("till %s: %d members seen before the receipt: not attributed", till, len(recent))
        return None

    # ------------------------------------------------------------------------------- receipts

    async def on_receipt(self, event: Event) -> None:
        """`pos.receipt` from a capture driver."""
        data = event.data
        till, store = str(data.get("till") or event.device_id), str(data.get("store", ""))
        if "fields" in data:
            parsed = _from_fields(data["fields"])
        else:
            parsed = self._extract(str(data.get("text", "")), data.get("template"))
        if parsed is None:
            await self._unparsed(till, store, data)
            return
        if parsed.reprint:
            self.counts["reprints"] += 1
            log.info("till %s: receipt %s is a reprint (not a new sale)", till, parsed.receipt_no)
            return
        kind = "refund" if parsed.refund else "sale"
        key = f"{kind}:{self.site_id}:{store}:{parsed.receipt_no}"
        if await asyncio.to_thread(self.store.seen, key):
            self.counts["duplicates"] += 1
            log.info("till %s: %s %s already captured", till, kind, parsed.receipt_no)
            return
        member = None
        code = data.get("member_code")
        if code:
            member = self.member_for_code(str(code))
        if member is None:
            member = self._member_at(till)
        self.counts["sales"] += 1
        self.bus.publish(Event("sale.captured", till, {
            "store": store, "till": till, "receipt_no": parsed.receipt_no, "time": parsed.time,
            "amount": str(parsed.amount), "paid": _text(parsed.paid), "total": _text(parsed.total),
            "currency": parsed.currency, "refund": parsed.refund,
            "original_receipt_no": parsed.original_receipt_no,
            "member_id": member, "category": self.category_of(store)},
            event_id=str(uuid.uuid5(SALE_NAMESPACE, key))))
        # Marked after publishing: should the gateway stop before the sale is committed, a till
        # that sends it again is not turned away (a sale sent twice is one: same event id, and the
        # points ledger's key).
        await asyncio.to_thread(self.store.mark_seen, key)

    def _extract(self, text: str, template_name: str | None) -> ParsedReceipt | None:
        if template_name:
            template = self.templates.get(template_name) or BUILTIN_TEMPLATES.get(template_name)
            if template is None:
                log.error("receipt template %r is not defined (pos.templates)", template_name)
                return None
            return extract(text, template, self.timezone)
        return extract(text, None, self.timezone)

    async def _unparsed(self, till: str, store: str, data: dict[str, Any]) -> None:
        sha256, text = str(data.get("sha256", "")), str(data.get("text", ""))
        if not await asyncio.to_thread(self.store.keep_unparsed, sha256, till, store, text):
            return  # the same unreadable receipt again (a re-sent job): reported once
        self.counts["unparsed"] += 1
        log.warning("till %s: a receipt could not be read (sha256 %s); kept for review", till, sha256[:12])
        self.bus.publish(Event("sale.unparsed", till, {
            "store": store, "till": till, "sha256": sha256, "size": data.get("size"),
            "text": text[:MAX_TEXT_UP], "truncated": len(text) > MAX_TEXT_UP}))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _from_fields(fields: dict[str, Any]) -> ParsedReceipt | None:
    """A webhook's fields (already validated by the driver) as a ParsedReceipt."""
    from decimal import Decimal, InvalidOperation

    try:
        amount = Decimal(str(fields["amount"]))
        return ParsedReceipt(
            receipt_no=str(fields["receipt_no"]), time=fields.get("time"),
            total=Decimal(str(fields["total"])) if fields.get("total") is not None else None,
            paid=Decimal(str(fields["paid"])) if fields.get("paid") is not None else None,
            amount=amount, refund=bool(fields.get("refund")), reprint=bool(fields.get("reprint")),
            currency=str(fields.get("currency") or "CNY"), text="",
            original_receipt_no=fields.get("original_receipt_no") or None)
    except (KeyError, InvalidOperation, TypeError, ValueError) as exc:
        log.warning("webhook receipt fields unusable: %s", exc)
        return None
