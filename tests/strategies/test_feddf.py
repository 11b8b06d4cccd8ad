"""FedDF: FedAvg within architecture groups + ensemble distillation early-stopped on validation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedkd import protocol as P
from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, to_run_config
from simulations.local_grid import run_fd_local
from strategies.feddf import GroupReply, average_states

Transform = Callable[[Message, Context], Message]


pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


def _cfg(**changes: Any) -> FDConfig:
    base = dict(
        strategy="feddf",
        num_rounds=2,
        num_clients=4,
        min_train_nodes=4,
        client_models="mlp,cnn",
        student_model="cnn",
        server_epochs=2,
        local_epochs=1,
        alpha=0.5,
        seed=0,
        checkpoint=False,
        client_checkpoints=False,
    )
    return FDConfig(**{**base, **changes})


def _wrap(cfg: FDConfig, transform: Transform) -> ClientApp:
    inner, app = make_client_app(to_run_config(cfg)), ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return transform(inner(msg, context), context)

    return app


def test_average_states_is_the_example_weighted_mean() -> None:
    replies = [
        GroupReply(0, "mlp", {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(2)}, 1.0),
        GroupReply(1, "mlp", {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(6)}, 3.0),
    ]
    out = average_states(replies)
    torch.testing.assert_close(out["w"], torch.tensor([2.25, 5.0]))
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 5  # integer buffers stay integer


def test_feddf_runs_sends_each_group_its_weights_and_counts_bytes() -> None:
    """Heterogeneous clients (mlp, cnn): every reply is averaged into its group; nodes get
    every group's weights only until the server has heard their architecture."""
    records = run_fd_local(_cfg())
    first, second = records
    assert [r.valid_replies for r in records] == [4, 4] and all(r.status == "ok" for r in records)
    assert first.bytes_down > second.bytes_down > 0  # round 1: both groups to every node
    assert first.bytes_up == pytest.approx(second.bytes_up, rel=0.01)  # weights up, each round
    assert second.teacher_accuracy is not None and second.teacher_accuracy > 0.3  # the ensemble
    assert second.student_val_accuracy is not None


def _corrupt_partition(partition: int, change: Callable[[ArrayRecord], None]) -> Transform:
    def transform(reply: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) == partition and not reply.has_error():
            change(reply.content.array_records[P.ARRAYS])
        return reply

    return transform


def _nan_first(arrays: ArrayRecord) -> None:
    key = next(iter(arrays))
    values = arrays[key].numpy().copy()
    values.flat[0] = np.nan
    arrays[key] = Array(values)


def _wrong_shape(arrays: ArrayRecord) -> None:
    key = next(iter(arrays))
    arrays[key] = Array(np.zeros((3, 3), dtype=np.float32))


def _negative_examples(partition: int) -> Transform:
    def transform(reply: Message, context: Context) -> Message:
        if int(context.node_config["partition-id"]) == partition and not reply.has_error():
            reply.content.metric_records[P.METRICS][P.NUM_EXAMPLES] = -5
        return reply

    return transform


@pytest.mark.parametrize(
    ("transform", "reason"),
    [
        (_corrupt_partition(1, _nan_first), "non-finite"),
        (_corrupt_partition(1, _wrong_shape), "shape-mismatch"),
        (_negative_examples(1), "malformed"),
    ],
)
def test_a_bad_weight_reply_is_rejected_and_the_round_goes_on(
    transform: Transform, reason: str
) -> None:
    cfg = _cfg(num_rounds=1, client_models="mlp", student_model="mlp")
    (record,) = run_fd_local(cfg, _wrap(cfg, transform))
    assert record.status == "ok" and record.valid_replies == 3
    assert record.rejected == 1 and record.rejected_reasons == {reason: 1}
    assert np.isfinite(record.student_accuracy)
