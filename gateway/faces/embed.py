"""Face embeddings: aligned 112x112 crops in, L2-normalised float32 vectors out.

Any ArcFace-style model works (MobileFaceNet here, OpenCV Zoo's SFace at most sites): they share
the aligned 112x112 input and differ only in pre-processing (colour order, mean, std, taken from the
model manifest) and in their tensor names (read from the session, never assumed). Vectors are
L2-normalised here, once, so that everything downstream compares faces by a plain dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from ..models import ModelManifest, default_manifest
from ..models import models_dir as resolve_models_dir
from .align import CROP_SIZE

if TYPE_CHECKING:
    import onnxruntime


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32); an all-zero row stays zero instead of becoming NaN."""
    vectors = np.asarray(vectors, np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


class FaceEmbedder:
    """Runs an ArcFace-style embedding model on aligned crops (gateway.faces.align.align_face).

    Pre-processing per pixel: ((value * scale) - mean) / std per channel in `color` order, NCHW, as
    the manifest's input spec says. A model whose batch dimension is symbolic gets all crops in one
    run; a model exported with batch 1 (MobileFaceNet) gets one run per crop.
    """

    def __init__(self, session: "onnxruntime.InferenceSession", color: Literal["BGR", "RGB"] = "RGB",
                 scale: float = 1.0, mean: Sequence[float] = (127.5, 127.5, 127.5),
                 std: Sequence[float] = (128.0, 128.0, 128.0)):
        self.session = session
        model_input = session.get_inputs()[0]
        shape = list(model_input.shape)
        if len(shape) != 4:
            raise ValueError(f"an embedding model takes [N, 3, H, W] input, this one {shape}")
        height, width = shape[2], shape[3]
        if (isinstance(height, int) and height != CROP_SIZE) or (isinstance(width, int) and width != CROP_SIZE):
            raise ValueError(f"the model takes {width}x{height} input, not the {CROP_SIZE}x{CROP_SIZE} aligned crop")
        self.batched = not (isinstance(shape[0], int) and shape[0] > 0)
        self._input_name = model_input.name
        self._output_name = session.get_outputs()[0].name
        output_shape = session.get_outputs()[0].shape
        self.dim: int | None = output_shape[-1] if output_shape and isinstance(output_shape[-1], int) else None
        self.swap_rb = color == "RGB"  # crops are BGR
        # ((x * scale) - mean) / std == x * gain - offset, per channel, broadcast over [N, 3, H, W].
        std_arr = np.asarray(std, np.float32)
        self._gain = (np.float32(scale) / std_arr).reshape(1, 3, 1, 1)
        self._offset = (np.asarray(mean, np.float32) / std_arr).reshape(1, 3, 1, 1)

    @classmethod
    def from_model(cls, name: str = "mobilefacenet", models_dir: str | Path | None = None, threads: int = 1,
                   manifest: ModelManifest | None = None) -> "FaceEmbedder":
        manifest = manifest or default_manifest()
        spec = manifest.get(name)
        if spec.task != "face_embedding":
            raise ValueError(f"model {name} is a {spec.task} model, not a face embedding")
        session = manifest.load_model(name, resolve_models_dir(models_dir), threads=threads)
        embedder = cls(session, color=spec.input.color, scale=spec.input.scale, mean=spec.input.mean,
                       std=spec.input.std)
        if spec.embedding_dim is not None and embedder.dim is not None and embedder.dim != spec.embedding_dim:
            raise ValueError(f"model {name} gives {embedder.dim}-d vectors, the manifest says {spec.embedding_dim}")
        return embedder

    def blob(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """[N, 3, 112, 112] float32 model input from BGR uint8 crops."""
        stack = np.stack([np.asarray(c) for c in crops])
        if stack.shape[1:] != (CROP_SIZE, CROP_SIZE, 3):
            raise ValueError(f"crops must be {CROP_SIZE}x{CROP_SIZE} BGR, got {stack.shape[1:]}")
        if self.swap_rb:
            stack = stack[..., ::-1]
        blob = stack.transpose(0, 3, 1, 2).astype(np.float32)
        blob *= self._gain
        blob -= self._offset
        return np.ascontiguousarray(blob)

    def embed(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """[N, D] L2-normalised float32 vectors, one per crop, in order ([0, D] for no crops)."""
        if len(crops) == 0:
            return np.zeros((0, self.dim or 0), np.float32)
        blob = self.blob(crops)
        if self.batched:
            raw = self.session.run([self._output_name], {self._input_name: blob})[0]
        else:
            raw = np.concatenate([self.session.run([self._output_name], {self._input_name: blob[i:i + 1]})[0]
                                  for i in range(len(blob))])
        return l2_normalise(raw.reshape(len(blob), -1))

    def embed_one(self, crop: np.ndarray) -> np.ndarray:
        """[D] vector of one crop."""
        return self.embed([crop])[0]
