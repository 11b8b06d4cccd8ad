"""Compression of a distilled student for devices: int8 quantization, pruning, ONNX export.

* :mod:`fedkd.compress.quantize` — int8 post-training quantization calibrated on the public
  inputs, and quantization-aware distillation (the KD loss as the QAT objective), both through
  torchao's PT2E flow (``torch.export`` → ``prepare_pt2e`` → calibrate → ``convert_pt2e``).
* :mod:`fedkd.compress.prune` — magnitude (unstructured) and structured (channel) pruning with
  ``torch.nn.utils.prune``, a short distillation to recover, and :func:`~fedkd.compress.prune.
  shrink` that physically removes pruned channels so the dense model gets smaller.
* :mod:`fedkd.compress.export` — ONNX export (``torch.onnx.export(..., dynamo=True)``) and
  onnxruntime inference, the artifact a device loads.

The optional dependencies (torchao, onnx, onnxscript, onnxruntime; ``pip install
"fedkd[compress]"``) are imported inside the functions that need them, so importing this
package costs nothing and a device that only runs the ClientApp never needs them. Not
re-exported here for the same reason: import the submodules.
"""

from __future__ import annotations

__all__: list[str] = []
