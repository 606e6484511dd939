"""Tests for the simulator's brokers and platform stand-in, driven by plain paho clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone

import paho.mqtt.client as mqtt
import pytest

from simulator.brokers import EmbeddedBroker, MosquittoBroker, make_password_file
from simulator.platform import PlatformStandIn

BATCH_TOPIC = "site/s1/gw/g1/up/visit"


def envelope(seq: int, type: str = "visit.started", site_id: str = "s1", gateway_id: str = "g1", **data) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "type": type,
        "ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "site_id": site_id,
        "gateway_id": gateway_id,
        "device_id": "door-1",
        "seq": seq,
        "data": data or {"n": seq},
    }


def batch(*envelopes: dict) -> bytes:
    return json.dumps({"events": list(envelopes)}).encode()


def connect_client(host: str, port: int, protocol=mqtt.MQTTv5, **kwargs) -> mqtt.Client:
    """A paho client, connected, with its network loop running; reconnects by itself."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=protocol, **kwargs)
    client.reconnect_delay_set(0.2, 1)
    client.connect(host, port, keepalive=10)
    client.loop_start()
    return client


@pytest.fixture
def publisher(mosquitto):
    client = connect_client(mosquitto.host, mosquitto.port)
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: mqtt.Client, topic: str, payload: bytes, retain: bool = False) -> None:
    info = client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(timeout=10)
    assert info.is_published(), f"broker did not acknowledge publish on {topic}"


def test_duplicate_batch_is_stored_once_and_every_delivery_recorded(platform, publisher):
    events = [envelope(1), envelope(2), envelope(3)]
    publish(publisher, BATCH_TOPIC, batch(*events))
    publish(publisher, BATCH_TOPIC, batch(*events))

    assert platform.wait_for(lambda: platform.events_received == 6, timeout=10)
    assert platform.count() == 3
    assert platform.duplicate_deliveries() == 3
    assert platform.events() == events
    assert platform.event_ids() == {e["event_id"] for e in events}
    assert [d["seq"] for d in platform.deliveries_of(events[1]["event_id"])] == [2, 2]
    assert platform.messages_received == 2
    assert platform.rejects() == []


def test_event_filters(platform, publisher):
    publish(publisher, BATCH_TOPIC, batch(envelope(1, "access.granted"), envelope(2, "access.denied"), envelope(3, "visit.started")))
    publish(publisher, "site/s2/gw/g9/up/access", batch(envelope(1, "access.granted", site_id="s2", gateway_id="g9")))

    assert platform.wait_for_count(4, timeout=10) == 4
    assert platform.count(type="access.granted") == 2
    assert platform.count(type_prefix="access.") == 3
    assert platform.count(site_id="s2") == 1
    assert [e["type"] for e in platform.events(gateway_id="g1")] == ["access.granted", "access.denied", "visit.started"]


def test_malformed_payloads_are_rejected_and_standin_keeps_working(platform, publisher):
    publish(publisher, BATCH_TOPIC, b"not json")
    publish(publisher, BATCH_TOPIC, json.dumps({"events": 5}).encode())
    no_seq = envelope(1)
    del no_seq["seq"]
    wrong_site = envelope(2, site_id="elsewhere")
    good = envelope(3)
    publish(publisher, BATCH_TOPIC, batch(no_seq, wrong_site, good))

    assert platform.wait_for(lambda: len(platform.rejects()) == 4, timeout=10)
    reasons = [r["reason"] for r in platform.rejects()]
    assert reasons[0].startswith("bad JSON")
    assert reasons[1] == 'batch has no "events" list'
    assert "missing seq" in reasons[2]
    assert "elsewhere" in reasons[3]
    assert platform.rejects()[0]["payload_prefix"] == "not json"
    assert all(r["topic"] == BATCH_TOPIC for r in platform.rejects())
    # The good envelope of the partly bad batch is kept, and later batches still arrive.
    later = envelope(4)
    publish(publisher, BATCH_TOPIC, batch(later))
    assert platform.wait_for_count(2, timeout=10) == 2
    assert platform.event_ids() == {good["event_id"], later["event_id"]}


