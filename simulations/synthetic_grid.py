"""A Flower ``Grid`` whose clients are synthetic: real encoded replies, no client code.

What the server's memory and receive path are measured and tested against
(``benchmarks.bench_scaling --parts server``, ``tests/strategies/test_receive.py``): every
reply is a real Flower ``Message`` built by the real protocol encoder
(:func:`fedkd.protocol.reply_content`, :func:`fedkd.compression.encode_probs`) and echoing
its request, so the server decodes, validates and counts bytes exactly as in a run — but no
model trains, so a 1,000-client round costs what the server costs.

Replies are made when pulled, ``per_pull`` at a time, the way a SuperLink's store fills while
the server polls: ``pull_messages`` hands over at most ``per_pull`` replies per call (the
replies that "arrived" since the last poll). ``send_and_receive`` is Flower's loop over these
pulls (:func:`strategies.receive.arrivals`) with every reply returned in one list, as Flower's
grids return them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from flwr.app import Error, Message
from flwr.serverapp import Grid

from fedkd import protocol as P
from fedkd.compression import encode_probs
from strategies.receive import arrivals


class SyntheticGrid(Grid):
    """``num_nodes`` synthetic clients answering every request with Dirichlet soft labels.

    Parameters
    ----------
    num_nodes : int
        Node ids are ``1000 .. 1000 + num_nodes - 1``.
    num_classes : int
        Classes per soft-label row.
    per_pull : int
        Replies handed over per ``pull_messages`` call (arrivals per poll).
    pool : int
        Distinct soft-label arrays, reused round-robin (each reply is still its own encoding).
    silent : nodes that never answer (a timeout must end the wait).
    malformed : nodes whose reply holds a NaN (validation must reject it, alone).
    failing : nodes that answer with an error reply.
    """

    pull_interval = 0.0  # read by strategies.receive: no sleep between polls in process

    def __init__(
        self,
        num_nodes: int,
        num_classes: int,
        *,
        per_pull: int = 10,
        pool: int = 4,
        seed: int = 0,
        silent: Sequence[int] = (),
        malformed: Sequence[int] = (),
        failing: Sequence[int] = (),
    ) -> None:
        self.node_ids = [1000 + i for i in range(num_nodes)]
        self.num_classes = num_classes
        self.per_pull = per_pull
        self.pool_size = pool
        self.rng = np.random.default_rng(seed)
        self.silent, self.malformed, self.failing = set(silent), set(malformed), set(failing)
        self._pool: dict[int, list[np.ndarray]] = {}  # rows → soft-label arrays
        self._pending: dict[str, Message] = {}  # message id → request, in push order
        self.pulls = 0  # pull_messages calls (tests read it)

    # ------------------------------------------------------------------ Grid API
    def set_run(self, run_id: int) -> None:  # type: ignore[override]
        return None

    @property
    def run(self) -> Any:
        raise NotImplementedError("SyntheticGrid has no Run object")

    def create_message(self, *args: object, **kwargs: object) -> Message:  # type: ignore[override]
        raise NotImplementedError("use the Message constructor")

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Accept the requests; replies are made when pulled."""
        ids = []
        for msg in messages:
            msg.metadata.__dict__["_message_id"] = uuid.uuid4().hex  # what a SuperLink assigns
            if int(msg.metadata.dst_node_id) not in self.silent:
                self._pending[msg.metadata.message_id] = msg
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Up to ``per_pull`` replies to the given ids (each returned once)."""
        self.pulls += 1
        wanted = set(message_ids)
        ready = [i for i in self._pending if i in wanted][: self.per_pull]
        return [self._reply(self._pending.pop(i)) for i in ready]

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Flower's form: every reply in one list."""
        return [r for batch in arrivals(self, messages, timeout) for r in batch]

    # ------------------------------------------------------------------ replies
    def soft_labels(self, rows: int, index: int) -> np.ndarray:
        """The ``index``-th pooled ``(rows, classes)`` float32 array (Dirichlet(0.3) rows)."""
        if rows not in self._pool:
            alpha = np.full(self.num_classes, 0.3)
            self._pool[rows] = [
                self.rng.dirichlet(alpha, size=rows).astype(np.float32)
                for _ in range(self.pool_size)
            ]
        return self._pool[rows][index % self.pool_size]

    def _reply(self, request: Message) -> Message:
        node = int(request.metadata.dst_node_id)
        if node in self.failing:
            return Message(Error(code=0, reason="synthetic client failed"), reply_to=request)
        req = P.parse_request(request.content)
        rows = req.public_size if req.public_indices is None else len(req.public_indices)
        probs = self.soft_labels(rows, node)
        counts = np.bincount(
            np.arange(node, node + 20) % self.num_classes, minlength=self.num_classes
        )
        metrics: dict[str, int | float | list[int] | list[float]] = {
            P.NUM_EXAMPLES: int(counts.sum()),
            P.CLASS_COUNTS: [int(c) for c in counts],
            P.TEST_ACCURACY: 0.5,
        }
        echo = P.Echo(req.server_round, request.metadata.message_type, req.public_hash)
        payload = encode_probs(probs, req.codec, topk=req.topk)  # type: ignore[arg-type]
        if node in self.malformed:  # broken on the wire: the encoder itself refuses NaN
            payload = {k: v.astype(np.float32) for k, v in payload.items()}
            next(iter(payload.values()))[0, 0] = np.nan
        content = P.reply_content(payload, metrics, model_name="mlp", codec=req.codec, echo=echo)
        return Message(content, reply_to=request)
