"""Plots of a forgetting study: the accuracy-matrix heatmap and accuracy over tasks.

Matplotlib is imported inside each function with the non-interactive Agg backend, so importing
this module costs nothing and works on headless machines.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from fedkd.plots import _pyplot, _save  # one Agg/savefig policy for every fedkd plot

__all__ = ["plot_accuracy_matrix", "plot_accuracy_over_tasks"]


def _stack(matrices: Sequence[ArrayLike] | ArrayLike) -> np.ndarray:
    """``(seeds, T, T)`` from one matrix or a list of per-seed matrices."""
    r = np.asarray(matrices, dtype=np.float64)
    if r.ndim == 2:
        r = r[None]
    if r.ndim != 3 or r.shape[1] != r.shape[2] or r.shape[0] == 0:
        raise ValueError(f"expected (T, T) or (seeds, T, T) accuracy matrices, got {r.shape}")
    return r


def plot_accuracy_matrix(
    matrices: Sequence[ArrayLike] | ArrayLike,
    path: str | Path,
    *,
    title: str = "",
    task_labels: Sequence[str] | None = None,
    spread: bool = False,
) -> Path:
    """Heatmap of ``R`` (mean over the matrices given), ``R[i][j]`` annotated in each cell.

    Rows: "after training task i"; columns: "tested on task j". The lower triangle is
    retention of old tasks, the diagonal is learning, the upper triangle is accuracy on tasks
    not trained yet (forward transfer). With ``spread`` each cell also shows the standard
    deviation over the matrices (seeds, or clients × seeds).
    """
    r = _stack(matrices)
    mean = r.mean(axis=0)  # (T, T)
    std = r.std(axis=0)
    t = mean.shape[0]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * t, 0.8 + 0.7 * t))
    image = ax.imshow(mean, vmin=0.0, vmax=1.0, cmap="viridis")
    for i in range(t):
        for j in range(t):
            color = "black" if mean[i, j] > 0.6 else "white"
            text = f"{mean[i, j]:.2f}" + (f"\n±{std[i, j]:.2f}" if spread else "")
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize=7 if spread else 8)
    ticks = list(range(t))
    ax.set_xticks(ticks, labels=list(task_labels) if task_labels else ticks, rotation=45)
    ax.set_yticks(ticks)
    seeds = f" (mean of {r.shape[0]} runs)" if spread else ""
    seeds = seeds or (f" (mean of {r.shape[0]} seeds)" if r.shape[0] > 1 else "")
    ax.set(xlabel="tested on task j", ylabel="after training task i", title=f"{title}{seeds}")
    fig.colorbar(image, ax=ax, fraction=0.046, label="accuracy")
    return _save(fig, path)


def plot_accuracy_over_tasks(
    matrices: Sequence[ArrayLike] | ArrayLike,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Accuracy on each task as training moves through the sequence (mean ± std over seeds).

    One line per task ``j`` (``R[i][j]`` against ``i``, drawn from the step it is learnt on)
    and a thick line for the average over the tasks seen so far: a falling line is forgetting.
    """
    r = _stack(matrices)
    mean, std = r.mean(axis=0), r.std(axis=0)
    t = mean.shape[0]
    steps = np.arange(t)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in range(t):
        x = steps[j:]
        ax.plot(x, mean[j:, j], marker="o", label=f"task {j}")
        ax.fill_between(x, mean[j:, j] - std[j:, j], mean[j:, j] + std[j:, j], alpha=0.15)
    seen = np.array([r[:, i, : i + 1].mean(axis=1) for i in range(t)])  # (T, seeds)
    ax.plot(steps, seen.mean(axis=1), color="black", linewidth=2.5, label="mean of seen tasks")
    ax.set(
        xlabel="after training task",
        ylabel="test accuracy",
        title=title or "Accuracy over tasks",
        ylim=(0.0, 1.02),
        xticks=steps,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)