def test_ack_on_up_ack_is_an_ack_not_an_event(platform, publisher):
    ack = {"command_id": "cmd-1", "ok": False, "error": "door jammed", "result": {"tries": 2}}
    publish(publisher, "site/s1/gw/g1/up/ack", json.dumps(ack).encode())

    assert platform.wait_ack("cmd-1", timeout=10) == ack
    assert platform.acks() == [{**ack, "site_id": "s1", "gateway_id": "g1"}]
    assert platform.count() == 0
    assert platform.rejects() == []
    with pytest.raises(TimeoutError):
        platform.wait_ack("never-sent", timeout=0.3)


def test_retained_status_is_readable_now_and_by_a_later_subscriber(mosquitto, platform, publisher, tmp_path):
    publish(publisher, "site/s1/gw/g1/status", json.dumps({"state": "online", "version": "1.0"}).encode(), retain=True)
    assert platform.wait_for(lambda: platform.status("s1", "g1") is not None, timeout=10)
    assert platform.status("s1", "g1") == {"state": "online", "version": "1.0"}
    assert platform.status("s1", "other") is None

    with PlatformStandIn(mosquitto.host, mosquitto.port, tmp_path / "late.db", protocol="3.1.1") as late:
        assert late.wait_for(lambda: late.status("s1", "g1") is not None, timeout=10)
        assert late.status("s1", "g1")["state"] == "online"


def test_send_command_reaches_a_gateway_subscriber(mosquitto, platform):
    received: list[bytes] = []
    arrived = threading.Event()
    subscribed = threading.Event()

    gateway = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    gateway.on_subscribe = lambda *args: subscribed.set()
    gateway.on_message = lambda client, userdata, message: (received.append(message.payload), arrived.set())
    gateway.connect(mosquitto.host, mosquitto.port)
    gateway.loop_start()
    try:
        gateway.subscribe("site/s1/gw/g1/down/ping", qos=1)
        assert subscribed.wait(10)

        command_id = platform.send_command("s1", "g1", "ping", {"echo": "hi"})
        assert arrived.wait(10)
        assert json.loads(received[0]) == {"command_id": command_id, "args": {"echo": "hi"}}
        uuid.UUID(command_id)

        arrived.clear()
        platform.send_raw("s1", "g1", "ping", b"\x00garbage")
        assert arrived.wait(10)
        assert received[1] == b"\x00garbage"
        assert platform.send_command("s1", "g1", "ping", command_id="fixed") == "fixed"
    finally:
        gateway.disconnect()
        gateway.loop_stop()


def test_standin_reconnects_after_broker_restart(mosquitto, platform, publisher):
    first = envelope(1)
    publish(publisher, BATCH_TOPIC, batch(first))
    assert platform.wait_for_count(1, timeout=10) == 1

    subscriptions_before = platform.subscription_count
    mosquitto.restart()
    assert platform.wait_subscribed(after=subscriptions_before, timeout=15), mosquitto.log_tail()
    assert publisher.is_connected() or platform.wait_for(publisher.is_connected, timeout=15)

    second = envelope(2)
    publish(publisher, BATCH_TOPIC, batch(second))
    assert platform.wait_for_count(2, timeout=10) == 2
    assert platform.event_ids() == {first["event_id"], second["event_id"]}


def test_standin_with_mqtt_311_on_embedded_broker(tmp_path):
    with EmbeddedBroker() as broker, PlatformStandIn(broker.host, broker.port, tmp_path / "p.db", protocol="3.1.1") as platform:
        client = connect_client(broker.host, broker.port, protocol=mqtt.MQTTv311)
        try:
            event = envelope(7)
            publish(client, BATCH_TOPIC, batch(event))
            assert platform.wait_for_count(1, timeout=10) == 1
            assert platform.events() == [event]
        finally:
            client.disconnect()
            client.loop_stop()


