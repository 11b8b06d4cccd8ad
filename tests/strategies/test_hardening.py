"""Issue 13: what one reply, one dead node or one missing node must never do to a run.

Each test reproduces a defect found by an independent fuzz (it failed before the fix): a huge
float ``num-examples`` that crashed the ServerApp, a dead SuperNode counted twice (and node 1
named), replies not bound to their round, out-of-range ``test-accuracy`` in the averages, and a
wait for nodes that never ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest
from flwr.app import (
    DEFAULT_TTL,
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from fedkd import protocol as P
from fedkd.client_app import make_client_app
from fedkd.compression import encode_probs
from fedkd.config import FDConfig, to_run_config
from simulations.local_grid import RUN_ID, SERVER_NODE_ID, LocalGrid
from strategies import fed_distill
from strategies.fed_distill import TOO_FEW_NODES, NotEnoughNodes, RoundRecord
from strategies.server_app import run_server
from strategies.validation import Expected, Rejection, ValidReply, validate_reply

ROWS, CLASSES = 12, 10


pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


def _cfg(**changes: Any) -> FDConfig:
    base = dict(
        num_rounds=2,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        dataset="digits",
        seed=0,
    )
    return FDConfig(**{**base, **changes})


def _content(num_examples: object = 80, codec: str = "none", **echo: Any) -> RecordDict:
    probs = np.random.default_rng(0).dirichlet(np.ones(CLASSES), size=ROWS).astype(np.float32)
    metrics = {P.NUM_EXAMPLES: num_examples, P.CLASS_COUNTS: [8] * CLASSES}
    reply_echo = P.Echo(**echo) if echo else None
    payload = encode_probs(probs, codec)  # type: ignore[arg-type]
    return P.reply_content(payload, metrics, model_name="mlp", codec=codec, echo=reply_echo)  # type: ignore[arg-type]


def _reply(node: int, content: RecordDict) -> Message:
    metadata = Metadata(
        run_id=1,
        message_id=f"reply-{node}-{id(content)}",
        src_node_id=node,
        dst_node_id=1,
        reply_to_message_id=f"req-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=P.TRAIN,
    )
    return Message(metadata=metadata, content=content)


def _strategy(aggregation: str = "mean") -> fed_distill.FedDistill:
    import torch

    from fedkd.models import build_model

    cfg = FDConfig(client_models="mlp", student_model="mlp", aggregation=aggregation)
    public = fed_distill.PublicSet(torch.arange(ROWS * 64.0).reshape(ROWS, 1, 8, 8) / 1000)
    test = fed_distill.TestSet(torch.rand(4, 1, 8, 8), torch.arange(4), CLASSES)
    return fed_distill.FedDistill(cfg, build_model("mlp", (1, 8, 8), CLASSES), public, test)


def _expected(**kwargs: Any) -> Expected:
    return Expected(num_samples=ROWS, num_classes=CLASSES, codec="none", **kwargs)


# ----------------------------------------------------------------------------- defect 1
@pytest.mark.parametrize("value", [1e20, 1e300, 2.0**64, 2.5, -1.0, float("inf"), 10**13])
def test_num_examples_must_be_a_sane_whole_number(value: object) -> None:
    result = validate_reply(4, _content(num_examples=value), _expected())
    assert isinstance(result, Rejection) and result.reason == "bad-metadata", result


@pytest.mark.parametrize("value", [0, 80, 80.0, 10**12])
def test_whole_num_examples_pass(value: object) -> None:
    result = validate_reply(4, _content(num_examples=value), _expected())
    assert isinstance(result, ValidReply) and result.num_examples == int(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("rule", ["mean", "weighted", "class_weighted", "era"])
def test_a_huge_float_count_is_rejected_and_never_reaches_the_fold(rule: str) -> None:
    strategy = _strategy(rule)
    fold = strategy.streaming_aggregator(ROWS)
    assert fold is not None
    replies = [_reply(5, _content()), _reply(6, _content(num_examples=1e20))]
    valid, rejected = strategy.validate(replies, ROWS, fold=fold)
    assert [v.node_id for v in valid] == [5]
    assert [(r.node_id, r.reason) for r in rejected] == [(6, "bad-metadata")]
    assert fold.result().shape == (ROWS, CLASSES)


def test_a_reply_that_fails_to_fold_is_a_rejection_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    strategy = _strategy()
    fold = strategy.streaming_aggregator(ROWS)
    assert fold is not None
    real_add = type(fold).add
    calls = []

    def add(self: Any, probs: np.ndarray, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise TypeError("cannot fold this one")
        real_add(self, probs, **kwargs)

    monkeypatch.setattr(type(fold), "add", add)
    replies = [_reply(n, _content()) for n in (7, 8, 9)]
    valid, rejected = strategy.validate(replies, ROWS, fold=fold)
    assert [v.node_id for v in valid] == [7, 9]
    assert [(r.node_id, r.reason) for r in rejected] == [(8, "fold-failed")]
    assert "cannot fold this one" in rejected[0].detail


# ----------------------------------------------------------------------------- defect 4
def test_upload_size_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    content = _content()
    junk = np.ones((ROWS, 64 * 1024), dtype=np.float32)  # 3 MiB in a reply to a 12×10 query
    content[P.SOFT_LABELS] = ArrayRecord({"probs": Array(junk)})

    def no_decoding(self: Array) -> np.ndarray:
        raise AssertionError("decoded an oversized upload")

    monkeypatch.setattr(Array, "numpy", no_decoding)
    valid, rejected = _strategy().validate([_reply(3, content)], ROWS)
    assert valid == [] and [r.reason for r in rejected] == ["oversized"]
    assert "encoded bytes" in rejected[0].detail


# ----------------------------------------------------------------------------- defect 5
def _echo(**changes: Any) -> dict[str, Any]:
    strategy = _strategy()
    echo = {"server_round": 3, "message_type": P.TRAIN, "public_hash": strategy.public_hash}
    return {**echo, **changes}


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"server_round": 2}, "wrong-round"),
        ({"message_type": P.QUERY}, "wrong-type"),
        ({"public_hash": "0" * 16}, "wrong-public-set"),
    ],
)
def test_replies_are_bound_to_round_type_and_public_set(changes: dict, reason: str) -> None:
    strategy = _strategy()
    strategy._expected_echo = P.Echo(**_echo())
    good, bad = _content(**_echo()), _content(**_echo(**changes))
    valid, rejected = strategy.validate([_reply(1, good), _reply(2, bad)], ROWS)
    assert [v.node_id for v in valid] == [1]
    assert [(r.node_id, r.reason) for r in rejected] == [(2, reason)]


def test_a_reply_without_echo_is_rejected_once_the_round_expects_one() -> None:
    strategy = _strategy()
    strategy._expected_echo = P.Echo(**_echo())
    valid, rejected = strategy.validate([_reply(1, _content())], ROWS)
    assert valid == [] and rejected[0].reason == "wrong-round"


@pytest.mark.parametrize("rule", ["mean", "median"])
def test_a_second_reply_from_a_node_is_rejected_as_duplicate(rule: str) -> None:
    strategy = _strategy(rule)
    fold = strategy.streaming_aggregator(ROWS)
    replies = [_reply(1, _content()), _reply(2, _content()), _reply(1, _content())]
    valid, rejected = strategy.validate(replies, ROWS, fold=fold)
    assert [v.node_id for v in valid] == [1, 2]
    assert [(r.node_id, r.reason) for r in rejected] == [(1, "duplicate")]


class DuplicatingGrid(LocalGrid):
    """Delivers every reply twice (a replayed reply): the teacher must count it once."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = list(super().send_and_receive(messages, timeout=timeout))
        return replies + [_copy(r) for r in replies]


