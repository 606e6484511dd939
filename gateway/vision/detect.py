"""Person and face detection with ONNX models: pre-processing, output decoding, NMS.

`PersonDetector` runs a YOLOX (or a site's own YOLOv8 / YOLO11) COCO model and keeps the person
class; `FaceDetector` runs YuNet and also returns each face's 5 landmarks (for aligning the face
before an embedding). Both return `Detections` in pixels of the image they were given, whatever size
the model saw.

Everything per grid cell or per box is vectorised with numpy. NMS is our own greedy NMS: a Python
loop over the boxes it keeps (a handful per frame after the score threshold), each step vectorised
over the remaining boxes. It is used instead of `cv2.dnn.NMSBoxes` so that IoU is the plain
continuous-coordinate one (no +1 pixel conventions) and the tests can state exactly what is kept.

Decoding never trusts the model's numbers: NaN, infinite or absurd regression values (a broken or
foreign model) are clamped, so a box is always finite and cannot poison NMS or the tracker.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

import cv2
import numpy as np

from ..models import ModelManifest, default_manifest
from ..models import models_dir as resolve_models_dir

if TYPE_CHECKING:
    import onnxruntime

Size = tuple[int, int]  # (width, height)

YOLO_STRIDES = (8, 16, 32)
YUNET_STRIDES = (8, 16, 32)
PERSON_CLASS = 0  # COCO

# Clamps for decoding (see the module docstring). Real offsets are within a cell or two and real
# log-sizes within about +-6, so these never touch a real detection.
_MAX_OFFSET = 1.0e4  # grid cells
_MAX_LOG_SIZE = 12.0  # exp(12) * 32 is about 5 million pixels: finite, and obviously no person
_MAX_PIXELS = 1.0e7  # for layouts that give pixels directly (YOLOv8)


@dataclass
class Detections:
    """What a detector found in one image, best score first, in that image's pixels."""

    boxes: np.ndarray  # float32 [N, 4]: x1, y1, x2, y2
    scores: np.ndarray  # float32 [N]
    class_ids: np.ndarray  # int32 [N] (COCO ids for persons; 0 for faces)
    landmarks: np.ndarray | None = None  # float32 [N, 5, 2] for faces: right eye, left eye, nose, mouth right, left

    @classmethod
    def empty(cls, with_landmarks: bool = False) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32),
                   np.zeros((0, 5, 2), np.float32) if with_landmarks else None)

    def __len__(self) -> int:
        return len(self.scores)


# ---------------------------------------------------------------------------- pre-processing


def letterbox(image: np.ndarray, size: Size = (416, 416), pad_value: int = 114) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio to fit `size` (width, height) and pad right and bottom.

    The image sits at the top-left as YOLOX was trained, so a model pixel maps back to the image by
    dividing by `scale` alone (no offset).
    """
    width, height = size
    image_h, image_w = image.shape[:2]
    scale = min(width / image_w, height / image_h)
    # Rounded, not truncated as in YOLOX's own code: 432 * (416 / 768) is 233.99999 in floating point.
    new_w, new_h = min(width, max(1, round(image_w * scale))), min(height, max(1, round(image_h * scale)))
    resized = image if (new_w, new_h) == (image_w, image_h) else \
        cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    padded = np.full((height, width) + image.shape[2:], pad_value, dtype=image.dtype)
    padded[:new_h, :new_w] = resized
    return padded, scale


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """3-channel uint8 BGR from what cameras deliver (BGR, greyscale, BGRA)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _to_blob(image: np.ndarray, swap_rb: bool = False, scale: float = 1.0) -> np.ndarray:
    """[1, 3, H, W] float32 from an HxWx3 image."""
    channels = image[:, :, ::-1] if swap_rb else image
    blob = channels.transpose(2, 0, 1)[np.newaxis].astype(np.float32)
    if scale != 1.0:
        blob *= np.float32(scale)
    return np.ascontiguousarray(blob)


