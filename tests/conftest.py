"""Shared fixtures: a private mosquitto and a platform stand-in listening on it.

Both are function-scoped and use a free port each, so tests stay independent
and can run in parallel.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulator.brokers import MosquittoBroker, find_mosquitto
from simulator.platform import PlatformStandIn
from support import ENTRANCE, MODELS, need


@pytest.fixture
def mosquitto():
    """A started MosquittoBroker on a free port; stopped and cleaned up afterwards."""
    try:
        find_mosquitto()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    broker = MosquittoBroker()
    broker.start()
    yield broker
    broker.close()


@pytest.fixture
def platform(mosquitto, tmp_path):
    """A started PlatformStandIn (MQTT 5, prefix "site") on the `mosquitto` broker, db in tmp_path."""
    standin = PlatformStandIn(mosquitto.host, mosquitto.port, tmp_path / "platform.db")
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def entrance_video() -> Path:
    """The real entrance video from ../shared/data (skipped only where it is genuinely absent)."""
    if not ENTRANCE.exists():
        pytest.skip(f"test video {ENTRANCE} is absent (see ../shared/data/README.md)")
    return ENTRANCE


@pytest.fixture(scope="module")
def face_detector():
    """YuNet from ../shared/models."""
    from gateway.vision.detect import FaceDetector

    need(MODELS / "face_detection_yunet_2026may.onnx")
    return FaceDetector.from_model("yunet", MODELS)
