"""Face gates: the gate pipeline on real photos walking up to a virtual gate camera, the gate service
over a real MJPEG stream, live gallery reloads, and a missing model.

Real YuNet and MobileFaceNet (../shared/models), real photos (../shared/data/faces/celebrities_13):
each enrolled person is enrolled from some of their photos and probed with another photo of theirs,
never one that was enrolled.
"""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from support import MODELS, need

from drivers.camera import CameraSettings
from gateway.bus import EventBus
from gateway.faces.calibrate import embed_photos, load_listing
from gateway.faces.embed import FaceEmbedder
from gateway.faces.gallery import FaceGallery, MatchPolicy
from gateway.faces.gate import FaceGate
from gateway.faces.gate_service import FaceGateService, GalleryHolder, GateSpec
from gateway.frames import FrameHub
from gateway.health import HealthRegistry
from gateway.supervisor import Supervisor
from simulator.gate_camera import CELEBRITY_LISTING, GateCamera, WalkUp, frames

ENROLLED = ["id00", "id01", "id02", "id03", "id04", "id05"]
STRANGERS = ["id08", "id09", "id10"]
POLICY = MatchPolicy(threshold=0.45, margin=0.05, min_face_px=48, confirm_n=3, confirm_m=4, cooldown_s=60)


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    need(MODELS / "face_embedding_mobilefacenet.onnx")
    return FaceEmbedder.from_model("mobilefacenet", MODELS)


@pytest.fixture(scope="module")
def photos() -> dict:
    return load_listing(need(CELEBRITY_LISTING))


@pytest.fixture(scope="module")
def enrolled(photos, face_detector, embedder) -> dict:
    """{person: template vectors} from every photo of each enrolled person but the first (the probe)."""
    embedded = embed_photos({p: photos[p][1:] for p in ENROLLED}, face_detector, embedder)
    assert not embedded.skipped
    templates: dict = {}
    for vector, person in zip(embedded.vectors, embedded.labels):
        templates.setdefault(person, []).append(vector)
    return templates


def gallery_of(templates: dict, persons=None) -> FaceGallery:
    gallery = FaceGallery()
    for person, vectors in templates.items():
        if persons is None or person in persons:
            gallery.add(person, vectors)
    return gallery


def walk(gate: FaceGate, photo, start: float = 0.0, fps: float = 10.0, walk_up: WalkUp | None = None):
    """Results of each frame of one visitor walking up, at times start, start + 1/fps, ..."""
    return [gate.process(frame, now=start + i / fps) for i, frame in enumerate(frames([photo], fps, walk=walk_up or WalkUp()))]


# ----------------------------------------------------------------------------------- the gate


@pytest.mark.parametrize("person", ENROLLED[:4])
def test_an_enrolled_person_matches_after_n_of_m_frames_and_not_before(person, photos, enrolled, face_detector,
                                                                      embedder):
    gallery = gallery_of(enrolled)
    gate = FaceGate("north-gate", face_detector, embedder, lambda: gallery, POLICY)
    results = walk(gate, photos[person][0])
    verdicts = [r.verdict for r in results]
    assert verdicts.count("match") == 1, verdicts  # then cooldown: one opening per visit
    matched = verdicts.index("match")
    match = results[matched]
    assert match.person_id == person and match.score >= POLICY.threshold
    assert match.score - match.runner_up_score >= POLICY.margin
    assert match.decision.votes == POLICY.confirm_n
    # Before the match: faces too small (never embedded), then exactly confirm_n - 1 votes for them.
    before = results[:matched]
    assert [r.verdict for r in before if r.verdict not in ("too_small", "no_face")] == ["pending"] * (POLICY.confirm_n - 1)
    assert all(r.person_id == person for r in before if r.verdict == "pending")
    assert all("embed" not in r.times_ms for r in before if r.verdict == "too_small")
    assert any(r.verdict == "too_small" for r in before)  # the walk starts far away
    assert set(verdicts[matched + 1:]) <= {"pending", "cooldown", "no_face"}
    assert match.box is not None and match.face_px >= POLICY.min_face_px
    assert set(match.times_ms) == {"detect", "embed", "search"}


