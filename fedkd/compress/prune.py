"""Pruning a distilled student, with a short distillation to recover.

Two kinds, both through ``torch.nn.utils.prune`` (masks applied by forward pre-hooks, so a
pruned weight stays zero while the student is distilled further):

* ``"magnitude"`` — global unstructured L1 pruning over every Conv/Linear weight (Han et al.
  2015): the smallest ``amount`` fraction of all weights goes to zero. The dense tensors keep
  their size; the zeros pay off in a compressed download or a sparse kernel.
* ``"structured"`` — L2-norm channel pruning per layer (``ln_structured``, dim 0; Li et al.
  2017, "Pruning Filters for Efficient ConvNets"): whole output channels of every backbone
  Conv/Linear (never the head's classes) go to zero, biases included, and :func:`shrink`
  rebuilds a physically smaller dense student with those channels removed — smaller in bytes
  and in FLOPs, and still quantizable.

:func:`prune_and_distill` is the recipe: prune, distil against the teacher on the public
inputs for a few epochs (the KD loss of :mod:`fedkd.kd`), make the masks permanent.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils import prune

from fedkd.kd import KDSpec
from fedkd.models import Classifier
from fedkd.training import TrainConfig, distill

__all__ = [
    "PruneKind",
    "finalize",
    "magnitude_prune",
    "prunable_layers",
    "prune_and_distill",
    "shrink",
    "sparsity",
    "structured_prune",
]

PruneKind = Literal["magnitude", "structured"]
_PASS_THROUGH = (nn.ReLU, nn.MaxPool2d, nn.Identity, nn.Dropout)


def _check_amount(amount: float) -> None:
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount!r}")


def prunable_layers(model: nn.Module, *, include_head: bool = True) -> list[nn.Module]:
    """Every ``Conv2d`` and ``Linear`` of ``model`` (optionally without a Classifier's head)."""
    head = model.head if isinstance(model, Classifier) and not include_head else None
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m is not head]


def magnitude_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of smallest-magnitude weights over all layers (in place).

    Global rather than per-layer: layers with many redundant weights lose more (Han et al.).
    """
    _check_amount(amount)
    params = [(m, "weight") for m in prunable_layers(model)]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
    return model


def structured_prune(model: nn.Module, amount: float) -> nn.Module:
    """Zero the ``amount`` fraction of lowest-L2-norm output channels of each backbone layer.

    In place, on every Conv/Linear except a Classifier's head. The bias of a pruned channel
    is masked too, so the channel outputs exactly zero and :func:`shrink` can drop it without
    changing any logit. At least one channel per layer survives.
    """
    _check_amount(amount)
    for layer in prunable_layers(model, include_head=False):
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        channels = layer.weight.shape[0]
        n_prune = min(round(amount * channels), channels - 1)
        prune.ln_structured(layer, "weight", amount=n_prune, n=2, dim=0)
        if layer.bias is not None:
            weight_mask: Tensor = getattr(layer, "weight_mask")  # noqa: B009  (set by prune)
            mask = weight_mask.flatten(1).amax(dim=1)  # (out,) 1 = channel kept
            prune.custom_from_mask(layer, "bias", mask)
    return model


def finalize(model: nn.Module) -> nn.Module:
    """Make every pruning mask permanent (``prune.remove``): plain parameters, no hooks."""
    for layer in model.modules():
        for name in ("weight", "bias"):
            if prune.is_pruned(layer) and hasattr(layer, f"{name}_mask"):
                prune.remove(layer, name)
    return model


def sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries over all Conv/Linear weights."""
    weights: list[Tensor] = [getattr(m, "weight") for m in prunable_layers(model)]  # noqa: B009
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum().item()) for w in weights)
    return zeros / total if total else 0.0


def _kept(layer: nn.Conv2d | nn.Linear) -> Tensor:
    """Indices of output channels with any non-zero weight or bias."""
    alive = layer.weight.detach().flatten(1).abs().amax(dim=1) > 0
    if layer.bias is not None:
        alive |= layer.bias.detach() != 0
    if not bool(alive.any()):
        alive[0] = True  # keep a (zero) channel: a layer of width 0 cannot be built
    return alive.nonzero().squeeze(1)


