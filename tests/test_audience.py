"""Audience measurement at screens: facing, face tracks, the meter over play windows, the service.

Real YuNet (../shared/models) on real photos (../shared/data/faces/celebrities_13) composited into
640x480 frames by the gate camera simulator (simulator/gate_camera.py): a person standing at the
screen, people walking up and leaving, a head turned away (a real one, from a group photo). The
frames' times are synthetic (t0 + i / FPS), so no figure depends on how fast this machine is.
"""

from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
import pytest
from support import MODELS, SHARED, need

from gateway.ads.audience import (
    MAX_YAW,
    MIN_FACE_PX,
    YAW_HYSTERESIS,
    Audience,
    AudienceMeter,
    AudienceService,
    FaceTracks,
    facing,
    head_pose,
)
from gateway.frames import FrameHub
from gateway.vision.capture import Frame
from gateway.vision.detect import Detections
from gateway.vision.track import iou_matrix
from simulator.gate_camera import (
    BACKGROUND_BGR,
    CELEBRITIES,
    WalkUp,
    composite,
    frames,
    read_photo,
)

FPS = 10.0
DT = 1.0 / FPS
T0 = 1_700_000_000.0  # wall-clock seconds, as the service's frames carry
SIZE = (640, 480)
HAMILTON = SHARED / "data" / "faces" / "knn_examples_5" / "examples" / "short_hamilton_clip.mp4"


# ---------------------------------------------------------------------------------- helpers


def synthetic_face(cx: float, cy: float, size: float = 80.0, yaw: float = 0.0, roll_deg: float = 0.0):
    """(box, landmarks) of an idealised face: eyes 0.4 * size apart, the nose `yaw` half eye
    distances off centre along the eye line, the mouth below, the whole rolled by `roll_deg`."""
    half_eyes = 0.2 * size
    local = np.array([[-half_eyes, -0.1 * size], [half_eyes, -0.1 * size], [yaw * half_eyes, 0.08 * size],
                      [-0.15 * size, 0.25 * size], [0.15 * size, 0.25 * size]])
    a = math.radians(roll_deg)
    rotation = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    landmarks = local @ rotation.T + [cx, cy]
    box = np.array([cx - size / 2, cy - size * 0.6, cx + size / 2, cy + size * 0.6])
    return box, landmarks


def detections(*faces) -> Detections:
    if not faces:
        return Detections.empty(with_landmarks=True)
    boxes = np.array([f[0] for f in faces], np.float32)
    landmarks = np.array([f[1] for f in faces], np.float32)
    return Detections(boxes, np.full(len(faces), 0.95, np.float32), np.zeros(len(faces), np.int32), landmarks)


def blank() -> np.ndarray:
    image = np.empty((SIZE[1], SIZE[0], 3), np.uint8)
    image[:] = BACKGROUND_BGR
    return image


def run(meter: AudienceMeter, detected: list[Detections], t0: float = T0) -> list[int]:
    """Observe the frames' detections at t0, t0 + DT, ...; the faces facing in each frame."""
    return [meter.observe(faces, t0 + i * DT) for i, faces in enumerate(detected)]


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return read_photo(need(CELEBRITIES / "img1.jpg"))  # id00, a frontal portrait


@pytest.fixture(scope="module")
def standing(face_detector, photo) -> list[Detections]:
    """A person standing at the screen, facing it, for 2 s: 21 frames at 10 fps (t0 ... t0 + 2.0)."""
    frame = composite(photo, 0.85, SIZE)
    return [face_detector.detect(frame.copy()) for _ in range(round(2.0 * FPS) + 1)]


@pytest.fixture(scope="module")
def turned_head() -> np.ndarray:
    """A real head turned about 35 degrees from the camera (the man on the right of the group selfie,
    looking past the camera), cropped with some margin."""
    image = read_photo(need(CELEBRITIES / "selfie-many-people.jpg"))
    x1, y1, x2, y2 = 358, 115, 482, 297  # his face, as YuNet finds it in the photo
    w, h = x2 - x1, y2 - y1
    return image[round(y1 - 0.3 * h):round(y2 + 0.3 * h), round(x1 - 0.3 * w):round(x2 + 0.3 * w)].copy()