def _copy(reply: Message) -> Message:
    import copy

    return Message(metadata=copy.deepcopy(reply.metadata), content=reply.content)  # type: ignore[call-overload]


def _run_on(grid: LocalGrid, cfg: FDConfig) -> list[RoundRecord]:
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SERVER_NODE_ID
    records: list[RoundRecord] = []
    run_server(grid, cfg, [records.append])
    return records


def _grid(cls: type[LocalGrid], cfg: FDConfig) -> LocalGrid:
    return cls(make_client_app(to_run_config(cfg)), cfg.num_clients, run_config=to_run_config(cfg))


def test_replayed_replies_count_once_in_the_teacher() -> None:
    cfg = _cfg()
    once = _run_on(_grid(LocalGrid, cfg), cfg)
    twice = _run_on(_grid(DuplicatingGrid, cfg), cfg)
    for a, b in zip(once, twice, strict=True):
        assert (b.valid_replies, b.rejected_reasons) == (3, {"duplicate": 3})
        assert b.teacher_accuracy == a.teacher_accuracy
        assert b.student_accuracy == pytest.approx(a.student_accuracy, abs=1e-9)


# ----------------------------------------------------------------------------- defect 3
class DeadNodeGrid(LocalGrid):
    """The last node is dead: the SuperLink (node 1) answers for it with "Node Unavailable"."""

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        messages = list(messages)
        dead = max(m.metadata.dst_node_id for m in messages)
        alive = [m for m in messages if m.metadata.dst_node_id != dead]
        replies = list(super().send_and_receive(alive, timeout=timeout))
        for m in messages:
            if m.metadata.dst_node_id == dead:
                m.metadata.__dict__["_message_id"] = f"to-dead-{id(m)}"
                replies.append(_superlink_error(m))
        return replies


