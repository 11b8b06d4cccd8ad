"""Which public samples a client can speak for: support scores for class-aware teachers.

Under label skew a client has never seen most classes, yet its model still answers on every
public sample, confidently and wrongly for the classes it lacks. Averaging those answers is
what makes a plain-mean teacher nearly uniform at Dirichlet α = 0.1 (docs/recipes.md measures
it). Selective-FD (Shao et al. 2024, "Selective Knowledge Sharing for Privacy-Preserving
Federated Distillation without A Good Teacher") fixes this on the client: a density-ratio
*selector* marks the public samples that look like the client's own data, and the client's
predictions count only there. FedAUX (Sattler et al. 2021) weighs the same predictions by a
soft certainty score instead of a hard mask.

This module computes that score in one cheap, architecture-independent way: the distance from
each public sample to its nearest private sample, measured against how far private samples lie
from *each other*. ``score = 2 ** -((d / r) ** 2)`` with ``r`` the ``quantile`` of the private
leave-one-out nearest-neighbour distances, so a public sample as close to the private data as a
typical private sample is to another scores about 1, one at the radius scores exactly 0.5 (the
Selective-FD mask is ``score >= 0.5``), and far-away samples fall towards 0.

The score travels as ``uint8`` (0..255): one byte per queried public row.

Pure torch and NumPy: no Flower, no Ray.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["SUPPORT_LEVELS", "decode_support", "encode_support", "in_support", "support_scores"]

SUPPORT_LEVELS = 255
"""A score is sent as ``round(score * SUPPORT_LEVELS)`` in one byte."""

MASK_THRESHOLD = 0.5
"""Score at the radius: the hard Selective-FD mask keeps samples scoring at least this."""

_CHUNK_ROWS = 2048  # distance matrices are built this many query rows at a time


def _flat(x: Tensor) -> Tensor:
    return x.reshape(len(x), -1).to(torch.float32)


def _nearest(queries: Tensor, reference: Tensor, *, exclude_self: bool = False) -> Tensor:
    """``(queries,)`` Euclidean distance of each query to its nearest reference row."""
    out = []
    for start in range(0, len(queries), _CHUNK_ROWS):
        d = torch.cdist(queries[start : start + _CHUNK_ROWS], reference)  # (chunk, reference)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        out.append(d.min(dim=1).values)
    return torch.cat(out)


def support_scores(private_x: Tensor, public_x: Tensor, *, quantile: float = 0.95) -> np.ndarray:
    """``(public,)`` float32 scores in ``[0, 1]``: how much each public sample looks private.

    Parameters
    ----------
    private_x : Tensor
        ``(n, *input_shape)`` the client's private inputs (never leave the client).
    public_x : Tensor
        ``(m, *input_shape)`` the public inputs (or the queried subset).
    quantile : float
        Which private leave-one-out nearest-neighbour distance sets the radius ``r``
        (0.95: 95 % of private samples have a private neighbour within ``r``).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if len(private_x) == 0:
        return np.zeros(len(public_x), dtype=np.float32)  # no data: supports nothing
    private, public = _flat(private_x), _flat(public_x)
    to_private = _nearest(public, private)  # (m,)
    if len(private) > 1:
        radius = float(torch.quantile(_nearest(private, private, exclude_self=True), quantile))
    else:  # one private sample: no spread to learn from; use the public distances' median
        radius = float(to_private.median())
    radius = max(radius, 1e-12)
    scores = torch.exp2(-((to_private / radius) ** 2))
    return scores.numpy().astype(np.float32)


def encode_support(scores: np.ndarray) -> np.ndarray:
    """Scores in ``[0, 1]`` as ``uint8`` codes (what goes on the wire)."""
    clipped = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64)), 0.0, 1.0)
    return np.rint(clipped * SUPPORT_LEVELS).astype(np.uint8)


def decode_support(codes: np.ndarray) -> np.ndarray:
    """``uint8`` codes back to float64 scores in ``[0, 1]``."""
    return np.asarray(codes, dtype=np.float64) / SUPPORT_LEVELS


def in_support(scores: np.ndarray) -> np.ndarray:
    """The hard Selective-FD mask: scores at or above :data:`MASK_THRESHOLD` (the radius)."""
    return np.asarray(scores, dtype=np.float64) >= MASK_THRESHOLD
