"""K stacked MLPs run as batched matrix products: the fast path of a vectorized forward.

:mod:`fedkd.vectorized` runs a cohort's K stacked models with ``torch.func.vmap``. For the
local test scores and the soft labels every member sees the same rows. Under vmap each layer
is separate out-of-place ops (product, bias add, ReLU), each allocating a fresh
``(K, rows, features)`` tensor: with 256-row chunks those are megabytes, taken fresh from the
OS on every call (``getrusage`` counted thousands of page faults per forward), and in a
``torch.profiler`` trace of the tiny MLP the bias adds and ReLUs cost nearly as much as the
products. A model that is exactly a chain of ``Flatten``, ``Linear`` and ``ReLU`` (fedkd's
``mlp`` and ``scaled_mlp``) is run here instead as one ``baddbmm`` per layer (the bias folded
into the product, as ``nn.Linear``'s ``addmm`` does for one member), ReLU in place, in chunks
sized to stay small (:data:`CHUNK_FLOATS`). ``benchmarks/vectorized_phases.py`` times the
forward phase per member.

Anything else (convolutions, a custom ``forward``, a subclass of a layer, a forward hook)
gets ``None`` from :func:`chain_forward`, and the caller keeps vmap. This module imports
torch and :mod:`fedkd.models` only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fedkd.models import Classifier

__all__ = ["StackedChain", "chain_forward"]

_Layer = tuple[str, nn.Module]  # (parameter-name prefix, module)
# Floats in one chunk's widest activation (K × rows × width): 1 MiB keeps it in cache and
# below glibc's mmap threshold, so chunks reuse freed memory instead of faulting in fresh
# pages on every call (with 256-row chunks, 50 members × 128 wide, ``getrusage`` counted
# thousands of page faults per forward).
CHUNK_FLOATS = 2**18


@dataclass(frozen=True)
class StackedChain:
    """The batched forward of a ``Flatten``/``Linear``/``ReLU`` chain stacked K times."""

    layers: tuple[_Layer, ...]
    width: int  # the widest activation a row has on the way

    def __call__(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """``(K, rows, classes)`` logits of rows ``(rows, *input_shape)`` every member sees;
        ``params`` as ``torch.func.stack_module_state`` names them (``head.weight``:
        ``(K, out, in)``)."""
        k = next(iter(params.values())).shape[0]
        h, shared = x, True  # rows every member sees, until the first Linear
        for prefix, layer in self.layers:
            if isinstance(layer, nn.Flatten):
                h = h.flatten(1) if shared else h.flatten(2)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h) if shared else h.relu_()  # a fresh tensor of ours
            else:
                if shared:  # stride 0 over members: no copy
                    h, shared = h.unsqueeze(0).expand(k, *h.shape), False
                h = _linear(h, params[f"{prefix}weight"], params.get(f"{prefix}bias"))
        return h if not shared else h.unsqueeze(0).expand(k, *h.shape)

    def chunk_rows(self, members: int, at_most: int) -> int:
        """Rows per call for ``members`` stacked models (see :data:`CHUNK_FLOATS`)."""
        return max(1, min(at_most, CHUNK_FLOATS // max(1, members * self.width)))


def chain_forward(model: nn.Module) -> StackedChain | None:
    """``model``'s stacked forward, or ``None`` when it is not a plain
    ``Flatten``/``Linear``/``ReLU`` chain (the caller then uses vmap)."""
    layers = _layers(model)
    if layers is None:
        return None
    widths = [m.out_features for _, m in layers if isinstance(m, nn.Linear)]
    return StackedChain(tuple(layers), max(widths, default=1))


def _linear(h: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``nn.Linear`` for each member: ``h[k] @ weight[k].T + bias[k]``."""
    if bias is None:
        return torch.bmm(h, weight.transpose(1, 2))
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))


def _layers(model: nn.Module) -> list[_Layer] | None:
    """``model``'s layers in call order with their parameter prefixes, when its forward is
    exactly ``head(backbone(x))`` over such a chain; else ``None``."""
    if not isinstance(model, Classifier) or type(model).forward is not Classifier.forward:
        return None
    if type(model.backbone) is not nn.Sequential or any(_hooked(m) for m in model.modules()):
        return None
    layers = [(f"backbone.{name}.", m) for name, m in model.backbone.named_children()]
    layers.append(("head.", model.head))
    return layers if all(_supported(m) for _, m in layers) else None


def _hooked(module: nn.Module) -> bool:
    """A forward hook may change what the module computes: vmap runs it, this path would not."""
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _supported(module: nn.Module) -> bool:
    """Exact layer types only: a subclass may compute something else."""
    if type(module) is nn.Flatten:
        return bool(module.start_dim == 1 and module.end_dim == -1)
    return type(module) in (nn.Linear, nn.ReLU)
