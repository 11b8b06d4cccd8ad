"""Explaining the student: does it look where its teachers look? (input-gradient saliency)

A distilled student can match its teachers' *outputs* on the public set for the wrong reasons.
Saliency agreement checks the *reasons*: for each public sample, the gradient of a model's
log-probability of a target class with respect to the input (vanilla saliency, Simonyan et
al. 2014) is a map of the pixels that move that decision; the student's map is compared with
each teacher-ensemble member's map by cosine similarity of the absolute gradients (and by the
overlap of their top-k pixels). High agreement means the student learnt the ensemble's
evidence, not just its answers. The target class is the ensemble's consensus unless given.

Pure torch; no Flower. The plot helper imports matplotlib lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["plot_saliency_agreement", "saliency", "saliency_agreement"]


def saliency(model: nn.Module, x: Tensor, target: Tensor) -> Tensor:
    """``|∂ log p(target | x) / ∂x|``: ``(rows, *input_shape)`` non-negative saliency maps.

    The model's train/eval mode is restored afterwards; its parameters get no gradient.
    """
    if target.shape != (x.shape[0],):
        raise ValueError(f"target must be (rows,) = ({x.shape[0]},), got {tuple(target.shape)}")
    was_training = model.training
    model.eval()
    try:
        inputs = x.detach().clone().requires_grad_(True)
        logp = F.log_softmax(model(inputs), dim=1)  # (rows, classes)
        chosen = logp.gather(1, target.long().view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(chosen, inputs)
    finally:
        model.train(was_training)
    return grad.abs()


def _topk_overlap(a: Tensor, b: Tensor, k: int) -> Tensor:
    """``(rows,)`` fraction of the top-``k`` pixels of ``a`` that are also top-``k`` in ``b``."""
    ia = a.topk(k, dim=1).indices
    ib = b.topk(k, dim=1).indices
    hits = (ia.unsqueeze(2) == ib.unsqueeze(1)).any(dim=2).float()  # (rows, k)
    return hits.mean(dim=1)


def saliency_agreement(
    student: nn.Module,
    teachers: Sequence[nn.Module],
    x: Tensor,
    *,
    target: Tensor | None = None,
    top_fraction: float = 0.1,
) -> dict[str, Any]:
    """Saliency agreement between a student and each teacher-ensemble member on inputs ``x``.

    Parameters
    ----------
    student : nn.Module
        The distilled student.
    teachers : sequence of nn.Module
        The ensemble members (e.g. client models in a simulation).
    x : Tensor
        ``(rows, *input_shape)`` public inputs.
    target : Tensor, optional
        ``(rows,)`` class whose evidence is compared; default: the argmax of the ensemble's mean
        probabilities (the consensus the student was distilled toward).
    top_fraction : float
        Fraction of input pixels in the top-k overlap score.

    Returns
    -------
    dict
        ``"cosine"``: ``(teachers, rows)`` cosine similarity of student and teacher maps;
        ``"topk_overlap"``: ``(teachers, rows)``; ``"teacher_teacher_cosine"``: mean pairwise
        cosine among teachers (the agreement a student can hope to reach); per-teacher means
        ``"mean_cosine"`` and ``"mean_topk_overlap"``; and ``"target"``.
    """
    if not teachers:
        raise ValueError("need at least one teacher")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if target is None:
        with torch.no_grad():
            was = [t.training for t in teachers]
            for t in teachers:
                t.eval()
            mean = torch.stack([F.softmax(t(x), dim=1) for t in teachers]).mean(0)
            for t, w in zip(teachers, was, strict=True):
                t.train(w)
        target = mean.argmax(dim=1)
    maps_s = saliency(student, x, target).flatten(1)  # (rows, pixels)
    maps_t = [saliency(t, x, target).flatten(1) for t in teachers]
    k = max(1, round(top_fraction * maps_s.shape[1]))
    cosine = torch.stack([F.cosine_similarity(maps_s, m, dim=1) for m in maps_t])
    overlap = torch.stack([_topk_overlap(maps_s, m, k) for m in maps_t])
    pairs = [
        F.cosine_similarity(maps_t[i], maps_t[j], dim=1).mean()
        for i in range(len(maps_t))
        for j in range(i + 1, len(maps_t))
    ]
    return {
        "target": target,
        "cosine": cosine,
        "topk_overlap": overlap,
        "mean_cosine": cosine.mean(dim=1).tolist(),
        "mean_topk_overlap": overlap.mean(dim=1).tolist(),
        "teacher_teacher_cosine": float(torch.stack(pairs).mean()) if pairs else float("nan"),
    }


def plot_saliency_agreement(
    result: dict[str, Any], path: str | Path, *, names: Sequence[str] | None = None
) -> Path:
    """Diagnostic plot: per-teacher distribution of student-teacher saliency cosine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cosine = result["cosine"].detach().cpu().numpy()  # (teachers, rows)
    labels = list(names) if names is not None else [f"teacher {i}" for i in range(len(cosine))]
    fig, ax = plt.subplots(figsize=(1.2 * len(cosine) + 3, 3.5))
    ax.boxplot(list(cosine), tick_labels=labels)
    ref = result["teacher_teacher_cosine"]
    ax.axhline(ref, color="tab:red", ls="--", label=f"teacher-teacher mean {ref:.2f}")
    ax.set(ylabel="saliency cosine (student vs teacher)", ylim=(0, 1))
    ax.legend(loc="lower right")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
