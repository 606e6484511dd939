"""Detection: letterbox, decoding of YOLOX / YOLOv8 / YuNet outputs, NMS, and the real models.

Decoders are checked against hand-built tensors (a known box at a known cell); the detectors against
real frames and photos from ../shared/data, and YuNet against OpenCV's own `cv2.FaceDetectorYN`.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gateway.models import ModelManifest
from gateway.vision.detect import (
    Detections,
    FaceDetector,
    PersonDetector,
    batched_nms,
    decode_yolov8,
    decode_yolox,
    decode_yunet,
    letterbox,
    nms,
)
from support import MODELS, need

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_MODELS = MODELS
VIDEO = SHARED / "data" / "video" / "entrance_one_by_one.mp4"
FACES = SHARED / "data" / "faces"




def yolox_index(input_size: tuple[int, int], stride: int, row: int, col: int) -> int:
    """Row of the YOLOX output for a grid cell: strides 8, 16, 32 in turn, row-major within each."""
    width, height = input_size
    index = 0
    for s in (8, 16, 32):
        if s == stride:
            return index + row * (width // s) + col
        index += (width // s) * (height // s)
    raise ValueError(stride)


def yolox_output(input_size=(416, 416), classes: int = 80) -> np.ndarray:
    cells = sum((input_size[0] // s) * (input_size[1] // s) for s in (8, 16, 32))
    return np.zeros((1, cells, 5 + classes), np.float32)


def put_yolox_box(output, input_size, stride, row, col, offsets, size_cells, obj, class_scores: dict[int, float]):
    index = yolox_index(input_size, stride, row, col)
    output[0, index, 0:2] = offsets
    output[0, index, 2:4] = np.log(size_cells)
    output[0, index, 4] = obj
    for class_id, score in class_scores.items():
        output[0, index, 5 + class_id] = score


class FakeSession:
    """Stands in for an onnxruntime session: fixed input/output metadata, a prepared output."""

    def __init__(self, input_shape, outputs: dict[str, np.ndarray]):
        self.input_shape = input_shape
        self.outputs = outputs
        self.fed: list[np.ndarray] = []

    def get_inputs(self):
        return [SimpleNamespace(name="images", shape=self.input_shape)]

    def get_outputs(self):
        return [SimpleNamespace(name=name) for name in self.outputs]

    def run(self, names, feed):
        self.fed.append(feed["images"])
        return [self.outputs[name] for name in (names or self.outputs)]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ------------------------------------------------------------------------------------ letterbox


def test_letterbox_puts_the_image_top_left_and_pads_with_114():
    image = np.random.default_rng(1).integers(0, 256, (432, 768, 3), dtype=np.uint8)
    padded, scale = letterbox(image, (416, 416), 114)
    assert padded.shape == (416, 416, 3) and padded.dtype == np.uint8
    assert scale == pytest.approx(416 / 768)
    assert np.array_equal(padded[:234], cv2.resize(image, (416, 234), interpolation=cv2.INTER_LINEAR))
    assert np.all(padded[234:] == 114)

    tall = np.zeros((600, 300, 3), np.uint8)
    padded, scale = letterbox(tall, (416, 416), 0 + 114)
    assert scale == pytest.approx(416 / 600)
    assert np.all(padded[:, :208] == 0) and np.all(padded[:, 208:] == 114)

    small = np.full((100, 200, 3), 7, np.uint8)  # smaller than the input: enlarged, as YOLOX does
    padded, scale = letterbox(small, (416, 416), 114)
    assert scale == pytest.approx(416 / 200)
    assert np.all(padded[:208] == 7) and np.all(padded[208:] == 114)

    same = np.full((416, 416, 3), 9, np.uint8)
    padded, scale = letterbox(same, (416, 416), 114)
    assert scale == 1.0 and np.all(padded == 9)


# -------------------------------------------------------------------------------------- decoding


def test_decode_yolox_places_a_known_box_at_its_grid_cell():
    size = (416, 416)
    output = yolox_output(size)
    put_yolox_box(output, size, stride=16, row=7, col=5, offsets=(0.5, 0.25), size_cells=(4, 8), obj=0.9,
                  class_scores={0: 0.8, 2: 0.5})
    put_yolox_box(output, size, stride=32, row=12, col=12, offsets=(0.0, 0.0), size_cells=(1, 1), obj=0.5,
                  class_scores={0: 0.5})
    boxes, scores = decode_yolox(output, size)
    assert boxes.shape == (3549, 4) and scores.shape == (3549, 80)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32

    i = yolox_index(size, 16, 7, 5)
    # centre ((0.5 + 5) * 16, (0.25 + 7) * 16) = (88, 116); size (4 * 16, 8 * 16) = (64, 128)
    np.testing.assert_allclose(boxes[i], [56, 52, 120, 180], rtol=1e-6)
    np.testing.assert_allclose(scores[i, [0, 1, 2]], [0.72, 0.0, 0.45], rtol=1e-6)
    last = 3548  # the last cell of stride 32: col 12, row 12
    assert yolox_index(size, 32, 12, 12) == last
    np.testing.assert_allclose(boxes[last], [12 * 32 - 16, 12 * 32 - 16, 12 * 32 + 16, 12 * 32 + 16], rtol=1e-6)
    assert scores[last, 0] == pytest.approx(0.25)
    others = np.ones(3549, bool)
    others[[i, last]] = False
    assert np.all(scores[others] == 0)

    # The batchless layout and a subset of classes give the same numbers.
    boxes2, persons = decode_yolox(output[0], size, classes=(0,))
    assert np.array_equal(boxes2, boxes) and persons.shape == (3549, 1)
    assert np.array_equal(persons[:, 0], scores[:, 0])


def test_decode_yolox_handles_other_input_sizes_and_refuses_mismatched_outputs():
    size = (640, 384)  # 80x48 + 40x24 + 20x12 = 5040 cells
    output = yolox_output(size, classes=1)
    assert output.shape == (1, 5040, 6)
    put_yolox_box(output, size, stride=8, row=47, col=79, offsets=(0.5, 0.5), size_cells=(2, 2), obj=1.0,
                  class_scores={0: 1.0})
    boxes, scores = decode_yolox(output, size)
    i = yolox_index(size, 8, 47, 79)
    np.testing.assert_allclose(boxes[i], [79.5 * 8 - 8, 47.5 * 8 - 8, 79.5 * 8 + 8, 47.5 * 8 + 8], rtol=1e-6)
    assert scores[i, 0] == 1.0
    with pytest.raises(ValueError, match=r"expected a YOLOX output \[1, 3549, 5 \+ classes\]"):
        decode_yolox(output, (416, 416))


def test_decode_yolov8_reads_a_known_column():
    output = np.zeros((1, 84, 8400), np.float32)
    output[0, 0:4, 1234] = [100, 200, 50, 80]
    output[0, 4 + 0, 1234] = 0.7
    output[0, 4 + 16, 1234] = 0.2  # dog
    boxes, scores = decode_yolov8(output)
    assert boxes.shape == (8400, 4) and scores.shape == (8400, 80)
    np.testing.assert_allclose(boxes[1234], [75, 160, 125, 240])
    assert scores[1234, 0] == pytest.approx(0.7) and scores[1234, 16] == pytest.approx(0.2)
    assert np.count_nonzero(scores) == 2
    _, persons = decode_yolov8(output[0], classes=(0,))
    assert persons.shape == (8400, 1) and persons[1234, 0] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="YOLOv8 output"):
        decode_yolov8(np.zeros((1, 4, 10), np.float32))


def yunet_outputs(input_size, fill_cls: float = 0.0) -> dict[str, np.ndarray]:
    width, height = input_size
    outputs = {}
    for s in (8, 16, 32):
        n = (width // s) * (height // s)
        outputs[f"cls_{s}"] = np.full((1, n, 1), fill_cls, np.float32)
        outputs[f"obj_{s}"] = np.zeros((1, n, 1), np.float32)
        outputs[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        outputs[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    return outputs


def test_decode_yunet_places_a_known_face_with_landmarks():
    size = (64, 32)  # stride 16: 4 columns, 2 rows
    outputs = yunet_outputs(size)
    j = 1 * 4 + 2  # row 1, col 2 of stride 16
    outputs["cls_16"][0, j, 0] = 0.81
    outputs["obj_16"][0, j, 0] = 1.0
    outputs["bbox_16"][0, j] = [0.5, 0.5, math.log(2), math.log(3)]
    outputs["kps_16"][0, j] = [0.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.25, 1.0, 0.75, 1.0]
    boxes, scores, landmarks = decode_yunet(outputs, size)
    assert boxes.shape == (42, 4) and scores.shape == (42,) and landmarks.shape == (42, 5, 2)
    i = 32 + j  # after the 8x4 cells of stride 8
    assert scores[i] == pytest.approx(0.9)  # sqrt(0.81 * 1.0)
    assert np.count_nonzero(scores) == 1
    # centre ((2 + 0.5) * 16, (1 + 0.5) * 16) = (40, 24); size (2 * 16, 3 * 16) = (32, 48)
    np.testing.assert_allclose(boxes[i], [24, 0, 56, 48], rtol=1e-6)
    np.testing.assert_allclose(landmarks[i], [[32, 16], [48, 16], [40, 24], [36, 32], [44, 32]], rtol=1e-6)

    del outputs["kps_32"]
    with pytest.raises(ValueError, match="kps_32 is missing"):
        decode_yunet(outputs, size)
    with pytest.raises(ValueError, match="cls_8 has shape"):
        decode_yunet(yunet_outputs(size), (64, 64))


# ------------------------------------------------------------------------------------------- NMS


def test_nms_keeps_the_best_of_overlapping_boxes_and_every_disjoint_one():
    boxes = np.array([[0, 0, 10, 10],      # 0
                      [1, 1, 11, 11],      # 1: overlaps 0 (IoU 0.68), lower score
                      [50, 50, 60, 60],    # 2: alone
                      [5, 0, 15, 10],      # 3: IoU 1/3 with 0
                      [100, 0, 110, 10]],  # 4: alone, best score
                     np.float32)
    scores = np.array([0.8, 0.9, 0.5, 0.7, 0.95], np.float32)
    kept = nms(boxes, scores, 0.45)
    assert kept.tolist() == [4, 1, 3, 2]  # best first; 0 suppressed by 1
    assert nms(boxes, scores, 0.3).tolist() == [4, 1, 2]  # now 3 overlaps 1 too much (IoU 0.38)
    assert nms(boxes[[0, 3]], scores[[0, 3]], 0.34).tolist() == [0, 1]  # IoU 1/3 is not above 0.34
    assert nms(boxes[[0, 3]], scores[[0, 3]], 0.33).tolist() == [0]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    assert nms(boxes[[0, 0]], np.array([0.5, 0.5]), 0.5).tolist() == [0]  # a tie keeps the first


def test_batched_nms_never_suppresses_across_classes():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    assert batched_nms(boxes, scores, np.array([0, 2, 0]), 0.5).tolist() == [0, 1]
    assert batched_nms(boxes, scores, np.array([0, 0, 0]), 0.5).tolist() == [0]


# --------------------------------------------------------------------- detectors on fake outputs


def test_person_detector_filters_classes_and_scores_and_maps_back_to_the_image():
    size = (416, 416)
    output = yolox_output(size)
    # A person at input (56, 52)-(120, 180), score 0.72.
    put_yolox_box(output, size, 16, 7, 5, (0.5, 0.25), (4, 8), 0.9, {0: 0.8})
    # The same person found again by the neighbouring cell, a little lower: NMS removes it.
    put_yolox_box(output, size, 16, 7, 6, (-0.4, 0.25), (4, 8), 0.9, {0: 0.7})
    # A faint person (0.2) and a confident car (class 2).
    put_yolox_box(output, size, 8, 10, 40, (0.5, 0.5), (4, 10), 0.5, {0: 0.4})
    put_yolox_box(output, size, 32, 2, 10, (0.5, 0.5), (2, 1), 1.0, {2: 0.9})
    # Something entirely in the letterbox padding (below the image, which ends at y = 234).
    put_yolox_box(output, size, 32, 10, 3, (0.5, 0.5), (1, 1), 1.0, {0: 0.9})
    session = FakeSession([1, 3, 416, 416], {"output": output})
    image = np.zeros((432, 768, 3), np.uint8)
    scale = 416 / 768

    detections = PersonDetector(session).detect(image)
    assert session.fed[0].shape == (1, 3, 416, 416) and session.fed[0].dtype == np.float32
    assert session.fed[0][0, :, 300, 0].tolist() == [114, 114, 114]  # padding reaches the model as 114
    assert len(detections) == 1
    np.testing.assert_allclose(detections.boxes[0], np.array([56, 52, 120, 180]) / scale, rtol=1e-5)
    assert detections.scores[0] == pytest.approx(0.72)
    assert detections.class_ids.tolist() == [0] and detections.landmarks is None

    low = PersonDetector(session, score_threshold=0.1).detect(image)
    assert sorted(low.scores.tolist()) == pytest.approx([0.2, 0.72])

    cars_too = PersonDetector(session, classes=(0, 2)).detect(image)
    assert cars_too.class_ids.tolist() == [2, 0]  # best first: the car scores 0.9
    np.testing.assert_allclose(cars_too.boxes[0], np.array([336 - 32, 80 - 16, 336 + 32, 80 + 16]) / scale, rtol=1e-5)

    with pytest.raises(ValueError, match="takes 416x416 input"):
        PersonDetector(session, input_size=(640, 640))
    with pytest.raises(ValueError, match="unknown detector family"):
        PersonDetector(session, family="detr")


def test_person_detector_yolov8_feeds_rgb_in_0_to_1_and_decodes_columns():
    output = np.zeros((1, 84, 8400), np.float32)
    output[0, 0:4, 10] = [320, 160, 100, 200]
    output[0, 4, 10] = 0.6
    session = FakeSession([1, 3, 640, 640], {"output0": output})
    image = np.zeros((360, 640, 3), np.uint8)
    image[..., 0] = 255  # blue
    detections = PersonDetector(session, family="yolov8").detect(image)
    fed = session.fed[0]
    assert fed[0, 2, 0, 0] == 1.0 and fed[0, 0, 0, 0] == 0.0  # blue lands in the last (RGB) channel, scaled
    assert fed[0, 0, 600, 0] == pytest.approx(114 / 255)
    np.testing.assert_allclose(detections.boxes, [[270, 60, 370, 260]])
    assert detections.scores.tolist() == pytest.approx([0.6])


# --------------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def person_detector() -> PersonDetector:
    need(SHARED_MODELS / "yolox_nano.onnx")
    return PersonDetector.from_model("yolox_nano", SHARED_MODELS)


@pytest.fixture(scope="module")
def entrance_frames() -> dict[int, np.ndarray]:
    """Frames 10 (t = 1 s, nobody there) and 100 (t = 10 s, one person at the table) at 10 fps."""
    capture = cv2.VideoCapture(str(need(VIDEO)))
    frames = {}
    for index in range(101):
        ok, frame = capture.read()
        assert ok, f"could not read frame {index} of {VIDEO}"
        if index in (10, 100):
            frames[index] = frame
    capture.release()
    return frames


def test_yolox_nano_finds_the_person_at_the_entrance(person_detector, entrance_frames):
    frame = entrance_frames[100]
    detections = person_detector.detect(frame)
    assert len(detections) == 1
    x1, y1, x2, y2 = detections.boxes[0]
    assert detections.scores[0] > 0.7 and detections.class_ids[0] == 0
    # She stands at the table, right of centre, head near the top and feet near the bottom.
    assert 340 < x1 < 420 and 480 < x2 < 560 and y1 < 60 and y2 > 360
    assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]


def test_yolox_nano_finds_nobody_in_the_empty_entrance(person_detector, entrance_frames):
    assert len(person_detector.detect(entrance_frames[10])) == 0
    sensitive = PersonDetector(person_detector.session, score_threshold=0.02)
    assert np.all(sensitive.detect(entrance_frames[10]).scores < 0.3)


def test_person_detector_accepts_greyscale_frames(person_detector, entrance_frames):
    grey = cv2.cvtColor(entrance_frames[100], cv2.COLOR_BGR2GRAY)
    detections = person_detector.detect(grey)
    assert len(detections) == 1 and detections.scores[0] > 0.5


def opencv_faces(image: np.ndarray, score_threshold=0.9, nms_iou=0.3) -> np.ndarray:
    """cv2.FaceDetectorYN on the image as given: [N, 15] (x, y, w, h, 5 landmarks, score)."""
    detector = cv2.FaceDetectorYN.create(str(SHARED_MODELS / "face_detection_yunet_2026may.onnx"), "",
                                         (image.shape[1], image.shape[0]), score_threshold, nms_iou, 5000)
    _, faces = detector.detect(image)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def assert_same_faces(ours: Detections, reference: np.ndarray, image_shape, scale: float = 1.0,
                      tolerance: float = 2.0):
    """Our detections against OpenCV's on an image `scale` times the original size, in original pixels."""
    assert len(ours) == len(reference)
    ref_boxes = reference[:, :4].copy()
    ref_boxes[:, 2:] += ref_boxes[:, :2]
    ref_boxes /= scale
    # Ours are clipped to the image; OpenCV's may reach past its edges.
    ref_boxes[:, 0::2] = np.clip(ref_boxes[:, 0::2], 0, image_shape[1])
    ref_boxes[:, 1::2] = np.clip(ref_boxes[:, 1::2], 0, image_shape[0])
    ref_landmarks = reference[:, 4:14].reshape(-1, 5, 2) / scale
    for box, landmarks, score in zip(ours.boxes, ours.landmarks, ours.scores):
        j = int(np.argmin(np.abs(ref_boxes - box).sum(axis=1)))
        np.testing.assert_allclose(box, ref_boxes[j], atol=tolerance / scale)
        np.testing.assert_allclose(landmarks, ref_landmarks[j], atol=tolerance / scale)
        assert score == pytest.approx(reference[j, 14], abs=1e-3)


