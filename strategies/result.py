"""Flower's :class:`~flwr.serverapp.strategy.Result` for a federated-distillation run.

Flower's built-in ``Strategy.start`` returns the final arrays *and* the metric history per
round (``train_metrics_clientapp``, ``evaluate_metrics_serverapp``, …). ``FedDistill.start``
returns the same type, so code written against Flower's strategies reads an FD run the same way:
the student's arrays, the server-side evaluation per round (the student on the shared test and
validation sets, the teacher on public data) and what the clients reported per round (their
mean test accuracy, traffic, valid and rejected replies). Values Flower cannot hold (``None``:
FedAvg has no teacher; a skipped round has no client accuracy) are left out of that round's
record rather than invented.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp.strategy import Result

if TYPE_CHECKING:
    from strategies.fed_distill import RoundRecord

SERVER_KEYS = ("student_accuracy", "student_loss", "student_val_accuracy", "teacher_accuracy")
CLIENT_KEYS = ("client_accuracy", "valid_replies", "rejected", "missing", "bytes_up", "bytes_down")


def _metrics(row: Mapping[str, Any], keys: Iterable[str]) -> MetricRecord:
    return MetricRecord(
        {k: row[k] for k in keys if isinstance(row.get(k), int | float) and row[k] is not True}
    )


def history_result(arrays: ArrayRecord, history: Iterable[RoundRecord]) -> Result:
    """A :class:`Result` holding ``arrays`` and, per round, the server-side evaluation
    (``evaluate_metrics_serverapp``) and the clients' reports (``train_metrics_clientapp``)."""
    result = Result()
    result.arrays = arrays
    for record in history:
        row = record.as_dict()
        result.evaluate_metrics_serverapp[record.round] = _metrics(row, SERVER_KEYS)
        result.train_metrics_clientapp[record.round] = _metrics(row, CLIENT_KEYS)
    return result
