"""Federated continual learning, a client: its local continual learner, its steps (FedAvg's
round, FD's stage), its state between messages, and the spec any process builds it from."""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from fedkd.continual.base import Learner
from fedkd.continual.federated.data import (
    FederatedTasks,
    Partition,
    Query,
    client_order,
    federated_split,
    stage_queries,
)
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint, JointConfig
from fedkd.continual.lwf import LwF, LwFConfig
from fedkd.continual.network import MultiHeadNet, build_net, evaluate_tasks, module_device
from fedkd.continual.tasks import SequenceConfig, TaskSequence
from fedkd.training import TrainConfig, predict_probs

CLIENT_LEARNERS = ("finetune", "lwf", "joint")


# --------------------------------------------------------------------------- clients


class _AnchoredLwF(LwF):
    """LwF whose teacher is an anchor model when one is set: under FedAvg a client trains
    every round from the global weights, and its LwF teacher must be the federation's model
    at the *start of the task* (FedLwF), not the global model of the current round."""

    anchor: MultiHeadNet | None = None

    def teacher_copy(self, net: MultiHeadNet) -> MultiHeadNet:
        return copy.deepcopy(self.anchor if self.anchor is not None else net)


def build_client_learner(
    name: str, scenario: str, train: TrainConfig, options: Mapping[str, Any] | None = None
) -> Learner:
    """A client's local continual learner: ``finetune``, ``lwf`` (options: LwFConfig fields)
    or ``joint`` (its own data of every task so far; always continues from the current
    weights, as restarting would discard the federation's rounds).

    Raises ``ValueError`` for another name or an option the method does not have.
    """
    options = dict(options or {})
    if name == "finetune" and not options:
        return FineTune(scenario, train)  # type: ignore[arg-type]
    if name == "lwf":
        return _AnchoredLwF(scenario, train, LwFConfig(**options))  # type: ignore[arg-type]
    if name == "joint" and not options:
        return Joint(scenario, train, JointConfig(from_scratch=False))  # type: ignore[arg-type]
    if name in CLIENT_LEARNERS:
        raise ValueError(f"client learner {name!r} takes no options, got {sorted(options)}")
    raise ValueError(f"client learner must be one of {CLIENT_LEARNERS}, got {name!r}")


class _HeadOf(nn.Module):
    """``x -> net(x, head)``, so :func:`fedkd.training.predict_probs` sees one head."""

    def __init__(self, net: MultiHeadNet, head: int) -> None:
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.head)


@dataclass(frozen=True)
class ClientUpload:
    """What an FD client sends after a stage: soft predictions per task, and the counts the
    aggregation rules weigh them with (rows and class counts of the client's own data)."""

    probs: Mapping[int, Tensor]
    """Task id ``j`` -> ``(P_j, head_size)`` float32 ``softmax(logits / T)`` on task ``j``'s
    public inputs, from the head task ``j`` is scored on."""
    rows: Mapping[int, int]
    """Task id -> the client's training rows of that task."""
    class_counts: Mapping[int, NDArray[np.int64]]
    """Task id -> ``(head_size,)`` counts of the client's targets of that task."""


class FCLClient:
    """One client: its task sequence, its network, its local continual learner.

    Parameters
    ----------
    sequence : TaskSequence
        The client's sequence (its rows of every task), in the federation's task order.
    net : MultiHeadNet
        Its model (FedAvg loads the global weights into it every round).
    learner : Learner
        From :func:`build_client_learner`.
    seed : int
        Seeds the client's shuffling generator.
    order : sequence of int, optional
        The order in which this client meets the tasks (:func:`client_order`); default the
        sequence's own. At stage ``s`` the client learns task ``order[s]``.
    public : tuple of Tensor
        Public inputs per task (:attr:`FederatedTasks.public`), for FD uploads.
    """

    def __init__(
        self,
        sequence: TaskSequence,
        net: MultiHeadNet,
        learner: Learner,
        seed: int,
        *,
        order: Sequence[int] | None = None,
        public: Sequence[Tensor] = (),
    ) -> None:
        self.order = tuple(range(sequence.num_tasks)) if order is None else tuple(order)
        self.sequence = sequence.reordered(self.order)  # position s = the task of stage s
        self._position = {task: s for s, task in enumerate(self.order)}
        self.net, self.learner, self.public = net, learner, tuple(public)
        self.generator = torch.Generator().manual_seed(seed)
        self.anchor: MultiHeadNet | None = None  # FedAvg + LwF: the model at the task's start

    def task_at(self, stage: int) -> int:
        """The id of the task this client learns at ``stage``."""
        return self.order[stage]

    def rows(self, task: int) -> int:
        """Training rows the client has of task ``task`` (an id)."""
        return len(self.sequence.tasks[self._position[task]].train_y)

    def head_of(self, task: int) -> int:
        """The head task ``task`` (an id) is trained and scored on."""
        return self.sequence.head_of(self._position[task])

    def train_task(self, stage: int, anchor: MultiHeadNet | None = None) -> float:
        """One call of the local learner on the task of ``stage``; ``anchor`` is LwF's teacher
        (FedAvg: the federation's model at the start of the task)."""
        if isinstance(self.learner, _AnchoredLwF):
            self.learner.anchor = anchor
        return self.learner.train_task(self.net, self.sequence, stage, self.generator)

    def fedavg_round(
        self, weights: Mapping[str, Tensor], stage: int, task_start: bool
    ) -> dict[str, Tensor]:
        """FedAvg's client step: start from the global ``weights``, train the task of
        ``stage``, return the new weights. At the task's first round the global model becomes
        the client's LwF anchor for the rest of the task (FedLwF)."""
        self.net.load_state_dict(weights)
        if task_start or self.anchor is None:
            self.anchor = copy.deepcopy(self.net).requires_grad_(False)
        self.train_task(stage, anchor=self.anchor)
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def fd_stage(self, stage: int, query: Query, temperature: float) -> ClientUpload:
        """FD's client step: learn the task of ``stage`` locally, then predict on the public
        inputs of the tasks :func:`stage_queries` names."""
        queries = stage_queries(self.order, stage, query)
        self.train_task(stage)
        probs, rows, counts = {}, {}, {}
        for j in queries:
            probs[j] = self.soft_predictions(self.public[j], self.head_of(j), temperature)
            rows[j] = self.rows(j)
            targets = self.sequence.tasks[self._position[j]].train_y.numpy()
            counts[j] = np.bincount(targets, minlength=probs[j].shape[1]).astype(np.int64)
        return ClientUpload(probs, rows, counts)

    def soft_predictions(self, inputs: Tensor, head: int, temperature: float) -> Tensor:
        """``softmax(logits / T)`` of ``head`` on ``inputs``: ``(n, head_size)`` CPU float32 —
        what an FD client uploads."""
        return predict_probs(_HeadOf(self.net, head), inputs, temperature=temperature)

    def evaluate(self, sequence: TaskSequence) -> list[float]:
        """Test accuracy on every task of the federation's ``sequence`` (one matrix row)."""
        return [float(a) for a in evaluate_tasks(self.net, sequence)]

    def state_bytes(self) -> bytes:
        """Everything that carries over between messages: weights, the shuffling generator
        and the FedAvg anchor (a deployed client keeps it; a simulated one is rebuilt)."""
        state = {
            "net": self.net.state_dict(),
            "generator": self.generator.get_state(),
            "anchor": None if self.anchor is None else self.anchor.state_dict(),
        }
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return buffer.getvalue()

    def load_state_bytes(self, blob: bytes) -> None:
        """Restore what :meth:`state_bytes` saved."""
        state = torch.load(io.BytesIO(blob), map_location=module_device(self.net))
        self.net.load_state_dict(state["net"])
        self.generator.set_state(state["generator"])
        if state["anchor"] is None:
            self.anchor = None
        else:
            self.anchor = copy.deepcopy(self.net).requires_grad_(False)
            self.anchor.load_state_dict(state["anchor"])