def _model_input_size(session: "onnxruntime.InferenceSession") -> Size | None:
    """(width, height) when the model's input has a fixed spatial size, else None."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] > 0 and shape[3] > 0:
        return int(shape[3]), int(shape[2])
    return None


# ----------------------------------------------------------------------------------- decoding


@lru_cache(maxsize=16)
def _grid(input_size: Size, strides: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Cell (col, row) [N, 2] and stride [N, 1] of every output row, strides in order, row-major."""
    width, height = input_size
    cells, cell_strides = [], []
    for stride in strides:
        rows, cols = height // stride, width // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full(rows * cols, stride))
    cell = np.concatenate(cells).astype(np.float32)
    stride_col = np.concatenate(cell_strides).astype(np.float32)[:, np.newaxis]
    cell.flags.writeable = False
    stride_col.flags.writeable = False
    return cell, stride_col


def _clean(values: np.ndarray, limit: float) -> np.ndarray:
    """Finite values within +-limit (NaN becomes 0)."""
    return np.clip(np.nan_to_num(values, nan=0.0, posinf=limit, neginf=-limit), -limit, limit)


def _clean_scores(scores: np.ndarray) -> np.ndarray:
    return np.clip(np.nan_to_num(scores, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0).astype(np.float32, copy=False)


def _xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32, copy=False)


def decode_yolox(output: np.ndarray, input_size: Size, strides: Sequence[int] = YOLO_STRIDES,
                 classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, input pixels) [N, 4] and scores obj * cls [N, C] from a YOLOX output.

    `output` is [1, N, 5 + C] or [N, 5 + C], one row per grid cell (strides in order, row-major).
    `classes` picks score columns (all C by default), e.g. (0,) for persons only.
    """
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 3 and output.shape[0] == 1:
        output = output[0]
    cell, stride = _grid((int(input_size[0]), int(input_size[1])), tuple(int(s) for s in strides))
    if output.ndim != 2 or output.shape[0] != len(cell) or output.shape[1] < 6:
        raise ValueError(f"expected a YOLOX output [1, {len(cell)}, 5 + classes] for input {input_size[0]}x"
                         f"{input_size[1]} and strides {tuple(strides)}, got {list(np.shape(output))}")
    with np.errstate(over="ignore", invalid="ignore"):
        centre = (_clean(output[:, 0:2], _MAX_OFFSET) + cell) * stride
        size = np.exp(_clean(output[:, 2:4], _MAX_LOG_SIZE)) * stride
        class_scores = output[:, 5:] if classes is None else output[:, 5 + np.asarray(classes, dtype=np.intp)]
        scores = _clean_scores(output[:, 4:5]) * _clean_scores(class_scores)
    return _xyxy(centre[:, 0], centre[:, 1], size[:, 0], size[:, 1]), scores


def decode_yolov8(output: np.ndarray, classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (xyxy, input pixels) [N, 4] and class scores [N, C] from a YOLOv8 / YOLO11 output.

    `output` is [1, 4 + C, N] or [4 + C, N]: cx, cy, w, h in input pixels, then C class scores (no
    objectness). `classes` picks score columns as in `decode_yolox`.
    """
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 3 and output.shape[0] == 1:
        output = output[0]
    if output.ndim != 2 or output.shape[0] < 5:
        raise ValueError(f"expected a YOLOv8 output [1, 4 + classes, N], got {list(np.shape(output))}")
    with np.errstate(invalid="ignore"):
        cx, cy = _clean(output[0], _MAX_PIXELS), _clean(output[1], _MAX_PIXELS)
        w, h = np.clip(_clean(output[2], _MAX_PIXELS), 0, None), np.clip(_clean(output[3], _MAX_PIXELS), 0, None)
        class_rows = output[4:] if classes is None else output[4 + np.asarray(classes, dtype=np.intp)]
        scores = np.ascontiguousarray(_clean_scores(class_rows).T)
    return _xyxy(cx, cy, w, h), scores


