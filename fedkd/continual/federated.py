"""Federated continual learning (FCL): the clients' side and the server student's training.

Every client meets the same sequence of tasks, each with its own (Dirichlet-skewed) share of
the task's training rows, and learns it with a local continual learner — fine-tuning, LwF,
or joint training on its own data of every task so far (the upper bound). The federation
then either averages weights (FedAvg, the baseline) or shares soft predictions on public,
unlabelled inputs of the tasks seen so far (Federated Distillation): the server aggregates
them into a teacher and distils a student, and the student must not forget either — it keeps
its own previous outputs with the LwF term (:class:`StudentDistiller`).

What lives here is the ML, pure torch: the per-client data (:func:`federated_split`), the
client (:class:`FCLClient`), the student's distillation, weight averaging and the byte
counts. The round loop, which calls :func:`strategies.aggregation.aggregate`, lives in
``simulations/fcl.py`` (the package layering keeps ``fedkd`` free of ``strategies``).

Reuses :mod:`fedkd.kd` (every distillation), :mod:`fedkd.continual` (task sequences,
learners, evaluation) and :mod:`fedkd.training`; imports no Flower, Ray or Hydra.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from fedkd import kd
from fedkd.compression import encode_probs, payload_nbytes
from fedkd.continual.base import Learner, fit
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint, JointConfig
from fedkd.continual.lwf import LwF, LwFConfig, distill_targets
from fedkd.continual.network import MultiHeadNet, build_net, evaluate_tasks, module_device
from fedkd.continual.tasks import _EMBEDDED, SequenceConfig, TaskSequence, sequence_from_splits
from fedkd.continual.training_data import Batch, TrainingData
from fedkd.data import load_splits, partition_indices
from fedkd.models import model_nbytes
from fedkd.training import TrainConfig, make_optimizer, predict_probs

__all__ = [
    "CLIENT_LEARNERS",
    "ClientUpload",
    "FCLClient",
    "FCLClientSpec",
    "FederatedTasks",
    "StudentDistiller",
    "average_state_dicts",
    "build_client_learner",
    "client_order",
    "federated_split",
    "prediction_nbytes",
    "stage_queries",
    "weights_nbytes",
]

CLIENT_LEARNERS = ("finetune", "lwf", "joint")
Partition = Literal["dirichlet", "iid"]


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class FederatedTasks:
    """One task sequence cut across clients, with public inputs per task.

    Attributes
    ----------
    sequence : TaskSequence
        The whole sequence: every task's test set (what every model is scored on).
    clients : tuple of TaskSequence
        Client ``c``'s sequence: the same tasks and heads, with only its share of each task's
        training rows (test sets are the global ones).
    public : tuple of Tensor
        ``public[t]`` is ``(P_t, *input_shape)``: unlabelled public inputs of task ``t``.
    """

    sequence: TaskSequence
    clients: tuple[TaskSequence, ...]
    public: tuple[Tensor, ...]

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)


def federated_split(
    cfg: SequenceConfig,
    *,
    num_clients: int,
    seed: int,
    partition: Partition = "dirichlet",
    alpha: float = 0.5,
    min_rows: int = 8,
    public_fraction: float = 0.3,
) -> FederatedTasks:
    """Build a task sequence and share every task's training rows across clients.

    Inside each task the training rows are partitioned with :func:`fedkd.data.partition_indices`
    (``dirichlet``: label skew ~ Dir(alpha) over the task's classes; ``iid``), seeded by
    ``seed`` and the task, with at least ``min_rows`` rows per client and task. The dataset's
    public pool gives each task its public inputs: for a split sequence (task- or class-IL)
    the public inputs of the task's classes (grouped with the simulator-only oracle labels; in
    a deployment the unlabelled public inputs of a task arrive with the task; they are never
    used as labels), for a permuted or rotated sequence (domain-IL) the whole pool as the task
    transforms it.

    Raises
    ------
    ValueError
        For fewer than one client, or a partition that cannot give every client ``min_rows``
        rows of every task.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    s = seed if cfg.seed is None else cfg.seed
    options: dict[str, Any] = {"public_fraction": public_fraction, **dict(cfg.data_options)}
    if cfg.dataset in _EMBEDDED:
        options.setdefault("test_fraction", cfg.test_fraction)
    splits = load_splits(cfg.dataset, seed=s, **options)
    sequence = sequence_from_splits(cfg, splits, s)
    if cfg.kind == "split":
        oracle = splits.oracle_public_labels()
        public = tuple(
            splits.public_x[torch.isin(oracle, torch.tensor(task.classes))]
            for task in sequence.tasks
        )
    else:
        public = tuple(task.inputs(splits.public_x) for task in sequence.tasks)
    shares: list[list[Tensor]] = [[] for _ in range(num_clients)]  # client -> task -> rows
    for t, task in enumerate(sequence.tasks):
        try:
            parts = partition_indices(
                task.train_y.numpy(),
                num_clients,
                partition,
                alpha=alpha,
                seed=s * 1000 + t,
                min_partition_size=min_rows if partition == "dirichlet" else 0,
            )
        except ValueError as err:
            raise ValueError(
                f"task {t}: cannot give {num_clients} clients min_rows={min_rows} rows each "
                f"({err}); use fewer clients, a larger alpha or a smaller min_rows"
            ) from err
        for c, idx in enumerate(parts):
            if len(idx) < max(min_rows, 1):
                raise ValueError(
                    f"client {c} got {len(idx)} rows of task {t} (< min_rows={min_rows}); "
                    "use fewer clients, a larger alpha or a smaller min_rows"
                )
            shares[c].append(torch.as_tensor(idx))
    clients = tuple(
        dataclasses.replace(
            sequence,
            tasks=tuple(
                dataclasses.replace(task, train_x=task.train_x[idx], train_y=task.train_y[idx])
                for task, idx in zip(sequence.tasks, rows, strict=True)
            ),
        )
        for rows in shares
    )
    return FederatedTasks(sequence, clients, public)


