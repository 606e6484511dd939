"""Benchmark of the event path: outbox commits, end-to-end delivery to mosquitto, backlog drain, RSS.

    .venv/bin/python bench/uplink.py [--events 200000] [--backlog 1000000]

Prints:
  (a) events/s accepted into the durable outbox (fsync on): from a driver thread through the event bus
      (the real path), and Outbox.submit alone with one and 100 events per submit, against a baseline
      of one commit per event
  (b) events/s delivered end to end to mosquitto at QoS 1 (counted by a subscriber in another process)
  (c) seconds to drain a backlog of --backlog events after an outage
  (d) peak RSS of the process of each phase (outbox + uplink + the producer), the worst of them
Targets on the 2-core reference machine: (a) >= 20,000/s, (b) >= 10,000/s, (c) <= 120 s, (d) <= 150 MB.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

# As on a deployed gateway: pandas is not installed there (only the bench extra brings it, for
# motmetrics), and sqlite-utils imports it whenever it can, adding about 50 MB to every process.
sys.modules.setdefault("pandas", None)
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from isolated import peak_rss_mb, run_isolated  # noqa: E402

from gateway.config import UplinkConfig  # noqa: E402
from gateway.events import Event, envelope_json  # noqa: E402
from gateway.outbox import Outbox  # noqa: E402
from gateway.uplink import Uplink  # noqa: E402
from simulator.brokers import MosquittoBroker  # noqa: E402

SITE, GW = "bench", "gw1"


def make_events(n: int, start: int = 0) -> list[Event]:
    return [Event("visit.entry", "cam-entrance-1", {"line": "L1", "track": start + i, "direction": "in"})
            for i in range(n)]




# ----------------------------------------------------------------------------- (a) outbox commits

def submit_all(outbox: Outbox, n: int, per_submit: int, window: int = 20_000) -> None:
    """Submit n events, at most `window` uncommitted at a time (a producer does not hoard memory)."""
    pending: list = []
    in_flight = 0
    for i in range(0, n, per_submit):
        pending.append(outbox.submit(make_events(min(per_submit, n - i), i)))
        in_flight += per_submit
        if in_flight >= window:
            for f in pending:
                f.result()
            pending, in_flight = [], 0
    for f in pending:
        f.result()


def phase_driver_path(tmp: Path, n: int) -> dict:
    """Events/s from a driver's emit (in its own thread) through the bus to commit: the real path."""
    import asyncio
    import threading

    from gateway.app import Gateway
    from gateway.config import parse_config

    logging.getLogger("gateway").setLevel(logging.ERROR)  # the dead uplink port is on purpose
    config = parse_config(f"site_id: {SITE}\ngateway_id: {GW}\napi: {{enabled: false, token: 0123456789abcdef}}\n"
                          f"storage: {{path: {tmp / 'driver.db'}}}\nuplink: {{port: 1}}\nlog_level: error\n")
    gateway = Gateway(config)
    result: dict = {}

    def driver() -> None:  # a camera or serial thread emitting as fast as it can
        for i in range(n):
            gateway.bus.publish(Event("visit.entry", "cam-entrance-1", {"line": "L1", "track": i, "direction": "in"}))

    async def scenario() -> None:
        task = asyncio.create_task(gateway.run())
        await gateway.running.wait()
        start = time.perf_counter()
        thread = threading.Thread(target=driver)
        thread.start()
        while gateway.outbox.stats().counters.get("accepted", 0) < n:
            await asyncio.sleep(0.005)
        result["rate"] = n / (time.perf_counter() - start)
        thread.join()
        gateway.request_stop()
        await task

    asyncio.run(scenario())
    return {**result, "rss_mb": peak_rss_mb()}


def phase_outbox(tmp: Path, n: int) -> dict:
    """Events/s with one submit per event (as the bus recorder does), and the naive baseline."""
    with Outbox(tmp / "a.db", site_id=SITE, gateway_id=GW, synchronous="full") as outbox:
        start = time.perf_counter()
        submit_all(outbox, n, per_submit=1)
        rate = n / (time.perf_counter() - start)
    with Outbox(tmp / "a100.db", site_id=SITE, gateway_id=GW, synchronous="full") as outbox:
        start = time.perf_counter()
        submit_all(outbox, n, per_submit=100)  # as the bus recorder and /v1/ingest hand them over
        rate_batched = n / (time.perf_counter() - start)

    # Baseline: what a straightforward implementation does, a commit (and fsync) per event.
    conn = sqlite3.connect(tmp / "baseline.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE outbox(seq INTEGER PRIMARY KEY, event_id TEXT, body TEXT)")
    m = min(n, 3000)
    start = time.perf_counter()
    for seq, event in enumerate(make_events(m), 1):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO outbox VALUES (?, ?, ?)",
                     (seq, event.event_id, envelope_json(event, site_id=SITE, gateway_id=GW, seq=seq)))
        conn.execute("COMMIT")
    baseline = m / (time.perf_counter() - start)
    conn.close()
    return {"rate": rate, "rate_batched": rate_batched, "baseline": baseline, "rss_mb": peak_rss_mb()}


# ------------------------------------------------------------------------- counting subscriber

