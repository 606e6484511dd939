"""From enrolment photos to templates, and from a photo to the enrolled persons in it.

Pictures are only ever held in memory: they are decoded, the face found, aligned and embedded, and
only the vector goes on (to `gateway.faces.store`, encrypted). Nothing here writes a picture, a
crop or a vector anywhere.

An enrolment photo must show exactly one face of at least `min_face_px` (its box's shorter side):
none, or several, and `EnrolError` names the photo, so a kiosk or an engineer can retake it rather
than enrol the wrong person, or someone standing behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .align import align_face

if TYPE_CHECKING:
    from ..vision.detect import Detections, FaceDetector
    from .embed import FaceEmbedder
    from .gallery import FaceGallery

Image = bytes | bytearray | memoryview | np.ndarray


class EnrolError(ValueError):
    """A photo that cannot be enrolled: unreadable, without a usable face, or with several."""


def face_sides(faces: "Detections") -> np.ndarray:
    """The shorter side of each face box, in pixels."""
    return np.minimum(faces.boxes[:, 2] - faces.boxes[:, 0], faces.boxes[:, 3] - faces.boxes[:, 1])


def largest_face_crop(image: np.ndarray, detector: "FaceDetector") -> tuple[np.ndarray, float] | None:
    """(aligned crop, shorter box side) of the largest face in the image, or None without a face."""
    faces = detector.detect(image)
    if len(faces) == 0:
        return None
    sides = face_sides(faces)
    best = int(np.argmax(sides))
    return align_face(image, faces.landmarks[best]), float(sides[best])


def decode_image(image: Image, name: str = "the image") -> np.ndarray:
    """A BGR uint8 image from encoded bytes (JPEG, PNG, ...) or an array (BGR, grey or BGRA)."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        buffer = np.frombuffer(image, np.uint8)
        decoded = None
        if buffer.size:
            try:
                decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
            except cv2.error:
                decoded = None
        if decoded is None:
            raise EnrolError(f"{name} is not a readable image (JPEG, PNG, BMP or WebP)")
        return decoded
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)) \
            or array.size == 0:
        raise EnrolError(f"{name}: expected an 8-bit BGR, grey or BGRA image, got {array.dtype} {array.shape}")
    if array.ndim == 2 or array.shape[2] == 1:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return array


def enrolment_crop(image: Image, detector: "FaceDetector", min_face_px: float = 48.0,
                   name: str = "the image") -> np.ndarray:
    """The aligned crop of the one face of at least `min_face_px` in an enrolment photo; EnrolError
    if there is none or more than one."""
    decoded = decode_image(image, name)
    faces = detector.detect(decoded)
    sides = face_sides(faces)
    usable = np.flatnonzero(sides >= min_face_px)
    if len(usable) == 0:
        if len(faces):
            raise EnrolError(f"{name}: the face is too small ({float(sides.max()):.0f} px, at least "
                             f"{min_face_px:.0f} px needed); take the photo closer")
        raise EnrolError(f"{name}: no face found; the face must be frontal, lit and unobstructed")
    if len(usable) > 1:
        raise EnrolError(f"{name}: {len(usable)} faces; an enrolment photo must show one person only")
    return align_face(decoded, faces.landmarks[int(usable[0])])


def embed_images(images: Sequence[Image], detector: "FaceDetector", embedder: "FaceEmbedder",
                 min_face_px: float = 48.0, names: Sequence[str] | None = None) -> np.ndarray:
    """[N, D] normalised templates, one per enrolment photo (bytes or arrays), in order.

    Every photo must hold exactly one face of at least `min_face_px`; the first that does not stops
    the enrolment with an EnrolError naming it (`names[i]`, else "image i+1").
    """
    if len(images) == 0:
        raise EnrolError("no photos to enrol")
    if names is not None and len(names) != len(images):
        raise ValueError("names must give one name per image")
    crops = [enrolment_crop(image, detector, min_face_px, names[i] if names is not None else f"image {i + 1}")
             for i, image in enumerate(images)]
    return embedder.embed(crops)


def identify_image(image: Image, detector: "FaceDetector", embedder: "FaceEmbedder", gallery: "FaceGallery",
                   threshold: float = 0.45, margin: float = 0.05, min_face_px: float = 0.0) -> list[dict]:
    """Every face in a photo: `{"box": [x, y, w, h], "person_id": str | None, "score": float}`.

    `score` is the best cosine against the gallery (-1 with an empty gallery); `person_id` is that
    person only when the score reaches `threshold` and beats the best other person by `margin`, and
    the face's shorter side is at least `min_face_px` (the same rules as a gate's single frame).
    """
    from .gallery import FaceMatcher, MatchPolicy

    decoded = decode_image(image)
    faces = detector.detect(decoded)
    if len(faces) == 0:
        return []
    matcher = FaceMatcher(MatchPolicy(threshold=threshold, margin=margin, min_face_px=min_face_px))
    vectors = embedder.embed([align_face(decoded, landmarks) for landmarks in faces.landmarks])
    results = gallery.search(vectors)
    sides = face_sides(faces)
    found = []
    for box, side, result in zip(faces.boxes, sides, results):
        known = side >= min_face_px and matcher.classify(result) == "pending"
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        found.append({"box": [x1, y1, x2 - x1, y2 - y1], "person_id": result.person_id if known else None,
                      "score": round(float(result.score), 4)})
    return found