Query = Literal["seen", "current"]


def stage_queries(order: Sequence[int], stage: int, query: Query) -> list[int]:
    """The tasks an FD client predicts on at ``stage``: every task it has met (``seen``) or
    only the one it just learnt (``current``)."""
    if query not in ("seen", "current"):
        raise ValueError(f"query must be 'seen' or 'current', got {query!r}")
    return list(order[: stage + 1]) if query == "seen" else [order[stage]]


def client_order(client: int, num_tasks: int, shift: int = 0) -> tuple[int, ...]:
    """The order in which ``client`` meets the tasks: the sequence rotated by ``client x
    shift`` positions (``shift = 0``: every client meets task ``t`` at stage ``t``).

    With ``shift = 1`` and as many clients as tasks, every task is somebody's first task,
    as when devices join a stream at different times (a shifted schedule).
    """
    if num_tasks < 1 or shift < 0:
        raise ValueError(f"need num_tasks >= 1 and shift >= 0, got {num_tasks}, {shift}")
    start = (client * shift) % num_tasks
    return tuple((start + s) % num_tasks for s in range(num_tasks))


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
        data = {k: v for k, v in json.loads(self.to_json()).items() if k in _DATA_FIELDS}
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


# --------------------------------------------------------------------------- the student


class StudentDistiller(LwF):
    """The server's student: distils the aggregated client teacher on public inputs, plus
    λ × the LwF term that keeps the student's own outputs of earlier tasks close to its
    frozen copy from the end of the previous task (Li & Hoiem, 2017, with the aggregated
    soft labels in place of the new task's hard labels).

    With ``config.lam = 0`` (or task 0) the retention term is off and this is plain FD
    distillation. The teacher term is ``fedkd.kd.distillation_loss`` with the client
    probabilities used as they are (``teacher_is_probs=True, teacher_temperature=1``),
    as in fedkd's FD server.
    """

    compatibility = ("task_il", "class_il", "domain_il")

    def __init__(
        self, scenario: str, train: TrainConfig, config: LwFConfig, teacher_spec: kd.KDSpec
    ) -> None:
        super().__init__(scenario, train, config)  # type: ignore[arg-type]
        self.teacher_spec = teacher_spec
        self._probs: Tensor | None = None
        self._old: Sequence[int] | None = None

    def distil(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        probs: Tensor,
        generator: torch.Generator | None = None,
        old_tasks: Sequence[int] | None = None,
    ) -> float:
        """Train ``net`` at stage ``t`` on public ``data`` (``data.y`` = row of ``probs``,
        ``data.heads`` = the head each row is scored on) against ``probs`` ``(n, k)``.

        ``old_tasks``: the tasks the retention term keeps (those the federation met at earlier
        stages); default ``range(t)``, every client on the same schedule."""
        if probs.shape[0] != len(data):
            raise ValueError(f"probs has {probs.shape[0]} rows but data has {len(data)}")
        self._probs = probs.to(module_device(net))
        self._old = old_tasks
        self.before_task(net, sequence, t, data, generator)
        try:
            optimizer = make_optimizer(net, self.train)
            return fit(
                net,
                data,
                self.train,
                optimizer,
                generator,
                lambda batch: self.batch_loss(net, batch, sequence, t),
            )
        finally:
            self.after_task(net, sequence, t)
            self._probs = None

    def targets_for(
        self, sequence: TaskSequence, t: int
    ) -> list[tuple[int, tuple[int, ...] | None]]:
        """Retention targets: the tasks met before this stage (``old_tasks`` of ``distil``)."""
        return distill_targets(sequence, t, self.config.distill, old=self._old)

    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """``KD(student, aggregated teacher) + λ_t · LwF retention``."""
        features = net.features(batch.x)  # (b, feature_dim)
        loss = self._teacher_term(net, features, batch)
        if not self._targets:
            return loss
        return loss + self.config.lam_for(t) * self.retention_loss(net, features, batch)

    def _teacher_term(self, net: MultiHeadNet, features: Tensor, batch: Batch) -> Tensor:
        assert self._probs is not None
        probs = self._probs[batch.y]  # (b, k): batch.y holds row ids into the teacher

        def term(head: int, rows: slice | Tensor, reduction: kd.Reduction) -> Tensor:
            return kd.distillation_loss(
                net.heads[head](features[rows]),
                probs[rows],
                self.teacher_spec,
                teacher_is_probs=True,
                teacher_temperature=1.0,
                reduction=reduction,
            )

        if batch.single_head is not None:
            return term(batch.single_head, slice(None), "batchmean")
        total = features.new_zeros(())
        for h in batch.heads.unique().tolist():
            total = total + term(h, batch.heads == h, "sum")
        return total / batch.y.shape[0]


# --------------------------------------------------------------------------- FedAvg, bytes


def average_state_dicts(
    states: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """Weighted mean of model states (McMahan et al., 2017): floating tensors are averaged
    with ``weights`` (e.g. training rows), other tensors (counters) are taken from the first."""
    if not states or len(states) != len(weights):
        raise ValueError(f"need one weight per state, got {len(states)} and {len(weights)}")
    w = torch.tensor(weights, dtype=torch.float64)
    if not bool((w >= 0).all()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out: dict[str, Tensor] = {}
    for key, first in states[0].items():
        if first.dtype.is_floating_point:
            stacked = torch.stack([s[key].double() for s in states])  # (clients, *shape)
            mean = (w.view(-1, *([1] * first.dim())) * stacked).sum(dim=0)
            out[key] = mean.to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def weights_nbytes(net: nn.Module) -> int:
    """Bytes of one model transfer (every parameter and buffer, as stored)."""
    return model_nbytes(net)


def prediction_nbytes(probs: Tensor) -> int:
    """Bytes of one upload of soft predictions, encoded as fedkd's FD clients send them
    (``fedkd.compression`` with codec ``none``: float32)."""
    return payload_nbytes(encode_probs(np.asarray(probs.numpy(), dtype=np.float32), "none"))