def _slice(layer: nn.Conv2d | nn.Linear, rows: Tensor | None, cols: Tensor | None) -> nn.Module:
    """A copy of ``layer`` restricted to output ``rows`` and input ``cols`` (None = all)."""
    w = layer.weight.detach()
    if rows is not None:
        w = w.index_select(0, rows)
    if cols is not None:
        w = w.index_select(1, cols)
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias is not None and rows is not None:
        bias = bias.index_select(0, rows)
    new: nn.Conv2d | nn.Linear
    if isinstance(layer, nn.Conv2d):
        if layer.groups != 1:
            raise NotImplementedError("shrink does not support grouped convolutions")
        new = nn.Conv2d(
            w.shape[1],
            w.shape[0],
            layer.kernel_size,  # type: ignore[arg-type]
            stride=layer.stride,  # type: ignore[arg-type]
            padding=layer.padding,  # type: ignore[arg-type]
            dilation=layer.dilation,  # type: ignore[arg-type]
            bias=bias is not None,
        )
    else:
        new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if bias is not None and new.bias is not None:
            new.bias.copy_(bias)
    return new


def shrink(model: Classifier) -> Classifier:
    """A physically smaller copy of a channel-pruned student: zero channels removed.

    Supports Classifiers whose backbone is an ``nn.Sequential`` of Conv2d, Linear, ReLU,
    MaxPool2d, AdaptiveAvgPool2d and Flatten (``cnn``, ``scaled_cnn``, ``mlp``,
    ``scaled_mlp``). A channel is removed when its weights and bias are all zero, so it
    outputs 0 after the ReLU and the logits do not change (up to float rounding). Apply
    :func:`finalize` first (or pass a model pruned without ``torch.nn.utils.prune``).

    Raises
    ------
    NotImplementedError
        For other layer types (e.g. BatchNorm or residual blocks: ``resnet8``).
    """
    if not isinstance(model, Classifier) or not isinstance(model.backbone, nn.Sequential):
        raise NotImplementedError("shrink needs a Classifier with an nn.Sequential backbone")
    if any(prune.is_pruned(m) for m in model.modules()):
        raise ValueError("the model still has pruning hooks; call finalize(model) first")
    layers: list[nn.Module] = []
    keep: Tensor | None = None  # kept channels (or features) of the current activation
    pooled = 1  # spatial positions per channel that the next Flatten will lay out
    for layer in model.backbone:
        if isinstance(layer, nn.Conv2d | nn.Linear):
            rows = _kept(layer)
            layers.append(_slice(layer, rows, keep))
            keep = rows
            pooled = 1
        elif isinstance(layer, nn.AdaptiveAvgPool2d):
            size = layer.output_size
            h, w = (size, size) if isinstance(size, int) else tuple(size)  # type: ignore[arg-type]
            if h is None or w is None:
                raise NotImplementedError("AdaptiveAvgPool2d with a None output size")
            pooled = h * w
            layers.append(copy.deepcopy(layer))
        elif isinstance(layer, nn.Flatten):
            if keep is not None:
                offsets = torch.arange(pooled)
                keep = (keep[:, None] * pooled + offsets[None, :]).flatten()
            layers.append(copy.deepcopy(layer))
        elif isinstance(layer, _PASS_THROUGH):
            layers.append(copy.deepcopy(layer))
        else:
            raise NotImplementedError(f"shrink does not support {type(layer).__name__}")
    feature_dim = model.feature_dim if keep is None else int(keep.numel())
    out = Classifier(nn.Sequential(*layers), feature_dim, model.num_classes)
    head = _slice(model.head, None, keep)
    assert isinstance(head, nn.Linear)
    out.head = head
    return out


def prune_and_distill(
    model: nn.Module,
    inputs: Tensor,
    teacher: Tensor,
    spec: KDSpec,
    cfg: TrainConfig,
    *,
    amount: float,
    kind: PruneKind = "magnitude",
    generator: torch.Generator | None = None,
    teacher_is_probs: bool = True,
    teacher_temperature: float | None = 1.0,
) -> nn.Module:
    """Prune a copy of the student, distil it to recover, make the pruning permanent.

    Parameters
    ----------
    model : nn.Module
        The distilled float student; not modified.
    inputs, teacher, spec, cfg, generator, teacher_is_probs, teacher_temperature
        As in :func:`fedkd.training.distill` (the recovery step).
    amount : float
        Fraction in ``[0, 1)``: of all weights (magnitude) or of each layer's channels
        (structured).
    kind : {"magnitude", "structured"}
        Structured students come back shrunk (:func:`shrink`): a smaller dense model.

    Returns
    -------
    nn.Module
        The pruned student, without pruning hooks.
    """
    pruned = copy.deepcopy(model)
    if kind == "magnitude":
        magnitude_prune(pruned, amount)
    elif kind == "structured":
        structured_prune(pruned, amount)
    else:
        raise ValueError(f"kind must be 'magnitude' or 'structured', got {kind!r}")
    distill(
        pruned,
        inputs,
        teacher,
        spec,
        cfg,
        generator=generator,
        teacher_is_probs=teacher_is_probs,
        teacher_temperature=teacher_temperature,
    )
    finalize(pruned)
    if kind == "structured" and isinstance(pruned, Classifier):
        return shrink(pruned)
    return pruned
