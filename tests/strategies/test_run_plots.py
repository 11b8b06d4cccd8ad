"""Per-run plots: MiB on the traffic axis, FedAvg's line named as such, client and teacher lines,
α in the partition title."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fedkd import plots
from fedkd.config import FDConfig
from strategies.reporting import RunRecorder


def _records(teacher: bool) -> list[dict[str, Any]]:
    return [
        {
            "round": r,
            "student_accuracy": 0.1 * r,
            "client_accuracy": 0.2 * r,
            "teacher_accuracy": 0.3 * r if teacher else None,
            "cum_bytes": r * 2**20,
        }
        for r in (1, 2)
    ]


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    captured: list[Any] = []

    def keep(fig: Any, path: str | Path) -> Path:
        captured.append(fig)
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    return captured


def _labels(fig: Any) -> list[str]:
    return fig.axes[0].get_legend_handles_labels()[1]


def test_fd_run_plot_has_student_client_and_teacher_lines(
    figures: list[Any], tmp_path: Path
) -> None:
    recorder = RunRecorder(tmp_path, 2, echo=False)
    recorder.records = _records(teacher=True)
    recorder.save_plots("fd")
    by_round, by_bytes = figures
    assert _labels(by_round) == ["student", "clients' mean (own test)", "teacher on public"]
    teacher = by_round.axes[0].get_lines()[2]
    assert list(teacher.get_ydata()) == pytest.approx([0.3, 0.6])
    assert "MiB" in by_bytes.axes[0].get_xlabel()
    assert list(by_bytes.axes[0].get_lines()[0].get_xdata()) == pytest.approx([1.0, 2.0])


def test_fedavg_run_plot_names_the_global_model_and_has_no_teacher(
    figures: list[Any], tmp_path: Path
) -> None:
    recorder = RunRecorder(tmp_path, 2, echo=False)
    recorder.records = _records(teacher=False)
    recorder.save_plots("fedavg")
    by_round, by_bytes = figures
    assert _labels(by_round) == ["FedAvg global model", "clients' mean (own test)"]
    assert _labels(by_bytes) == ["FedAvg global model"]


def test_partition_title_names_the_partitions_parameter() -> None:
    from simulations.run import partition_title

    assert partition_title(FDConfig(partition="dirichlet", alpha=0.1)) == (
        "digits: dirichlet partition (α=0.1) over 10 clients"
    )
    assert "(2 classes per client)" in partition_title(
        FDConfig(partition="pathological", classes_per_partition=2)
    )
    assert partition_title(FDConfig(partition="iid")) == "digits: iid partition over 10 clients"


def test_dp_run_adds_accuracy_against_epsilon_at_its_delta(
    figures: list[Any], tmp_path: Path
) -> None:
    recorder = RunRecorder(tmp_path, 2, echo=False)
    recorder.records = [
        {**r, "dp_epsilon": 2.0 * r["round"], "dp_delta": 1e-5} for r in _records(teacher=True)
    ]
    recorder.save_plots("fd")
    by_epsilon = figures[-1]
    assert len(figures) == 3 and "δ = 1e-05" in by_epsilon.axes[0].get_xlabel()
    assert list(by_epsilon.axes[0].get_lines()[0].get_xdata()) == pytest.approx([2.0, 4.0])
