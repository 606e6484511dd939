"""A fast first pass over a big gallery: int8 copies of the templates, multiplied by onnxruntime.

A 1:N search is one matrix-vector product, and at 100,000 templates of 128 float32 it reads 51 MB
per probe: memory-bound, about 4 ms on a small machine whatever the arithmetic. Quantised to int8
(one scale per template) the same rows are 12.8 MB, and onnxruntime's integer matrix product
(`MatMulInteger`, MLAS's u8 x s8 kernels) reads them about five times faster. The scores it gives
are approximate (within a few hundredths of a cosine), so they only choose *candidates*: the
gallery then scores those few rows exactly in float32, and decides on exact scores alone.

The int8 rows are a constant of the small ONNX graph built here (with the `onnx` package), so that
onnxruntime packs them once, when the gallery is prepared, not on every search.
"""

from __future__ import annotations

import numpy as np

INT8_MAX = 127
PROBE_ZERO_POINT = 128  # the probe is quantised to uint8 around 128 (u8 x s8 is MLAS's fast path)
ONNX_IR_VERSION = 8  # what every onnxruntime of the last years reads
ONNX_OPSET = 13


class Int8Prescreen:
    """Approximate cosines of probes against every row of a normalised float32 matrix [N, D]."""

    def __init__(self, rows: np.ndarray, threads: int = 1):
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper

        rows = np.asarray(rows, np.float32)
        if rows.ndim != 2 or not len(rows):
            raise ValueError("the prescreen needs a non-empty [N, D] matrix")
        self.count, self.dim = rows.shape
        scale = np.abs(rows).max(axis=1)
        scale[scale == 0] = 1.0
        quantised = np.clip(np.rint(rows / scale[:, None] * INT8_MAX), -INT8_MAX, INT8_MAX).astype(np.int8)
        self._row_scale = (scale / INT8_MAX).astype(np.float32)
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["probes", "rows", "probe_zero_point"], ["scores"])],
            "gallery_prescreen",
            [helper.make_tensor_value_info("probes", TensorProto.UINT8, [None, self.dim])],
            [helper.make_tensor_value_info("scores", TensorProto.INT32, [None, self.count])],
            [numpy_helper.from_array(np.ascontiguousarray(quantised.T), "rows"),
             numpy_helper.from_array(np.array(PROBE_ZERO_POINT, np.uint8), "probe_zero_point")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
                                  ir_version=ONNX_IR_VERSION)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                                     providers=["CPUExecutionProvider"])

    def scores(self, probes: np.ndarray) -> np.ndarray:
        """[M, N] approximate cosines of normalised probes [M, D]."""
        probes = np.atleast_2d(np.asarray(probes, np.float32))
        probe_scale = np.abs(probes).max(axis=1)
        probe_scale[probe_scale == 0] = 1.0
        quantised = np.rint(probes / probe_scale[:, None] * INT8_MAX) + PROBE_ZERO_POINT
        raw = self._session.run(None, {"probes": quantised.astype(np.uint8)})[0]
        return raw * self._row_scale[None, :] * (probe_scale / INT8_MAX)[:, None]

    def candidates(self, probes: np.ndarray, count: int) -> np.ndarray:
        """[M, count] the rows with the highest approximate cosines for each probe (unordered)."""
        scores = self.scores(probes)
        count = min(int(count), self.count)
        if count >= self.count:
            return np.broadcast_to(np.arange(self.count), scores.shape).copy()
        return np.argpartition(-scores, count - 1, axis=1)[:, :count]