# ----------------------------------------------------------------------------------- facing


def test_facing_accepts_a_frontal_face_and_refuses_turned_rolled_small_and_broken_ones():
    box, frontal = synthetic_face(320, 240)
    assert head_pose(frontal) == pytest.approx((0.0, 0.0), abs=1e-9)
    assert facing(frontal, box)
    assert facing(synthetic_face(320, 240, yaw=0.45)[1], box)
    assert facing(synthetic_face(320, 240, yaw=-0.45)[1], box)
    # The head turned: the nose more than half way from the eyes' midpoint towards an eye.
    for yaw in (0.6, -0.6, 0.9, 1.5):
        _, landmarks = synthetic_face(320, 240, yaw=yaw)
        assert head_pose(landmarks)[0] == pytest.approx(yaw)
        assert not facing(landmarks, box), yaw
    # Roll: a tilted head still faces the screen; a face lying sideways or upside down is no viewer.
    assert facing(synthetic_face(320, 240, roll_deg=25)[1], box)
    assert not facing(synthetic_face(320, 240, roll_deg=40)[1], box)
    assert not facing(synthetic_face(320, 240, roll_deg=-40)[1], box)
    _, upside_down = synthetic_face(320, 240, roll_deg=180)
    assert abs(head_pose(upside_down)[1]) == pytest.approx(180)
    assert not facing(upside_down, box)
    mirrored = frontal[[1, 0, 2, 4, 3]]  # eyes and mouth corners swapped: not YuNet's order
    assert not facing(mirrored, box)
    mouth_above = frontal.copy()
    mouth_above[3:, 1] = frontal[0, 1] - 20  # eyes level and nose centred, but the mouth above the eyes
    assert not facing(mouth_above, box)
    # Size: the box's shorter side.
    small_box, small = synthetic_face(320, 240, size=MIN_FACE_PX - 1)
    assert not facing(small, small_box)
    big_enough_box, big_enough = synthetic_face(320, 240, size=MIN_FACE_PX)
    assert facing(big_enough, big_enough_box)
    assert facing(small, small_box, min_face_px=16)
    # Broken landmarks.
    assert not facing(np.full((5, 2), np.nan), box)
    assert not facing(np.full((5, 2), 100.0), box)  # all on one point: no eye line


def test_yunet_landmarks_of_every_portrait_face_the_camera(face_detector):
    """Every celebrity portrait (people looking at the camera) is turned to it, at three distances; the
    face also counts as facing the screen when it is at least MIN_FACE_PX."""
    checked = 0
    for path in sorted(need(CELEBRITIES).glob("img*.jpg")):
        image = read_photo(path)
        for share in (0.3, 0.6, 0.9):
            faces = face_detector.detect(composite(image, share, SIZE))
            assert len(faces) >= 1, (path.name, share)
            best = int(np.argmax(faces.scores))
            box, landmarks = faces.boxes[best], faces.landmarks[best]
            assert facing(landmarks, box, min_face_px=0), (path.name, share, head_pose(landmarks))  # the pose
            big_enough = min(box[2] - box[0], box[3] - box[1]) >= MIN_FACE_PX
            assert facing(landmarks, box) == big_enough  # and the size (the far ones are about 20 px)
            checked += 1
    assert checked >= 60 * 3


def test_yunet_finds_the_turned_head_but_it_does_not_face_the_screen(face_detector, turned_head):
    for share in (0.7, 0.8, 0.9):
        faces = face_detector.detect(composite(turned_head, share, SIZE))
        assert len(faces) == 1
        yaw, _ = head_pose(faces.landmarks[0])
        assert abs(yaw) > MAX_YAW + YAW_HYSTERESIS, share
        assert not facing(faces.landmarks[0], faces.boxes[0])