def test_yunet_agrees_with_opencv_face_detector_on_a_group_photo(face_detector):
    image = cv2.imread(str(need(FACES / "celebrities_13" / "selfie-many-people.jpg")))
    assert image.shape[:2] == (604, 600)
    faces = face_detector.detect(image)
    assert len(faces) >= 3 and np.all(faces.scores >= 0.9)
    assert faces.landmarks.shape == (len(faces), 5, 2)
    assert np.all(np.diff(faces.scores) <= 0)  # best first
    assert_same_faces(faces, opencv_faces(image), image.shape)
    # Landmarks sit inside their face: eyes above the mouth, in the upper half of the box.
    for box, points in zip(faces.boxes, faces.landmarks):
        assert np.all(points[:, 0] > box[0] - 5) and np.all(points[:, 0] < box[2] + 5)
        assert points[0, 1] < points[3, 1] and points[1, 1] < points[4, 1]


def test_yunet_scales_a_large_photo_down_and_maps_faces_back(face_detector):
    image = cv2.imread(str(need(FACES / "knn_examples_5" / "examples" / "two_people.jpg")))
    height, width = image.shape[:2]
    (small_w, small_h), model_size, scale = face_detector.plan(width, height)
    assert max(small_w, small_h) == 640 and model_size[0] % 32 == 0 and model_size[1] % 32 == 0
    faces = face_detector.detect(image)
    assert len(faces) == 2
    small = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_LINEAR)
    assert_same_faces(faces, opencv_faces(small), image.shape, scale=scale)
    # Both faces are in the upper half, one on each side.
    assert sorted((faces.boxes[:, 0] < width / 2).tolist()) == [False, True]
    assert np.all(faces.boxes[:, 3] < height * 0.6)


