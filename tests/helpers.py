"""Builders several test modules share (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

from typing import Any

import numpy as np

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