def _superlink_error(request: Message) -> Message:
    metadata = Metadata(
        run_id=RUN_ID,
        message_id="",
        src_node_id=SERVER_NODE_ID,  # what Flower's SuperLink puts on its own error replies
        dst_node_id=SERVER_NODE_ID,
        reply_to_message_id=request.metadata.message_id,
        group_id=request.metadata.group_id,
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=request.metadata.message_type,
    )
    error = Error(code=3, reason="Node Unavailable")
    return Message(metadata=metadata, error=error)  # type: ignore[call-overload]


def test_a_dead_node_is_named_once_and_node_1_never() -> None:
    cfg = _cfg()
    records = _run_on(_grid(DeadNodeGrid, cfg), cfg)
    dead = 1000 + cfg.num_clients - 1  # LocalGrid numbers nodes from 1000
    for r in records:
        assert (r.valid_replies, r.rejected, r.missing) == (2, 1, 0)
        assert r.rejected_nodes == [dead] and r.missing_nodes == []
        assert r.rejected_reasons == {"client-error": 1}


# ----------------------------------------------------------------------------- defect 6
@pytest.mark.parametrize("bad", [1e300, -5.0, float("nan"), float("inf"), 1.5])
def test_out_of_range_test_accuracy_never_reaches_client_accuracy(bad: float) -> None:
    metrics = [{P.TEST_ACCURACY: 0.5}, {P.TEST_ACCURACY: bad}, {P.TEST_ACCURACY: 0.7}, {}]
    assert fed_distill._mean_metric(metrics, P.TEST_ACCURACY) == pytest.approx(0.6)


def test_test_accuracy_from_a_lying_client_is_ignored_in_a_run() -> None:
    cfg = _cfg(num_rounds=1)

    def lie(reply: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) == 0:
            metrics = dict(reply.content.metric_records[P.METRICS].items())
            metrics[P.TEST_ACCURACY] = 1e300
            reply.content[P.METRICS] = MetricRecord(metrics)
        return reply

    from flwr.clientapp import ClientApp

    inner = make_client_app(to_run_config(cfg))
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return lie(inner(msg, context), context)

    from simulations.local_grid import run_fd_local

    (record,) = run_fd_local(cfg, app)
    assert record.client_accuracy is not None and 0.0 <= record.client_accuracy <= 1.0
    assert record.valid_replies == 3


