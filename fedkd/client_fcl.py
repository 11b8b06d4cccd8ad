"""The fedkd ClientApp's federated continual-learning handlers (``train.fcl``, ``evaluate.fcl``).

Registered on the same ClientApp as federated distillation (:mod:`fedkd.client_app`). Each
message carries the run's client spec (:class:`fedkd.continual.federated.FCLClientSpec`, as
JSON), so any process — a Ray worker, a SuperNode — can rebuild the node's client; the node's
own state (weights, shuffling generator, FedAvg anchor) persists in ``Context.state`` under a
key of the spec, as simulation workers are not pinned to nodes. The ML is
:class:`fedkd.continual.federated.FCLClient`; this module only translates messages.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from fedkd import protocol as P
from fedkd.continual.federated import FCLClient, FCLClientSpec
from fedkd.training import resolve_threads

log = logging.getLogger(__name__)
STATE_PREFIX = "fedkd-fcl-"  # Context.state ConfigRecord key prefix, one per run spec


def _config(msg: Message) -> ConfigRecord:
    record = msg.content.config_records.get(P.FCL_CONFIG)
    if record is None or P.FCL_JOB not in record:
        raise ValueError(f"an FCL message needs a '{P.FCL_CONFIG}' record with a job")
    return record


def _state_key(job: str) -> str:
    return STATE_PREFIX + hashlib.sha256(job.encode()).hexdigest()[:16]


def _client_id(context: Context) -> int:
    return int(context.node_config.get("partition-id", 0))


def _restore(context: Context, job: str) -> tuple[FCLClient, FCLClientSpec]:
    """This node's client of run ``job``: built from the spec, then its saved state."""
    spec = FCLClientSpec.from_json(job)
    # Ray sets OMP_NUM_THREADS to the worker's CPUs; torch's default (every core) in each of
    # several workers is many times slower for small models (fedkd.training.resolve_threads)
    torch.set_num_threads(resolve_threads(0))
    client = spec.build_client(_client_id(context))
    record = context.state.config_records.get(_state_key(job))
    if record is not None:
        client.load_state_bytes(record["blob"])  # type: ignore[arg-type]
    return client, spec


def _save(context: Context, job: str, client: FCLClient) -> None:
    """Keep the client's state; drop earlier runs' (one run at a time per node)."""
    key = _state_key(job)
    for old in [k for k in context.state.config_records if k.startswith(STATE_PREFIX)]:
        if old != key:
            del context.state[old]
    context.state[key] = ConfigRecord({"blob": client.state_bytes()})


def train(msg: Message, context: Context) -> Message:
    """One stage: FedAvg (train from the weights sent) or FD (train, then predict)."""
    config = _config(msg)
    job = str(config[P.FCL_JOB])
    client, _ = _restore(context, job)
    client_id = _client_id(context)
    stage = int(config[P.FCL_STAGE])  # type: ignore[arg-type]
    if config[P.FCL_STEP] == "fedavg":
        weights = msg.content.array_records[P.ARRAYS].to_torch_state_dict()
        new = client.fedavg_round(weights, stage, bool(config[P.FCL_TASK_START]))
        task = client.task_at(stage)
        content = RecordDict(
            {
                P.ARRAYS: ArrayRecord(new),
                P.METRICS: MetricRecord(
                    {P.NUM_EXAMPLES: client.rows(task), P.PARTITION_ID: client_id}
                ),
            }
        )
    else:
        temperature = float(config[P.TEMPERATURE])  # type: ignore[arg-type]
        upload = client.fd_stage(stage, str(config[P.FCL_QUERY]), temperature)  # type: ignore[arg-type]
        arrays = {
            P.fcl_task_key(j): Array(np.ascontiguousarray(p.numpy(), dtype=np.float32))
            for j, p in upload.probs.items()
        }
        metrics: dict[str, Any] = {P.PARTITION_ID: client_id}
        for j in upload.probs:
            metrics[P.fcl_rows_key(j)] = int(upload.rows[j])
            metrics[P.fcl_counts_key(j)] = [int(v) for v in upload.class_counts[j]]
        content = RecordDict({P.FCL_PROBS: ArrayRecord(arrays), P.METRICS: MetricRecord(metrics)})
    _save(context, job, client)
    return Message(content, reply_to=msg)


def evaluate(msg: Message, context: Context) -> Message:
    """The node's test accuracy on every task of the run's sequence."""
    job = str(_config(msg)[P.FCL_JOB])
    client, spec = _restore(context, job)
    row = client.evaluate(spec.tasks().sequence)
    metrics = MetricRecord({P.FCL_ACCURACY: row, P.PARTITION_ID: _client_id(context)})
    return Message(RecordDict({P.METRICS: metrics}), reply_to=msg)
