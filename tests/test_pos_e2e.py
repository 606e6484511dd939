"""A till end to end, in a real gateway process: a virtual till prints ESC/POS receipts into the
serial tap (passed through to its printer), a member code is scanned first, and the platform gets
the sale and the points; a reprint and a refund follow; with the broker down the points are still
awarded on the spot and go up later."""

from __future__ import annotations

import sqlite3
import time

import pytest

from simulator.brokers import free_port
from simulator.process import GatewayProcess, write_config
from simulator.till import VirtualPrinter, VirtualScanner, VirtualTill

TOKEN = "test-token-0123456789"


@pytest.fixture
def till():
    devices = VirtualTill(seed=5, lang="zh").start(), VirtualPrinter().start(), VirtualScanner().start()
    yield devices
    for device in devices:
        device.stop()


def test_a_till_sale_earns_points_once_and_a_refund_takes_them_back(tmp_path, mosquitto, platform, till):
    virtual_till, printer, scanner = till
    api_port = free_port()
    devices = [{"id": "till-s101", "kind": "pos_serial", "port": virtual_till.port, "printer_port": printer.port,
                "store": "S101", "idle_timeout": "1s"},
               {"id": "scanner-s101", "kind": "barcode_scanner", "port": scanner.port, "till": "till-s101"}]
    config = write_config(tmp_path / "gw.yaml", site_id="s1", gateway_id="g1", broker_port=mosquitto.port,
                          api_port=api_port, db_path=tmp_path / "gw.db", token=TOKEN, devices=devices,
                          extra={"timezone": "Asia/Shanghai",
                                 "points": {"enabled": True, "base": {"default": 1, "food": 2},
                                            "stores": {"S101": "food"}, "tiers": {"standard": 1, "gold": 1.5}}})
    gateway = GatewayProcess(config, api_port).start()
    try:
        assert platform.wait_for(lambda: all(d["state"] == "online" for d in gateway.health()["devices"]),
                                 timeout=30), gateway.health()
        ack = platform.wait_ack(platform.send_command("s1", "g1", "points.sync", {
            "members": [{"member_id": "M-1", "balance": 1000, "tier": "gold", "codes": ["QR-M1"]}],
            "included_through": 0}))
        assert ack["ok"] is True, ack

        scanner.scan("QR-M1")
        time.sleep(0.3)  # the scan comes before the receipt, as at a real till
        sale = virtual_till.sale()
        assert platform.wait_for(lambda: platform.count(type="points.awarded") == 1, timeout=30), gateway.log_tail()
        [captured] = [e["data"] for e in platform.events(type="sale.captured")]
        assert captured["receipt_no"] == sale.receipt_no and captured["amount"] == f"{sale.amount:.2f}"
        assert captured["member_id"] == "M-1" and captured["category"] == "food"
        [award] = [e["data"] for e in platform.events(type="points.awarded")]
        expected = int(sale.amount * 2 * 3 // 2)  # food 2/CNY x gold 1.5, rounded down
        assert award["points"] == expected and award["balance"] == 1000 + expected
        assert printer.received.endswith(sale.data)  # the printer printed it too

        # A reprint of the same receipt is no sale; a refund takes the points back.
        virtual_till.reprint()
        scanner.scan("QR-M1")
        time.sleep(0.3)
        virtual_till.refund()
        assert platform.wait_for(lambda: platform.count(type="points.reversed") == 1, timeout=30), gateway.log_tail()
        assert platform.count(type="sale.captured") == 2 and platform.count(type="points.awarded") == 1
        assert [e["data"]["points"] for e in platform.events(type="points.reversed")] == [expected]

        # The broker goes down: the next sale still earns its points at once, kept in the ledger.
        mosquitto.stop()
        scanner.scan("QR-M1")
        time.sleep(0.3)
        offline = virtual_till.sale()
        ledger = tmp_path / "points.db"

        def awarded_offline() -> bool:
            with sqlite3.connect(ledger) as db:
                return db.execute("SELECT count(*) FROM points_entries WHERE receipt_no = ?",
                                  (offline.receipt_no,)).fetchone()[0] == 1

        assert platform.wait_for(awarded_offline, timeout=30), gateway.log_tail()
        assert gateway.health()["backlog"]["events"] >= 2  # the sale and its points wait to go up
    finally:
        gateway.kill()
