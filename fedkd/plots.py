"""Plots people would rather look at than read: learning curves and communication curves.

Matplotlib is imported inside each function with the non-interactive Agg backend, so importing
this module costs nothing and works on headless machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Series = Mapping[str, Sequence[Mapping[str, Any]]]  # label -> per-round records


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_accuracy_vs_round(
    series: Series, path: str | Path, *, key: str = "student_accuracy"
) -> Path:
    """Test accuracy per round, one line per run/strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in series.items():
        ax.plot([r["round"] for r in records], [r[key] for r in records], marker="o", label=label)
    ax.set(xlabel="round", ylabel="test accuracy", title="Accuracy per round", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_accuracy_vs_bytes(
    series: Series, path: str | Path, *, key: str = "student_accuracy"
) -> Path:
    """Test accuracy against cumulative bytes (up + down), log-scaled: the FD-vs-FedAvg view."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in series.items():
        ax.plot(
            [max(r["cum_bytes"], 1) for r in records],
            [r[key] for r in records],
            marker="o",
            label=label,
        )
    ax.set(
        xscale="log",
        xlabel="cumulative bytes (up + down)",
        ylabel="test accuracy",
        title="Accuracy vs communication",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)
