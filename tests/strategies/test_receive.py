"""Replies received as they arrive (strategies/receive.py) against replies held together.

The server pulls, validates, folds and drops each reply as it arrives; these tests check that
this gives the very round that holding every reply gives (teacher, bytes, rejections), that a
bad reply among streamed ones is rejected alone, that the timeout ends the wait as Flower's
does, and that a mean-type rule's peak memory does not grow with the clients.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Message
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from fedkd.config import FDConfig
from fedkd.models import build_model
from simulations.local_grid import LocalGrid
from simulations.synthetic_grid import SyntheticGrid
from strategies import receive
from strategies.fed_distill import FedDistill, PublicSet, RoundRecord
from strategies.fed_distill import TestSet as EvalSet  # aliased: pytest would collect Test*

SHAPE = (1, 8, 8)
pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def _strategy(clients: int, rows: int, classes: int, stream: bool, **cfg: Any) -> FedDistill:
    config = FDConfig(
        **{
            "num_clients": clients,
            "min_train_nodes": clients,
            "client_models": "mlp",
            "student_model": "mlp",
            "aggregation": "mean",
            "server_epochs": 1,
            "co_distillation": False,
            "checkpoint": False,
            **cfg,
        }
    )
    gen = torch.Generator().manual_seed(0)
    public = PublicSet(torch.rand(rows, *SHAPE, generator=gen))
    test = EvalSet(torch.rand(16, *SHAPE, generator=gen), torch.arange(16) % classes, classes)
    torch.manual_seed(0)
    strategy = FedDistill(config, build_model("mlp", SHAPE, classes), public, test)
    strategy.stream_replies = stream
    return strategy


def _round(strategy: FedDistill, grid: SyntheticGrid, timeout: float = 60.0) -> RoundRecord:
    return strategy.run_round(grid, 1, timeout)


@pytest.mark.parametrize(
    ("rule", "changes"),
    [
        ("mean", {}),
        ("confidence", {}),
        ("median", {}),
        ("mean", {"dp_mechanism": "central", "dp_noise_multiplier": 1.0, "dp_clip": 1.0}),
    ],
)
def test_streamed_round_equals_the_held_round(
    rule: str, changes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # central DP draws its noise from OS entropy on purpose: seeded here so the rounds compare
    seeded = np.random.default_rng
    monkeypatch.setattr(np.random, "default_rng", lambda seed=None: seeded(seed or 0))
    bad = {"malformed": [1002], "failing": [1005]}
    records, teachers = [], []
    for stream in (False, True):
        strategy = _strategy(8, 50, 10, stream, aggregation=rule, **changes)
        grid = SyntheticGrid(8, 10, per_pull=3, **bad)  # type: ignore[arg-type]
        records.append(_round(strategy, grid))
        assert strategy.teacher is not None
        teachers.append(strategy.teacher)
    held, streamed = records
    np.testing.assert_array_equal(teachers[0][0], teachers[1][0])
    np.testing.assert_array_equal(teachers[0][1], teachers[1][1])
    for key in ("bytes_up", "bytes_down", "valid_replies", "rejected", "missing"):
        assert getattr(held, key) == getattr(streamed, key), key
    assert held.rejected_reasons == streamed.rejected_reasons
    assert held.rejected_nodes == streamed.rejected_nodes
    assert held.dp_epsilon == streamed.dp_epsilon
    assert held.student_accuracy == streamed.student_accuracy


def test_a_malformed_reply_among_streamed_ones_is_rejected_and_the_round_goes_on() -> None:
    strategy = _strategy(9, 40, 10, True)
    grid = SyntheticGrid(9, 10, per_pull=2, malformed=[1004])
    record = _round(strategy, grid)
    assert grid.pulls >= 5  # the replies did come in several pulls
    assert record.status == "ok"
    assert (record.valid_replies, record.rejected_reasons) == (8, {"non-finite": 1})
    assert record.rejected_nodes == [1004]
    assert strategy.teacher is not None and np.isfinite(strategy.teacher[0]).all()


def test_the_timeout_ends_the_wait_and_silent_nodes_are_missing() -> None:
    strategy = _strategy(6, 30, 10, True)
    grid = SyntheticGrid(6, 10, per_pull=2, silent=[1001, 1003])
    grid.pull_interval = 0.01
    record = _round(strategy, grid, timeout=0.3)
    assert (record.valid_replies, record.missing_nodes) == (4, [1001, 1003])
    assert record.status == "ok"


def test_arrivals_keep_flowers_timeout_semantics() -> None:
    def messages(grid: SyntheticGrid) -> list[Message]:
        strategy = _strategy(3, 10, 10, True)
        req = strategy.make_request(1, None)
        from fedkd import protocol as P

        return strategy.requests(P.request_content(req), P.TRAIN, list(grid.get_node_ids()))

    grid = SyntheticGrid(3, 10, per_pull=1)
    # timeout=0: Flower's loop runs no pull at all
    assert list(receive.arrivals(grid, messages(grid), 0.0)) == []
    # timeout=None: wait for every reply, one batch per pull
    grid = SyntheticGrid(3, 10, per_pull=1)
    batches = list(receive.arrivals(grid, messages(grid), None))
    assert [len(b) for b in batches] == [1, 1, 1]
    # send_and_receive over the same loop: every reply in one list
    grid = SyntheticGrid(3, 10, per_pull=2)
    assert len(list(grid.send_and_receive(messages(grid), timeout=5.0))) == 3


class _Overriding(LocalGrid):
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        return []


def test_the_adapter_was_checked_against_the_installed_flower() -> None:
    import flwr

    assert ".".join(flwr.__version__.split(".")[:2]) in receive.TESTED_FLWR


def test_mode_honours_a_grid_that_overrides_send_and_receive() -> None:
    from flwr.superlink.grid.http_grid import HttpGrid
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    for flower_grid in (InMemoryGrid, HttpGrid):  # Flower's own grids are polled
        assert receive.mode(flower_grid.__new__(flower_grid)) == "poll"
    assert receive.mode(SyntheticGrid(1, 2)) == "poll"
    assert receive.mode(LocalGrid(ClientApp(), 0)) == "iter"
    assert receive.mode(_Overriding(ClientApp(), 0)) == "held"


def _traced_round_mib(clients: int, stream: bool) -> float:
    strategy = _strategy(clients, 2000, 10, stream)
    grid = SyntheticGrid(clients, 10, per_pull=5)
    grid.soft_labels(2000, 0)
    tracemalloc.start()
    try:
        record = _round(strategy, grid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert record.valid_replies == clients
    return peak / 2**20


def test_a_streamable_rules_peak_does_not_grow_with_clients() -> None:
    reply_mib = 2000 * 10 * 4 / 2**20  # one encoded reply, codec none
    extra = 60 * reply_mib  # what 60 more held replies weigh: 4.6 MiB
    streamed = _traced_round_mib(80, True) - _traced_round_mib(20, True)
    held = _traced_round_mib(80, False) - _traced_round_mib(20, False)
    assert held > 0.75 * extra  # held replies do grow with clients (the test can fail)
    assert streamed < 0.25 * extra  # streamed ones do not


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "filtered_mean", "mean"])
def test_a_scratch_stack_gives_the_same_teacher(rule: str) -> None:
    from strategies.aggregation import AggregationContext, aggregate

    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=(7, 30)).astype(np.float32)
    ctx = AggregationContext.uniform(7, 5)
    reference = aggregate(rule, probs, ctx)
    scratch = probs.copy()
    teacher = aggregate(rule, scratch, AggregationContext.uniform(7, 5, scratch=True))
    np.testing.assert_array_equal(teacher, reference)
