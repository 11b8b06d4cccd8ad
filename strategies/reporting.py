"""Per-round results: progress lines, ``metrics.json`` and plots in the run directory.

Both strategies (FedDistill and the FedAvg baseline) report :class:`RoundRecord` rows; the
:class:`RunRecorder` turns them into what a user looks at. ``metrics.json`` is rewritten
atomically after every round, so a crash never leaves a truncated file behind.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from strategies.fed_distill import RoundRecord

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to a temporary file in the same directory, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=True)
    os.replace(tmp, path)


def selected_round(records: list[RoundRecord]) -> RoundRecord:
    """The round a researcher may report besides the last one: best on **validation**.

    Ties go to the earliest such round. Without validation accuracies (``val-fraction=0``) it
    is the last round: fedkd never selects on the test set, so a max over test accuracies
    cannot appear in a summary.
    """
    if not records:
        raise ValueError("no rounds to select from")
    scored = [r for r in records if r.student_val_accuracy is not None]
    if not scored:
        return records[-1]
    best = max(r.student_val_accuracy for r in scored)  # type: ignore[type-var]
    return next(r for r in scored if r.student_val_accuracy == best)


def accuracy_summary(records: list[RoundRecord]) -> dict[str, Any]:
    """Final and validation-selected accuracies of a run (what ``summary.json`` reports)."""
    last, chosen = records[-1], selected_round(records)
    return {
        "rounds": len(records),
        "final_student_accuracy": last.student_accuracy,
        "final_student_val_accuracy": last.student_val_accuracy,
        "selected_round": chosen.round,
        "selected_student_accuracy": chosen.student_accuracy,
        "selected_student_val_accuracy": chosen.student_val_accuracy,
        "final_client_accuracy": last.client_accuracy,
        "final_teacher_public_accuracy": last.teacher_accuracy,
        "cum_bytes": last.cum_bytes,
    }


def format_round(record: RoundRecord, num_rounds: int) -> str:
    """One human line per round: what a researcher watches while a run goes."""
    client = "  n/a" if record.client_accuracy is None else f"{record.client_accuracy:5.3f}"
    teacher = "  n/a" if record.teacher_accuracy is None else f"{record.teacher_accuracy:5.3f}"
    val = (
        "" if record.student_val_accuracy is None else f" (val {record.student_val_accuracy:5.3f})"
    )
    line = (
        f"round {record.round:>3}/{num_rounds}  student test acc {record.student_accuracy:5.3f}"
        f"{val}  loss {record.student_loss:6.3f}  clients {client}  "
        f"teacher on public {teacher}  "
        f"up {_kib(record.bytes_up)}  down {_kib(record.bytes_down)}  "
        f"total {_kib(record.cum_bytes)}  "
        f"replies {record.valid_replies} ok/{record.rejected} rejected"
        + (f"/{record.missing} missing" if record.missing else "")
        + _privacy(record)
        + f"  {record.wall_seconds:5.1f}s"
    )
    return line if record.status == "ok" else f"{line}  [{record.status}]"


def _privacy(record: RoundRecord) -> str:
    """``  ε 4.25 at δ 1e-05`` with DP on, else nothing."""
    if record.dp_epsilon is None:
        return ""
    delta = "" if record.dp_delta is None else f" at δ {record.dp_delta:g}"
    return f"  ε {record.dp_epsilon:.2f}{delta}"


def _kib(n: int) -> str:
    return f"{n / 1024:8.1f} KiB" if n < 2**20 else f"{n / 2**20:8.2f} MiB"


class RunRecorder:
    """Round callback: prints progress and keeps ``<run_dir>/metrics.json`` current."""

    def __init__(self, run_dir: str | Path | None, num_rounds: int, *, echo: bool = True) -> None:
        self.run_dir = Path(run_dir) if run_dir else None
        self.num_rounds = num_rounds
        self.echo = echo
        self.records: list[dict[str, Any]] = []

    def __call__(self, record: RoundRecord) -> None:
        self.records.append(record.as_dict())
        if self.echo:
            print(format_round(record, self.num_rounds), flush=True)
        if self.run_dir is not None:
            write_json_atomic(self.run_dir / "metrics.json", self.records)

    def save_plots(self, strategy: str = "fd") -> list[Path]:
        """Accuracy vs round (with the clients' mean and the teacher on public data), accuracy
        vs cumulative traffic and, for DP runs, accuracy vs ε, next to metrics.json.
        ``strategy`` names the central model's line: FD's student, or FedAvg's global model."""
        if self.run_dir is None or not self.records:
            return []
        import importlib.util

        if importlib.util.find_spec("matplotlib") is None:  # lean server install: data, no pictures
            log.warning("matplotlib is not installed; skipping plots (pip install 'fedkd[server]')")
            return []
        from fedkd.plots import (
            RUN_LINES,
            plot_accuracy_vs_bytes,
            plot_accuracy_vs_epsilon,
            plot_accuracy_vs_round,
        )

        label = {"fedavg": "FedAvg global model", "feddf": "FedDF student-architecture model"}
        series = {label.get(strategy, "student"): self.records}
        paths = [
            plot_accuracy_vs_round(series, self.run_dir / "accuracy_vs_round.png", extra=RUN_LINES),
            plot_accuracy_vs_bytes(series, self.run_dir / "accuracy_vs_bytes.png"),
        ]
        if any(r.get("dp_epsilon") is not None for r in self.records):  # DP runs
            paths.append(plot_accuracy_vs_epsilon(series, self.run_dir / "accuracy_vs_epsilon.png"))
        return paths
