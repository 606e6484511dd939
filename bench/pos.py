"""Benchmark of POS sales capture.

    .venv/bin/python bench/pos.py [--receipts 5000] [--quick]

Receipts of about 1 KB as a Chinese mall till prints them (gateway.pos.escpos_builder): a small
raster logo (GS v 0), mixed Chinese (GB18030, in Chinese mode) and English lines, a QR code
(GS ( k) and a cut, every receipt with its own number, items and amounts. One core, one thread.

Prints:
  (a) parse: receipts split and decoded per second (EscPosStream fed 4 KB chunks, as a capture
      driver reads a socket)
  (b) parse + extract: the same, then the fields read with the built-in templates (zh, then en),
      checked against the amounts the receipts were built with         target >= 2,000 receipts/s
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.pos.escpos import EscPosStream
from gateway.pos.escpos_builder import build_receipt, raster_logo
from gateway.pos.fields import extract

TARGET = 2000.0
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="1,000 receipts, one round")
    args = parser.parse_args()
    count = 1000 if args.quick else args.receipts
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


if __name__ == "__main__":
    main()
