"""The uplink's own supervision: a network loop that dies or stops turning is replaced."""

from __future__ import annotations

import threading
import time

from gateway.config import UplinkConfig
from gateway.events import Event
from gateway.outbox import Outbox
from gateway.uplink import Uplink


def make_uplink(outbox: Outbox, port: int) -> Uplink:
    config = UplinkConfig(host="127.0.0.1", port=port, keepalive=2, reconnect_min=0.1, reconnect_max=0.5)
    uplink = Uplink(config, site_id="s1", gateway_id="g1", outbox=outbox, status=dict, watchdog_interval=0.1)
    uplink.stall_after = 1.0
    return uplink


def test_a_crashed_loop_is_restarted_and_delivery_goes_on(tmp_path, mosquitto, platform, monkeypatch, caplog):
    outbox = Outbox(tmp_path / "o.db", site_id="s1", gateway_id="g1").open()
    real_pending = outbox.pending_after
    calls = {"n": 0}

    def failing_once(seq, limit):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated bug in the loop")
        return real_pending(seq, limit)

    monkeypatch.setattr(outbox, "pending_after", failing_once)
    uplink = make_uplink(outbox, mosquitto.port)
    events = [Event("visit.entry", "cam-1", {"i": i}) for i in range(30)]
    outbox.accept(events)
    uplink.start()
    try:
        assert platform.wait_for(lambda: platform.count(type="visit.entry") == 30, timeout=20)
        assert calls["n"] >= 2
        assert uplink._generation >= 2
        assert any("network loop died; starting a new one" in r.getMessage() for r in caplog.records)
    finally:
        uplink.stop()
        outbox.close()


def test_a_stalled_loop_is_replaced(tmp_path, mosquitto, platform, monkeypatch, caplog):
    outbox = Outbox(tmp_path / "o.db", site_id="s1", gateway_id="g1").open()
    real_pending = outbox.pending_after
    release = threading.Event()
    stalled = {"n": 0}

    def stalling_once(seq, limit):
        if stalled["n"] == 0:
            stalled["n"] += 1
            release.wait(5)  # the loop stops turning, as if stuck in a call that never returns
        return real_pending(seq, limit)

    monkeypatch.setattr(outbox, "pending_after", stalling_once)
    uplink = make_uplink(outbox, mosquitto.port)
    outbox.accept([Event("visit.entry", "cam-1", {"i": i}) for i in range(10)])
    uplink.start()
    try:
        assert platform.wait_for(lambda: platform.count(type="visit.entry") == 10, timeout=20)
        assert uplink._generation >= 2  # a second loop did the work
        assert any("network loop stopped turning" in r.getMessage() for r in caplog.records)
    finally:
        release.set()
        uplink.stop()
        outbox.close()


def test_a_refused_login_is_retried_with_backoff_not_in_a_tight_loop(tmp_path):
    from simulator.brokers import MosquittoBroker, make_password_file

    make_password_file(tmp_path / "passwords", "gateway", "right")
    with MosquittoBroker(password_file=str(tmp_path / "passwords")) as broker:
        outbox = Outbox(tmp_path / "o.db", site_id="s1", gateway_id="g1").open()
        config = UplinkConfig(host="127.0.0.1", port=broker.port, username="gateway", password="wrong",
                              reconnect_min=0.2, reconnect_max=1.0)
        uplink = Uplink(config, site_id="s1", gateway_id="g1", outbox=outbox, status=dict)
        outbox.accept([Event("access.granted", "door-1", {"door": "D1"})])
        uplink.start()
        try:
            time.sleep(3)
            # Backoff 0.2, 0.4, 0.8, 1, 1 s: a handful of attempts, not hundreds.
            assert 2 <= uplink.stats.connect_attempts <= 8
            assert "refused" in uplink.stats.last_error
            assert uplink.stats.connects == 0
            assert outbox.stats().backlog_events == 1  # kept for when the password is fixed
        finally:
            uplink.stop()
            outbox.close()
