"""ONNX export of a (compressed) student and onnxruntime inference: what a device loads.

The export goes through ``torch.onnx.export(..., dynamo=True)`` (``torch.export`` underneath;
needs ``onnx`` and ``onnxscript``) with a dynamic batch dimension, so one file serves a single
sample or a batch. PT2E-quantized students export as QuantizeLinear/DequantizeLinear pairs
around Conv/Gemm, which onnxruntime fuses into int8 kernels. The exporter annotates every node
with its PyTorch provenance (stack, module path); that text is 37 % of the quantized ``cnn``
student's file, so :func:`export_onnx` strips it by default (it changes no computation).
"""

from __future__ import annotations

import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from fedkd.compress._deps import require

__all__ = ["artifact_nbytes", "deflate_nbytes", "export_onnx", "onnx_predict", "onnx_session"]

INPUT_NAME = "x"
OUTPUT_NAME = "logits"


def export_onnx(
    model: nn.Module, example: Tensor, path: str | Path, *, strip_metadata: bool = True
) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch dimension; return the path.

    Parameters
    ----------
    model : nn.Module
        A float student (put in eval mode here) or a PT2E-converted ``GraphModule``.
    example : Tensor
        ``(rows, *input_shape)`` example inputs with ``rows >= 2`` (torch.export specialises a
        batch of 1 to a constant).
    path : str or Path
        Output file; parent folders are created. Weights are stored inside the file.
    strip_metadata : bool
        Drop per-node provenance annotations and doc strings (no effect on results).
    """
    require("onnxscript")
    onnx = require("onnx")
    if example.dim() < 2 or example.shape[0] < 2:
        raise ValueError(f"example must be a batch of >= 2 rows, got shape {tuple(example.shape)}")
    if not isinstance(model, torch.fx.GraphModule):  # PT2E models come in eval mode already
        model.eval()
    with warnings.catch_warnings():
        # A converted PT2E graph keeps training=True although its ops are in eval form.
        warnings.filterwarnings("ignore", message="Exporting a model while it is in training")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            external_data=False,
            verbose=False,
        )
    if program is None:  # only the legacy TorchScript path returns None
        raise RuntimeError("torch.onnx.export returned no program")
    proto = program.model_proto
    if strip_metadata:
        for node in proto.graph.node:
            del node.metadata_props[:]
            node.doc_string = ""
        del proto.graph.value_info[:]
        del proto.metadata_props[:]
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, str(out))
    return out


def onnx_session(path: str | Path, *, threads: int = 1) -> object:
    """An onnxruntime CPU ``InferenceSession`` on ``path`` (``threads`` intra-op threads)."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_predict(session_or_path: object, x: Tensor) -> Tensor:
    """Logits ``(rows, classes)`` (float32, CPU) of an ONNX student on inputs ``x``."""
    session = (
        onnx_session(session_or_path)
        if isinstance(session_or_path, str | Path)
        else session_or_path
    )
    feed = {INPUT_NAME: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)}
    (logits,) = session.run([OUTPUT_NAME], feed)  # type: ignore[attr-defined]
    return torch.from_numpy(np.asarray(logits))


def artifact_nbytes(path: str | Path) -> int:
    """Size of the file a device stores and loads."""
    return Path(path).stat().st_size


def deflate_nbytes(path: str | Path) -> int:
    """Size after DEFLATE (zlib level 9): what the file costs to download zipped.

    Unstructured pruning leaves the dense size unchanged; its zeros only pay off here.
    """
    return len(zlib.compress(Path(path).read_bytes(), 9))