def test_yunet_fixed_input_size_and_min_face(face_detector):
    image = cv2.imread(str(need(FACES / "celebrities_13" / "couple.jpg")))
    fixed = FaceDetector(face_detector.session, input_size=(320, 320))
    assert fixed.plan(image.shape[1], image.shape[0])[1] == (320, 320)
    faces = fixed.detect(image)
    auto = face_detector.detect(image)
    assert len(faces) == len(auto) == 2
    for box in faces.boxes:  # the same two faces, coarser
        assert max(iou(box, other) for other in auto.boxes) > 0.8

    smallest = float(np.min(np.minimum(auto.boxes[:, 2] - auto.boxes[:, 0], auto.boxes[:, 3] - auto.boxes[:, 1])))
    assert len(FaceDetector(face_detector.session, min_face=smallest + 1).detect(image)) == 1
    with pytest.raises(ValueError, match="multiples of 32"):
        FaceDetector(face_detector.session, input_size=(300, 300))


def test_detectors_find_nothing_in_a_blank_image(person_detector, face_detector):
    blank = np.full((360, 640, 3), 128, np.uint8)
    assert len(person_detector.detect(blank)) == 0
    faces = face_detector.detect(blank)
    assert len(faces) == 0 and faces.landmarks.shape == (0, 5, 2)