# --------------------------------------------------------------------------- client spec


@dataclass(frozen=True)
class FCLClientSpec:
    """All a process needs to build any client of a federated continual run, so the same
    client can live in the driver (in-process engine), a Ray worker or a SuperNode.

    Travels as JSON (:meth:`to_json`) in the messages of the Flower engine: the server is the
    one source of the run's configuration, as in a deployment.
    """

    sequence: SequenceConfig
    num_clients: int
    seed: int
    learner: str = "lwf"
    learner_options: Mapping[str, Any] = field(default_factory=dict)
    local: TrainConfig = field(default_factory=TrainConfig)
    """The local training of one call of the learner (FD: a whole stage; FedAvg: a round)."""
    partition: Partition = "dirichlet"
    alpha: float = 0.5
    min_rows: int = 8
    public_fraction: float = 0.3
    schedule_shift: int = 0
    """Client ``c`` meets the tasks in :func:`client_order` ``(c, T, schedule_shift)``."""
    model: str = "mlp"
    model_options: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"

    def to_json(self) -> str:
        """The spec as one JSON string (sorted keys: equal specs give equal strings)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FCLClientSpec:
        """Inverse of :meth:`to_json`; raises ``ValueError`` (or ``TypeError``) on bad input."""
        values = json.loads(text)
        return cls(
            sequence=_sequence_config(values.pop("sequence")),
            local=TrainConfig(**values.pop("local")),
            **values,
        )

    def tasks(self) -> FederatedTasks:
        """The run's data: built once per process for every spec that shares it (the
        variants of one seed)."""
        data = {k: v for k, v in dataclasses.asdict(self).items() if k in _DATA_FIELDS}
        return _federated_tasks(json.dumps(data, sort_keys=True))

    def order(self, client: int) -> tuple[int, ...]:
        """The order in which ``client`` meets the tasks."""
        return client_order(client, self.sequence.task_count, self.schedule_shift)

    def build_client(self, client: int) -> FCLClient:
        """Client ``client`` as it starts: seeded network, learner, generator."""
        if not 0 <= client < self.num_clients:
            raise ValueError(f"client must be in [0, {self.num_clients}), got {client}")
        tasks = self.tasks()
        seq = tasks.clients[client]
        scenario = tasks.sequence.scenario
        net = build_net(self.model, seq, seed=self.seed, **dict(self.model_options))
        return FCLClient(
            seq,
            net.to(self.device),
            build_client_learner(self.learner, scenario, self.local, self.learner_options),
            seed=self.seed * 1000 + client,
            order=self.order(client),
            public=tasks.public,
        )


_DATA_FIELDS = (
    "sequence",
    "num_clients",
    "seed",
    "partition",
    "alpha",
    "min_rows",
    "public_fraction",
)


@functools.lru_cache(maxsize=4)
def _federated_tasks(data_json: str) -> FederatedTasks:
    data = json.loads(data_json)
    return federated_split(_sequence_config(data.pop("sequence")), **data)


def _sequence_config(values: Mapping[str, Any]) -> SequenceConfig:
    """A :class:`SequenceConfig` from its JSON form (lists back to tuples)."""
    values = dict(values)
    for key in ("class_order", "angles"):
        if values.get(key) is not None:
            values[key] = tuple(values[key])
    return SequenceConfig(**values)