def decode_yunet(outputs: Mapping[str, np.ndarray], input_size: Size,
                 strides: Sequence[int] = YUNET_STRIDES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (xyxy, input pixels) [N, 4], scores [N] and landmarks [N, 5, 2] from YuNet's outputs.

    `outputs` maps cls_s, obj_s [1, n, 1], bbox_s [1, n, 4] and kps_s [1, n, 10] for every stride s
    to arrays. Score = sqrt(cls * obj); box centre (col + b0, row + b1) * s, size exp(b2, b3) * s;
    landmark k at (col + kps[2k], row + kps[2k + 1]) * s.
    """
    width, height = int(input_size[0]), int(input_size[1])
    cell, stride = _grid((width, height), tuple(int(s) for s in strides))

    counts = [(height // s) * (width // s) for s in strides]

    def gather(prefix: str, columns: int) -> np.ndarray:
        parts = []
        for s, count in zip(strides, counts):
            name = f"{prefix}_{s}"
            if name not in outputs:
                raise ValueError(f"YuNet output {name} is missing (have: {', '.join(sorted(outputs))})")
            part = np.asarray(outputs[name], dtype=np.float32)
            if part.size != count * columns:
                raise ValueError(f"YuNet output {name} has shape {list(part.shape)}; input {width}x{height} "
                                 f"needs {count} rows of {columns}")
            parts.append(part.reshape(count, columns))
        return np.concatenate(parts)

    cls, obj = gather("cls", 1), gather("obj", 1)
    bbox, kps = gather("bbox", 4), gather("kps", 10)
    with np.errstate(over="ignore", invalid="ignore"):
        scores = np.sqrt(_clean_scores(cls[:, 0]) * _clean_scores(obj[:, 0]))
        centre = (_clean(bbox[:, 0:2], _MAX_OFFSET) + cell) * stride
        size = np.exp(_clean(bbox[:, 2:4], _MAX_LOG_SIZE)) * stride
        points = (_clean(kps, _MAX_OFFSET).reshape(-1, 5, 2) + cell[:, np.newaxis, :]) * stride[:, :, np.newaxis]
    boxes = _xyxy(centre[:, 0], centre[:, 1], size[:, 0], size[:, 1])
    return boxes, scores.astype(np.float32, copy=False), points.astype(np.float32, copy=False)


# ----------------------------------------------------------------------------------------- NMS


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first.

    A box is dropped when its IoU with a better kept box is above `iou_threshold`. Ties in score
    keep the earlier box. Non-finite input does not crash (such a box is simply kept).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)  # float64: exact enough for any coordinates
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"{len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    keep: list[int] = []
    with np.errstate(invalid="ignore", over="ignore"):
        areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        while order.size:
            best, rest = order[0], order[1:]
            keep.append(int(best))
            inter_w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
            inter_h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
            inter = inter_w * inter_h
            union = areas[best] + areas[rest] - inter
            iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
            order = rest[~(iou > iou_threshold)]
    return np.asarray(keep, dtype=np.intp)


def batched_nms(boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """NMS within each class only (boxes of different classes never suppress each other), best first.

    One `nms` per class present rather than the usual shift-each-class-apart trick, which loses
    precision when coordinates are large.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1)
    classes = np.unique(class_ids)
    if len(classes) <= 1:
        return nms(boxes, scores, iou_threshold)
    kept = np.concatenate([members[nms(boxes[members], scores[members], iou_threshold)]
                           for members in (np.flatnonzero(class_ids == c) for c in classes)])
    return kept[np.argsort(-scores[kept], kind="stable")]


