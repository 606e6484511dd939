"""A camera end to end: virtual MJPEG camera -> camera driver -> visit service -> platform.

Also the camera API for site engineers (list, annotated snapshot) and a missing model, which costs
that camera its analytics and nothing else.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from simulator.brokers import free_port
from simulator.camera import MjpegCamera
from simulator.process import GatewayProcess, write_config
from support import ENTRANCE, MODELS

VIDEO = ENTRANCE
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.skipif(not VIDEO.exists() or not (MODELS / "yolox_nano.onnx").exists(),
                                reason="needs ../shared/data/video and ../shared/models (present in CI)")


def camera_device(url: str) -> dict:
    return {"id": "cam-1", "kind": "camera", "url": url, "fps": 10,
            "analytics": {"lines": [{"id": "door-in", "points": [[0, 420], [768, 420]]}],
                          "zones": [{"id": "table", "polygon": [[330, 330], [600, 330], [600, 432], [330, 432]]}],
                          "counts_interval": "3s"}}


def start_gateway(tmp_path, mosquitto, device: dict, models_dir: Path) -> GatewayProcess:
    api_port = free_port()
    config = write_config(tmp_path / "gw.yaml", site_id="s1", gateway_id="g1", broker_port=mosquitto.port,
                          api_port=api_port, db_path=tmp_path / "gw.db", token=TOKEN, devices=[device],
                          extra={"models": {"dir": str(models_dir)}})
    return GatewayProcess(config, api_port).start()


def test_people_crossing_a_line_reach_the_platform_as_visits(tmp_path, mosquitto, platform):
    with MjpegCamera(VIDEO, loop=True) as camera:
        gateway = start_gateway(tmp_path, mosquitto, camera_device(camera.url), MODELS)
        try:
            # The first person walks in at about 7.6 s of the video.
            assert platform.wait_for(lambda: platform.count(type="visit.entry") >= 1, timeout=60), gateway.log_tail()
            entry = platform.events(type="visit.entry")[0]
            assert entry["device_id"] == "cam-1"
            assert entry["data"]["line"] == "door-in" and entry["data"]["camera"] == "cam-1"
            assert isinstance(entry["data"]["track_id"], int)
            assert platform.wait_for(lambda: platform.count(type="visit.counts") >= 1, timeout=30)
            counts = platform.events(type="visit.counts")[0]["data"]
            assert set(counts["lines"]) == {"door-in"} and set(counts["zones"]) == {"table"}
            # Only counts and events leave the gateway: no payload carries an image.
            assert all(len(str(e["data"])) < 2000 for e in platform.events())

            cameras = httpx.get(gateway.api_url + "/v1/cameras", headers=AUTH, timeout=10).json()
            assert cameras[0]["id"] == "cam-1" and cameras[0]["state"] == "running"
            assert cameras[0]["frames_processed"] > 20 and cameras[0]["frame_size"] == [768, 432]
            assert cameras[0]["frames_read"] >= cameras[0]["frames_processed"]
            assert "inference" in cameras[0]["stage_times"]
            statuses = [e["data"]["state"] for e in platform.events(type="device.status") if e["device_id"] == "cam-1"]
            assert "online" in statuses

            response = httpx.get(gateway.api_url + "/v1/cameras/cam-1/snapshot.jpg", headers=AUTH, timeout=10)
            assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
            image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (432, 768, 3)
            # The counting line is drawn in amber across y=420.
            row = image[418:423, 100:700].reshape(-1, 3).astype(int)
            amber = (np.abs(row - np.array([0, 215, 255])).sum(axis=1) < 120).mean()
            assert amber > 0.3

            assert httpx.get(gateway.api_url + "/v1/cameras", timeout=10).status_code == 401
            assert httpx.get(gateway.api_url + "/v1/cameras/nope/snapshot.jpg", headers=AUTH,
                             timeout=10).status_code == 404
        finally:
            gateway.kill()


def test_a_missing_model_costs_only_that_cameras_analytics(tmp_path, mosquitto, platform):
    with MjpegCamera(VIDEO, loop=True) as camera:
        gateway = start_gateway(tmp_path, mosquitto, camera_device(camera.url), tmp_path / "no-models")
        try:
            def camera_state():
                return httpx.get(gateway.api_url + "/v1/cameras", headers=AUTH, timeout=10).json()[0]

            assert platform.wait_for(lambda: camera_state()["state"] == "error", timeout=30)
            error = camera_state()["error"]
            assert "yolox_nano.onnx not found" in error and "gateway models fetch yolox_nano" in error
            health = gateway.health()
            assert health["status"] == "degraded"
            assert health["cameras"] == [{"id": "cam-1", "state": "error", "error": error}]
            # Capture goes on (the set-up snapshot still works) and so does everything else.
            assert platform.wait_for(lambda: httpx.get(gateway.api_url + "/v1/cameras/cam-1/snapshot.jpg",
                                                       headers=AUTH, timeout=10).status_code == 200, timeout=30)
            event_id = str(uuid.uuid4())
            response = httpx.post(gateway.api_url + "/v1/ingest", headers=AUTH, timeout=10, json={
                "events": [{"event_id": event_id, "type": "parking.entry", "device_id": "p1", "data": {}}]})
            assert response.status_code == 202
            assert platform.wait_for(lambda: event_id in platform.event_ids(), timeout=20)
            assert gateway.alive
        finally:
            gateway.kill()