def count_subscriber(port: int, ready, counter, done_at) -> None:
    """Runs in its own process: counts events arriving on the uplink topics."""
    import paho.mqtt.client as mqtt

    def on_connect(client, userdata, flags, rc, props):
        client.subscribe(f"site/{SITE}/gw/{GW}/up/#", qos=1)

    def on_subscribe(client, userdata, mid, rcs, props):
        ready.set()

    def on_message(client, userdata, msg):
        if msg.topic.endswith("/up/ack"):
            return
        with counter.get_lock():
            counter.value += len(json.loads(msg.payload)["events"])
            done_at.value = time.time()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-counter", protocol=mqtt.MQTTv5)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect("127.0.0.1", port)
    client.loop_forever()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


# -------------------------------------------------------------------- (b) and (c) with mosquitto

def phase_live(tmp: Path, port: int, n: int, counter, done_at) -> dict:
    """(b) a producer commits events while the uplink sends them; rate seen by the subscriber."""
    with Outbox(tmp / "b.db", site_id=SITE, gateway_id=GW) as outbox:
        uplink = Uplink(UplinkConfig(host="127.0.0.1", port=port), site_id=SITE, gateway_id=GW, outbox=outbox,
                        status=dict)
        uplink.start()
        if not wait_until(lambda: uplink.connected, 10):
            raise RuntimeError("uplink did not connect")
        start = time.time()
        submit_all(outbox, n, per_submit=100)
        if not wait_until(lambda: counter.value >= n, 300):
            raise RuntimeError(f"only {counter.value} of {n} events arrived")
        rate = n / (done_at.value - start)
        uplink.stop()
    return {"rate": rate, "rss_mb": peak_rss_mb()}


def phase_drain(tmp: Path, port: int, backlog: int, counter, done_at) -> dict:
    """(c) an outage left `backlog` events behind; the uplink comes back and drains them."""
    with Outbox(tmp / "c.db", site_id=SITE, gateway_id=GW, max_bytes=2 * 1024**3) as outbox:
        fill_start = time.perf_counter()
        submit_all(outbox, backlog, per_submit=5000)
        fill_seconds = time.perf_counter() - fill_start
        assert outbox.stats().backlog_events == backlog
        uplink = Uplink(UplinkConfig(host="127.0.0.1", port=port), site_id=SITE, gateway_id=GW, outbox=outbox,
                        status=dict)
        start = time.perf_counter()
        uplink.start()
        if not wait_until(lambda: outbox.stats().backlog_events == 0, 600):
            raise RuntimeError(f"backlog not drained: {outbox.stats().backlog_events} left")
        drain_seconds = time.perf_counter() - start
        if not wait_until(lambda: counter.value >= backlog, 60):
            raise RuntimeError(f"subscriber saw only {counter.value} of {backlog}")
        uplink.stop()
    return {"drain_s": drain_seconds, "fill_s": fill_seconds, "rss_mb": peak_rss_mb()}




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")

    with tempfile.TemporaryDirectory(prefix="bench-uplink-") as d, MosquittoBroker() as broker:
        tmp = Path(d)
        driver = run_isolated(ctx, phase_driver_path, tmp, args.events)
        a = run_isolated(ctx, phase_outbox, tmp, args.events)
        print(f"(a) accepted into the outbox, fsync on: {driver['rate']:,.0f} events/s from a driver thread through "
              f"the bus (target >= 20,000)\n    Outbox.submit alone: {a['rate']:,.0f}/s one event per submit, "
              f"{a['rate_batched']:,.0f}/s 100 per submit; baseline commit-per-event {a['baseline']:,.0f}/s "
              f"(x{driver['rate'] / a['baseline']:.1f} via the bus)", flush=True)

        ready, counter, done_at = ctx.Event(), ctx.Value("q", 0), ctx.Value("d", 0.0)
        subscriber = ctx.Process(target=count_subscriber, args=(broker.port, ready, counter, done_at), daemon=True)
        subscriber.start()
        if not ready.wait(20):
            raise RuntimeError("counting subscriber did not subscribe")
        b = run_isolated(ctx, phase_live, tmp, broker.port, args.events, counter, done_at)
        print(f"(b) end to end to mosquitto, QoS 1: {b['rate']:10,.0f} events/s   target >= 10,000", flush=True)
        with counter.get_lock():
            counter.value = 0
        c = run_isolated(ctx, phase_drain, tmp, broker.port, args.backlog, counter, done_at)
        print(f"(c) drain {args.backlog:,} backlog:   {c['drain_s']:10.1f} s ({args.backlog / c['drain_s']:,.0f} "
              f"events/s; filling it took {c['fill_s']:.1f} s)   target <= 120 s", flush=True)
        subscriber.terminate()
        phases = {"a-driver": driver, "a-outbox": a, "b": b, "c": c}
        print(f"(d) peak RSS, worst phase:          {max(p['rss_mb'] for p in phases.values()):10.1f} MB ("
              + ", ".join(f"{k} {p['rss_mb']:.0f}" for k, p in phases.items()) + " MB)   target <= 150 MB")


if __name__ == "__main__":
    main()
