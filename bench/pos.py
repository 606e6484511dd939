"""Benchmark of POS sales capture.

    .venv/bin/python bench/pos.py [--receipts 5000] [--sales 200] [--quick]

Receipts of about 1 KB as a Chinese mall till prints them (gateway.pos.escpos_builder): a small
raster logo (GS v 0), mixed Chinese (GB18030, in Chinese mode) and English lines, a QR code
(GS ( k) and a cut, every receipt with its own number, items and amounts. One core, one thread.

Prints:
  (a) parse: receipts split and decoded per second (EscPosStream fed 4 KB chunks, as a capture
      driver reads a socket)
  (b) parse + extract: the same, then the fields read with the built-in templates (zh, then en),
      checked against the amounts the receipts were built with         target >= 2,000 receipts/s
  (c) receipt to `points.awarded`, through the real chain in one process: a member code scanned on a
      VirtualScanner (pty) -> the real barcode_scanner driver -> `pos.member_scan`; then a VirtualTill
      (pty) prints a sale receipt (GB18030, logo, QR, cut) -> the real pos_serial driver (SerialPump
      thread, EscPosStream) -> internal `pos.receipt` on the real EventBus -> the real SalesService
      (template extraction, de-duplication in pos.db, attribution to the scanned member) ->
      `sale.captured` -> the real PointsService (PointsLedger) -> `points.awarded`. Both SQLite files
      are real files in a temporary directory on disk, WAL with synchronous=FULL (an fsync per commit).
      Time runs from the till writing the receipt's last bytes (the cut, GS V 1) to the pty until a
      bus subscriber sees `points.awarded`; the receipt's body is on the line first, as on a real
      serial line where the cut comes last. Split: cut written -> `pos.receipt` on the bus,
      `pos.receipt` -> `sale.captured`, `sale.captured` -> `points.awarded`. p50/p95/max
      (200 receipts, 50 with --quick)                                   target p95 <= 50 ms
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import sqlite3
import sys
import tempfile
import threading
import time
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.pos.escpos import EscPosStream
from gateway.pos.escpos_builder import build_receipt, raster_logo
from gateway.pos.fields import extract

TARGET = 2000.0
TARGET_POINTS_P95_MS = 50.0
TILL, SCANNER, STORE = "till-1", "scanner-1", "store-l1-023"
MEMBERS = 20
ITEMS = [("拿铁 Latte (大杯)", "32.00"), ("美式 Americano", "26.00"), ("蓝莓麦芬 Muffin", "18.00"),
         ("矿泉水 Water 550ml", "4.00"), ("三明治 Sandwich", "28.50"), ("可颂 Croissant", "15.00")]


def make_receipts(count: int, seed: int = 7) -> tuple[bytes, list[Decimal]]:
    """`count` receipts of about 1 KB in one capture, and the amount each is worth."""
    rng = random.Random(seed)
    out = bytearray()
    amounts = []
    for k in range(count):
        picks = [rng.choice(ITEMS) for _ in range(rng.randint(3, 6))]
        total = sum(Decimal(price) for _, price in picks)
        lines = ["星巴克 STARBUCKS 万达广场店", "Wanda Plaza, Shop L1-023",
                 f"单号 No.: S{20240305000000 + k}", f"时间 Time: 2024-03-05 {10 + k % 10}:{k % 60:02d}:00",
                 "-" * 32]
        lines += [f"{name:<20}x1 {price:>8}" for name, price in picks]
        lines += ["-" * 32, f"合计 Total: {total:>18}", f"实收 Paid: {total:>19}", "找零 Change:              0.00",
                  "谢谢惠顾 Thank you, see you soon!", "会员热线 Member hotline 400-820-1234"]
        out += build_receipt(lines, "gb18030", logo=False, qr=f"https://example.cn/e/{k:08d}")
        amounts.append(total)
    # a small logo (GS v 0, 24 bytes x 16 lines) in every receipt: splice it after each ESC @
    logo = b"\x1ba\x01" + raster_logo(24, 16) + b"\x1ba\x00"
    return bytes(out).replace(b"\x1b@", b"\x1b@" + logo), amounts


def bench_parse(data: bytes, chunk: int = 4096) -> tuple[float, list]:
    stream = EscPosStream(encoding="gb18030")
    t0 = time.perf_counter()
    receipts = []
    for k in range(0, len(data), chunk):
        receipts += stream.feed(data[k:k + chunk], now=0.0)
    receipts += stream.flush()
    return time.perf_counter() - t0, receipts


def bench_parse_extract(data: bytes, amounts: list[Decimal], chunk: int = 4096) -> float:
    t0 = time.perf_counter()
    stream = EscPosStream(encoding="gb18030")
    parsed = []
    for k in range(0, len(data), chunk):
        for receipt in stream.feed(data[k:k + chunk], now=0.0):
            parsed.append(extract(receipt.text))
    for receipt in stream.flush():
        parsed.append(extract(receipt.text))
    elapsed = time.perf_counter() - t0
    got = [p.amount if p else None for p in parsed]
    if got != amounts:
        bad = sum(1 for a, b in zip(got, amounts) if a != b) + abs(len(got) - len(amounts))
        raise SystemExit(f"parse + extract read {bad} of {len(amounts)} receipts wrong")
    return elapsed


# ----------------------------------------------------------------- (c) receipt -> points.awarded


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, linear between closest ranks (as numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):6.2f} ms  p95 {pct(values, 95):6.2f} ms  max {max(values):6.2f} ms"


class SalesRig:
    """The event bus, the sales and points services on an asyncio loop in a thread; the real pos_serial
    and barcode_scanner drivers on that loop, their ports the pseudo-terminals of a VirtualTill and a
    VirtualScanner; a bus subscriber noting when each event of the chain is on the bus."""

    def __init__(self, tmp: Path):
        from drivers.barcode_scanner import BarcodeScannerDriver, BarcodeScannerSettings
        from drivers.pos_serial import PosSerialDriver, PosSerialSettings
        from gateway.bus import EventBus
        from gateway.frames import FrameHub
        from gateway.health import DeviceState, HealthRegistry
        from gateway.points import (
            PointsConfig,
            PointsLedger,
            PointsService,
            parse_points_sync,
        )
        from gateway.pos.sales import SalesService, SalesStore
        from gateway.supervisor import DriverContextImpl
        from simulator.till import VirtualScanner, VirtualTill

        self.seen: dict[str, list[tuple[float, object]]] = {
            t: [] for t in ("pos.member_scan", "pos.receipt", "sale.captured", "sale.unparsed", "points.awarded")}
        self.till = VirtualTill(seed=11, lang="zh").start()
        self.scanner = VirtualScanner().start()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True).start()
        self.bus = EventBus()
        self.health = HealthRegistry()
        self.health.add(TILL, "pos_serial")  # as the supervisor does before starting a driver
        self.health.add(SCANNER, "barcode_scanner")
        frames = FrameHub()

        self.ledger = PointsLedger(tmp / "points.db", "full")
        self.ledger.apply_sync(parse_points_sync({"included_through": 0, "members": [
            {"member_id": f"M-{i:04d}", "balance": 0, "tier": "standard", "codes": [member_code(i)]}
            for i in range(MEMBERS)]}))
        self.points = PointsService(self.bus, self.ledger, PointsConfig(enabled=True), "bench-site", "gw-1",
                                    "Asia/Shanghai")
        self.sales_store = SalesStore(tmp / "pos.db")  # WAL, synchronous=FULL (its own pragmas)
        self.sales = SalesService(self.bus, self.sales_store, "bench-site", [], 120.0, "Asia/Shanghai",
                                  member_for_code=self.ledger.member_for_code)
        # Subscribed before the services, so it notes each event before they handle it.
        self.bus.subscribe("bench-timing", self._note, list(self.seen))
        self.points.subscribe()
        self.bus.subscribe("sales", self.sales.on_receipt, ["pos.receipt"])
        self.bus.subscribe("sales-members", self.sales.on_member_seen, ["pos.member_scan", "member.identified"])
        self.run(self.bus.start())

        till_settings = PosSerialSettings(id=TILL, kind="pos_serial", port=self.till.port, store=STORE)
        scanner_settings = BarcodeScannerSettings(id=SCANNER, kind="barcode_scanner", port=self.scanner.port,
                                                  till=TILL)
        self.till_driver = PosSerialDriver(till_settings, DriverContextImpl(TILL, self.bus, self.health, frames))
        self.scanner_driver = BarcodeScannerDriver(scanner_settings,
                                                   DriverContextImpl(SCANNER, self.bus, self.health, frames))
        self.tasks = [asyncio.run_coroutine_threadsafe(d.run(), self.loop)
                      for d in (self.till_driver, self.scanner_driver)]
        deadline = time.monotonic() + 10
        while not all((h := self.health.get(d)) is not None and h.state == DeviceState.ONLINE
                      for d in (TILL, SCANNER)):
            if time.monotonic() > deadline:
                raise RuntimeError("the till and scanner drivers did not come online")
            time.sleep(0.01)
        while self.till_driver.capture is None or not self.till_driver.capture._taps:
            time.sleep(0.01)
        self.tap = next(iter(self.till_driver.capture._taps))

    def _note(self, event) -> None:
        self.seen[event.type].append((time.perf_counter(), event))

    def run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def wait(self, event_type: str, count: int, timeout: float = 5.0) -> tuple[float, object]:
        deadline = time.monotonic() + timeout
        seen = self.seen[event_type]
        while len(seen) < count:
            if self.seen["sale.unparsed"]:
                raise RuntimeError("a receipt could not be read: " + self.seen["sale.unparsed"][-1][1].data["text"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"no {event_type} within {timeout} s")
            time.sleep(0.0002)
        return seen[count - 1]

    def scan(self, member: int) -> None:
        """A member code on the scanner, and wait until the sales service knows who is at the till."""
        before = len(self.seen["pos.member_scan"])
        self.scanner.scan(member_code(member))
        self.wait("pos.member_scan", before + 1)
        deadline = time.monotonic() + 5
        while not self.sales._seen_members.get(TILL):
            if time.monotonic() > deadline:
                raise RuntimeError("the sales service did not take the member scan")
            time.sleep(0.0002)

    def sale(self) -> dict:
        """One receipt printed: the body on the line first, then the cut; the chain's timings in ms."""
        counts = {t: len(v) for t, v in self.seen.items()}
        receipt = self.till.sale(send=False)  # zh, GB18030, logo, QR, partial cut (GS V 1) last
        body, cut = receipt.data[:-3], receipt.data[-3:]
        assert cut == b"\x1dV\x01", cut
        received = self.tap.received
        self.till.line.write(body)
        deadline = time.monotonic() + 5
        while self.tap.received < received + len(body):  # the body has reached the driver (as at 19200 baud)
            if time.monotonic() > deadline:
                raise RuntimeError("the receipt's body did not reach the driver")
            time.sleep(0.0002)
        time.sleep(0.002)
        t_cut = time.perf_counter()
        self.till.line.write(cut)
        t_points, awarded = self.wait("points.awarded", counts["points.awarded"] + 1)
        t_receipt, _ = self.seen["pos.receipt"][counts["pos.receipt"]]
        t_sale, sale = self.seen["sale.captured"][counts["sale.captured"]]
        if len(self.seen["pos.receipt"]) != counts["pos.receipt"] + 1:
            raise RuntimeError("one receipt printed, several pos.receipt events")
        if sale.data["receipt_no"] != receipt.receipt_no or Decimal(sale.data["amount"]) != receipt.amount:
            raise RuntimeError(f"receipt {receipt.receipt_no} {receipt.amount} read as {sale.data}")
        expected_points = int(receipt.amount.to_integral_value(rounding=ROUND_DOWN))
        if awarded.data["receipt_no"] != receipt.receipt_no or awarded.data["points"] != expected_points:
            raise RuntimeError(f"receipt {receipt.receipt_no} awarded {awarded.data}")
        return {"member": awarded.data["member_id"], "total": (t_points - t_cut) * 1000,
                "to_receipt": (t_receipt - t_cut) * 1000, "to_sale": (t_sale - t_receipt) * 1000,
                "to_points": (t_points - t_sale) * 1000}

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        time.sleep(0.3)
        self.run(self.bus.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.till.stop()
        self.scanner.stop()
        self.sales_store.close()
        self.ledger.close()


def member_code(i: int) -> str:
    return f"8860{i:09d}"


def bench_points(count: int, warmup: int = 5) -> dict:
    rng = random.Random(3)
    with tempfile.TemporaryDirectory(prefix="pos-bench-") as tmp:
        rig = SalesRig(Path(tmp))
        try:
            results = []
            for k in range(warmup + count):
                member = rng.randrange(MEMBERS)
                rig.scan(member)
                time.sleep(0.005 + 0.01 * rng.random())
                timing = rig.sale()
                if timing["member"] != f"M-{member:04d}":
                    raise RuntimeError(f"sale credited to {timing['member']}, scanned M-{member:04d}")
                if k >= warmup:
                    results.append(timing)
                time.sleep(0.01 + 0.02 * rng.random())
            awarded = rig.points.awarded
            size = sum(len(r.data) for r in rig.till.receipts) / len(rig.till.receipts)
        finally:
            rig.close()
    return {key: [r[key] for r in results] for key in ("total", "to_receipt", "to_sale", "to_points")} | {
        "awarded": awarded, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=5000)
    parser.add_argument("--sales", type=int, default=200, help="receipts through the chain in (c)")
    parser.add_argument("--quick", action="store_true", help="1,000 receipts, one round; 50 in (c)")
    args = parser.parse_args()
    count = 1000 if args.quick else args.receipts
    sales = 50 if args.quick else args.sales
    logging.basicConfig(level=logging.WARNING)
    rounds = 1 if args.quick else 3
    data, amounts = make_receipts(count)
    print(f"{count} receipts, {len(data) / count:.0f} bytes each on average "
          f"(GS v 0 logo, GB18030 + English lines, GS ( k QR, cut)")

    best = min(bench_parse(data)[0] for _ in range(rounds))
    _, receipts = bench_parse(data)
    assert len(receipts) == count, len(receipts)
    print(f"(a) parse:           {count / best:10,.0f} receipts/s  ({len(data) / best / 1e6:.1f} MB/s)")

    best = min(bench_parse_extract(data, amounts) for _ in range(rounds))
    rate = count / best
    verdict = "met" if rate >= TARGET else "NOT met"
    print(f"(b) parse + extract: {rate:10,.0f} receipts/s  target >= {TARGET:,.0f}/s: {verdict}")

    t = bench_points(sales)
    p95 = pct(t["total"], 95)
    verdict = "met" if p95 <= TARGET_POINTS_P95_MS else "NOT met"
    print(f"(c) receipt to points.awarded ({sales} receipts of {t['size']:.0f} bytes, each after a member scan; "
          f"pty -> pos_serial -> SalesService -> PointsService, SQLite WAL synchronous=FULL on "
          f"{os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version})")
    print(f"      total (cut written -> points.awarded on the bus) {summary(t['total'])}"
          f"   target p95 <= {TARGET_POINTS_P95_MS:.0f} ms: {verdict}")
    print(f"      cut written -> pos.receipt on the bus            {summary(t['to_receipt'])}")
    print(f"      pos.receipt -> sale.captured                     {summary(t['to_sale'])}")
    print(f"      sale.captured -> points.awarded                  {summary(t['to_points'])}")


if __name__ == "__main__":
    main()
