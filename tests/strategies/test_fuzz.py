"""Property-based fuzz of the server's round (issue 13): random mutations of valid replies.

Each example builds valid replies (every codec, every kind of rule), mutates some of them in ways
a faulty or hostile client could, and runs a real ``FedDistill.run_round`` on them. Properties:
no exception escapes, the round completes (``ok``, or ``skipped`` when nothing valid is left),
every mutated reply is rejected, and the teacher is exactly the one a second server builds from
the unmutated replies alone. Bounded: a fixed number of examples, tiny tensors.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedkd import protocol as P
from fedkd.compression import encode_probs
from fedkd.config import FDConfig
from fedkd.models import build_model
from simulations.local_grid import RUN_ID, SERVER_NODE_ID, LocalGrid
from strategies.fed_distill import FedDistill, PublicSet
from strategies.fed_distill import TestSet as EvalSet  # aliased: pytest would collect Test*

ROWS, CLASSES = 12, 10
RULES = ["mean", "weighted", "class_weighted", "era", "median", "trimmed_mean", "filtered_mean"]
CODECS = ["none", "fp16", "int8", "topk"]


def _metrics(content: RecordDict, **changes: Any) -> None:
    metrics = dict(content.metric_records[P.METRICS].items())
    metrics.update(changes)
    content[P.METRICS] = MetricRecord(metrics)


def _meta(content: RecordDict, **changes: Any) -> None:
    meta = dict(content.config_records[P.META].items())
    meta.update(changes)
    content[P.META] = ConfigRecord(meta)


def _arrays(content: RecordDict, change: Callable[[str, np.ndarray], np.ndarray]) -> None:
    record = content.array_records[P.SOFT_LABELS]
    content[P.SOFT_LABELS] = ArrayRecord(
        {k: Array(np.ascontiguousarray(change(k, a.numpy()))) for k, a in record.items()}
    )


def _nan(key: str, a: np.ndarray) -> np.ndarray:
    return np.full(a.shape, np.nan, dtype=np.float32)


def _junk(content: RecordDict) -> None:
    record = content.array_records[P.SOFT_LABELS]
    arrays = {k: a for k, a in record.items()}
    arrays["junk"] = Array(np.ones((ROWS, 4096), dtype=np.float32))
    content[P.SOFT_LABELS] = ArrayRecord(arrays)


# Every mutation makes a reply invalid whatever the codec (each maps to a rejection reason).
MUTATIONS: dict[str, Callable[[RecordDict], None]] = {
    "nan": lambda c: _arrays(c, _nan),
    "one-row-short": lambda c: _arrays(c, lambda k, a: a[:-1]),
    "complex": lambda c: _arrays(c, lambda k, a: a.astype(np.complex64)),
    "huge-count": lambda c: _metrics(c, **{P.NUM_EXAMPLES: 1e20}),
    "inf-count": lambda c: _metrics(c, **{P.NUM_EXAMPLES: float("inf")}),
    "fractional-count": lambda c: _metrics(c, **{P.NUM_EXAMPLES: 2.5}),
    "negative-count": lambda c: _metrics(c, **{P.NUM_EXAMPLES: -3}),
    "short-class-counts": lambda c: _metrics(c, **{P.CLASS_COUNTS: [1] * (CLASSES - 1)}),
    "stale-round": lambda c: _meta(c, **{P.ECHO_ROUND: 0}),
    "wrong-type": lambda c: _meta(c, **{P.ECHO_TYPE: P.QUERY}),
    "other-public-set": lambda c: _meta(c, **{P.ECHO_PUBLIC_HASH: "f" * 16}),
    "no-echo": lambda c: _meta(c, **{P.ECHO_ROUND: "1"}),
    "other-codec": lambda c: _meta(c, **{P.CODEC: "zip"}),
    "no-soft-labels": lambda c: c.__delitem__(P.SOFT_LABELS),
    "no-metrics": lambda c: c.__delitem__(P.METRICS),
    "oversized": _junk,
}
SPECIAL = ["error", "duplicate", "lying-accuracy"]  # handled by the grid, not the content


class FuzzGrid(LocalGrid):
    """Answers every request itself: valid replies, with ``plan[node]`` applied."""

    def __init__(self, nodes: list[int], plan: dict[int, str | None], seed: int) -> None:
        super().__init__(ClientApp(), 0)
        self.nodes, self.plan, self.seed = nodes, plan, seed

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        replies = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex
            node = int(msg.metadata.dst_node_id)
            mutation = self.plan.get(node)
            if mutation == "error":
                replies.append(Message(Error(code=0, reason="crashed"), reply_to=msg))
                continue
            content = self._valid(msg, node)
            if mutation == "lying-accuracy":
                _metrics(content, **{P.TEST_ACCURACY: 1e300})
            elif mutation in MUTATIONS:
                MUTATIONS[mutation](content)
            replies.append(Message(content, reply_to=msg))
            if mutation == "duplicate":
                replies.append(Message(self._valid(msg, node), reply_to=msg))
        return replies

    def _valid(self, msg: Message, node: int) -> RecordDict:
        req = P.parse_request(msg.content)
        rng = np.random.default_rng([self.seed, node])
        probs = rng.dirichlet(np.ones(CLASSES) * 0.5, size=ROWS).astype(np.float32)
        metrics = {
            P.NUM_EXAMPLES: int(rng.integers(1, 500)),
            P.CLASS_COUNTS: [int(v) for v in rng.integers(0, 50, size=CLASSES)],
            P.TEST_ACCURACY: float(rng.random()),
        }
        echo = P.Echo(req.server_round, msg.metadata.message_type, req.public_hash)
        payload = encode_probs(probs, req.codec, topk=req.topk)  # type: ignore[arg-type]
        return P.reply_content(payload, metrics, model_name="mlp", codec=req.codec, echo=echo)


def _server(rule: str, codec: str, teachers: list[np.ndarray]) -> FedDistill:
    cfg = FDConfig(
        client_models="mlp",
        student_model="mlp",
        aggregation=rule,
        codec=codec,
        min_train_nodes=1,
        num_clients=10,
    )
    public = PublicSet(torch.arange(ROWS * 64.0).reshape(ROWS, 1, 8, 8) / 1000)
    test = EvalSet(torch.rand(4, 1, 8, 8), torch.arange(4), CLASSES)
    strategy = FedDistill(cfg, build_model("mlp", (1, 8, 8), CLASSES), public, test)

    def capture(teacher: np.ndarray, indices: Any) -> float:  # no training: only the teacher
        teachers.append(teacher)
        return 0.0

    strategy.distil_student = capture  # type: ignore[method-assign]
    return strategy


pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


@pytest.fixture(autouse=True)
def _task_identity() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, RUN_ID, SERVER_NODE_ID


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure reproduces
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rule=st.sampled_from([*RULES, "expguard"]),
    codec=st.sampled_from(CODECS),
    plan=st.lists(st.sampled_from([None, *MUTATIONS, *SPECIAL]), min_size=2, max_size=6),
    seed=st.integers(0, 2**16),
    server_round=st.integers(1, 5),
)
def test_mutated_replies_never_escape_and_never_reach_the_teacher(
    rule: str, codec: str, plan: list[str | None], seed: int, server_round: int
) -> None:
    nodes = [5000 + i for i in range(len(plan))]
    by_node = dict(zip(nodes, plan, strict=True))
    fuzzed: list[np.ndarray] = []
    record = _server(rule, codec, fuzzed).run_round(
        FuzzGrid(nodes, by_node, seed), server_round, timeout=5.0
    )
    kept = [n for n in nodes if by_node[n] not in (*MUTATIONS, "error")]
    clean: list[np.ndarray] = []
    if kept:
        reference = _server(rule, codec, clean).run_round(
            FuzzGrid(kept, {}, seed), server_round, timeout=5.0
        )
        assert record.status == reference.status == "ok"
        np.testing.assert_array_equal(fuzzed[0], clean[0])
    else:
        assert record.status.startswith("skipped") and fuzzed == []
    bad = [n for n in nodes if by_node[n] in (*MUTATIONS, "error")]
    duplicates = [n for n in nodes if by_node[n] == "duplicate"]
    assert record.valid_replies == len(kept)
    assert sorted(record.rejected_nodes) == sorted(bad + duplicates)
    assert record.missing == 0
    assert record.client_accuracy is None or 0.0 <= record.client_accuracy <= 1.0
