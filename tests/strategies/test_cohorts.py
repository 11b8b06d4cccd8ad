"""Cohorts (``clients-per-message`` K > 1): same science as one client per message.

Several virtual clients ride one Flower message; the server splits each reply into one reply
per virtual client before validating anything. With the same seeds the runs must agree with
K = 1 exactly (same sampled clients, same per-client seeds, same reply order, so the same
floating-point sums), and one bad member of a cohort reply is rejected alone.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedkd import protocol as P
from fedkd.client_app import SAVES_KEY, STATE_KEY, make_client_app
from fedkd.config import FDConfig, to_run_config
from simulations.local_grid import run_fd_local, run_local
from strategies.fed_distill import RoundRecord
from strategies.server_app import make_server_app
from tests.helpers import tiny_federation

# Six tiny synthetic clients, half sampled per round, two rounds (co-distillation: round 2
# starts from each client's saved state, so a state mixed up between members shows).
BASE = tiny_federation()
IDS = ("missing_nodes", "rejected_nodes")  # node ids with K = 1, virtual client ids with K > 1


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _numbers(records: list[RoundRecord]) -> list[dict[str, Any]]:
    """Everything a round recorded except its timing and the ids clients go by."""
    return [
        {k: v for k, v in r.as_dict().items() if k not in ("wall_seconds", *IDS)}
        | {k: len(getattr(r, k)) for k in IDS}
        for r in records
    ]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"aggregation": "selective_class", "fault_crash_train": 0.3},  # support + member errors
        {"separate_query": True, "co_distillation": False},  # a query phase after training
    ],
    ids=["mean", "selective-with-crashes", "separate-query"],
)
def test_cohorts_give_the_numbers_of_one_client_per_message(
    changes: dict[str, Any], tmp_path: Path
) -> None:
    one = dataclasses.replace(BASE, **changes)
    cohort = dataclasses.replace(
        one, clients_per_message=3, client_state="disk", client_state_dir=str(tmp_path)
    )
    expected = _numbers(run_fd_local(one))
    records: list[RoundRecord] = []
    grid = run_local(
        make_server_app(to_run_config(cohort), [records.append]),
        make_client_app(to_run_config(cohort)),
        cohort.num_nodes,
    )
    assert _numbers(records) == expected  # exactly: same clients, seeds and summation order
    assert all(r.status == "ok" for r in records)
    # it really ran as cohorts: 2 nodes, state kept per virtual client (a token per slot
    # in the node's context, files per virtual client on disk: the one named, the one before)
    assert len(grid.contexts) == 2
    keys = {k for c in grid.contexts.values() for k in c.state.config_records} - {SAVES_KEY}
    assert keys and keys <= {f"{STATE_KEY}.{s}" for s in range(3)} and len(keys) > 1
    files = Counter(f.name.split(".")[0] for f in tmp_path.rglob("node-*.pt"))
    assert len(files) >= 3 and max(files.values()) == 2


def _corrupting(cfg: FDConfig, slot: int) -> ClientApp:
    """The real ClientApp, except that member ``slot`` of every cohort reply sends NaNs."""
    inner = make_client_app(to_run_config(cfg))
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        reply = inner(msg, context)
        key = P.member_key(P.SOFT_LABELS, slot)
        if key in reply.content.array_records:
            probs = reply.content.array_records[key]["probs"].numpy()
            reply.content[key] = ArrayRecord({"probs": Array(np.full_like(probs, np.nan))})
        return reply

    return app


def test_a_malformed_member_is_rejected_alone() -> None:
    cfg = dataclasses.replace(BASE, clients_per_message=3, fraction_train=1.0, num_rounds=1)
    (record,) = run_fd_local(cfg, _corrupting(cfg, slot=1))
    assert record.status == "ok"
    assert (record.valid_replies, record.rejected) == (4, 2)  # slot 1 of each of two nodes
    assert record.rejected_reasons == {"non-finite": 2}
    assert sorted(n % 3 for n in record.rejected_nodes) == [1, 1]  # client id = node·K + slot
    # bytes count per client as with one client per message (a rejected upload still crossed)
    honest = run_fd_local(dataclasses.replace(cfg, clients_per_message=1))[0]
    assert (record.bytes_down, record.bytes_up) == (honest.bytes_down, honest.bytes_up)


def test_split_reply_keeps_each_members_records_and_errors() -> None:
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    one = RecordDict({P.METRICS: MetricRecord({"x": 1}), P.META: ConfigRecord({"m": "a"})})
    content = P.cohort_reply_content({0: one, 2: (2, "boom")})
    assert sorted(content) == ["error@2", "meta@0", "metrics@0"]
    parts = P.split_cohort_reply(content)
    assert parts[2] == (2, "boom")
    assert list(parts[0]) == [P.METRICS, P.META]  # same keys, same order as a one-client reply
    assert P.cohort_slots(P.cohort_request(RecordDict(), [0, 2])) == [0, 2]
    assert P.cohort_slots(RecordDict()) is None


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"clients_per_message": 0}, "must be >= 1"),
        ({"clients_per_message": 4}, "does not divide num-clients=6"),
        ({"clients_per_message": 2, "strategy": "fedavg"}, "needs strategy=fd"),
        ({"clients_per_message": "3"}, "expected int"),
    ],
)
def test_a_bad_clients_per_message_fails_naming_the_key(changes: dict[str, Any], says: str) -> None:
    from fedkd.config import ConfigError

    with pytest.raises(ConfigError, match=f"invalid config key 'clients-per-message': .*{says}"):
        dataclasses.replace(BASE, **changes)


def test_cohorts_make_fewer_nodes() -> None:
    assert dataclasses.replace(BASE, clients_per_message=3).num_nodes == 2
    assert BASE.num_nodes == BASE.num_clients