def _top(scores: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the `limit` best scores (all when there are fewer), unordered."""
    if len(scores) <= limit:
        return np.arange(len(scores))
    return np.argpartition(-scores, limit - 1)[:limit]


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return boxes


# ------------------------------------------------------------------------------------ persons


@dataclass(frozen=True)
class _YoloFamily:
    swap_rb: bool  # model wants RGB
    pixel_scale: float
    default_size: Size


_PERSON_FAMILIES = {
    "yolox": _YoloFamily(swap_rb=False, pixel_scale=1.0, default_size=(416, 416)),  # BGR 0..255
    "yolov8": _YoloFamily(swap_rb=True, pixel_scale=1 / 255, default_size=(640, 640)),  # RGB 0..1
}


class PersonDetector:
    """People (or other COCO classes) in a BGR image, with a YOLOX or YOLOv8/YOLO11 ONNX model.

    The image is letterboxed to the model's input (padding 114, image top-left), decoded, filtered
    by `score_threshold` on the best of `classes`, reduced by class-wise NMS, and mapped back to
    the image's pixels. At most `max_candidates` boxes (the best) go into NMS, so a frame full of
    low-confidence noise costs bounded time.

    YOLOv8 exports from Ultralytics pad centred by default; padding at the top-left changes
    nothing but where the grey band is, and keeps one mapping back for both families.
    """

    def __init__(self, session: "onnxruntime.InferenceSession", family: Literal["yolox", "yolov8"] = "yolox",
                 input_size: Size | None = None, score_threshold: float = 0.3, nms_iou: float = 0.45,
                 classes: Sequence[int] = (PERSON_CLASS,), max_candidates: int = 1000):
        if family not in _PERSON_FAMILIES:
            raise ValueError(f"unknown detector family {family!r} (known: {', '.join(_PERSON_FAMILIES)})")
        if not classes:
            raise ValueError("classes must name at least one class")
        self.session = session
        self.family = family
        self._family = _PERSON_FAMILIES[family]
        model_size = _model_input_size(session)
        if input_size is None:
            input_size = model_size or self._family.default_size
        input_size = (int(input_size[0]), int(input_size[1]))
        if model_size is not None and input_size != model_size:
            raise ValueError(f"the model takes {model_size[0]}x{model_size[1]} input, "
                             f"not {input_size[0]}x{input_size[1]}")
        if input_size[0] % 32 or input_size[1] % 32:
            raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be multiples of 32")
        self.input_size: Size = input_size
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.classes = tuple(int(c) for c in classes)
        self.max_candidates = int(max_candidates)
        self._input_name = session.get_inputs()[0].name
        self._output_name = session.get_outputs()[0].name

    @classmethod
    def from_model(cls, name: str = "yolox_nano", models_dir: str | Path | None = None, threads: int = 1,
                   manifest: ModelManifest | None = None, **options) -> "PersonDetector":
        """A detector for a manifest model (file checked by sha256); `options` go to the constructor."""
        manifest = manifest or default_manifest()
        spec = manifest.get(name)
        if spec.task != "person_detection":
            raise ValueError(f"model {name} is a {spec.task} model, not a person detector")
        options.setdefault("family", spec.family)
        session = manifest.load_model(name, resolve_models_dir(models_dir), threads=threads)
        return cls(session, **options)

    def detect(self, image: np.ndarray) -> Detections:
        image = _as_bgr(image)
        image_h, image_w = image.shape[:2]
        padded, scale = letterbox(image, self.input_size, 114)
        blob = _to_blob(padded, self._family.swap_rb, self._family.pixel_scale)
        output = self.session.run([self._output_name], {self._input_name: blob})[0]
        if self.family == "yolox":
            boxes, scores = decode_yolox(output, self.input_size, classes=self.classes)
        else:
            boxes, scores = decode_yolov8(output, classes=self.classes)

        best_class = scores.argmax(axis=1)
        best = scores[np.arange(len(scores)), best_class]
        candidates = np.flatnonzero(best >= self.score_threshold)
        if len(candidates) == 0:
            return Detections.empty()
        candidates = candidates[_top(best[candidates], self.max_candidates)]
        boxes, best, best_class = boxes[candidates], best[candidates], best_class[candidates]

        kept = batched_nms(boxes, best, best_class, self.nms_iou)
        boxes = _clip_boxes(boxes[kept] / np.float32(scale), image_w, image_h)
        visible = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # not entirely in the padding
        class_ids = np.asarray(self.classes, dtype=np.int32)[best_class[kept]]
        return Detections(boxes[visible].astype(np.float32), best[kept][visible].astype(np.float32),
                          class_ids[visible])


# -------------------------------------------------------------------------------------- faces


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class FaceDetector:
    """Faces and their 5 landmarks in a BGR image, with YuNet.

    The image is resized keeping its aspect ratio (never enlarged in automatic mode) and padded
    with black at the right and bottom up to multiples of 32, as OpenCV's `FaceDetectorYN` does.
    The model's input size therefore follows the frame: by default the frame scaled so that its
    longer side is at most `max_side` (a 1280x720 frame runs at 640x384, 640x360 ignoring the
    padding). A fixed `input_size` (multiples of 32, e.g. (320, 320)) fits the image inside it
    instead. YuNet finds faces of about 10 to 300 pixels at its input size, so `max_side` trades
    the smallest face found against time.

    `min_face` drops faces whose shorter box side is below that many pixels of the original image
    (too small to recognise).
    """

    def __init__(self, session: "onnxruntime.InferenceSession", input_size: Size | None = None,
                 score_threshold: float = 0.9, nms_iou: float = 0.3, min_face: float = 0, max_side: int = 640,
                 top_k: int = 5000):
        self.session = session
        model_size = _model_input_size(session)
        if input_size is None:
            input_size = model_size
        if input_size is not None:
            input_size = (int(input_size[0]), int(input_size[1]))
            if model_size is not None and input_size != model_size:
                raise ValueError(f"the model takes {model_size[0]}x{model_size[1]} input, "
                                 f"not {input_size[0]}x{input_size[1]}")
            if input_size[0] % 32 or input_size[1] % 32 or min(input_size) <= 0:
                raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be positive multiples of 32")
        if max_side < 32:
            raise ValueError("max_side must be at least 32")
        self.input_size: Size | None = input_size
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.min_face = float(min_face)
        self.max_side = int(max_side)
        self.top_k = int(top_k)
        self._input_name = session.get_inputs()[0].name
        self._output_names = [o.name for o in session.get_outputs()]

    @classmethod
    def from_model(cls, name: str = "yunet", models_dir: str | Path | None = None, threads: int = 1,
                   manifest: ModelManifest | None = None, **options) -> "FaceDetector":
        manifest = manifest or default_manifest()
        spec = manifest.get(name)
        if spec.task != "face_detection" or spec.family != "yunet":
            raise ValueError(f"model {name} is not a YuNet face detector")
        return cls(manifest.load_model(name, resolve_models_dir(models_dir), threads=threads), **options)

    def plan(self, width: int, height: int) -> tuple[Size, Size, float]:
        """For a width x height image: (resized size, model input size, scale = resized / original)."""
        if self.input_size is not None:
            scale = min(self.input_size[0] / width, self.input_size[1] / height)
            resized = (min(self.input_size[0], max(1, round(width * scale))),
                       min(self.input_size[1], max(1, round(height * scale))))
            model = self.input_size
        else:
            scale = min(1.0, self.max_side / max(width, height))
            resized = (max(1, round(width * scale)), max(1, round(height * scale)))
            model = (_round_up(resized[0], 32), _round_up(resized[1], 32))
        return resized, model, scale

    def detect(self, image: np.ndarray) -> Detections:
        image = _as_bgr(image)
        image_h, image_w = image.shape[:2]
        (new_w, new_h), (in_w, in_h), scale = self.plan(image_w, image_h)
        resized = image if (new_w, new_h) == (image_w, image_h) else \
            cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        padded = cv2.copyMakeBorder(resized, 0, in_h - new_h, 0, in_w - new_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        outputs = self.session.run(self._output_names, {self._input_name: _to_blob(padded)})
        boxes, scores, landmarks = decode_yunet(dict(zip(self._output_names, outputs)), (in_w, in_h))

        candidates = np.flatnonzero(scores >= self.score_threshold)
        if len(candidates) == 0:
            return Detections.empty(with_landmarks=True)
        candidates = candidates[_top(scores[candidates], self.top_k)]
        # Back to the original image: x / scale (x and y share the scale; the padding is right/bottom).
        boxes = boxes[candidates] / np.float32(scale)
        landmarks = landmarks[candidates] / np.float32(scale)
        scores = scores[candidates]
        kept = nms(boxes, scores, self.nms_iou)
        boxes = _clip_boxes(boxes[kept], image_w, image_h)
        if self.min_face > 0:
            # After NMS: filtering first would let a suppressed, slightly larger duplicate of a small
            # face take its place. Measured on the visible part of the face.
            big = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) >= self.min_face
            kept, boxes = kept[big], boxes[big]
        return Detections(boxes.astype(np.float32), scores[kept].astype(np.float32),
                          np.zeros(len(kept), np.int32), landmarks[kept].astype(np.float32))


def detector_for(settings, models_dir: str | Path | None, threads: int = 1) -> PersonDetector:
    """The person detector a camera's analytics settings ask for (gateway.vision.settings)."""
    options = {"score_threshold": settings.score_threshold, "nms_iou": settings.nms_iou}
    if settings.detector_family:
        options["family"] = settings.detector_family
    return PersonDetector.from_model(settings.detector, models_dir, threads=threads, **options)
