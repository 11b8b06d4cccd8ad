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


RUN_LINES: dict[str, str] = {
    "client_accuracy": "clients' mean (own test)",
    "teacher_accuracy": "teacher on public",
}
"""Per-round record keys :class:`~strategies.reporting.RunRecorder` adds to a run's accuracy plot
(dashed, only the rounds where the value exists: FedAvg has no teacher)."""


def plot_accuracy_vs_round(
    series: Series,
    path: str | Path,
    *,
    key: str = "student_accuracy",
    extra: Mapping[str, str] | None = None,
) -> Path:
    """Test accuracy per round, one line per run/strategy.

    ``extra`` maps further record keys to a line name (e.g. :data:`RUN_LINES`); each is drawn
    dashed in its series' colour, over the rounds where it is not ``None``.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in series.items():
        (line,) = ax.plot(
            [r["round"] for r in records], [r[key] for r in records], marker="o", label=label
        )
        for extra_key, name in (extra or {}).items():
            points = [(r["round"], r[extra_key]) for r in records if r.get(extra_key) is not None]
            if not points:
                continue
            rounds, values = zip(*points, strict=True)
            ax.plot(
                rounds,
                values,
                linestyle="--",
                marker=".",
                color=line.get_color(),
                alpha=0.7,
                label=name if len(series) == 1 else f"{label}: {name}",
            )
    ax.set(xlabel="round", ylabel="test accuracy", title="Accuracy per round", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def plot_accuracy_vs_bytes(
    series: Series, path: str | Path, *, key: str = "student_accuracy"
) -> Path:
    """Test accuracy against cumulative traffic (up + down) in MiB, log-scaled: the FD-vs-FedAvg
    view."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, records in series.items():
        ax.plot(
            [max(r["cum_bytes"], 1) / 2**20 for r in records],
            [r[key] for r in records],
            marker="o",
            label=label,
        )
    ax.set(
        xscale="log",
        xlabel="cumulative traffic, up + down (MiB)",
        ylabel="test accuracy",
        title="Accuracy vs communication",
        ylim=(0, 1),
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    return _save(fig, path)


def plot_accuracy_vs_epsilon(
    series: Series, path: str | Path, *, key: str = "student_accuracy"
) -> Path:
    """Test accuracy against the ε spent so far (``dp_epsilon`` per round, at the run's δ):
    what each round of a DP run bought and what it cost."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    deltas: set[float] = set()
    for label, records in series.items():
        points = [(r["dp_epsilon"], r[key]) for r in records if r.get("dp_epsilon") is not None]
        deltas |= {float(r["dp_delta"]) for r in records if r.get("dp_delta") is not None}
        if points:
            eps, acc = zip(*points, strict=True)
            ax.plot(eps, acc, marker="o", label=label)
    delta = f" at δ = {', '.join(f'{d:g}' for d in sorted(deltas))}" if deltas else ""
    ax.set(xlabel=f"ε spent{delta}", ylabel="test accuracy", title="Accuracy vs privacy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
