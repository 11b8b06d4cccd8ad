"""The FedAvg baseline, one flag away (``strategy=fedavg``): Flower's own ``FedAvg``.

Also the driver of every weight-sharing baseline (FedAvg, :mod:`strategies.feddf`).

Same partitions, same model (every client trains ``student-model``), same local training as
FedDistill; only what crosses the wire differs. A thin subclass counts the bytes of every
message each way so the two strategies' communication can be compared honestly.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedkd import protocol as P
from fedkd.config import FDConfig
from fedkd.training import evaluate
from strategies.fed_distill import RoundCallback, RoundRecord, TestSet


class CountingFedAvg(FedAvg):
    """Flower's FedAvg that records the serialized bytes of each round's messages."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.round_bytes: dict[int, list[int]] = {}  # round -> [up, down, replies]

    def annotate(self, record: RoundRecord) -> None:
        """Add what this strategy knows beyond bytes to a round's record (FedAvg: nothing)."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        down = sum(P.wire_nbytes(m.content) for m in messages)
        self.round_bytes[server_round] = [0, down, 0]
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        ok = [r for r in replies if not r.has_error()]
        self.round_bytes[server_round][0] = sum(P.wire_nbytes(r.content) for r in ok)
        self.round_bytes[server_round][2] = len(ok)
        return super().aggregate_train(server_round, replies)


def flower_kwargs(cfg: FDConfig) -> dict[str, Any]:
    """Flower FedAvg's sampling settings from the run's configuration."""
    return {
        "fraction_train": cfg.fraction_train,
        "fraction_evaluate": 0.0,  # the global model is evaluated centrally, as FD's student is
        "min_train_nodes": cfg.min_train_nodes,
        "min_available_nodes": cfg.min_train_nodes,
    }


def run_fedavg(
    grid: Grid,
    cfg: FDConfig,
    model: torch.nn.Module,
    test: TestSet,
    callbacks: list[RoundCallback],
    *,
    val: TestSet | None = None,
) -> ArrayRecord:
    """Run FedAvg for ``cfg.num_rounds`` rounds, reporting a :class:`RoundRecord` per round
    (test accuracy, and validation accuracy when ``val`` holds data)."""
    strategy = CountingFedAvg(**flower_kwargs(cfg))
    return run_weight_sharing(strategy, grid, cfg, model, test, callbacks, val=val)


def run_weight_sharing(
    strategy: CountingFedAvg,
    grid: Grid,
    cfg: FDConfig,
    model: torch.nn.Module,
    test: TestSet,
    callbacks: list[RoundCallback],
    *,
    val: TestSet | None = None,
) -> ArrayRecord:
    """Drive a weight-sharing strategy (FedAvg, FedDF) through Flower's own ``start`` loop,
    evaluating ``model`` (loaded with the round's global arrays) centrally each round."""
    random.seed(cfg.seed)  # Flower's node sampling uses the `random` module
    state: dict[str, Any] = {"cum": 0, "t": time.perf_counter()}

    def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        model.load_state_dict(arrays.to_torch_state_dict())
        result = evaluate(model, test.x, test.y, num_classes=test.num_classes)
        if server_round > 0:
            up, down, n = strategy.round_bytes.get(server_round, [0, 0, 0])
            state["cum"] += up + down
            now = time.perf_counter()
            record = RoundRecord(
                round=server_round,
                student_accuracy=result.accuracy,
                student_loss=result.loss,
                client_accuracy=None,
                teacher_accuracy=None,
                bytes_up=up,
                bytes_down=down,
                cum_bytes=int(state["cum"]),
                valid_replies=n,
                rejected=0,
                wall_seconds=now - state["t"],
                student_val_accuracy=(
                    evaluate(model, val.x, val.y, num_classes=val.num_classes).accuracy
                    if val is not None and len(val.y)
                    else None
                ),
            )
            strategy.annotate(record)
            state["t"] = now
            for callback in callbacks:
                callback(record)
        return MetricRecord({"accuracy": result.accuracy, "loss": result.loss})

    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=cfg.num_rounds,
        timeout=cfg.round_timeout,
        evaluate_fn=evaluate_fn,
    )
    return result.arrays