def test_an_unenrolled_person_never_matches(photos, enrolled, face_detector, embedder):
    gallery = gallery_of(enrolled)
    gate = FaceGate("north-gate", face_detector, embedder, lambda: gallery, POLICY)
    for i, person in enumerate(STRANGERS):
        for photo in photos[person]:
            results = walk(gate, photo, start=i * 100.0)
            verdicts = {r.verdict for r in results}
            assert not verdicts & {"match", "pending", "cooldown"}, (person, photo, verdicts)
            assert "stranger" in verdicts or "unknown" in verdicts


def test_a_face_too_small_is_ignored(photos, enrolled, face_detector, embedder):
    gallery = gallery_of(enrolled)
    gate = FaceGate("north-gate", face_detector, embedder, lambda: gallery, POLICY)
    far_away = WalkUp(start=0.05, end=0.12, hold_s=1.0)  # the person stays at the far end of the hall
    results = walk(gate, photos["id00"][0], walk_up=far_away)
    faces = [r for r in results if r.verdict != "no_face"]
    assert faces and all(r.verdict == "too_small" and r.face_px < POLICY.min_face_px for r in faces)
    assert all("embed" not in r.times_ms and "search" not in r.times_ms for r in results)


def test_forgetting_a_person_lifts_their_cooldown(photos, enrolled, face_detector, embedder):
    gallery = gallery_of(enrolled)
    gate = FaceGate("north-gate", face_detector, embedder, lambda: gallery, POLICY)
    assert [r.verdict for r in walk(gate, photos["id01"][0])].count("match") == 1
    again = [r.verdict for r in walk(gate, photos["id01"][0], start=10.0)]
    assert "match" not in again and "cooldown" in again  # within cooldown_s
    gate.forget_person("id01")
    assert [r.verdict for r in walk(gate, photos["id01"][0], start=20.0)].count("match") == 1


# ------------------------------------------------------------------------------ gallery holder


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_gallery_holder_reloads_on_a_generation_change_and_a_removed_person_stops_matching(
        photos, enrolled, face_detector, embedder):
    members = set(ENROLLED)
    generation = [1]
    loads = []

    def load():
        loads.append(sorted(members))
        return gallery_of(enrolled, members)

    clock = Clock()
    holder = GalleryHolder(load, lambda: generation[0], check_every=2.0, clock=clock)
    first = holder.current()
    assert holder.current() is first and len(loads) == 1 and holder.generation == 1
    gate = FaceGate("north-gate", face_detector, embedder, holder.current, POLICY)
    assert [r.verdict for r in walk(gate, photos["id02"][0])].count("match") == 1

    members.discard("id02")  # the person's face data is deleted: the store's generation moves
    generation[0] = 2
    clock.now = 1.0
    assert holder.current() is first  # not looked at again before check_every
    clock.now = 2.5
    second = holder.current()
    assert second is not first and len(loads) == 2 and holder.generation == 2
    assert "id02" not in second.persons() and "id02" in first.persons()
    gate.forget_person("id02")
    verdicts = {r.verdict for r in walk(gate, photos["id02"][0], start=100.0)}
    assert not verdicts & {"match", "pending", "cooldown"}, verdicts

    clock.now = 10.0
    assert holder.current() is second and len(loads) == 2  # same generation: no reload
    holder.invalidate()
    assert holder.current() is not second and len(loads) == 3


def test_gallery_holder_keeps_the_previous_gallery_when_a_reload_fails(enrolled):
    generation = [1]
    fail = [False]

    def load():
        if fail[0]:
            raise OSError("store unreadable")
        return gallery_of(enrolled)

    clock = Clock()
    holder = GalleryHolder(load, lambda: generation[0], check_every=0.5, clock=clock)
    first = holder.current()
    fail[0], generation[0], clock.now = True, 2, 1.0
    assert holder.current() is first and holder.generation == 1
    fail[0], clock.now = False, 2.0
    assert holder.current() is not first and holder.generation == 2


