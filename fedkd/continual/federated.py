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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from fedkd import kd
from fedkd.compression import encode_probs, payload_nbytes
from fedkd.continual.base import Learner, fit
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint, JointConfig
from fedkd.continual.lwf import LwF, LwFConfig
from fedkd.continual.network import MultiHeadNet, module_device
from fedkd.continual.tasks import _EMBEDDED, SequenceConfig, TaskSequence, split_sequence
from fedkd.continual.training_data import Batch, TrainingData
from fedkd.data import load_splits, partition_indices
from fedkd.models import model_nbytes
from fedkd.training import TrainConfig, make_optimizer, predict_probs

__all__ = [
    "CLIENT_LEARNERS",
    "FCLClient",
    "FederatedTasks",
    "StudentDistiller",
    "average_state_dicts",
    "build_client_learner",
    "federated_split",
    "prediction_nbytes",
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
    """Build a split sequence (task- or class-IL) and share every task across clients.

    Inside each task the training rows are partitioned with :func:`fedkd.data.partition_indices`
    (``dirichlet``: label skew ~ Dir(alpha) over the task's classes; ``iid``), seeded by
    ``seed`` and the task, with at least ``min_rows`` rows per client and task. The dataset's
    public pool is grouped by task: task ``t``'s public inputs are those of its classes. (The
    grouping reads the simulator-only oracle labels; in a deployment the unlabelled public
    inputs of a task arrive with the task. They are never used as labels.)

    Raises
    ------
    ValueError
        For a sequence that is not ``split``, fewer than one client, or a partition that
        cannot give every client ``min_rows`` rows of every task.
    """
    if cfg.kind != "split":
        raise ValueError(f"federated sequences are 'split' (task-IL or class-IL), got {cfg.kind!r}")
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    s = seed if cfg.seed is None else cfg.seed
    options: dict[str, Any] = {"public_fraction": public_fraction, **dict(cfg.data_options)}
    if cfg.dataset in _EMBEDDED:
        options.setdefault("test_fraction", cfg.test_fraction)
    splits = load_splits(cfg.dataset, seed=s, **options)
    sequence = split_sequence(
        splits,
        num_tasks=cfg.num_tasks,
        scenario=cfg.scenario,  # type: ignore[arg-type]
        classes_per_task=cfg.classes_per_task,
        class_order=cfg.class_order,
        seed=s,
        max_train_per_task=cfg.max_train_per_task,
    )
    oracle = splits.oracle_public_labels()
    public = tuple(
        splits.public_x[torch.isin(oracle, torch.tensor(task.classes))] for task in sequence.tasks
    )
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


class FCLClient:
    """One client: its task sequence, its network, its local continual learner.

    Parameters
    ----------
    sequence : TaskSequence
        The client's sequence (its rows of every task).
    net : MultiHeadNet
        Its model (FedAvg loads the global weights into it every round).
    learner : Learner
        From :func:`build_client_learner`.
    seed : int
        Seeds the client's shuffling generator.
    """

    def __init__(self, sequence: TaskSequence, net: MultiHeadNet, learner: Learner, seed: int):
        self.sequence, self.net, self.learner = sequence, net, learner
        self.generator = torch.Generator().manual_seed(seed)

    def rows(self, t: int) -> int:
        """Training rows the client has of task ``t``."""
        return len(self.sequence.tasks[t].train_y)

    def train_task(self, t: int, anchor: MultiHeadNet | None = None) -> float:
        """One call of the local learner on task ``t``; ``anchor`` is LwF's teacher (FedAvg)."""
        if isinstance(self.learner, _AnchoredLwF):
            self.learner.anchor = anchor
        return self.learner.train_task(self.net, self.sequence, t, self.generator)

    def soft_predictions(self, inputs: Tensor, head: int, temperature: float) -> Tensor:
        """``softmax(logits / T)`` of ``head`` on ``inputs``: ``(n, head_size)`` CPU float32 —
        what an FD client uploads."""
        return predict_probs(_HeadOf(self.net, head), inputs, temperature=temperature)


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

    compatibility = ("task_il", "class_il")

    def __init__(
        self, scenario: str, train: TrainConfig, config: LwFConfig, teacher_spec: kd.KDSpec
    ) -> None:
        super().__init__(scenario, train, config)  # type: ignore[arg-type]
        self.teacher_spec = teacher_spec
        self._probs: Tensor | None = None

    def distil(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        probs: Tensor,
        generator: torch.Generator | None = None,
    ) -> float:
        """Train ``net`` at stage ``t`` on public ``data`` (``data.y`` = row of ``probs``,
        ``data.heads`` = the head each row is scored on) against ``probs`` ``(n, k)``."""
        if probs.shape[0] != len(data):
            raise ValueError(f"probs has {probs.shape[0]} rows but data has {len(data)}")
        self._probs = probs.to(module_device(net))
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
