"""A face gate end to end, in a real gateway process: enrolment by downlink (with consent), a gate
camera playing real photos, the door opened on the OSDP bus, the broker down and the door still
opening, then `faces.delete`: the person is no longer recognised and nothing of their face remains."""

from __future__ import annotations

import base64
import sqlite3
import time
from datetime import datetime, timezone

import cv2
import pytest

from simulator.brokers import free_port
from simulator.gate_camera import GateCamera, identity_photos
from simulator.osdp_reader import VirtualOsdpReader
from simulator.process import GatewayProcess, write_config
from support import ALL_WEEK, SHARED, need

TOKEN = "test-token-0123456789"
KEY = "00112233445566778899aabbccddeeff"
MEMBER, IDENTITY, STRANGER = "res-7", "id00", "id05"


def photo_b64(path) -> str:
    image = cv2.imread(str(path))
    scale = 640 / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return base64.b64encode(cv2.imencode(".jpg", image)[1].tobytes()).decode()


def consent(person_id: str) -> dict:
    return {"person_id": person_id, "scope": ["access"], "notice_version": "2026-11",
            "given_at": datetime.now(timezone.utc).isoformat(), "method": "kiosk"}


@pytest.fixture
def reader():
    virtual = VirtualOsdpReader(address=1, scbk=bytes.fromhex(KEY)).start()
    yield virtual
    virtual.stop()


def face_grants(platform) -> list[dict]:
    return [e["data"] for e in platform.events(type="access.granted") if e["data"]["method"] == "face"]


def test_a_face_opens_the_gate_until_the_person_is_deleted(tmp_path, mosquitto, platform, reader):
    need(SHARED / "data" / "faces" / "celebrities_13")
    photos = identity_photos()
    # The gate camera shows *other* photos of the member than those enrolled, and a stranger.
    with GateCamera([photos[IDENTITY][3], photos[STRANGER][0]], fps=10) as gate:
        api_port = free_port()
        devices = [{"id": "osdp-gate", "kind": "osdp", "port": reader.port,
                    "readers": [{"address": 1, "name": "gate", "scbk": KEY}]},
                   {"id": "gate-cam", "kind": "camera", "url": gate.url, "fps": 10}]
        config = write_config(tmp_path / "gw.yaml", site_id="s1", gateway_id="g1", broker_port=mosquitto.port,
                              api_port=api_port, db_path=tmp_path / "gw.db", token=TOKEN, devices=devices,
                              extra={"access": {"doors": [{"id": "gate", "device": "osdp-gate", "reader": 1,
                                                           "methods": ["card", "face"], "camera": "gate-cam"}]},
                                     "faces": {"enabled": True, "match": {"cooldown": "2s"}}})
        gateway = GatewayProcess(config, api_port).start()
        try:
            # No consent, no enrolment; nothing is stored.
            ack = platform.wait_ack(platform.send_command("s1", "g1", "faces.enroll", {
                "person_id": MEMBER, "images": [photo_b64(photos[IDENTITY][0])]}), 60)
            assert ack["ok"] is False and "consent" in ack["error"], ack
            ack = platform.wait_ack(platform.send_command("s1", "g1", "faces.enroll", {
                "person_id": MEMBER, "images": [photo_b64(p) for p in photos[IDENTITY][:2]],
                "consent": consent(MEMBER)}), 60)
            assert ack["ok"] is True and ack["result"]["templates"] == 2, ack
            ack = platform.wait_ack(platform.send_command("s1", "g1", "access.sync", {
                "version": 1, "mode": "snapshot", "persons": [{"person_id": MEMBER, "groups": ["residents"]}],
                "credentials": [{"kind": "face", "value": MEMBER, "person_id": MEMBER}],
                "rules": [{"rule_id": "r1", "door_id": "gate", "group": "residents", "windows": ALL_WEEK,
                           "methods": ["card", "face"]}]}))
            assert ack["ok"] is True, ack

            assert platform.wait_for(lambda: face_grants(platform), timeout=60), gateway.log_tail()
            assert face_grants(platform)[0] == {"door": "gate", "method": "face", "person_id": MEMBER,
                                                "reason": "granted"}
            assert platform.wait_for(lambda: reader.outputs, timeout=10)
            gates = gateway.health()["faces"]["gates"]
            assert gates[0]["door"] == "gate" and gates[0]["matches"] >= 1
            assert platform.count(type="access.denied") == 0  # the stranger is never matched, nor denied

            # The broker goes down: the face still opens the door.
            subscribed = platform.subscription_count
            mosquitto.stop()
            before = len(reader.outputs)
            assert platform.wait_for(lambda: len(reader.outputs) > before, timeout=30), gateway.log_tail()
            mosquitto.start()
            assert platform.wait_subscribed(after=subscribed, timeout=30)
            assert platform.wait_for(lambda: gateway.health()["uplink"]["connected"], timeout=30)
            time.sleep(0.5)  # its subscription to commands follows the connection (a broker without persistence)

            ack = platform.wait_ack(platform.send_command("s1", "g1", "faces.delete", {"person_id": MEMBER}), 60)
            assert ack["ok"] is True, ack
            assert ack["result"]["templates"] == 2 and ack["result"]["consents"] == 1
            assert ack["result"]["access_log_entries"] >= 1
            # A full round of the camera and more: the member is not recognised any more.
            time.sleep(1.0)
            outputs = len(reader.outputs)
            time.sleep(gate.round_s * 2)
            assert len(reader.outputs) == outputs, gateway.log_tail()
        finally:
            gateway.kill()

    with sqlite3.connect(tmp_path / "faces.db") as db:  # nothing of the person's face remains
        assert db.execute("SELECT count(*) FROM face_templates WHERE person_id = ?", (MEMBER,)).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM face_consents WHERE person_id = ?", (MEMBER,)).fetchone()[0] == 0
        actions = [a for (a,) in db.execute("SELECT action FROM face_audit ORDER BY seq")]
        assert actions == ["enrol", "delete"]  # the refused enrolment wrote nothing
    with sqlite3.connect(tmp_path / "access.db") as db:
        assert db.execute("SELECT count(*) FROM access_log WHERE person_id = ? AND method = 'face'",
                          (MEMBER,)).fetchone()[0] == 0