# ----------------------------------------------------------------------------------- tracks


def test_face_tracks_follow_a_face_moving_faster_than_iou_can():
    """A face crossing the image at 0.7 face widths per frame keeps its id, where consecutive boxes
    overlap too little for an IoU matcher (0.18 < the usual 0.3)."""
    tracks = FaceTracks()
    boxes = [synthetic_face(60 + 56 * i, 200)[0] for i in range(10)]
    assert iou_matrix(boxes[0][None], boxes[1][None])[0, 0] < 0.3
    ids = [tracks.update(box[None], T0 + i * DT)[0] for i, box in enumerate(boxes)]
    assert ids == [ids[0]] * 10


def test_face_tracks_keep_two_faces_apart_and_end_a_track_after_max_age():
    tracks = FaceTracks(max_age_s=1.0)
    first = None
    for i in range(8):  # two people side by side, walking together
        left, right = synthetic_face(200 + 10 * i, 240)[0], synthetic_face(330 + 10 * i, 240)[0]
        ids = tracks.update(np.array([right, left]) if i % 2 else np.array([left, right]), T0 + i * DT)
        ids = ids[::-1] if i % 2 else ids
        first = first or ids
        assert ids == first and ids[0] != ids[1]
    last_t = T0 + 7 * DT
    box = synthetic_face(270 + 0.9 * 100, 240)[0]  # the left one, hidden 0.9 s walking on at 100 px/s
    assert tracks.update(box[None], last_t + 0.9) == [first[0]]  # still the same face
    later = tracks.update(box[None], last_t + 0.9 + 1.01)[0]  # gone for more than max_age_s: someone new
    assert later not in first
    assert len(tracks) == 1  # the others ended
    tracks.reset()
    assert tracks.update(box[None], last_t + 3)[0] > later  # ids are never reused


# ------------------------------------------------------------------------------------ meter


def test_one_person_facing_for_2_s_is_one_impression_of_about_2_s(standing):
    meter = AudienceMeter()
    counts = run(meter, standing + [detections()] * 10)
    assert counts[:len(standing)] == [1] * len(standing)  # YuNet found and judged the face in every frame
    audience = meter.window(T0 - 1, T0 + 10)
    facing_frames = sum(counts)
    # Time accrues between consecutive facing frames: (n - 1) intervals, give or take one frame at
    # either end of the run.
    assert audience.attention_s == pytest.approx((facing_frames - 1) * DT, abs=DT)
    assert audience.attention_s == pytest.approx(2.0, abs=DT)
    assert audience == Audience(1, audience.attention_s, 1, len(standing) + 10)
    assert meter.tracked == 1


def test_a_person_standing_at_the_screen_then_leaving_with_a_real_walk_up(face_detector, photo):
    """Walk up (1 s), stand at the screen (2 s), leave: the facing time covers the standing and the
    part of the approach where the face was big enough."""
    walk = WalkUp(approach_s=1.0, hold_s=2.0, gap_s=1.0)
    approach, hold, _ = walk.frames_of(FPS)
    meter = AudienceMeter()
    counts = run(meter, [face_detector.detect(f) for f in frames([photo], FPS, SIZE, walk)])
    audience = meter.window(T0, T0 + 10)
    assert audience.impressions == 1 and audience.peak == 1
    assert all(counts[approach:approach + hold]) and not any(counts[approach + hold:])
    assert (hold - 1) * DT - 1e-6 <= audience.attention_s <= (approach + hold - 1) * DT + 1e-6
    assert audience.attention_s == pytest.approx((sum(counts) - 1) * DT, abs=DT)


