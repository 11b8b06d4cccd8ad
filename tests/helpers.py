"""Builders several test modules share (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from fedkd.config import FDConfig
from fedkd.protocol import RoundRequest, public_hash


def round_request(public: Any, **changes: Any) -> RoundRequest:
    """A round-1 train request that asks for predictions on the whole public set, no teacher.

    ``public`` is the public inputs the client holds (array or tensor, ``(rows, *shape)``):
    the request carries their size and hash, as the server's would. ``changes`` override any
    other :class:`~fedkd.protocol.RoundRequest` field.
    """
    public = np.asarray(public)
    fields: dict[str, Any] = dict(
        server_round=1,
        local_epochs=1,
        lr=0.1,
        temperature=2.0,
        codec="none",
        topk=3,
        public_indices=None,
        public_size=len(public),
        public_hash=public_hash(public),
        with_predictions=True,
        distill_epochs=0,
        teacher_probs=None,
        teacher_indices=None,
    )
    return RoundRequest(**{**fields, **changes})


def tiny_federation(**changes: Any) -> FDConfig:
    """Six tiny synthetic MLP clients (600 rows, IID), half sampled per round, mean rule, a
    50-row public query, no checkpoints or validation split: fast in-process Flower runs for
    tests that compare two ways of serving the same clients. ``changes`` override any field."""
    fields: dict[str, Any] = dict(
        dataset="synthetic",
        synthetic_samples=600,
        partition="iid",
        num_clients=6,
        min_train_nodes=3,
        fraction_train=0.5,
        num_rounds=2,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        public_subset=50,
        checkpoint=False,
        val_fraction=0.0,
        aggregation="mean",
    )
    return FDConfig(**{**fields, **changes})
