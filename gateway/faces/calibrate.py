"""Choosing the match threshold from a site's own photos: false-accept and false-reject rates.

The right threshold depends on the model, the cameras and the people enrolled, so it is measured,
not guessed: every pair of photos of the same person is a genuine pair, every pair of different
people an impostor pair. FAR(t) is the share of impostor pairs scoring >= t (a stranger let in),
FRR(t) the share of genuine pairs scoring < t (an enrolled person refused). `recommend` picks the
lowest threshold whose FAR is at most the target, which is the one with the fewest refusals. Rank-1
identification (each photo against a gallery of all the others) says whether 1:N search works on
these people at all.

Photos come as a folder with one sub-folder per person (the usual enrolment layout) or as a listing
"person: file file ..." (`load_listing`). Each photo's largest face is used; photos without a face
are reported, not silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .enrol import largest_face_crop

if TYPE_CHECKING:
    from ..vision.detect import FaceDetector
    from .embed import FaceEmbedder

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DEFAULT_THRESHOLDS = np.round(np.arange(-0.2, 1.0001, 0.01), 2)


# ------------------------------------------------------------------------------------- loading


def load_folder(folder: str | Path) -> dict[str, list[Path]]:
    """{person: photos} from a folder holding one sub-folder of photos per person (sorted, stable)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    groups = {}
    for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(p for p in person_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            groups[person_dir.name] = photos
    return groups


def load_listing(listing: str | Path, images_dir: str | Path | None = None) -> dict[str, list[Path]]:
    """{person: photos} from lines "person: file file ..." (files relative to `images_dir`, by default
    the listing's folder). Blank lines and lines starting with # are skipped."""
    listing = Path(listing)
    images_dir = Path(images_dir) if images_dir is not None else listing.parent
    groups: dict[str, list[Path]] = {}
    for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        person, sep, files = line.partition(":")
        if not sep or not person.strip():
            raise ValueError(f"{listing}:{number}: expected 'person: file file ...'")
        groups.setdefault(person.strip(), []).extend(images_dir / name for name in files.split())
    return groups


@dataclass
class EmbeddedPhotos:
    vectors: np.ndarray  # float32 [N, D], normalised
    labels: list[str]  # person of each row
    paths: list[Path]
    face_px: list[float]  # shorter side of the face box used
    skipped: list[Path] = field(default_factory=list)  # unreadable, or no face found


def embed_photos(groups: Mapping[str, Sequence[Path]], detector: "FaceDetector",
                 embedder: "FaceEmbedder") -> EmbeddedPhotos:
    """One vector per photo (its largest face), with the photos that gave none listed apart."""
    crops, labels, paths, sizes, skipped = [], [], [], [], []
    for person, photos in groups.items():
        for path in photos:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            found = largest_face_crop(image, detector) if image is not None else None
            if found is None:
                skipped.append(Path(path))
                continue
            crops.append(found[0])
            sizes.append(found[1])
            labels.append(person)
            paths.append(Path(path))
    vectors = embedder.embed(crops) if crops else np.zeros((0, embedder.dim or 0), np.float32)
    return EmbeddedPhotos(vectors, labels, paths, sizes, skipped)


# ------------------------------------------------------------------------------------- measuring


@dataclass
class CalibrationReport:
    thresholds: np.ndarray  # [T], increasing
    far: np.ndarray  # [T] share of impostor pairs with score >= threshold (non-increasing)
    frr: np.ndarray  # [T] share of genuine pairs with score < threshold (non-decreasing)
    genuine_scores: np.ndarray  # cosines of all same-person pairs
    impostor_scores: np.ndarray  # cosines of all different-person pairs
    rank1: float  # share of identifiable photos whose best other photo is the same person (NaN if none)
    identified: int  # photos whose person has at least one other photo (the rank-1 denominator)
    persons: int
    photos: int
    skipped: list[Path] = field(default_factory=list)

    @property
    def genuine_mean(self) -> float:
        return float(self.genuine_scores.mean()) if len(self.genuine_scores) else float("nan")

    @property
    def impostor_mean(self) -> float:
        return float(self.impostor_scores.mean()) if len(self.impostor_scores) else float("nan")

    @property
    def far_resolution(self) -> float:
        """The smallest non-zero FAR these photos can show: a target below it is only bounded, not measured."""
        return 1.0 / len(self.impostor_scores) if len(self.impostor_scores) else float("inf")

    def summary(self) -> str:
        return (f"{self.photos} photos of {self.persons} persons ({len(self.skipped)} without a face); "
                f"{len(self.genuine_scores)} genuine pairs (mean {self.genuine_mean:.3f}), "
                f"{len(self.impostor_scores)} impostor pairs (mean {self.impostor_mean:.3f}); "
                f"rank-1 {self.rank1:.3f} over {self.identified}")


def rates(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, FRR) at each threshold, by binary search on the sorted scores."""
    genuine, impostor = np.sort(genuine), np.sort(impostor)
    far = (len(impostor) - np.searchsorted(impostor, thresholds, side="left")) / max(1, len(impostor))
    frr = np.searchsorted(genuine, thresholds, side="left") / max(1, len(genuine))
    return far, frr


def calibrate_vectors(vectors: np.ndarray, labels: Sequence[str], thresholds: np.ndarray | None = None,
                      skipped: Sequence[Path] = ()) -> CalibrationReport:
    """The report from normalised vectors [N, D] and their persons (no models involved)."""
    thresholds = np.asarray(DEFAULT_THRESHOLDS if thresholds is None else thresholds, np.float64)
    if thresholds.ndim != 1 or np.any(np.diff(thresholds) <= 0):
        raise ValueError("thresholds must be strictly increasing")
    vectors = np.asarray(vectors, np.float32)
    label_index = np.unique(np.asarray(labels), return_inverse=True)[1]
    similarity = vectors @ vectors.T
    same = label_index[:, None] == label_index[None, :]
    upper = np.triu(np.ones_like(same), k=1)  # each unordered pair once
    genuine = similarity[same & upper]
    impostor = similarity[~same & upper]
    far, frr = rates(genuine, impostor, thresholds)

    # Rank-1: each photo against all the others (leave one out); only photos whose person has another.
    others = similarity.copy()
    np.fill_diagonal(others, -np.inf)
    identifiable = (same.sum(axis=1) > 1) if len(vectors) else np.zeros(0, bool)
    nearest = others.argmax(axis=1) if len(vectors) > 1 else np.zeros(len(vectors), np.int64)
    correct = label_index[nearest] == label_index
    identified = int(identifiable.sum())
    rank1 = float(correct[identifiable].mean()) if identified else float("nan")
    return CalibrationReport(thresholds, far, frr, genuine, impostor, rank1, identified,
                             len(set(labels)), len(vectors), list(skipped))


def calibrate(source: str | Path | Mapping[str, Sequence[Path]], detector: "FaceDetector",
              embedder: "FaceEmbedder", thresholds: np.ndarray | None = None) -> CalibrationReport:
    """FAR/FRR over thresholds and rank-1 accuracy for a folder (one sub-folder per person) or a
    {person: photos} mapping (e.g. from `load_listing`)."""
    groups = load_folder(source) if isinstance(source, (str, Path)) else source
    photos = embed_photos(groups, detector, embedder)
    return calibrate_vectors(photos.vectors, photos.labels, thresholds, photos.skipped)


def recommend(report: CalibrationReport, target_far: float = 0.001) -> float:
    """The lowest threshold whose FAR is at most `target_far` (the fewest false rejections).

    With fewer than 1 / target_far impostor pairs this only means "no impostor pair accepted"
    (`report.far_resolution` says so): enrol more photos for a measured figure.
    """
    ok = np.flatnonzero(report.far <= target_far)
    if len(ok) == 0:
        raise ValueError(f"no threshold up to {report.thresholds[-1]:.2f} keeps FAR at or below {target_far}")
    return float(report.thresholds[ok[0]])
