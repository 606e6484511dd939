"""The face service inside the gateway: off by default, the face downlinks, the capacity warning,
and threshold changes written to the audit log."""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
from datetime import datetime, timezone

import numpy as np
import pytest

from gateway.bus import EventBus
from gateway.commands import CommandError
from gateway.config import parse_config
from gateway.events import Event, envelope_json
from gateway.faces.service import FaceService
from gateway.faces.store import open_face_store
from gateway.frames import FrameHub
from support import MODELS, SHARED, need
from test_docs import assert_valid_event


def site(tmp_path, enabled: bool = True, warn: int = 90000, threshold: float = 0.45):
    return parse_config(textwrap.dedent(f"""\
        site_id: s1
        gateway_id: g1
        storage: {{path: {tmp_path / "gw.db"}}}
        api: {{token: a-token-of-24-characters}}
        models: {{dir: {MODELS}}}
        faces:
          enabled: {str(enabled).lower()}
          warn_enrolled: {warn}
          match: {{threshold: {threshold}}}
        """), "site.yaml", env={})


def consent(person: str) -> dict:
    return {"person_id": person, "scope": ["access"], "notice_version": "v1",
            "given_at": datetime.now(timezone.utc).isoformat(), "method": "app"}


def enrol_synthetic(config, persons: list[str]) -> None:
    rng = np.random.default_rng(1)
    with open_face_store(config) as store:
        for person in persons:
            store.enrol(person, rng.standard_normal((1, 128)).astype(np.float32), consent(person), "mobilefacenet", "test")


def run(service: FaceService, coroutine):
    async def main():
        await service.bus.start()
        try:
            return await coroutine
        finally:
            await service.bus.stop()
    return asyncio.run(main())


def test_off_by_default_no_store_no_enrolment(tmp_path):
    config = site(tmp_path, enabled=False)
    service = FaceService(EventBus(), FrameHub(), config, "g1")
    service.start()
    assert service.store is None and not (tmp_path / "faces.db").exists()
    with pytest.raises(CommandError, match="off at this site"):
        run(service, service.enroll_command({"person_id": "p1", "images": ["aGVsbG8="], "consent": consent("p1")}))
    # Deleting is always possible, and harmless with nothing stored.
    assert run(service, service.delete_command({"person_id": "p1"}))["templates"] == 0


def test_a_store_left_from_before_can_still_be_erased_with_faces_off(tmp_path):
    enrol_synthetic(site(tmp_path), ["p1"])
    service = FaceService(EventBus(), FrameHub(), site(tmp_path, enabled=False), "g1")
    service.start()
    try:
        assert run(service, service.delete_command({"person_id": "p1"}))["templates"] == 1
        assert service.store.count_templates() == 0
    finally:
        service.stop()


@pytest.mark.parametrize("args, message", [
    ({}, "needs a person_id"),
    ({"person_id": "p1"}, "needs images"),
    ({"person_id": "p1", "images": []}, "needs images"),
    ({"person_id": "p1", "images": ["not base64!"]}, "base64"),
    ({"person_id": "p1", "images": [base64.b64encode(b"not a picture").decode()], "consent": None}, "consent"),
    ({"person_id": "p1", "images": [base64.b64encode(b"not a picture").decode()], "consent": consent("p1")},
     "not a readable image"),
    ({"person_id": "p1", "images": [base64.b64encode(b"x").decode()], "consent": consent("p2")}, "not 'p1'"),
])
def test_bad_enrolments_are_refused_with_a_reason_and_store_nothing(tmp_path, args, message):
    need(MODELS / "face_detection_yunet_2026may.onnx")
    service = FaceService(EventBus(), FrameHub(), site(tmp_path), "g1")
    service.start()
    try:
        with pytest.raises(CommandError, match=message):
            run(service, service.enroll_command(args))
        assert service.store.count_templates() == 0
    finally:
        service.stop()


def test_an_enrolment_by_downlink_keeps_no_picture(tmp_path):
    photo = need(SHARED / "data" / "faces" / "knn_examples_5" / "examples" / "obama_small.jpg")
    service = FaceService(EventBus(), FrameHub(), site(tmp_path), "g1")
    service.start()
    try:
        jpeg = photo.read_bytes()
        result = run(service, service.enroll_command({"person_id": "p1", "images": [base64.b64encode(jpeg).decode()],
                                                      "consent": consent("p1")}))
        assert result == {"person_id": "p1", "templates": 1, "enrolled": 1}
    finally:
        service.stop()
    for path in tmp_path.rglob("*"):  # no file holds the picture, or any run of it
        if path.is_file():
            assert jpeg[1000:1064] not in path.read_bytes(), path


def test_the_capacity_warning_goes_up_once_and_validates(tmp_path):
    config = site(tmp_path, warn=2)
    enrol_synthetic(config, ["p1", "p2"])
    seen: list[Event] = []
    bus = EventBus()
    bus.subscribe("seen", seen.append, ["gateway.warning"])
    service = FaceService(bus, FrameHub(), config, "g1")

    async def main():
        await bus.start()
        await asyncio.to_thread(service.start)
        service._check_capacity()  # still over the mark: not again
        await bus.stop()

    try:
        asyncio.run(main())
    finally:
        service.stop()
    assert [e.data for e in seen] == [{"warning": "faces_near_capacity", "enrolled": 2, "warn_at": 2, "capacity": 100000}]
    assert_valid_event(json.loads(envelope_json(seen[0], site_id="s1", gateway_id="g1", seq=1)))


def test_a_threshold_change_on_reload_is_audited(tmp_path):
    service = FaceService(EventBus(), FrameHub(), site(tmp_path), "g1")
    service.start()
    try:
        service.reconfigure(site(tmp_path, threshold=0.5), actor="config-reload")
        service.reconfigure(site(tmp_path, threshold=0.5), actor="config-reload")  # no change: no entry
        entries = [e for e in service.store.audit_entries() if e["action"] == "threshold_change"]
        assert len(entries) == 1 and entries[0]["actor"] == "config-reload"
        assert entries[0]["detail"]["old"]["threshold"] == 0.45 and entries[0]["detail"]["new"]["threshold"] == 0.5
        assert service.store.verify_audit() == (True, None)
    finally:
        service.stop()
