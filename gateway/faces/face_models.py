"""The face models (the YuNet detector and an embedding model), loaded once and shared.

One `FaceModels` per face service: its door gates, its till gates and its enrolments all take their
onnxruntime sessions from it, so a site loads each model once however many gates it runs.
onnxruntime's `run()` is thread-safe and `FaceDetector` / `FaceEmbedder` keep no per-call state,
so one session serves every worker thread. Sessions are keyed by model name and thread count:
a caller asking for other threads gets a session of its own. A model that fails to load is not
remembered: the next call tries again (a model copied in later is picked up).

The command line loads the same pair with `load_face_models`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # OpenCV and onnxruntime load only when a model does
    from ..vision.detect import FaceDetector
    from .embed import FaceEmbedder


class FaceModels:
    """Face detector and embedder sessions from `directory`, each built on first use and kept."""

    def __init__(self, directory: str | Path, threads: int = 1):
        self.directory = Path(directory)
        self.threads = threads
        self._loaded: dict[tuple[str, str, int], Any] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str, name: str, threads: int, build: Callable[[], Any]) -> Any:
        key = (kind, name, threads)
        with self._lock:
            if key not in self._loaded:
                self._loaded[key] = build()
            return self._loaded[key]

    def detector(self, name: str = "yunet", threads: int | None = None) -> FaceDetector:
        from ..vision.detect import FaceDetector

        threads = self.threads if threads is None else threads
        return self._get("detector", name, threads,
                         lambda: FaceDetector.from_model(name, self.directory, threads=threads))

    def embedder(self, name: str = "mobilefacenet", threads: int | None = None) -> FaceEmbedder:
        from .embed import FaceEmbedder

        threads = self.threads if threads is None else threads
        return self._get("embedder", name, threads,
                         lambda: FaceEmbedder.from_model(name, self.directory, threads=threads))

    def pair(self, embedder: str, threads: int | None = None,
             detector: str = "yunet") -> tuple[FaceDetector, FaceEmbedder]:
        """(detector, embedder): the detector is loaded first."""
        return self.detector(detector, threads), self.embedder(embedder, threads)


def load_face_models(directory: str | Path, embedder: str, threads: int = 1) -> tuple[FaceDetector, FaceEmbedder]:
    """The YuNet detector and the `embedder` model from `directory`, for a one-off use (the command line)."""
    return FaceModels(directory, threads).pair(embedder)
