"""Federated continual learning through the real fedkd ServerApp/ClientApp (in-process grid):
the same numbers as the in-process engine, bad replies dropped with a reason, node state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message, MetricRecord
from flwr.clientapp import ClientApp

from fedkd import protocol as P
from fedkd.client_app import make_client_app
from fedkd.client_fcl import STATE_PREFIX
from fedkd.continual import SequenceConfig
from fedkd.training import TrainConfig
from simulations.local_grid import run_local
from strategies.fcl import FCLConfig, VariantSpec, in_process, run_variant
from strategies.fcl_app import make_fcl_server_app

CFG = FCLConfig(
    sequence=SequenceConfig(num_tasks=3, classes_per_task=2, max_train_per_task=120),
    variants=(
        VariantSpec("fedavg_lwf", "fedavg", "lwf"),
        VariantSpec("fd_lwf", "fd", "lwf", server_lam=1.0),
    ),
    seeds=(0,),
    num_clients=3,
    rounds_per_task=2,
    local=TrainConfig(epochs=1, batch_size=16),
    server=TrainConfig(epochs=2),
    min_rows=5,
    schedule_shift=1,
)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _flower(cfg: FCLConfig, client_app: ClientApp | None = None) -> tuple[dict, Any]:
    runs: dict[tuple[str, int], dict] = {}

    def record(label: str, seed: int, run: dict) -> None:
        runs[label, seed] = run

    grid = run_local(
        make_fcl_server_app(cfg, record), client_app or make_client_app({}), cfg.num_clients
    )
    return runs, grid


def test_flower_apps_give_the_in_process_numbers_on_shifted_schedules() -> None:
    runs, _ = _flower(CFG)
    for variant in CFG.variants:
        tasks, federation = in_process(variant, CFG, 0)
        expected = run_variant(variant, tasks, CFG, 0, federation)
        got = runs[variant.label, 0]
        for key in ("student", "clients", "bytes_per_task", "orders", "learned_at"):
            assert got[key] == expected[key], (variant.label, key)
        assert got["rejected_replies"] == 0
    assert runs["fd_lwf", 0]["orders"] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert runs["fd_lwf", 0]["learned_at"] == [0, 0, 0]  # every task is somebody's first


def _corrupting_app(corrupt: Callable[[Message], None]) -> ClientApp:
    """The fedkd ClientApp whose client 0 corrupts every FCL training reply."""
    inner = make_client_app({})
    app = ClientApp()

    @app.train("fcl")
    def train(msg: Message, context: Context) -> Message:
        reply = inner(msg, context)
        if int(context.node_config["partition-id"]) == 0:
            corrupt(reply)
        return reply

    @app.evaluate("fcl")
    def evaluate(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    return app


def _nan_probs(reply: Message) -> None:
    record = reply.content.array_records[P.FCL_PROBS]
    key = next(iter(record.keys()))
    p = record[key].numpy().copy()
    p[0, 0] = np.nan
    record[key] = Array(p)


def _other_client(reply: Message) -> None:
    metrics = dict(reply.content.metric_records[P.METRICS].items())
    metrics[P.PARTITION_ID] = 1  # claims to be client 1, who also replies
    reply.content[P.METRICS] = MetricRecord(metrics)


def _bad_counts(reply: Message) -> None:
    metrics = dict(reply.content.metric_records[P.METRICS].items())
    key = next(k for k in metrics if k.startswith("class-counts-"))
    metrics[key] = [10**6] * len(metrics[key])  # type: ignore[arg-type]
    reply.content[P.METRICS] = MetricRecord(metrics)


def _garbage_bytes(reply: Message) -> None:
    record = reply.content.array_records[P.FCL_PROBS]
    key = next(iter(record.keys()))
    array = record[key]
    record[key] = Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=b"junk")


def _shrunk_weights(reply: Message) -> None:
    weights = reply.content.array_records[P.ARRAYS].to_torch_state_dict()
    name = next(iter(weights))
    weights[name] = weights[name][:1]
    reply.content[P.ARRAYS] = ArrayRecord(weights)


@pytest.mark.parametrize(
    ("variant", "corrupt", "reason"),
    [
        ("fd_lwf", _nan_probs, "finite"),
        ("fd_lwf", _other_client, "second reply from client 1"),
        ("fd_lwf", _bad_counts, "counts"),
        ("fd_lwf", _garbage_bytes, "unreadable"),
        ("fedavg_lwf", _shrunk_weights, "does not match"),
    ],
)
def test_a_bad_reply_is_dropped_with_its_reason_and_the_stage_goes_on(
    variant: str, corrupt: Callable[[Message], None], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = FCLConfig(
        **{**CFG.__dict__, "variants": tuple(v for v in CFG.variants if v.label == variant)}
    )
    with caplog.at_level(logging.WARNING, logger="strategies.fcl_app"):
        runs, _ = _flower(cfg, _corrupting_app(corrupt))
    run = runs[variant, 0]
    stages = cfg.sequence.num_tasks
    per_stage = 1 if variant == "fd_lwf" else cfg.rounds_per_task
    assert run["rejected_replies"] == stages * per_stage
    assert reason in caplog.text
    assert np.isfinite(run["student"]).all() and len(run["student"]) == stages
    # the others' answers still moved the global model at every stage
    rows = [tuple(r) for r in run["student"]]
    assert len(set(rows)) == stages


def test_each_node_keeps_one_runs_state_in_its_context() -> None:
    cfg = FCLConfig(**{**CFG.__dict__, "seeds": (0, 1), "variants": CFG.variants[1:]})
    runs, grid = _flower(cfg)
    assert set(runs) == {("fd_lwf", 0), ("fd_lwf", 1)}
    assert runs["fd_lwf", 0]["student"] != runs["fd_lwf", 1]["student"]
    for context in grid.contexts.values():
        keys = [k for k in context.state.config_records if k.startswith(STATE_PREFIX)]
        assert len(keys) == 1  # the second seed's run replaced the first's


def test_a_client_whose_scores_are_rejected_is_left_out_of_summary_and_plots(tmp_path) -> None:
    """Client 0's evaluate replies are unusable: the run still finishes, its matrix has no
    rows, and the summary and plots cover the clients that reported."""
    from simulations.fcl import _summary, summary_table, write_plots
    from strategies.fcl import run_scores

    inner = make_client_app({})
    app = ClientApp()

    @app.train("fcl")
    def train(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    @app.evaluate("fcl")
    def evaluate(msg: Message, context: Context) -> Message:
        reply = inner(msg, context)
        if int(context.node_config["partition-id"]) == 0:
            metrics = dict(reply.content.metric_records[P.METRICS].items())
            metrics[P.FCL_ACCURACY] = [2.0] * 3
            reply.content[P.METRICS] = MetricRecord(metrics)
        return reply

    cfg = FCLConfig(**{**CFG.__dict__, "variants": CFG.variants[1:]})
    runs, _ = _flower(cfg, app)
    run = runs["fd_lwf", 0]
    assert run["clients"][0] == [None, None, None] and run["rejected_replies"] == 3
    run["student_scores"], run["client_scores"] = run_scores(run)
    assert run["client_scores"][0] is None and run["client_scores"][1] is not None
    results = {
        "variants": ["fd_lwf"],
        "seeds": [0],
        "scenario": "task_il",
        "num_tasks": 3,
        "runs": {"fd_lwf": [run]},
        "summary": {"fd_lwf": _summary([run])},
    }
    assert "| fd_lwf |" in summary_table(results)
    assert {p.name for p in write_plots(results, tmp_path)} == {
        "heatmap_fd_lwf_student.png",
        "heatmap_fd_lwf_clients.png",
        "forgetting_across_clients.png",
    }
