"""The sales service on a real bus: receipts from the tills become sales credited to the member at
the till, and points; unreadable receipts are kept and reported; reprints and repeats are not sales."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

from gateway.bus import EventBus
from gateway.events import Event
from gateway.points.ledger import PointsLedger
from gateway.points.rules import PointsConfig
from gateway.points.service import PointsService
from gateway.pos.escpos import parse_receipts
from gateway.pos.escpos_builder import build_receipt
from gateway.pos.sales import SALE_NAMESPACE, SalesService, SalesStore

SITE = "mall-1"


def receipt_lines(number: str, amount: str, refund: bool = False, reprint: bool = False) -> list[str]:
    lines = ["万象城 S101 美食店"]
    if refund:
        lines.append("*** 退货单 ***")
    if reprint:
        lines.append("重打小票")
    lines += [f"单号：{number}", "时间：2026-11-24 19:30:00", f"合计：{amount}", f"实收：{amount}", "谢谢惠顾"]
    return lines


def receipt_event(number: str, amount: str, till: str = "till-1", **flags) -> Event:
    raw = parse_receipts(build_receipt(receipt_lines(number, amount, **flags), qr="https://m.example/r"))[0]
    return Event("pos.receipt", till, {"till": till, "store": "S101", "template": None, "source": "serial",
                                       "text": raw.text, "sha256": raw.sha256, "size": len(raw.data),
                                       "ended_by": raw.ended_by}, internal=True)


def scan(code: str, till: str = "till-1") -> Event:
    return Event("pos.member_scan", "scanner-1", {"till": till, "code": code}, internal=True)


def run(tmp_path, events: list[Event | float], window: float = 60.0, points: bool = True):
    """The events in order (a float is a pause in seconds); what the sales and points services publish."""
    seen: list[Event] = []

    async def scenario():
        bus = EventBus()
        bus.subscribe("seen", seen.append, ["sale.captured", "sale.unparsed", "points.awarded", "points.reversed"])
        ledger = PointsLedger(tmp_path / "points.db")
        rules = PointsConfig(enabled=True, base={"default": 1, "food": 2}, stores={"S101": "food"})
        points_service = PointsService(bus, ledger, rules, SITE, "gw-1", "Asia/Shanghai")
        points_service.subscribe()
        store = SalesStore(tmp_path / "pos.db")
        sales = SalesService(bus, store, SITE, [], window, "Asia/Shanghai", ledger.member_for_code,
                             rules.stores.get)
        bus.subscribe("sales", sales.on_receipt, ["pos.receipt"])
        bus.subscribe("members", sales.on_member_seen, ["pos.member_scan", "member.identified"])
        await bus.start()
        await points_service.sync_command({"members": [{"member_id": "M-1", "balance": 0, "tier": "standard",
                                                        "codes": ["QR-M1"]},
                                                       {"member_id": "M-2", "balance": 0, "tier": "standard",
                                                        "codes": ["QR-M2"]}], "included_through": 0})
        for item in events:
            if isinstance(item, float):
                await asyncio.sleep(item)
            else:
                bus.publish(item)
                await asyncio.sleep(0.02)  # the scan reaches the sales service before the receipt
        await bus.stop()
        unparsed = store.unparsed()
        store.close()
        ledger.close()
        return sales, unparsed

    sales, unparsed = asyncio.run(scenario())
    return seen, sales, unparsed


def of_type(seen: list[Event], kind: str) -> list[dict]:
    return [e.data for e in seen if e.type == kind]


def test_a_receipt_after_a_member_scan_is_their_sale_and_earns_points(tmp_path):
    seen, sales, _ = run(tmp_path, [scan("QR-M1"), receipt_event("A-0001", "128.00")])
    [sale] = of_type(seen, "sale.captured")
    assert sale["receipt_no"] == "A-0001" and sale["amount"] == "128.00" and sale["member_id"] == "M-1"
    assert sale["store"] == "S101" and sale["category"] == "food" and sale["refund"] is False
    assert sale["time"].startswith("2026-11-24T19:30:00")
    [award] = of_type(seen, "points.awarded")
    assert award["member_id"] == "M-1" and award["points"] == 256 and award["receipt_no"] == "A-0001"


def test_reprints_and_repeats_are_one_sale_and_one_award(tmp_path):
    seen, sales, _ = run(tmp_path, [scan("QR-M1"), receipt_event("A-0002", "50.00"),
                                    receipt_event("A-0002", "50.00", reprint=True),
                                    receipt_event("A-0002", "50.00")])
    assert len(of_type(seen, "sale.captured")) == 1 and len(of_type(seen, "points.awarded")) == 1
    assert sales.counts["reprints"] == 1 and sales.counts["duplicates"] == 1
    sale_event = next(e for e in seen if e.type == "sale.captured")
    # The event id is the receipt's: a gateway that captured it again would send the same id.
    assert sale_event.event_id == str(uuid.uuid5(SALE_NAMESPACE, f"sale:{SITE}:S101:A-0002"))


def test_a_refund_takes_the_points_back(tmp_path):
    seen, _, _ = run(tmp_path, [scan("QR-M1"), receipt_event("A-0003", "80.00"),
                                scan("QR-M1"), receipt_event("R-0003", "80.00", refund=True)])
    sales = of_type(seen, "sale.captured")
    assert [s["refund"] for s in sales] == [False, True]
    assert of_type(seen, "points.awarded")[0]["points"] == 160
    assert of_type(seen, "points.reversed")[0]["points"] == 160


def test_no_attribution_with_two_members_none_or_an_old_scan(tmp_path):
    seen, _, _ = run(tmp_path, [scan("QR-M1"), scan("QR-M2"), receipt_event("A-0004", "10.00"),  # two members
                                receipt_event("A-0005", "10.00"),  # nobody scanned
                                scan("NOT-A-MEMBER"), receipt_event("A-0006", "10.00"),  # unknown code
                                scan("QR-M1"), 0.3, receipt_event("A-0007", "10.00"),  # scanned too long ago
                                scan("QR-M1", till="till-2"), receipt_event("A-0008", "10.00")],  # another till
                          window=0.2)
    assert [s["member_id"] for s in of_type(seen, "sale.captured")] == [None] * 5
    assert of_type(seen, "points.awarded") == []


def test_a_member_recognised_by_the_till_camera_is_credited(tmp_path):
    identified = Event("member.identified", "cam-till-1", {"till": "till-1", "member_id": "M-2", "score": 0.7},
                       internal=True)
    seen, _, _ = run(tmp_path, [identified, receipt_event("A-0009", "20.00")])
    assert of_type(seen, "sale.captured")[0]["member_id"] == "M-2"


def test_an_unreadable_receipt_is_kept_and_reported_once(tmp_path):
    text = "WELCOME\nthank you for shopping\n"
    garbage = Event("pos.receipt", "till-1", {"till": "till-1", "store": "S101", "template": None, "source": "tcp",
                                               "text": text, "sha256": hashlib.sha256(b"x").hexdigest(), "size": 40,
                                               "ended_by": "cut"}, internal=True)
    seen, _, unparsed = run(tmp_path, [garbage, garbage])
    [report] = of_type(seen, "sale.unparsed")
    assert report["text"] == text and report["sha256"] == hashlib.sha256(b"x").hexdigest()
    assert of_type(seen, "sale.captured") == []
    assert [(u["sha256"], u["text"]) for u in unparsed] == [(hashlib.sha256(b"x").hexdigest(), text)]


def test_webhook_fields_and_member_code(tmp_path):
    webhook = Event("pos.receipt", "hook-1", {
        "till": "hook-1", "store": "S101", "template": None, "source": "webhook", "sha256": "0" * 64,
        "fields": {"receipt_no": "W-1", "time": "2026-11-24T12:00:00+08:00", "paid": "99.50", "total": "99.50",
                   "amount": "99.50", "refund": False, "reprint": False, "currency": "CNY",
                   "original_receipt_no": None},
        "member_code": "QR-M2"}, internal=True)
    seen, _, _ = run(tmp_path, [webhook, webhook])
    [sale] = of_type(seen, "sale.captured")
    assert sale["member_id"] == "M-2" and sale["amount"] == "99.50"
    assert of_type(seen, "points.awarded")[0]["points"] == 199


def test_real_sale_and_points_events_validate_against_their_schemas(tmp_path):
    import json

    from gateway.events import envelope_json
    from test_docs import assert_valid_event

    garbage = Event("pos.receipt", "till-1", {"till": "till-1", "store": "S101", "template": None, "source": "tcp",
                                               "text": "hello", "sha256": hashlib.sha256(b"y").hexdigest(),
                                               "size": 5, "ended_by": "idle"}, internal=True)
    seen, _, _ = run(tmp_path, [scan("QR-M1"), receipt_event("A-0010", "30.00"), garbage,
                                scan("QR-M1"), receipt_event("R-0010", "30.00", refund=True)])
    assert {e.type for e in seen} == {"sale.captured", "sale.unparsed", "points.awarded", "points.reversed"}
    for seq, event in enumerate(seen, 1):
        assert_valid_event(json.loads(envelope_json(event, site_id=SITE, gateway_id="gw-1", seq=seq)))