def test_from_model_checks_the_task():
    manifest = ModelManifest.load()
    with pytest.raises(ValueError, match="not a person detector"):
        PersonDetector.from_model("yunet", SHARED_MODELS, manifest=manifest)
    with pytest.raises(ValueError, match="not a YuNet face detector"):
        FaceDetector.from_model("yolox_nano", SHARED_MODELS, manifest=manifest)


# --------------------------------------------------------------------------- robustness (random)

any_float32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_nms_result(boxes: np.ndarray, scores: np.ndarray, kept: np.ndarray, threshold: float):
    assert len(set(kept.tolist())) == len(kept) and np.all((kept >= 0) & (kept < len(boxes)))
    assert np.all(np.diff(scores[kept]) <= 0)
    for a in range(len(kept)):
        for b in range(a + 1, len(kept)):
            assert iou(boxes[kept[a]], boxes[kept[b]]) <= threshold + 1e-4


@FUZZ
@given(output=arrays(np.float32, (84, 8), elements=any_float32), threshold=st.floats(0.05, 0.95))
def test_random_yolox_outputs_decode_to_finite_boxes(output, threshold):
    boxes, scores = decode_yolox(output, (64, 64))  # 64 + 16 + 4 cells, 3 classes
    assert boxes.shape == (84, 4) and scores.shape == (84, 3)
    assert np.all(np.isfinite(boxes)) and np.all((scores >= 0) & (scores <= 1))
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])
    best = scores.max(axis=1)
    check_nms_result(boxes, best, nms(boxes, best, threshold), threshold)


