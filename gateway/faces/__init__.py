"""Face recognition for face gates: align, embed, match against a gallery, calibrate thresholds.

Stages, each in its own module, in the order a face meets them: YuNet's 5 landmarks
(gateway.vision.detect.FaceDetector) -> align (a 112x112 crop by a similarity transform onto the
ArcFace template) -> embed (an ArcFace-style ONNX model, L2-normalised vectors) -> gallery search
(1:N, cosine) -> match policy (threshold, margin, N-of-M confirmation, cooldown). `calibrate`
measures false-accept and false-reject rates on a site's enrolment photos to choose the threshold.
Face images and vectors never leave the gateway; only match decisions do.
"""

from .align import ARCFACE_TEMPLATE, align_face, similarity_transform
from .embed import FaceEmbedder
from .gallery import Decision, FaceGallery, FaceMatcher, MatchPolicy, SearchResult

__all__ = ["ARCFACE_TEMPLATE", "align_face", "similarity_transform", "FaceEmbedder", "FaceGallery",
           "SearchResult", "MatchPolicy", "FaceMatcher", "Decision"]
