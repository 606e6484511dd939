"""Face alignment: a 112x112 crop with the eyes, nose and mouth where ArcFace-style models expect them.

Embedding models are trained on faces warped onto one fixed 5-point template; a crop that puts the
eyes a few pixels elsewhere costs accuracy. A similarity transform (rotation, uniform scale,
translation: no shear, so the face keeps its shape) is fitted by least squares (Umeyama) from the
detector's 5 landmarks to the template. Umeyama in numpy is used rather than
`cv2.estimateAffinePartial2D`: with 5 points there are no outliers worth a robust estimator, the
result is deterministic, and it is exactly the least-squares fit the models were trained with
(insightface's `SimilarityTransform`).
"""

from __future__ import annotations

import cv2
import numpy as np

CROP_SIZE = 112

# Where an ArcFace-style model expects the 5 points in its 112x112 input, in YuNet's order:
# right eye, left eye, nose tip, right mouth corner, left mouth corner (right/left of the person,
# so the "right eye" is on the image's left).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of the similarity transform mapping `source` points [K, 2] onto `target` [K, 2].

    Umeyama (1991): the least-squares rotation, uniform scale and translation. Degenerate input (all
    points the same) gives a finite matrix (scale 0 is avoided) rather than NaN.
    """
    source = np.asarray(source, np.float64).reshape(-1, 2)
    target = np.asarray(target, np.float64).reshape(-1, 2)
    if source.shape != target.shape or len(source) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_c, target_c = source - source_mean, target - target_mean
    covariance = target_c.T @ source_c / len(source)
    u, singular, vt = np.linalg.svd(covariance)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection: flip the weakest axis
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    variance = (source_c ** 2).sum() / len(source)
    scale = float((singular * sign).sum() / variance) if variance > 1e-12 else 1.0
    matrix = np.empty((2, 3), np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = target_mean - matrix[:, :2] @ source_mean
    return matrix


def align_face(image_bgr: np.ndarray, landmarks5: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """The face warped onto the ArcFace template: a `size` x `size` BGR crop (uint8 like the image).

    `landmarks5` [5, 2] are YuNet's points in the image's pixels. `size` other than 112 scales the
    template with it. Parts of the crop outside the image are black, as in training.
    """
    landmarks5 = np.asarray(landmarks5, np.float64)
    if landmarks5.shape != (5, 2) or not np.all(np.isfinite(landmarks5)):
        raise ValueError(f"landmarks5 must be 5 finite (x, y) points, got shape {landmarks5.shape}")
    matrix = similarity_transform(landmarks5, ARCFACE_TEMPLATE * (size / CROP_SIZE))
    return cv2.warpAffine(image_bgr, matrix, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