@FUZZ
@given(output=arrays(np.float32, (1, 7, 50), elements=any_float32), threshold=st.floats(0.05, 0.95))
def test_random_yolov8_outputs_decode_to_finite_boxes(output, threshold):
    boxes, scores = decode_yolov8(output)
    assert boxes.shape == (50, 4) and scores.shape == (50, 3)
    assert np.all(np.isfinite(boxes)) and np.all((scores >= 0) & (scores <= 1))
    classes = scores.argmax(axis=1)
    kept = batched_nms(boxes, scores.max(axis=1), classes, threshold)
    assert len(set(kept.tolist())) == len(kept)
    for c in set(classes.tolist()):
        mine = kept[classes[kept] == c]
        check_nms_result(boxes, scores.max(axis=1), mine, threshold)


@FUZZ
@given(data=st.data())
def test_random_yunet_outputs_decode_to_finite_faces(data):
    size = (64, 32)
    outputs = {name: data.draw(arrays(np.float32, value.shape, elements=any_float32))
               for name, value in yunet_outputs(size).items()}
    boxes, scores, landmarks = decode_yunet(outputs, size)
    assert np.all(np.isfinite(boxes)) and np.all(np.isfinite(landmarks))
    assert np.all((scores >= 0) & (scores <= 1))
    check_nms_result(boxes, scores, nms(boxes, scores, 0.3), 0.3)


@FUZZ
@given(boxes=arrays(np.float32, (12, 4), elements=st.floats(-1e3, 1e3, width=32)),
       scores=arrays(np.float32, 12, elements=st.floats(0, 1, width=32)),
       threshold=st.floats(0.0, 1.0))
def test_nms_on_arbitrary_boxes_never_keeps_two_overlapping_ones(boxes, scores, threshold):
    boxes = np.concatenate([np.minimum(boxes[:, :2], boxes[:, 2:]), np.maximum(boxes[:, :2], boxes[:, 2:])], axis=1)
    kept = nms(boxes, scores, threshold)
    assert len(kept) >= 1
    check_nms_result(boxes, scores, kept, threshold)
    # Every dropped box overlaps a kept box with a score at least as high.
    for dropped in set(range(len(boxes))) - set(kept.tolist()):
        assert any(iou(boxes[k], boxes[dropped]) > threshold - 1e-4 and scores[k] >= scores[dropped] for k in kept)