def test_a_person_passing_in_under_a_second_is_no_impression(face_detector, photo):
    walk = WalkUp(approach_s=0.6, hold_s=0.2, gap_s=1.0)  # in view for 0.8 s
    approach, hold, _ = walk.frames_of(FPS)
    meter = AudienceMeter()
    counts = run(meter, [face_detector.detect(f) for f in frames([photo], FPS, SIZE, walk)])
    audience = meter.window(T0, T0 + 10)
    assert sum(counts) >= 2  # they did face the screen, briefly
    assert audience.impressions == 0
    assert 0 < audience.attention_s <= (approach + hold - 1) * DT + 1e-6 < 1.0


def test_two_people_in_sequence_are_two_impressions(face_detector, photo):
    second = read_photo(need(CELEBRITIES / "img13.jpg"))  # id05
    walk = WalkUp(approach_s=1.0, hold_s=1.5, gap_s=1.0)
    approach, hold, gap = walk.frames_of(FPS)
    meter = AudienceMeter()
    counts = run(meter, [face_detector.detect(f) for f in frames([photo, second], FPS, SIZE, walk)])
    per_visitor = approach + hold + gap
    whole = meter.window(T0, T0 + 2 * per_visitor * DT)
    assert whole.impressions == 2 and whole.peak == 1
    assert whole.attention_s == pytest.approx((sum(counts) - 2) * DT, abs=2 * DT)  # two runs of facing frames
    first_half = meter.window(T0, T0 + per_visitor * DT)
    second_half = meter.window(T0 + per_visitor * DT, T0 + 2 * per_visitor * DT)
    assert first_half.impressions == 1 and second_half.impressions == 1
    assert first_half.attention_s + second_half.attention_s == pytest.approx(whole.attention_s, abs=1e-3)


def test_two_people_at_the_screen_together(face_detector):
    """The couple photo: two faces, heads a little turned (yaw ratio about 0.3 to 0.55, around the
    threshold: the hysteresis keeps them counted), held for 2 s."""
    frame = composite(read_photo(need(CELEBRITIES / "couple.jpg")), 1.0, SIZE)
    meter = AudienceMeter()
    counts = run(meter, [face_detector.detect(frame.copy()) for _ in range(21)])
    audience = meter.window(T0, T0 + 5)
    assert audience.impressions == 2 and audience.peak == 2
    assert audience.attention_s == pytest.approx(2 * 2.0, abs=2 * DT)
    assert meter.current() == (2, pytest.approx(2.0, abs=DT))
    assert counts == [2] * 21


def test_a_turned_head_is_no_impression(face_detector, turned_head):
    meter = AudienceMeter()
    detected = [face_detector.detect(composite(turned_head, 0.7 + 0.01 * i, SIZE)) for i in range(21)]
    assert all(len(d) == 1 for d in detected)  # seen in every frame...
    counts = run(meter, detected)
    assert sum(counts) == 0  # ...never turned to the screen
    assert meter.window(T0, T0 + 5) == Audience(0, 0.0, 0, 21)
    assert meter.current() == (0, 0.0)


def test_nobody_in_front_of_the_screen():
    meter = AudienceMeter()
    assert meter.window(T0, T0 + 5) == Audience(0, 0.0, 0, 0)  # not measured at all
    run(meter, [detections()] * 30)
    assert meter.window(T0, T0 + 5) == Audience(0, 0.0, 0, 30)  # measured: nobody


def test_missed_frames_keep_the_track_and_are_credited_up_to_max_gap(standing):
    n = len(standing)
    for missed in (1, 3, 6):  # frames in which the detector lost the face (6 frames: 0.7 s > max_gap_s)
        meter = AudienceMeter(max_gap_s=0.5)
        detected = list(standing)
        detected[8:8 + missed] = [detections()] * missed
        counts = run(meter, detected)
        gap = (missed + 1) * DT
        expected = (n - 1) * DT - gap + min(gap, 0.5)
        audience = meter.window(T0, T0 + 5)
        assert audience.impressions == 1, missed
        assert meter.tracked == 1, missed  # one track all along
        assert audience.attention_s == pytest.approx(expected, abs=1e-6), missed
        assert sum(counts) == n - missed
    # Frames never analysed at all (a busy machine) are the same as frames without the face.
    meter = AudienceMeter()
    run_times = [T0 + i * DT for i in range(n) if not 8 <= i < 11]
    for t in run_times:
        meter.observe(standing[0], t)
    assert meter.window(T0, T0 + 5).attention_s == pytest.approx((n - 1) * DT, abs=1e-6)
    assert meter.tracked == 1


