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
sized to stay small (:data:`CHUNK_FLOATS`) whose hidden activations take turns in two buffers
allocated once per forward (:meth:`StackedChain.logits`). Without them, each chunk's
activations were fresh megabyte tensors, and in some Ray worker processes every one of them
came back from the OS as fresh pages: thousands of page faults per cohort forward, with the
kernel's time exceeding the products', depending only on the process's heap history (its
twin worker, same work, faulted a few hundred times). ``benchmarks/vectorized_phases.py``
times the forward phase per member.

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
# Floats in one chunk's widest activation (K × rows × width): 1 MiB, so the two workspace
# buffers stay cache-sized (with 256-row chunks, 50 members × 128 wide, they were 6.5 MiB).
CHUNK_FLOATS = 2**18


@dataclass(frozen=True)
class StackedChain:
    """The batched forward of a ``Flatten``/``Linear``/``ReLU`` chain stacked K times."""

    layers: tuple[_Layer, ...]
    width: int  # the widest activation a row has on the way

    def __call__(
        self, params: dict[str, Tensor], x: Tensor, buffers: list[Tensor] | None = None
    ) -> Tensor:
        """``(K, rows, classes)`` logits of rows ``(rows, *input_shape)`` every member sees;
        ``params`` as ``torch.func.stack_module_state`` names them (``head.weight``:
        ``(K, out, in)``). ``buffers``: two flat tensors of at least ``K × rows × width``
        floats (:meth:`workspace`) that the hidden activations take turns in, instead of a
        fresh tensor per layer; the returned logits are always a fresh tensor."""
        k = next(iter(params.values())).shape[0]
        linears = sum(isinstance(layer, nn.Linear) for _, layer in self.layers)
        done = 0  # Linear layers run so far: the next one writes into buffers[done % 2]
        h, shared = x, True  # rows every member sees, until the first Linear
        for prefix, layer in self.layers:
            if isinstance(layer, nn.Flatten):
                h = h.flatten(1) if shared else h.flatten(2)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h) if shared else h.relu_()  # a tensor of ours
            else:
                if shared:  # stride 0 over members: no copy
                    h, shared = h.unsqueeze(0).expand(k, *h.shape), False
                weight = params[f"{prefix}weight"]
                out = None
                if buffers is not None and done < linears - 1:  # the logits stay fresh
                    out = buffers[done % 2][: k * h.shape[1] * weight.shape[1]]
                    out = out.view(k, h.shape[1], weight.shape[1])
                h = _linear(h, weight, params.get(f"{prefix}bias"), out)
                done += 1
        return h if not shared else h.unsqueeze(0).expand(k, *h.shape)

    def chunk_rows(self, members: int, at_most: int) -> int:
        """Rows per call for ``members`` stacked models (see :data:`CHUNK_FLOATS`)."""
        return max(1, min(at_most, CHUNK_FLOATS // max(1, members * self.width)))

    def workspace(self, params: dict[str, Tensor], rows: int) -> list[Tensor]:
        """The two activation buffers :meth:`__call__` reuses for chunks of ``rows`` rows."""
        first = next(iter(params.values()))
        size = first.shape[0] * rows * self.width
        return [torch.empty(size, dtype=first.dtype, device=first.device) for _ in range(2)]

    def logits(self, params: dict[str, Tensor], x: Tensor, at_most: int) -> Tensor:
        """``(K, N, classes)`` logits of all ``N`` rows of ``x`` (moved to the parameters'
        device chunk by chunk), in chunks of :meth:`chunk_rows` that share one
        :meth:`workspace`: a chunk allocates only its logits."""
        first = next(iter(params.values()))
        rows = self.chunk_rows(first.shape[0], at_most)
        buffers = self.workspace(params, rows)
        outs = [
            self(params, x[i : i + rows].to(first.device), buffers)
            for i in range(0, max(x.shape[0], 1), rows)
        ]
        return torch.cat(outs, dim=1)


def chain_forward(model: nn.Module) -> StackedChain | None:
    """``model``'s stacked forward, or ``None`` when it is not a plain
    ``Flatten``/``Linear``/``ReLU`` chain (the caller then uses vmap)."""
    layers = _layers(model)
    if layers is None:
        return None
    widths = [m.out_features for _, m in layers if isinstance(m, nn.Linear)]
    return StackedChain(tuple(layers), max(widths, default=1))


def _linear(h: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """``nn.Linear`` for each member: ``h[k] @ weight[k].T + bias[k]`` (into ``out`` if given)."""
    if bias is None:
        return torch.bmm(h, weight.transpose(1, 2), out=out)
    return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2), out=out)


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
