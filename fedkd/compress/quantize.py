"""int8 quantization of a distilled student through torchao's PT2E flow.

``torch.ao.quantization`` (eager and FX modes) is deprecated; the maintained path is PT2E in
torchao: ``torch.export`` the model, ``prepare_pt2e`` it with a quantizer (observers inserted
where the quantizer annotates), calibrate, ``convert_pt2e`` into a graph of int8 weights and
quantize/dequantize pairs. The x86 quantizer used here gives per-channel symmetric int8
weights and per-tensor uint8 activations for Conv/Linear (the layout onnxruntime and
Inductor lower to int8 kernels).

* :func:`quantize_ptq` — post-training quantization, calibrated on the **public inputs**: FD's
  server holds them anyway, so calibration needs no private data.
* :func:`quantize_qat_distill` — quantization-aware *distillation*: fake-quantized training
  whose objective is :func:`fedkd.kd.distillation_loss` against the teacher on the public
  inputs (the FD teacher, or the float student itself), then conversion.

The result is a ``torch.fx.GraphModule`` in eval mode: call it like the student, export it
with :func:`fedkd.compress.export.export_onnx`. In eager PyTorch it still computes in float
between the quantize/dequantize pairs (a faithful *simulation*); the int8 speed comes from
onnxruntime (or ``torch.compile``), see docs/compression.md.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from fedkd.compress._deps import require
from fedkd.kd import KDSpec
from fedkd.training import TrainConfig, distill

__all__ = ["export_for_quantization", "quantize_ptq", "quantize_qat_distill", "x86_quantizer"]


def _pt2e() -> Any:
    """torchao's PT2E entry points, after the version guard."""
    require("torch")
    require("torchao")
    with warnings.catch_warnings():  # torchao's CUDA kernels cannot load on a CPU build: fine
        warnings.simplefilter("ignore")
        import torchao.quantization.pt2e as pt2e
        import torchao.quantization.pt2e.quantize_pt2e as quantize_pt2e
    return pt2e, quantize_pt2e


def x86_quantizer(*, is_qat: bool = False) -> Any:
    """torchao's ``X86InductorQuantizer`` with its default int8 config (static activations)."""
    _pt2e()
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    config = get_default_x86_inductor_quantization_config(is_qat=is_qat)
    # 7-bit weights (reduce_range): x86 CPUs with AVX2 but no VNNI multiply u8 activations by
    # s8 weights in int16 pairs, which saturate with full-range weights in onnxruntime
    weight = dataclasses.replace(config.weight, quant_min=-64, quant_max=63)
    quantizer = X86InductorQuantizer()
    quantizer.set_global(dataclasses.replace(config, weight=weight))
    return quantizer


def export_for_quantization(model: nn.Module, example: Tensor) -> torch.fx.GraphModule:
    """``torch.export`` ``model`` with a dynamic batch dimension; return its ``GraphModule``.

    ``example`` must have at least 2 rows: torch.export specialises a batch of 1 to a constant.
    The caller's model is not modified (a copy is exported).
    """
    if example.dim() < 2 or example.shape[0] < 2:
        raise ValueError(f"example must be a batch of >= 2 rows, got shape {tuple(example.shape)}")
    float_model = copy.deepcopy(model).eval()
    program = torch.export.export(
        float_model, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)
    )
    return program.module()  # type: ignore[return-value]


def _calibrate(model: nn.Module, inputs: Tensor, batch_size: int) -> None:
    with torch.no_grad():
        for i in range(0, inputs.shape[0], batch_size):
            model(inputs[i : i + batch_size])


def quantize_ptq(
    model: nn.Module,
    calibration_inputs: Tensor,
    *,
    batch_size: int = 256,
    quantizer: Any = None,
) -> torch.fx.GraphModule:
    """Post-training int8 quantization calibrated on ``calibration_inputs`` (PT2E).

    Parameters
    ----------
    model : nn.Module
        The float student; not modified.
    calibration_inputs : Tensor
        ``(n, *input_shape)``, n >= 2: the public inputs. Observers record activation ranges
        over all of them (min/max per tensor for the default x86 config).
    batch_size : int
        Rows per calibration forward.
    quantizer : torchao Quantizer, optional
        Defaults to :func:`x86_quantizer`.

    Returns
    -------
    torch.fx.GraphModule
        The converted model (int8 weights, quantize/dequantize pairs), in eval mode.
    """
    pt2e, q = _pt2e()
    if calibration_inputs.shape[0] < 2:
        raise ValueError("need at least 2 calibration inputs")
    graph = export_for_quantization(model, calibration_inputs[:2])
    prepared = q.prepare_pt2e(graph, quantizer if quantizer is not None else x86_quantizer())
    _calibrate(prepared, calibration_inputs, batch_size)
    converted = q.convert_pt2e(prepared)
    pt2e.move_exported_model_to_eval(converted)
    return converted


def quantize_qat_distill(
    model: nn.Module,
    inputs: Tensor,
    teacher: Tensor,
    spec: KDSpec,
    cfg: TrainConfig,
    *,
    teacher_is_probs: bool = True,
    teacher_temperature: float | None = 1.0,
    generator: torch.Generator | None = None,
    quantizer: Any = None,
) -> torch.fx.GraphModule:
    """Quantization-aware distillation: fake-quantized training on the KD loss, then int8.

    The student is exported and prepared for QAT (fake quantization of weights and activations
    in the forward pass, straight-through gradients), trained with
    :func:`fedkd.training.distill` — the same KD loss FD's server uses — on ``(inputs,
    teacher)``, then converted. Starting from the distilled float student, one or two epochs
    at a small learning rate recover what PTQ loses.

    Parameters
    ----------
    model : nn.Module
        The float student (the starting point); not modified.
    inputs, teacher, spec, cfg, teacher_is_probs, teacher_temperature, generator
        As in :func:`fedkd.training.distill`.
    quantizer : torchao Quantizer, optional
        Defaults to :func:`x86_quantizer` with ``is_qat=True``.

    Returns
    -------
    torch.fx.GraphModule
        The converted int8 model, in eval mode.
    """
    pt2e, q = _pt2e()
    graph = export_for_quantization(model, inputs[:2])
    prepared = q.prepare_qat_pt2e(
        graph, quantizer if quantizer is not None else x86_quantizer(is_qat=True)
    )
    # Exported graphs have no train/eval switch of their own; torchao maps .train()/.eval() to
    # its move_exported_model_to_* helpers so the shared training loop can flip them.
    pt2e.allow_exported_model_train_eval(prepared)
    distill(
        prepared,
        inputs,
        teacher,
        spec,
        cfg,
        generator=generator,
        teacher_is_probs=teacher_is_probs,
        teacher_temperature=teacher_temperature,
    )
    pt2e.move_exported_model_to_eval(prepared)
    converted = q.convert_pt2e(prepared)
    pt2e.move_exported_model_to_eval(converted)
    return converted
