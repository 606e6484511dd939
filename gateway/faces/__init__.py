"""Face recognition for face gates: align, embed, match against a gallery, calibrate thresholds.

Stages, each in its own module, in the order a face meets them: YuNet's 5 landmarks
(gateway.vision.detect.FaceDetector) -> align (a 112x112 crop by a similarity transform onto the
ArcFace template) -> embed (an ArcFace-style ONNX model, L2-normalised vectors) -> gallery search
(1:N, cosine) -> match policy (threshold, margin, N-of-M confirmation, cooldown). `calibrate`
measures false-accept and false-reject rates on a site's enrolment photos to choose the threshold.
`enrol` turns enrolment photos into templates (pictures stay in memory), and `store` keeps the
templates encrypted, with each person's consent and an append-only, hash-chained audit log.
Face images and vectors never leave the gateway; only match decisions do.
"""

import importlib

# Loaded on first use (PEP 562), so that the command line starts without OpenCV and numpy.
_EXPORTS = {
    "ARCFACE_TEMPLATE": "align", "align_face": "align", "similarity_transform": "align",
    "FaceEmbedder": "embed",
    "FaceGallery": "gallery", "SearchResult": "gallery", "MatchPolicy": "gallery", "FaceMatcher": "gallery",
    "Decision": "gallery",
    "FaceStore": "store", "Consent": "store", "GuardianConsent": "store", "ConsentError": "store",
    "FaceStoreError": "store", "FaceStoreKeyError": "store", "load_or_create_key": "store",
    "key_from_text": "store", "open_face_store": "store",
    "EnrolError": "enrol", "embed_images": "enrol", "identify_image": "enrol",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