def test_a_face_turning_away_and_back_accrues_only_while_facing():
    meter = AudienceMeter(min_watch_s=1.0)
    poses = [0.0] * 8 + [0.9] * 5 + [0.0] * 8  # facing 0.7 s, turned away 0.5 s, facing 0.7 s
    for i, yaw in enumerate(poses):
        meter.observe(detections(synthetic_face(320, 240, yaw=yaw)), T0 + i * DT)
    audience = meter.window(T0, T0 + 5)
    assert meter.tracked == 1
    assert audience.attention_s == pytest.approx(7 * DT + 7 * DT)
    assert audience.impressions == 1  # 1.4 s in all, though never 1 s at a stretch


def test_hysteresis_keeps_a_borderline_face_counted():
    yaws = [0.45, 0.55, 0.45, 0.58, 0.52, 0.45] * 3  # around MAX_YAW, within the hysteresis
    meter = AudienceMeter()
    counts = [meter.observe(detections(synthetic_face(320, 240, yaw=y)), T0 + i * DT) for i, y in enumerate(yaws)]
    assert counts == [1] * len(yaws)
    assert meter.window(T0, T0 + 5).attention_s == pytest.approx((len(yaws) - 1) * DT)
    fresh = AudienceMeter()  # but a face must be within MAX_YAW to start facing
    assert fresh.observe(detections(synthetic_face(320, 240, yaw=0.55)), T0) == 0


def test_play_windows_split_the_attention_at_their_boundaries(standing):
    meter = AudienceMeter()
    run(meter, standing)  # facing from T0 to T0 + 2.0
    first, second = meter.window(T0, T0 + 1.0), meter.window(T0 + 1.0, T0 + 3.0)
    assert first.attention_s == pytest.approx(1.0, abs=1e-6) and second.attention_s == pytest.approx(1.0, abs=1e-6)
    assert first.impressions == 1 and second.impressions == 1  # 1 s in each: both count it
    assert first.frames == 10 and second.frames == 11  # [start, end): the frame at T0 + 1.0 is the second's
    short = meter.window(T0 + 0.2, T0 + 0.7)
    assert short.attention_s == pytest.approx(0.5, abs=1e-6) and short.impressions == 0 and short.peak == 1
    before, after = meter.window(T0 - 5, T0), meter.window(T0 + 2.0 + 1e-6, T0 + 9)
    assert before == Audience(0, 0.0, 0, 0) and after.attention_s == 0 and after.impressions == 0
    thirds = [meter.window(T0 + k * 2 / 3, T0 + (k + 1) * 2 / 3) for k in range(3)]
    assert sum(a.attention_s for a in thirds) == pytest.approx(2.0, abs=1e-3)
    assert [a.impressions for a in thirds] == [0, 0, 0]  # 0.67 s in each play is no impression of either


def test_current_audience_and_dwell(standing):
    meter = AudienceMeter(max_gap_s=0.5)
    assert meter.current() == (0, 0.0)
    run(meter, standing[:11])  # facing for 1.0 s so far
    now = meter.current()
    assert now.audience == 1 and now.dwell_s == pytest.approx(1.0, abs=1e-6)
    assert meter.current(now=T0 + 1.0 + 0.6) == (0, 0.0)  # no frame for longer than max_gap_s: stale
    # With max_age_s: the latest frame's faces while that frame is recent enough (a worker behind).
    assert meter.current(now=T0 + 1.0 + 2.5, max_age_s=3.0) == (1, pytest.approx(1.0, abs=1e-6))
    assert meter.current(now=T0 + 1.0 + 3.5, max_age_s=3.0) == (0, 0.0)  # the camera stopped
    meter.observe(detections(), T0 + 1.1)
    assert meter.current() == (1, pytest.approx(1.0, abs=1e-6))  # one frame missing the face: still there
    meter.observe(detections(), T0 + 1.7)
    assert meter.current() == (0, 0.0)


