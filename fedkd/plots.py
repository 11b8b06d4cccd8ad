"""Plots people would rather look at than read: learning curves and communication curves.

Matplotlib is imported inside each function with the non-interactive Agg backend, so importing
this module costs nothing and works on headless machines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Band:
    """One compared group: its mean curve with a ± std band (zero width for a single run)."""

    label: str
    rounds: Sequence[int]
    cum_bytes: Sequence[float]  # mean cumulative traffic (up + down) after each round, bytes
    mean: Sequence[float]
    std: Sequence[float]
    references: Mapping[str, float | None]  # line name -> accuracy (e.g. "centralized")


def human_bytes(value: float, _pos: object = None) -> str:
    """``3_280_000`` → ``"3.1 MiB"``: tick labels a person reads without counting digits."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


REFERENCE_STYLES: tuple[Any, ...] = ("--", "-.", ":")  # local-only, centralized, public labels


def byte_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Tick positions at round binary sizes (1, 2, 5, 10, 20, 50 … of B, KiB, MiB, GiB) within
    ``[low, high]``: '500 KiB, 1 MiB, 2 MiB', not powers of ten of bytes ('977 KiB')."""
    steps = (1, 2, 5, 10, 20, 50, 100, 200, 500)
    for mantissas in (steps, (1, 10, 100), (1,)):
        ticks = [
            m * 2 ** (10 * k)
            for k in range(4)
            for m in mantissas
            if low <= m * 2 ** (10 * k) <= high
        ]
        if len(ticks) <= most:
            return ticks
    return ticks


def plot_compare(bands: Sequence[Band], path: str | Path, *, x: str = "round") -> Path:
    """Overlay groups of runs: mean accuracy with a ± one std band, against the round
    (``x="round"``) or the cumulative traffic on a log axis in human units (``x="bytes"``).

    References (local-only, centralized, public labels) are horizontal lines, one line style
    each: grey when every band has the same value (one dataset and partition), otherwise in each
    band's colour.
    """
    if x not in ("round", "bytes"):
        raise ValueError(f"x must be 'round' or 'bytes', got {x!r}")
    plt = _pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {}
    every_x: list[float] = []
    for band in bands:
        xs = list(band.rounds) if x == "round" else [max(v, 1.0) for v in band.cum_bytes]
        every_x += xs
        lo = [m - s for m, s in zip(band.mean, band.std, strict=True)]
        hi = [m + s for m, s in zip(band.mean, band.std, strict=True)]
        (line,) = ax.plot(xs, band.mean, marker="o", markersize=3, label=band.label)
        colours[band.label] = line.get_color()
        if any(band.std):
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    handles, _ = ax.get_legend_handles_labels()
    names = list(dict.fromkeys(name for band in bands for name in band.references))
    for name, style in zip(names, REFERENCE_STYLES, strict=False):
        values = {b.label: b.references.get(name) for b in bands}
        present = {label: v for label, v in values.items() if v is not None}
        if not present:
            continue
        if len(set(present.values())) == 1:
            ax.axhline(next(iter(present.values())), color="grey", linestyle=style, linewidth=1)
        else:
            for label, value in present.items():
                ax.axhline(value, color=colours[label], linestyle=style, linewidth=1)
        handles.append(Line2D([], [], color="grey", linestyle=style, label=name))
    if x == "bytes":
        ax.set_xscale("log")
        ticks = byte_ticks(min(every_x, default=1.0), max(every_x, default=1.0))
        if ticks:
            ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(human_bytes))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("cumulative traffic, up + down")
        ax.set_title("Accuracy vs communication")
    else:
        ax.set_xlabel("round")
        ax.set_title("Accuracy per round")
    ax.set(ylabel="test accuracy (mean ± std over seeds)", ylim=(0, 1))
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, fontsize="small", loc="best")
    return _save(fig, path)
