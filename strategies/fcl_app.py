"""Federated continual learning through Flower: the ServerApp and its message transport.

:class:`GridFederation` is the stage loop's :class:`strategies.fcl.Federation` over a Flower
``Grid``: it sends ``train.fcl`` / ``evaluate.fcl`` messages (:mod:`fedkd.protocol`) to the
fedkd ClientApp (whose handlers are :mod:`fedkd.client_fcl`) and checks every reply before it
reaches the loop: a reply with an error, a wrong or duplicate client id, missing or extra
tasks, predictions of the wrong shape, non-finite or not a distribution, bad counts, or weights
that do not match the model is dropped with a logged reason, and the stage goes on with the
others. :func:`make_fcl_server_app` runs every variant and seed of an
:class:`strategies.fcl.FCLConfig` in one Flower run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp
from torch import Tensor

from fedkd import protocol as P
from fedkd.continual.federated import (
    ClientUpload,
    FCLClientSpec,
    FederatedTasks,
    Query,
    stage_queries,
)
from strategies.fcl import FCLConfig, client_spec, run_variant

__all__ = ["GridFederation", "RejectedReply", "make_fcl_server_app"]

log = logging.getLogger(__name__)
NODE_WAIT_SECONDS = 60.0  # how long the ServerApp waits for every client's node to connect


class RejectedReply(ValueError):
    """A reply that cannot be used; the message names why."""


class GridFederation:
    """The clients of one run, reached through Flower messages.

    Parameters
    ----------
    grid : Grid
        Flower's grid; one node per client, the node's ``partition-id`` is the client id.
    spec : FCLClientSpec
        The run's client spec (sent with every message).
    tasks : FederatedTasks
        The run's data (the server's copy: public inputs and head widths for the checks).
    temperature : float
        FD: clients soften their predictions at this temperature.
    timeout : float, optional
        Seconds to wait for the replies of one message phase (None: Flower's default).
    """

    def __init__(
        self,
        grid: Grid,
        spec: FCLClientSpec,
        tasks: FederatedTasks,
        temperature: float,
        timeout: float | None = None,
    ) -> None:
        self.grid, self.spec, self.tasks = grid, spec, tasks
        self.job, self.temperature, self.timeout = spec.to_json(), temperature, timeout
        self.orders = [spec.order(c) for c in range(spec.num_clients)]
        self.rejected = 0  # replies dropped so far

    # ---- messaging -----------------------------------------------------------------

    def _exchange(
        self, message_type: str, config: Mapping[str, Any], arrays: ArrayRecord | None = None
    ) -> list[Message]:
        """One message to every node; the replies that carry no error."""
        content = RecordDict({P.FCL_CONFIG: ConfigRecord({P.FCL_JOB: self.job, **config})})
        if arrays is not None:
            content[P.ARRAYS] = arrays
        nodes = sorted(self.grid.get_node_ids())
        messages = [
            Message(content=content, message_type=message_type, dst_node_id=n) for n in nodes
        ]
        replies = list(self.grid.send_and_receive(messages, timeout=self.timeout))
        ok = []
        for reply in replies:
            if reply.has_error():
                self._reject(message_type, f"client error: {reply.error.reason}")
            else:
                ok.append(reply)
        if len(replies) < len(nodes):
            log.warning(
                "%s: %d of %d nodes did not reply",
                message_type,
                len(nodes) - len(replies),
                len(nodes),
            )
        return ok

    def _reject(self, what: str, reason: str) -> None:
        self.rejected += 1
        log.warning("%s: rejected a reply: %s", what, reason)

    def _by_client(
        self, what: str, replies: list[Message], parse: Callable[[Message, int], Any]
    ) -> dict[int, Any]:
        """Parse each reply for its client; drop bad and duplicate ones (logged)."""
        out: dict[int, Any] = {}
        for reply in replies:
            try:
                client = self._client_id(reply)
                if client in out:
                    raise RejectedReply(f"a second reply from client {client}")
                out[client] = parse(reply, client)
            except RejectedReply as err:
                self._reject(what, str(err))
            except (ValueError, TypeError, KeyError) as err:  # records that do not decode
                self._reject(what, f"unreadable: {type(err).__name__}: {err}")
        return dict(sorted(out.items()))  # client order: the same sums as in process

    def _client_id(self, reply: Message) -> int:
        metrics = reply.content.metric_records.get(P.METRICS)
        value = None if metrics is None else metrics.get(P.PARTITION_ID)
        if not isinstance(value, int) or not 0 <= value < self.spec.num_clients:
            raise RejectedReply(f"no valid {P.PARTITION_ID} (got {value!r})")
        return value

    # ---- Federation ----------------------------------------------------------------

    def fedavg_round(
        self, weights: Mapping[str, Tensor], stage: int, task_start: bool
    ) -> list[tuple[dict[str, Tensor], int]]:
        config = {P.FCL_STEP: "fedavg", P.FCL_STAGE: stage, P.FCL_TASK_START: task_start}
        replies = self._exchange(P.FCL_TRAIN, config, ArrayRecord(dict(weights)))

        def parse(reply: Message, client: int) -> tuple[dict[str, Tensor], int]:
            return _weights(reply, weights), _positive_int(reply, P.NUM_EXAMPLES)

        return list(self._by_client(f"stage {stage} FedAvg", replies, parse).values())

    def fd_stage(self, stage: int, query: Query) -> list[ClientUpload]:
        config = {
            P.FCL_STEP: "fd",
            P.FCL_STAGE: stage,
            P.FCL_QUERY: query,
            P.TEMPERATURE: float(self.temperature),
        }
        replies = self._exchange(P.FCL_TRAIN, config)

        def parse(reply: Message, client: int) -> ClientUpload:
            return self._upload(reply, stage_queries(self.orders[client], stage, query))

        return list(self._by_client(f"stage {stage} FD", replies, parse).values())

    def evaluate(self) -> list[list[float] | None]:
        replies = self._exchange(P.FCL_EVALUATE, {})
        num_tasks = self.tasks.sequence.num_tasks

        def parse(reply: Message, client: int) -> list[float]:
            row = reply.content.metric_records[P.METRICS].get(P.FCL_ACCURACY)
            values = np.asarray(row if isinstance(row, list) else [], dtype=np.float64)
            if values.shape != (num_tasks,) or not np.all((values >= 0) & (values <= 1)):
                raise RejectedReply(f"'{P.FCL_ACCURACY}' must be {num_tasks} values in [0, 1]")
            return values.tolist()

        rows = self._by_client("evaluate", replies, parse)
        return [rows.get(c) for c in range(self.spec.num_clients)]

    # ---- checks --------------------------------------------------------------------

    def _upload(self, reply: Message, expected: list[int]) -> ClientUpload:
        record = reply.content.array_records.get(P.FCL_PROBS)
        if record is None:
            raise RejectedReply(f"no '{P.FCL_PROBS}' record")
        keys = {P.fcl_task_key(j): j for j in expected}
        if set(record.keys()) != set(keys):
            raise RejectedReply(f"tasks {sorted(record.keys())}, expected {sorted(keys)}")
        seq = self.tasks.sequence
        probs, rows, counts = {}, {}, {}
        for key, j in keys.items():
            width = seq.head_sizes[seq.head_of(j)]
            p = record[key].numpy()
            shape = (len(self.tasks.public[j]), width)
            if p.dtype != np.float32 or p.shape != shape:
                raise RejectedReply(f"{key}: {p.dtype} {p.shape}, expected float32 {shape}")
            if not np.isfinite(p).all() or (p < 0).any():
                raise RejectedReply(f"{key}: values must be finite and >= 0")
            if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
                raise RejectedReply(f"{key}: rows must sum to 1")
            rows[j] = _positive_int(reply, P.fcl_rows_key(j))
            counts[j] = _counts(reply, P.fcl_counts_key(j), width, rows[j])
            probs[j] = torch.from_numpy(p.copy())
        return ClientUpload(probs, rows, counts)


def _positive_int(reply: Message, key: str) -> int:
    value = reply.content.metric_records[P.METRICS].get(key)
    if not isinstance(value, int) or value < 1:
        raise RejectedReply(f"'{key}' must be an int >= 1, got {value!r}")
    return value


def _counts(reply: Message, key: str, width: int, rows: int) -> np.ndarray:
    value = reply.content.metric_records[P.METRICS].get(key)
    counts = np.asarray(value if isinstance(value, list) else [], dtype=np.float64)
    if counts.shape != (width,) or (counts < 0).any() or counts.sum() != rows:
        raise RejectedReply(f"'{key}' must be {width} counts >= 0 summing to the rows ({rows})")
    return counts.astype(np.int64)


def _weights(reply: Message, sent: Mapping[str, Tensor]) -> dict[str, Tensor]:
    record = reply.content.array_records.get(P.ARRAYS)
    if record is None:
        raise RejectedReply(f"no '{P.ARRAYS}' record")
    weights = record.to_torch_state_dict()
    if set(weights) != set(sent):
        raise RejectedReply("weights with other names than the model's")
    for name, value in weights.items():
        if value.shape != sent[name].shape or value.dtype != sent[name].dtype:
            raise RejectedReply(f"{name}: {value.dtype} {tuple(value.shape)} does not match")
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise RejectedReply(f"{name}: non-finite weights")
    return weights


def _wait_for_nodes(grid: Grid, needed: int) -> None:
    """Wait until every client's node is connected; raise after :data:`NODE_WAIT_SECONDS`."""
    deadline = time.monotonic() + NODE_WAIT_SECONDS
    while (connected := len(list(grid.get_node_ids()))) < needed:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{connected} nodes connected after {NODE_WAIT_SECONDS:g}s; the run needs one "
                f"per client ({needed})"
            )
        time.sleep(0.5)


def make_fcl_server_app(
    cfg: FCLConfig, record: Callable[[str, int, dict[str, Any]], None]
) -> ServerApp:
    """A ServerApp that runs every variant of ``cfg`` for every seed, one after another, and
    hands each run's results to ``record(label, seed, run)``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        _wait_for_nodes(grid, cfg.num_clients)
        for seed in cfg.seeds:
            for variant in cfg.variants:
                spec = client_spec(variant, cfg, seed)
                tasks = spec.tasks()
                federation = GridFederation(grid, spec, tasks, cfg.temperature)
                run = run_variant(variant, tasks, cfg, seed, federation)
                run["rejected_replies"] = federation.rejected
                record(variant.label, seed, run)

    return app