def test_a_clock_stepping_back_credits_nothing_across_the_step(standing):
    meter = AudienceMeter()
    run(meter, standing[:6])
    meter.observe(standing[6], T0 - 100)  # the clock stepped back 100 s
    meter.observe(standing[7], T0 - 100 + DT)
    assert meter.window(T0 - 200, T0 + 100).attention_s == pytest.approx(5 * DT + DT)
    assert meter.tracked == 2  # the step ended the first track


def test_memory_stays_bounded_over_many_tracks():
    meter = AudienceMeter(horizon_s=60.0)
    people = 3000
    for p in range(people):  # one person a second, each facing for 0.3 s at a new place
        x = 100 + (p * 97) % 440
        for k in range(3):
            meter.observe(detections(synthetic_face(x, 240, yaw=0.1)), T0 + p + k * DT)
        meter.observe(detections(), T0 + p + 0.5)
        assert meter.tracked <= 62 and meter.frames_kept <= 4 * 61
        assert len(meter.tracks) <= 2
    end = T0 + people
    assert meter.window(end - 10, end).attention_s == pytest.approx(10 * 2 * DT, abs=1e-6)
    assert meter.window(T0, T0 + 100) == Audience(0, 0.0, 0, 0)  # beyond the horizon: forgotten
    capped = AudienceMeter(horizon_s=1e9, max_tracks=100)
    for p in range(500):
        capped.observe(detections(synthetic_face(100 + (p * 97) % 440, 240)), T0 + 2 * p)
        assert capped.tracked <= 100


def test_the_meter_is_safe_to_read_while_a_worker_observes(standing):
    meter = AudienceMeter()
    errors: list[BaseException] = []

    def read():
        try:
            for _ in range(2000):
                meter.window(T0, T0 + 1000)
                meter.current()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(2000):
        meter.observe(standing[i % len(standing)] if i % 50 < 30 else detections(), T0 + i * DT)
    reader.join()
    assert not errors
    assert meter.window(T0, T0 + 1000).impressions == 40


# ---------------------------------------------------------------------------------- service


class _ListSource:
    """A camera driver's frame source (gateway/frames.py) that hands out a fixed list of frames, each
    once, in order, as fast as they are asked for, with synthetic timestamps."""

    def __init__(self, images: list[np.ndarray], t0: float = T0):
        self.frames = [Frame(image, i + 1, t0 + i * DT, None) for i, image in enumerate(images)]
        self.done = threading.Event()

    def latest(self):
        return self.frames[-1]

    def wait_next(self, after_index: int, timeout: float):
        if after_index < len(self.frames):
            return self.frames[after_index]
        self.done.set()
        time.sleep(min(timeout, 0.05))
        return None