# ------------------------------------------------------------------------------ gate service


async def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@pytest.mark.parametrize("till", [None, "till-s101"], ids=["door", "till"])
def test_the_gate_service_opens_once_for_a_visitor_over_a_real_mjpeg_camera(photos, enrolled, till):
    """At a door, a member recognised becomes one `access.identified`; at a till (a camera watching
    the customer), one `member.identified` that credits the till's next sale."""
    need(MODELS / "face_detection_yunet_2026may.onnx")
    gallery = gallery_of(enrolled)
    holder = GalleryHolder(lambda: gallery, lambda: 1)
    visitors = [photos["id00"][0], photos["id08"][0]]  # one enrolled, one stranger

    async def scenario(camera: GateCamera):
        bus = EventBus()
        seen = []
        bus.subscribe("seen", seen.append)
        await bus.start()
        health = HealthRegistry()
        supervisor = Supervisor(bus, health)
        await supervisor.apply([CameraSettings(id="gate-cam-1", kind="camera", url=camera.url, fps=10)])
        service = FaceGateService(bus, supervisor.frames, MODELS, 1, holder)
        service.apply([GateSpec("north-gate", "gate-cam-1", POLICY, fps=10, till=till)])
        try:
            assert await wait_until(lambda: any(e.type == expected for e in seen), 40), service.status()
            first = time.monotonic()
            # Two more rounds of both visitors: the cooldown keeps it to one opening.
            await asyncio.sleep(2 * camera.round_s)
            status = service.status()[0]
        finally:
            await asyncio.to_thread(service.stop)
            await supervisor.stop()
            await bus.stop()
        return seen, status, time.monotonic() - first

    expected = "access.identified" if till is None else "member.identified"
    with GateCamera(visitors, fps=10) as camera:
        seen, status, _ = asyncio.run(scenario(camera))
    identified = [e for e in seen if e.type == expected]
    assert len(identified) == 1, [e.data for e in identified]
    event = identified[0]
    assert event.internal and event.device_id == "gate-cam-1"
    if till is None:
        assert set(event.data) == {"door", "reader", "method", "value", "score"}
        assert event.data["door"] == "north-gate" and event.data["reader"] is None
        assert event.data["method"] == "face" and event.data["value"] == "id00"
    else:
        assert set(event.data) == {"till", "member_id", "score"}
        assert event.data["till"] == till and event.data["member_id"] == "id00"
    assert POLICY.threshold <= event.data["score"] <= 1.0
    # Nothing is published for strangers or unconfirmed frames; they are counted.
    assert {e.type for e in seen} <= {expected, "device.status"}
    assert status["state"] == "running" and status["error"] is None and status["matches"] == 1
    assert status["door"] == "north-gate" and status["camera"] == "gate-cam-1"
    assert status["frames"] > 30 and status["verdicts"].get("stranger", 0) > 0
    assert status["verdicts"].get("cooldown", 0) > 0 and status["verdicts"].get("too_small", 0) > 0
    assert {"detect", "embed", "search", "frame_to_event"} <= set(status["stage_times"])
    assert "image" not in str(status)


def test_a_missing_embedding_model_puts_the_gate_in_error_naming_the_file(tmp_path):
    yunet = need(MODELS / "face_detection_yunet_2026may.onnx")
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(yunet.resolve(), models / yunet.name)  # the detector is there, the embedding model is not
    service = FaceGateService(EventBus(), FrameHub(), models, 1, GalleryHolder(FaceGallery, lambda: 0))
    service.apply([GateSpec("north-gate", "gate-cam-1", POLICY)])
    try:
        deadline = time.monotonic() + 20
        while service.status()[0]["state"] != "error" and time.monotonic() < deadline:
            time.sleep(0.05)
        status = service.status()[0]
        assert status["state"] == "error", status
        assert "face_embedding_mobilefacenet.onnx" in status["error"]
        assert status["door"] == "north-gate" and status["frames"] == 0
    finally:
        service.stop()