# ----------------------------------------------------------------------------- defect 2
class ShrunkGrid(LocalGrid):
    """Only ``connected`` of its nodes are connected."""

    connected = 2

    def get_node_ids(self) -> Iterable[int]:
        return list(self._node_ids)[: self.connected]


def test_too_few_nodes_skip_the_round_then_end_the_run_non_zero() -> None:
    cfg = _cfg(num_rounds=5, round_timeout=0.2)  # min-train-nodes=3, only 2 connected
    records: list[RoundRecord] = []
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = RUN_ID
    TaskIdentity.node_id = SERVER_NODE_ID
    with pytest.raises(NotEnoughNodes, match="too few nodes"):
        run_server(_grid(ShrunkGrid, cfg), cfg, [records.append])
    (record,) = records  # recorded (logged and counted) before the run ended
    assert record.status.startswith(TOO_FEW_NODES)
    assert (record.valid_replies, record.missing, record.teacher_accuracy) == (0, 0, None)


def test_a_run_with_enough_nodes_does_not_wait() -> None:
    cfg = _cfg(num_rounds=1, min_train_nodes=2, round_timeout=0.2)
    (record,) = _run_on(_grid(ShrunkGrid, cfg), cfg)
    assert record.status == "ok" and record.valid_replies == 2


def test_decoding_int8_rejects_codes_that_are_not_uint8() -> None:
    from fedkd.compression import decode_probs

    codes = np.full((ROWS, CLASSES), 1e38, dtype=np.float32)
    with pytest.raises(ValueError, match="uint8"):
        decode_probs({"codes": codes}, "int8", CLASSES)
    content = _content(codec="int8")
    content[P.SOFT_LABELS] = ArrayRecord({"codes": Array(codes)})
    result = validate_reply(2, content, Expected(ROWS, CLASSES, "int8"))
    assert isinstance(result, Rejection) and result.reason == "dtype"
    wide = np.full((ROWS, CLASSES), 300, dtype=np.int64)  # out of the code range
    content[P.SOFT_LABELS] = ArrayRecord({"codes": Array(wide)})
    result = validate_reply(2, content, Expected(ROWS, CLASSES, "int8"))
    assert isinstance(result, Rejection) and result.reason == "dtype"


def test_config_cross_checks_config_record_type() -> None:
    # The echo lives in the meta ConfigRecord, next to the codec (one protocol module).
    content = _content(**_echo())
    meta = content.config_records[P.META]
    assert isinstance(meta, ConfigRecord)
    assert (meta[P.ECHO_ROUND], meta[P.ECHO_TYPE]) == (3, P.TRAIN)


def test_flower_api_pair_checks_the_echo_too() -> None:
    from flwr.app import ArrayRecord as Arrays

    from fedkd.client import load_splits_for
    from strategies.server_app import build_student

    cfg = _cfg(num_rounds=1)
    splits = load_splits_for(cfg)
    strategy = fed_distill.FedDistill(
        cfg,
        build_student(cfg, splits.input_shape, splits.num_classes),
        fed_distill.PublicSet(splits.public_x),
        fed_distill.TestSet(splits.test_x, splits.test_y, splits.num_classes),
    )
    grid = _grid(LocalGrid, cfg)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SERVER_NODE_ID
    replies = list(
        grid.send_and_receive(strategy.configure_train(1, Arrays(), ConfigRecord(), grid))
    )
    _, metrics = strategy.aggregate_train(1, replies)
    assert metrics is not None and metrics["valid-replies"] == 3
    # Round 1's replies offered again as round 2's: every one is stale.
    list(strategy.configure_train(2, Arrays(), ConfigRecord(), grid))
    _, metrics = strategy.aggregate_train(2, replies)
    assert metrics is not None and (metrics["valid-replies"], metrics["rejected"]) == (0, 3)
