"""Exporting PyTorch models to ONNX with a dynamic batch dimension (training side only)."""

from __future__ import annotations

import io
import warnings

import torch


def to_onnx(module: torch.nn.Module, example: torch.Tensor) -> bytes:
    """``module`` as an ONNX model with input ``x`` and output ``y``, batch dynamic.

    The TorchScript exporter (``dynamo=False``): the torch.export one needs onnxscript
    and gains nothing for these small feed-forward and LSTM models."""
    module.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and LSTM notes
        torch.onnx.export(
            module,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()