def test_embedded_broker_relays_between_mqtt_311_clients():
    received: list[tuple[str, bytes]] = []
    arrived = threading.Event()
    subscribed = threading.Event()
    with EmbeddedBroker() as broker:
        subscriber = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        subscriber.on_subscribe = lambda *args: subscribed.set()
        subscriber.on_message = lambda client, userdata, message: (received.append((message.topic, message.payload)), arrived.set())
        subscriber.connect(broker.host, broker.port)
        subscriber.loop_start()
        publisher = connect_client(broker.host, broker.port, protocol=mqtt.MQTTv311)
        try:
            subscriber.subscribe("t/#", qos=1)
            assert subscribed.wait(10)
            publish(publisher, "t/x", b"hello")
            assert arrived.wait(10)
            assert received == [("t/x", b"hello")]
        finally:
            for client in (publisher, subscriber):
                client.disconnect()
                client.loop_stop()
    # stop() really closed the listener
    with pytest.raises(OSError):
        mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311).connect(broker.host, broker.port)


def test_password_protected_mosquitto(tmp_path):
    password_file = tmp_path / "passwords"
    make_password_file(password_file, "platform", "s3cret")
    with MosquittoBroker(password_file=password_file) as broker:
        with PlatformStandIn(broker.host, broker.port, tmp_path / "ok.db", username="platform", password="s3cret") as platform:
            assert platform.subscription_count == 1
        with pytest.raises(RuntimeError, match="refused"):
            PlatformStandIn(broker.host, broker.port, tmp_path / "anon.db").start()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_mosquitto(tmp_path):
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    tls = {"cafile": str(cert), "certfile": str(cert), "keyfile": str(key), "require_certificate": False}
    with MosquittoBroker(tls=tls) as broker:
        assert "require_certificate false" in broker.config_path.read_text()
        with PlatformStandIn(broker.host, broker.port, tmp_path / "p.db", tls={"cafile": str(cert)}) as platform:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            client.tls_set(ca_certs=str(cert))
            client.connect(broker.host, broker.port)
            client.loop_start()
            try:
                publish(client, BATCH_TOPIC, batch(envelope(1)))
                assert platform.wait_for_count(1, timeout=10) == 1
            finally:
                client.disconnect()
                client.loop_stop()


def test_mosquitto_start_failure_reports_the_log():
    # A second broker on a taken port must fail rather than mistake the first for itself.
    with MosquittoBroker() as first:
        second = MosquittoBroker(port=first.port)
        with pytest.raises(RuntimeError, match="already in use"):
            second.start()
        second.close()


def test_mosquitto_that_exits_at_start_reports_its_log(tmp_path):
    missing = str(tmp_path / "missing.pem")
    broker = MosquittoBroker(tls={"cafile": missing, "certfile": missing, "keyfile": missing})
    try:
        with pytest.raises(RuntimeError, match="exited with code") as failure:
            broker.start()
        assert "missing.pem" in str(failure.value)
    finally:
        broker.close()


def test_cli_prints_batches_and_stops_on_ctrl_c(mosquitto, publisher, tmp_path):
    db = tmp_path / "cli.db"
    cli = subprocess.Popen(
        [sys.executable, "-m", "simulator", "platform", "--host", mosquitto.host, "--port", str(mosquitto.port), "--db", str(db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
    )
    try:
        assert "listening" in cli.stdout.readline()
        publish(publisher, BATCH_TOPIC, batch(envelope(1), envelope(2)))
        assert cli.stdout.readline().strip() == "batch s1/g1: 2 new, 0 duplicate"
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=10) == 0, cli.stderr.read()
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_persistent_session_gets_events_published_while_away(protocol, tmp_path):
    """With a persistent session on a persistent broker, nothing is lost across a stand-in and broker restart."""
    db = tmp_path / "p.db"
    with MosquittoBroker(persistence=True) as broker:
        def standin() -> PlatformStandIn:
            return PlatformStandIn(broker.host, broker.port, db, protocol=protocol, client_id="platform-1", persistent_session=True)

        with standin():
            pass  # the broker now holds a session with our subscriptions
        broker.restart()
        client = connect_client(broker.host, broker.port)
        try:
            away = envelope(1)
            publish(client, BATCH_TOPIC, batch(away))
        finally:
            client.disconnect()
            client.loop_stop()
        with standin() as platform:
            assert platform.wait_for_count(1, timeout=10) == 1
            assert platform.event_ids() == {away["event_id"]}
