"""A client's saved state as bytes: tensors stored raw behind a JSON header, no pickle.

A simulated client's state (model, optimizer, privacy ledger) is saved after every round it
trains and loaded whenever another worker serves it next (``fedkd.client_app``). With
``torch.save``/``torch.load(weights_only=True)`` that cost 0.4 ms and 1.4 ms for the tiny
MLP, a third of what the runtime adds per client at a thousand clients per round
(docs/benchmarks.md §2b). This format does the same job in a few tens of microseconds: a magic
line, the header length, a JSON header describing the nested dicts/lists (dict keys keep their
type: an optimizer's state is keyed by int) with each tensor's dtype, shape and offset, then
the tensors' bytes. Loading never executes code (no pickle), like ``weights_only=True``.

:func:`loads` also reads blobs written by ``torch.save`` (checkpoints of earlier versions),
and :func:`dumps` falls back to ``torch.save`` for a tensor NumPy cannot hold (bfloat16).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

MAGIC = b"FKDSTATE1\n"
_HEADER_BYTES = 8  # little-endian length of the JSON header


class _Unsupported(Exception):
    """A value this format does not store (``dumps`` then uses ``torch.save``)."""


def dumps(state: Any) -> bytes:
    """Bytes of a nested dict/list of tensors and JSON scalars (``torch.save`` otherwise)."""
    chunks: list[bytes] = []
    try:
        tree = _encode(state, chunks, [0])
    except _Unsupported:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()
    header = json.dumps(tree, separators=(",", ":")).encode()
    return b"".join([MAGIC, len(header).to_bytes(_HEADER_BYTES, "little"), header, *chunks])


def loads(blob: bytes, map_location: torch.device | str | None = None) -> Any:
    """What :func:`dumps` (or ``torch.save``) wrote; tensors land on ``map_location``."""
    if not blob.startswith(MAGIC):
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)
    start = len(MAGIC) + _HEADER_BYTES
    size = int.from_bytes(blob[len(MAGIC) : start], "little")
    tree = json.loads(blob[start : start + size])
    return _decode(tree, memoryview(blob)[start + size :], map_location)


def _encode(value: Any, chunks: list[bytes], offset: list[int]) -> Any:
    if isinstance(value, torch.Tensor):
        try:
            array = value.detach().cpu().contiguous().numpy()
        except TypeError as exc:  # e.g. bfloat16
            raise _Unsupported from exc
        data = array.tobytes()
        chunks.append(data)
        entry = {"t": [array.dtype.str, list(array.shape), offset[0], len(data)]}
        offset[0] += len(data)
        return entry
    if isinstance(value, dict):
        return {"d": [[_key(k), _encode(v, chunks, offset)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return {
            "l" if isinstance(value, list) else "u": [_encode(v, chunks, offset) for v in value]
        }
    if value is None or isinstance(value, bool | int | float | str):
        return {"v": value}
    raise _Unsupported(type(value).__name__)


def _key(key: Any) -> list[Any]:
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise _Unsupported(f"dict key {key!r}")
    return ["i" if isinstance(key, int) else "s", key]


def _decode(node: dict[str, Any], data: memoryview, device: torch.device | str | None) -> Any:
    ((kind, body),) = node.items()
    if kind == "t":
        dtype, shape, offset, nbytes = body
        array = np.frombuffer(data[offset : offset + nbytes], dtype=np.dtype(dtype)).reshape(shape)
        tensor = torch.from_numpy(array.copy())
        return tensor if device is None else tensor.to(device)
    if kind == "d":
        return {(int(k) if t == "i" else k): _decode(v, data, device) for (t, k), v in body}
    if kind == "l":
        return [_decode(v, data, device) for v in body]
    if kind == "u":
        return tuple(_decode(v, data, device) for v in body)
    if kind == "v":
        return body
    raise ValueError(f"not a fedkd state blob (node kind {kind!r})")


# ----------------------------------------------------------------------------- stacked states
def stack(trees: Sequence[Any]) -> Any | None:
    """One tree for several states of the same shape (a vectorized group's members): each
    tensor stacked along a new first dimension, everything else as in the first tree, so one
    :func:`dumps` saves them all. ``None`` when they do not stack: a different structure or
    key order, an unequal non-tensor value, or tensors of different shape, dtype or device.
    :func:`row` gives each state back."""
    if not trees:
        return None
    try:
        return _stack(list(trees))
    except _Unsupported:
        return None


def row(tree: Any, index: int) -> Any:
    """State ``index`` of a :func:`stack`-ed tree; each tensor is its own copy (a view would
    keep the whole group's storage alive for as long as one member's state)."""
    if isinstance(tree, torch.Tensor):
        return tree[index].clone()
    if isinstance(tree, dict):
        return {k: row(v, index) for k, v in tree.items()}
    if isinstance(tree, list | tuple):
        return type(tree)(row(v, index) for v in tree)
    return tree


def _stack(values: list[Any]) -> Any:
    first = values[0]
    if isinstance(first, torch.Tensor):
        if any(
            not isinstance(v, torch.Tensor)
            or v.shape != first.shape
            or v.dtype != first.dtype
            or v.device != first.device
            for v in values
        ):
            raise _Unsupported("tensors differ")
        return torch.stack([v.detach() for v in values])
    if any(type(v) is not type(first) for v in values):
        raise _Unsupported("types differ")
    if isinstance(first, dict):
        keys = list(first)
        if any(list(v) != keys for v in values):
            raise _Unsupported("keys differ")
        return {k: _stack([v[k] for v in values]) for k in keys}
    if isinstance(first, list | tuple):
        if any(len(v) != len(first) for v in values):
            raise _Unsupported("lengths differ")
        return type(first)(_stack([v[i] for v in values]) for i in range(len(first)))
    if any(v != first for v in values):
        raise _Unsupported("values differ")
    return first


# ----------------------------------------------------------------------------- fast restore
def restore_module(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """``module.load_state_dict(saved)``, by copying into the parameters directly when the
    saved state is exactly the module's parameters (same names, shapes, dtypes; no buffers),
    which is what ``load_state_dict`` then does too, minus its per-module walk and checks."""
    params = dict(module.named_parameters())
    plain = next(module.buffers(), None) is None and saved.keys() == params.keys()
    if not plain or any(
        not isinstance(v, torch.Tensor) or v.shape != params[k].shape or v.dtype != params[k].dtype
        for k, v in saved.items()
    ):
        module.load_state_dict(saved)
        return
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(saved)`` for the state :func:`loads` just decoded.

    ``load_state_dict`` deep-copies the saved state and casts each entry to its parameter's
    dtype and device; a worker restoring a client it served before (0.5 ms a client, a fifth
    of a cohort member's cost) needs neither: the entries are fresh tensors already on the
    client's device. So when every group has the same settings keys and parameter count as
    now, and every state entry already has its parameter's dtype and device ("step" is kept
    as saved, as torch keeps it), the entries are assigned as they are; anything else goes
    through ``load_state_dict``. Tests hold the two equal, step for step.
    """
    if not _assignable(optimizer, saved):
        optimizer.load_state_dict(saved)
        return
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for live, group in zip(optimizer.param_groups, saved["param_groups"], strict=True):
        live.update({k: v for k, v in group.items() if k != "params"})
    optimizer.state.clear()
    for index, entries in saved["state"].items():
        optimizer.state[params[index]] = dict(entries)


def _assignable(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> bool:
    groups = saved.get("param_groups")
    if (
        set(saved) != {"state", "param_groups"}
        or not isinstance(groups, list)
        or len(groups) != len(optimizer.param_groups)
        or optimizer._optimizer_load_state_dict_pre_hooks  # a hook: torch's own load
        or optimizer._optimizer_load_state_dict_post_hooks
    ):
        return False
    params: list[torch.Tensor] = []
    start = 0
    for live, group in zip(optimizer.param_groups, groups, strict=True):
        count = len(live["params"])
        if (
            not isinstance(group, dict)
            or set(group) != set(live)
            or group["params"] != list(range(start, start + count))
            or group.get("capturable")
            or group.get("fused")
        ):
            return False
        params += live["params"]
        start += count
    for index, entries in saved["state"].items():
        if not isinstance(index, int) or not 0 <= index < len(params):
            return False
        param = params[index]
        for key, value in entries.items():
            if not isinstance(value, torch.Tensor) or value.device != param.device:
                return False
            if key != "step" and (value.dtype != param.dtype or value.shape != param.shape):
                return False
    return True