def wait_for(condition, what: str, limit_s: float = 120.0) -> None:
    """Poll until `condition()`; the limit only keeps a broken worker from hanging the suite."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_the_service_measures_each_camera_once_for_all_its_screens(photo):
    need(MODELS / "face_detection_yunet_2026may.onnx")
    walk = WalkUp(approach_s=1.0, hold_s=2.0, gap_s=1.0)
    images = list(frames([photo], FPS, SIZE, walk))
    hub = FrameHub()
    lobby, empty_hall = _ListSource(images), _ListSource([blank()] * 20)
    hub.attach("cam-lobby", lobby)
    hub.attach("cam-hall", empty_hall)
    service = AudienceService(hub, MODELS, threads=1, fps=None)  # every frame: the test's frames are instant
    try:
        service.apply({"screen-1": "cam-lobby", "screen-2": "cam-lobby", "screen-3": "cam-hall"})
        assert service.meter("screen-1") is service.meter("screen-2") is not None
        assert service.meter("screen-3") is not service.meter("screen-1")
        assert service.meter("nowhere") is None
        wait_for(lambda: {s["camera"]: s["frames"] for s in service.status()} == {
            "cam-lobby": len(images), "cam-hall": 20}, "every frame analysed")
        audience = service.meter("screen-1").window(T0, T0 + len(images) * DT)
        assert audience.impressions == 1 and audience.peak == 1 and audience.frames == len(images)
        assert 2.0 - DT <= audience.attention_s <= 3.0
        assert service.meter("screen-3").window(T0, T0 + 10) == Audience(0, 0.0, 0, 20)
        status = {s["camera"]: s for s in service.status()}
        assert status["cam-lobby"]["screens"] == ["screen-1", "screen-2"]
        assert status["cam-lobby"]["state"] == "running" and status["cam-lobby"]["error"] is None
        assert set(status["cam-lobby"]["stage_times"]) == {"detect", "meter"}
        lobby_meter = service.meter("screen-1")
        service.apply({"screen-1": "cam-lobby"})  # screen-2 and the hall camera dropped
        assert service.meter("screen-1") is lobby_meter  # the camera's meter survives
        assert service.meter("screen-2") is None and service.meter("screen-3") is None
        assert [s["camera"] for s in service.status()] == ["cam-lobby"]
    finally:
        service.stop()
    assert service.status() == [] and service.meter("screen-1") is None


def test_a_missing_model_is_an_error_naming_the_file(tmp_path, photo):
    hub = FrameHub()
    hub.attach("cam-lobby", _ListSource([composite(photo, 0.85, SIZE)] * 5))
    service = AudienceService(hub, tmp_path, fps=None)
    try:
        service.apply({"screen-1": "cam-lobby"})
        wait_for(lambda: service.status()[0]["state"] == "error", "the error state")
        status = service.status()[0]
        assert "face_detection_yunet_2026may.onnx" in status["error"]
        assert status["frames"] == 0
        assert service.meter("screen-1").window(T0, T0 + 10) == Audience(0, 0.0, 0, 0)  # not measured
    finally:
        service.stop()


# ------------------------------------------------------------------------------- real video


def test_a_real_video_of_a_performer_turning_to_and_from_the_camera(face_detector, capsys):
    """short_hamilton_clip.mp4 (640x360, 29.97 fps, 9.2 s): a singer on stage, mostly turned to the
    camera, turning his head away at times, with camera cuts (each cut starts a new track). Analysed
    at 10 fps, as a screen's camera would be; the counts are reported."""
    capture = cv2.VideoCapture(str(need(HAMILTON)))
    video_fps = capture.get(cv2.CAP_PROP_FPS) or 29.97
    meter = AudienceMeter()
    index, analysed, with_face, facing_frames = 0, 0, 0, 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index % 3 == 0:
            faces = face_detector.detect(image)
            facing_frames += meter.observe(faces, T0 + index / video_fps)
            with_face += len(faces) > 0
            analysed += 1
        index += 1
    capture.release()
    duration = index / video_fps
    audience = meter.window(T0, T0 + duration)
    with capsys.disabled():
        print(f"\nhamilton clip: {index} frames, {duration:.1f} s, {analysed} analysed, {with_face} with a face, "
              f"{facing_frames} facing; impressions {audience.impressions}, attention {audience.attention_s:.1f} s, "
              f"peak {audience.peak}, tracks {meter.tracked}")
    assert audience.frames == analysed
    assert audience.impressions >= 1 and audience.peak >= 1
    assert 0 < audience.attention_s <= duration * audience.peak
    assert facing_frames < with_face  # he turns away at times
