"""End to end: a real gateway process, a real mosquitto, the platform stand-in.

These are the guarantees of the core: every accepted event reaches the platform exactly once after
de-duplication, across broker outages and SIGKILLs of the gateway, with its seq never re-numbered.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
import uuid

import httpx
import pytest

from simulator.brokers import MosquittoBroker, free_port
from simulator.platform import PlatformStandIn
from simulator.process import GatewayProcess, write_config

TOKEN = "test-token-0123456789"
SITE, GW = "s1", "g1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def make_gateway(tmp_path, broker, *, uplink=None, devices=None, name="gw") -> GatewayProcess:
    api_port = free_port()
    config = write_config(tmp_path / f"{name}.yaml", site_id=SITE, gateway_id=GW, broker_port=broker.port,
                          api_port=api_port, db_path=tmp_path / f"{name}.db", token=TOKEN,
                          uplink={"keepalive": 2, "reconnect_min": 0.2, "reconnect_max": 1, **(uplink or {})},
                          devices=devices)
    return GatewayProcess(config, api_port)


def ingest_batch(gateway: GatewayProcess, events: list[dict], timeout: float = 5.0) -> httpx.Response:
    return httpx.post(gateway.api_url + "/v1/ingest", json={"events": events}, headers=AUTH, timeout=timeout)


def parking_events(n: int, device: str = "park-1") -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "type": "parking.entry", "device_id": device,
             "data": {"n": i, "text": "车位 B2-017"}} for i in range(n)]


@pytest.fixture
def gateway(tmp_path, mosquitto):
    gw = make_gateway(tmp_path, mosquitto).start()
    yield gw
    gw.kill()


def test_events_reach_the_platform_once_with_their_envelope(gateway, platform):
    sent = parking_events(120) + [{"type": "visit.entry", "device_id": "cam-1", "data": {"line": "L1"}}]
    for i in range(0, len(sent), 40):
        assert ingest_batch(gateway, sent[i:i + 40]).status_code == 202

    assert platform.wait_for(lambda: platform.count(type_prefix="parking") == 120
                             and platform.count(type="visit.entry") == 1, timeout=20)
    received = platform.events(type="parking.entry")
    assert [e["event_id"] for e in received] == [e["event_id"] for e in sent[:120]]  # seq order = ingest order
    first = received[0]
    assert (first["site_id"], first["gateway_id"], first["device_id"]) == (SITE, GW, "park-1")
    assert first["data"] == {"n": 0, "text": "车位 B2-017"}
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-11-22T07:45:25.123Z")
    assert uuid.UUID(platform.events(type="visit.entry")[0]["event_id"]).version == 7  # the gateway's own id
    seqs = [e["seq"] for e in platform.events()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert platform.rejects() == []

    status = platform.status(SITE, GW)
    assert status["state"] == "online" and "version" in status and "devices" in status
    assert gateway.health()["backlog"]["events"] == 0


def test_broker_outage_loses_nothing(tmp_path):
    broker = MosquittoBroker(persistence=True).start()
    platform = PlatformStandIn(broker.host, broker.port, tmp_path / "platform.db", client_id="platform-1",
                               persistent_session=True).start()
    gw = make_gateway(tmp_path, broker).start()
    try:
        before = parking_events(50)
        assert ingest_batch(gw, before).status_code == 202
        assert platform.wait_for(lambda: platform.count(type="parking.entry") == 50, timeout=20)

        broker.stop()
        during = parking_events(300)
        for i in range(0, 300, 50):  # accepted while the uplink is down
            assert ingest_batch(gw, during[i:i + 50]).status_code == 202
        health = gw.health()
        assert health["uplink"]["connected"] is False and health["status"] == "degraded"
        assert health["backlog"]["events"] >= 300
        time.sleep(1.5)  # reconnect attempts against a dead broker

        broker.start()
        expected = {e["event_id"] for e in before + during}
        assert platform.wait_for(lambda: platform.event_ids(type="parking.entry") == expected, timeout=30), (
            f"missing {len(expected - platform.event_ids(type='parking.entry'))} events\n{gw.log_tail()}")
        assert platform.wait_for(lambda: gw.health()["backlog"]["events"] == 0, timeout=10)
        assert gw.health()["uplink"]["connected"] is True
    finally:
        gw.kill()
        platform.stop()
        broker.close()


def test_sigkill_at_random_moments_loses_and_invents_nothing(tmp_path, mosquitto, platform):
    """Kill -9 the gateway 6 times while a local system keeps posting; every accepted event arrives once."""
    rng = random.Random(20261122)
    gw = make_gateway(tmp_path, mosquitto)
    submitted: list[str] = []  # event ids in the order the producer first sent them
    accepted: dict[str, int] = {}  # event id -> seq the gateway answered with
    stop = threading.Event()

    def producer() -> None:
        # A well-behaved local system: retries the same batch (same ids) until it gets a 202.
        while not stop.is_set():
            batch = parking_events(rng.randint(1, 25))
            submitted.extend(e["event_id"] for e in batch)
            while True:
                try:
                    response = ingest_batch(gw, batch, timeout=2)
                    if response.status_code == 202:
                        for result in response.json()["events"]:
                            seq = accepted.setdefault(result["event_id"], result["seq"])
                            assert seq == result["seq"], "a retried event came back with another seq"
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.02)

    gw.start()
    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    kills = 0
    try:
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 1.5))
            gw.kill()
            kills += 1
            time.sleep(rng.uniform(0.0, 0.3))
            gw.start()
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(30)
    assert kills >= 5
    assert not thread.is_alive()
    assert len(accepted) == len(set(submitted)) > 100

    ok = platform.wait_for(lambda: platform.event_ids(type="parking.entry") == set(accepted), timeout=60)
    received = platform.event_ids(type="parking.entry")
    assert ok, f"missing {len(set(accepted) - received)}, extra {len(received - set(accepted))}\n{gw.log_tail()}"
    # Never re-numbered: each delivery of an event (duplicates included) carries the seq it was accepted with.
    for event in platform.events(type="parking.entry"):
        assert event["seq"] == accepted[event["event_id"]]
        assert {d["seq"] for d in platform.deliveries_of(event["event_id"])} == {event["seq"]}
    # Strictly increasing in the order the producer handed them over, across all restarts.
    seqs = [accepted[event_id] for event_id in dict.fromkeys(submitted)]
    assert all(a < b for a, b in zip(seqs, seqs[1:]))
    gw.stop()
    with sqlite3.connect(tmp_path / "gw.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_last_will_marks_a_killed_gateway_offline(gateway, platform):
    assert platform.wait_for(lambda: (platform.status(SITE, GW) or {}).get("state") == "online", timeout=10)
    gateway.kill()
    assert platform.wait_for(lambda: platform.status(SITE, GW)["state"] == "offline", timeout=15)
    assert platform.status(SITE, GW)["reason"] == "connection lost"


def test_clean_stop_publishes_offline_status(gateway, platform):
    assert platform.wait_for(lambda: (platform.status(SITE, GW) or {}).get("state") == "online", timeout=10)
    assert gateway.stop() == 0
    assert platform.wait_for(lambda: platform.status(SITE, GW)["state"] == "offline", timeout=10)
    assert platform.status(SITE, GW)["reason"] == "stopped"


@pytest.mark.parametrize("command, payload, error_part", [
    ("ping", b"\xff\xfe not json", "not JSON"),
    ("ping", b"[1, 2, 3]", "JSON object"),
    ("ping", b'{"args": {}}', "command_id"),
    ("ping", b'{"command_id": "", "args": {}}', "command_id"),
    ("ping", b'{"command_id": "c1", "args": [1]}', "args"),
    ("self-destruct", b'{"command_id": "c2"}', "unknown command"),
    ("reload-config", b'{"command_id": "c3", "args": "x"}', "args"),
])
def test_malformed_downlinks_get_an_error_ack_and_no_crash(gateway, platform, command, payload, error_part):
    platform.send_raw(SITE, GW, command, payload)
    assert platform.wait_for(lambda: len(platform.acks()) >= 1, timeout=10)
    ack = platform.acks()[-1]
    assert ack["ok"] is False and error_part in ack["error"]
    command_id = platform.send_command(SITE, GW, "ping")  # still alive and answering
    assert platform.wait_ack(command_id)["ok"] is True
    assert gateway.alive


def test_ping_and_reload_config_commands(tmp_path, mosquitto, platform):
    devices = [{"id": "park-1", "kind": "http_ingest"}]
    gw = make_gateway(tmp_path, mosquitto, devices=devices).start()
    try:
        ack = platform.wait_ack(platform.send_command(SITE, GW, "ping"))
        assert ack["ok"] is True and ack["result"]["pong"] is True

        text = gw.config_path.read_text()
        gw.config_path.write_text(text.replace("devices:\n", "devices:\n- id: park-2\n  kind: http_ingest\n"))
        ack = platform.wait_ack(platform.send_command(SITE, GW, "reload-config"))
        assert ack["ok"] is True, ack
        assert ack["result"]["devices"]["started"] == ["park-2"]
        assert {d["device_id"] for d in gw.health()["devices"]} == {"park-1", "park-2"}

        gw.config_path.write_text(text.replace("devices:\n", "devices:\n- kind: http_ingest\n"))
        ack = platform.wait_ack(platform.send_command(SITE, GW, "reload-config"))
        assert ack["ok"] is False and "devices[0].id: field required" in ack["error"]
        assert {d["device_id"] for d in gw.health()["devices"]} == {"park-1", "park-2"}  # old config kept

        command_id = platform.send_command(SITE, GW, "ping", command_id="same-id")
        first = platform.wait_ack(command_id)
        platform.send_command(SITE, GW, "ping", command_id="same-id")  # QoS 1 redelivery
        time.sleep(0.5)
        assert platform.wait_ack("same-id") == first
    finally:
        gw.kill()


def _openssl(*args: str, cwd) -> None:
    import subprocess

    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path):
    """A private CA, a broker certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path / "pki"
    d.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)
    for name, cn in (("server", "127.0.0.1"), ("client", "gw-s1-g1")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)
        (d / f"{name}.ext").write_text("subjectAltName=IP:127.0.0.1\n" if name == "server" else "")
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def test_tls_with_client_certificate_and_password(tmp_path, certificates):
    from simulator.brokers import make_password_file

    password_file = tmp_path / "passwords"
    make_password_file(password_file, "gateway", "s3cret-pass")
    # The platform has its own account: make its entry apart (-c overwrites) and append it.
    make_password_file(tmp_path / "platform-passwords", "platform", "platform-pass")
    with open(password_file, "a") as f:
        f.write((tmp_path / "platform-passwords").read_text())
    tls = {"cafile": str(certificates / "ca.crt"), "certfile": str(certificates / "server.crt"),
           "keyfile": str(certificates / "server.key"), "require_certificate": True}
    broker = MosquittoBroker(tls=tls, password_file=str(password_file)).start()
    client_tls = {"cafile": str(certificates / "ca.crt"), "certfile": str(certificates / "client.crt"),
                  "keyfile": str(certificates / "client.key")}
    platform = PlatformStandIn(broker.host, broker.port, tmp_path / "platform.db", username="platform",
                               password="platform-pass", tls=client_tls).start()
    uplink = {"tls": {"ca": str(certificates / "ca.crt"), "cert": str(certificates / "client.crt"),
                      "key": str(certificates / "client.key")},
              "username": "gateway", "password": "${MQTT_PASSWORD}"}
    gw = make_gateway(tmp_path, broker, uplink=uplink)
    gw.env["MQTT_PASSWORD"] = "s3cret-pass"
    wrong = make_gateway(tmp_path, broker, uplink={**uplink, "password": "wrong"}, name="wrong")
    try:
        gw.start()
        sent = parking_events(10)
        assert ingest_batch(gw, sent).status_code == 202
        assert platform.wait_for(lambda: platform.count(type="parking.entry") == 10, timeout=20), gw.log_tail()
        assert gw.health()["uplink"]["connected"] is True
        gw.kill()

        wrong.start()  # a refused login keeps the events and says why
        assert ingest_batch(wrong, parking_events(3)).status_code == 202
        time.sleep(1.5)
        health = wrong.health()
        assert health["uplink"]["connected"] is False and health["backlog"]["events"] >= 3
        assert "refused" in (health["uplink"]["last_error"] or "")
    finally:
        gw.kill()
        wrong.kill()
        platform.stop()
        broker.close()


def test_mqtt_311_option(tmp_path, mosquitto):
    platform = PlatformStandIn(mosquitto.host, mosquitto.port, tmp_path / "platform.db", protocol="3.1.1").start()
    gw = make_gateway(tmp_path, mosquitto, uplink={"protocol": "3.1.1"}).start()
    try:
        assert ingest_batch(gw, parking_events(20)).status_code == 202
        assert platform.wait_for(lambda: platform.count(type="parking.entry") == 20, timeout=20), gw.log_tail()
        ack = platform.wait_ack(platform.send_command(SITE, GW, "ping"))
        assert ack["ok"] is True
    finally:
        gw.kill()
        platform.stop()
