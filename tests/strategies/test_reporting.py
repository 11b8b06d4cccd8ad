"""What a researcher sees per round (the progress line) and keeps (metrics.json)."""

from __future__ import annotations

import json
from dataclasses import replace

from strategies.fed_distill import RoundRecord
from strategies.reporting import RunRecorder, format_round


def _record(**changes) -> RoundRecord:
    base = dict(
        round=2,
        student_accuracy=0.8,
        student_loss=0.5,
        client_accuracy=0.6,
        teacher_accuracy=None,
        bytes_up=2048,
        bytes_down=1024,
        cum_bytes=3 * 2**20,
        valid_replies=7,
        rejected=2,
        rejected_reasons={"client-error": 1, "non-finite": 1},
        rejected_nodes=[11, 12],
    )
    return RoundRecord(**{**base, **changes})


def test_progress_line_shows_accuracy_bytes_and_replies() -> None:
    line = format_round(_record(), 10)
    assert (
        "round   2/10" in line
        and "student test acc 0.800" in line
        and "teacher on public   n/a" in line
    )
    assert "2.0 KiB" in line and "3.00 MiB" in line and "7 ok/2 rejected" in line
    assert "missing" not in line and "ε" not in line


def test_progress_line_names_missing_replies_privacy_and_skips() -> None:
    line = format_round(
        _record(
            missing=3, missing_nodes=[1, 2, 3], dp_epsilon=4.25, dp_delta=1e-5, status="skipped: x"
        ),
        10,
    )
    assert "7 ok/2 rejected/3 missing" in line and "ε 4.25 at δ 1e-05" in line
    assert line.endswith("[skipped: x]")


def test_metrics_json_holds_every_round_with_who_failed(tmp_path, capsys) -> None:
    recorder = RunRecorder(tmp_path, 2)
    recorder(_record(round=1))
    recorder(_record(round=2, missing=1, missing_nodes=[99]))
    rows = json.loads((tmp_path / "metrics.json").read_text())
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[1]["missing_nodes"] == [99] and rows[0]["rejected_nodes"] == [11, 12]
    assert rows[0]["rejected_reasons"] == {"client-error": 1, "non-finite": 1}
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert not list(tmp_path.glob("*.tmp"))  # written atomically, no leftovers


def test_summaries_never_select_on_test() -> None:
    """The best test round (0.99) is not the best validation round: a max over test accuracies
    would report 0.99; the summary must report the validation-selected round and the last."""
    from strategies.reporting import accuracy_summary, selected_round

    accs = [(0.70, 0.70), (0.99, 0.80), (0.90, 0.95), (0.91, 0.90)]  # (test, val) per round
    records = [
        replace(_record(), round=i + 1, student_accuracy=t, student_val_accuracy=v)
        for i, (t, v) in enumerate(accs)
    ]
    assert selected_round(records).round == 3
    summary = accuracy_summary(records)
    assert summary["selected_student_accuracy"] == 0.90
    assert summary["final_student_accuracy"] == 0.91
    assert 0.99 not in summary.values()
    no_val = [replace(r, student_val_accuracy=None) for r in records]
    assert selected_round(no_val).round == 4  # without validation: the last round, not the max


def test_start_result_carries_the_metric_history() -> None:
    """FedDistill.start returns Flower's Result with the per-round history, like Flower's own
    strategies: server-side evaluation and the clients' reports, None values left out."""
    from flwr.app import ArrayRecord

    from strategies.result import history_result

    rows = [
        RoundRecord(
            round=r,
            student_accuracy=0.5 + r / 10,
            student_loss=1.0 / r,
            client_accuracy=None if r == 1 else 0.4,
            teacher_accuracy=0.9,
            bytes_up=100,
            bytes_down=10,
            cum_bytes=110 * r,
            valid_replies=2,
            rejected=0,
        )
        for r in (1, 2)
    ]
    result = history_result(ArrayRecord(), rows)
    assert sorted(result.evaluate_metrics_serverapp) == [1, 2]
    assert result.evaluate_metrics_serverapp[2]["student_accuracy"] == 0.7
    assert result.evaluate_metrics_serverapp[1]["teacher_accuracy"] == 0.9
    assert "client_accuracy" not in result.train_metrics_clientapp[1]  # None: left out
    assert result.train_metrics_clientapp[2]["client_accuracy"] == 0.4
    assert result.train_metrics_clientapp[2]["bytes_up"] == 100
