"""Scoring exported models with onnxruntime, on the CPU, batched: the asset hosts' side of
every model (host processes never import torch; onnxruntime costs them about 40 MB)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnxruntime as ort

#: Samples of the large batch every export is checked at: a dynamic-batch export can
#: silently fix the batch at 1, which only a second batch size shows.
CHECK_BATCH = 257


class OnnxExportError(ValueError):
    """An exported model that disagrees with its native model, or cannot be loaded."""


def session(model: bytes) -> ort.InferenceSession:
    """A CPU session on one thread: a host scores between ingest calls, and a thread pool
    per session would compete with the host's own work on a 2-core machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # onnxruntime-gpu warns that CUDA is absent, per session
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own exception types
        raise OnnxExportError(f"model: onnxruntime cannot load it: {error}") from error


class OnnxScorer:
    """One model's session: :meth:`run` takes a float32 batch and returns its first
    output (or ``output``) as a float64 array of one row per sample."""

    def __init__(self, model: bytes, output: str | None = None) -> None:
        self.session = session(model)
        self._input = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        if output is not None and output not in names:
            raise OnnxExportError(f"output: the model has no output {output!r}, only {names}")
        self._outputs = [output or names[0]]

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self._input: np.ascontiguousarray(batch, dtype=np.float32)}
        out = self.session.run(self._outputs, feed)[0]
        return np.asarray(out, dtype=np.float64).reshape(len(batch), -1)


def check_export(
    model: bytes,
    native: Callable[[np.ndarray], np.ndarray],
    samples: np.ndarray,
    *,
    output: str | None = None,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Check that ``model`` scores ``samples`` as ``native`` does, at batch 1 and at a
    batch of :data:`CHECK_BATCH` (samples repeated as needed); the largest absolute
    difference, or :class:`OnnxExportError` naming the batch that disagrees."""
    if len(samples) == 0:
        raise OnnxExportError("samples: need at least one sample to check an export")
    scorer = OnnxScorer(model, output)
    large = samples[np.arange(CHECK_BATCH) % len(samples)]
    worst = 0.0
    for batch in (samples[:1], large):
        try:
            ours = scorer.run(batch)
        except Exception as error:
            raise OnnxExportError(
                f"batch {len(batch)}: the exported model fails to run: {error}"
            ) from error
        theirs = np.asarray(native(batch), dtype=np.float64).reshape(len(batch), -1)
        if ours.shape != theirs.shape:
            raise OnnxExportError(
                f"batch {len(batch)}: exported output has shape {ours.shape}, the native "
                f"model's {theirs.shape}"
            )
        if not np.allclose(ours, theirs, rtol=rtol, atol=atol):
            diff = float(np.max(np.abs(ours - theirs)))
            raise OnnxExportError(
                f"batch {len(batch)}: exported and native scores differ by up to {diff:.3g}"
            )
        worst = max(worst, float(np.max(np.abs(ours - theirs))))
    return worst
