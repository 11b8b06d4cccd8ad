"""Federated continual learning, the server side: one stage loop for FedAvg or FD.

Every client meets a sequence of tasks (:mod:`fedkd.continual.federated`), on the same or a
shifted schedule, and learns each with a local continual learner. Per stage the federation
either averages weights (FedAvg, ``rounds_per_task`` rounds, the baseline) or collects soft
predictions on the public inputs of the tasks the clients have met, aggregates them with the
rules of :mod:`strategies.aggregation` and distils the student (FD), which keeps the tasks met
at earlier stages with its LwF retention term. After every stage the student and every client
are tested on every task: their accuracy matrices.

The loop talks to the clients through a :class:`Federation`: :class:`InProcessFederation`
calls client objects directly; :class:`strategies.fcl_app.GridFederation` sends Flower messages
to the fedkd ClientApp (Ray simulation, the in-process grid, or SuperNodes). The numbers are
the same either way (tested).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from fedkd import kd
from fedkd.continual import (
    LwFConfig,
    SequenceConfig,
    accuracy,
    backward_transfer,
    build_net,
    evaluate_tasks,
    forgetting,
)
from fedkd.continual.federated import (
    CLIENT_LEARNERS,
    ClientUpload,
    FCLClient,
    FCLClientSpec,
    FederatedTasks,
    Query,
    StudentDistiller,
    average_state_dicts,
    prediction_nbytes,
    stage_queries,
    weights_nbytes,
)
from fedkd.continual.training_data import TrainingData
from fedkd.models import available_models
from fedkd.training import TrainConfig
from strategies.aggregation import AggregationContext, aggregate, available_rules

__all__ = [
    "FCLConfig",
    "Federation",
    "InProcessFederation",
    "VariantSpec",
    "client_spec",
    "run_variant",
    "scores",
]

log = logging.getLogger(__name__)

FederationKind = Literal["fedavg", "fd"]


@dataclass(frozen=True)
class VariantSpec:
    """One compared method: how the federation shares, and what each client learns with."""

    label: str
    """Key in metrics.json and plot names (e.g. ``fd_lwf``)."""
    federation: FederationKind = "fd"
    """``fedavg``: clients train from the global weights each round, the server averages
    them. ``fd``: clients keep their own models and upload soft predictions on public inputs;
    the server distils a student from their aggregate."""
    learner: str = "lwf"
    """Each client's local continual learner: ``finetune``, ``lwf`` or ``joint``."""
    learner_options: Mapping[str, Any] = field(default_factory=dict)
    """``LwFConfig`` fields for ``lwf`` (e.g. ``lam``)."""
    server_lam: float = 0.0
    """FD only: λ of the student's LwF retention of its own earlier outputs; 0 = none."""

    def __post_init__(self) -> None:
        if self.federation not in ("fedavg", "fd"):
            raise ValueError(f"federation must be 'fedavg' or 'fd', got {self.federation!r}")
        if self.learner not in CLIENT_LEARNERS:
            raise ValueError(f"learner must be one of {CLIENT_LEARNERS}, got {self.learner!r}")
        if not self.server_lam >= 0:
            raise ValueError(f"server_lam must be >= 0, got {self.server_lam!r}")
        if self.federation == "fedavg" and self.server_lam != 0:
            raise ValueError("server_lam applies to FD's student only; FedAvg has none")


@dataclass(frozen=True)
class FCLConfig:
    """A federated continual-learning comparison. ``__post_init__`` raises ``ValueError``."""

    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    """The task sequence (``split``: task-IL or class-IL)."""
    variants: tuple[VariantSpec, ...] = (VariantSpec("fd_lwf", "fd", "lwf", server_lam=1.0),)
    """Methods to compare, in report order."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """One run per seed: data split, partition, initial weights, shuffling."""
    num_clients: int = 5
    """Clients; every client takes part in every round."""
    partition: Literal["dirichlet", "iid"] = "dirichlet"
    """How each task's rows are shared out: label skew ~ Dir(alpha) inside a task, or IID."""
    alpha: float = 0.5
    """Dirichlet concentration inside a task."""
    min_rows: int = 8
    """Every client gets at least this many rows of every task."""
    public_fraction: float = 0.3
    """Share of the dataset held out as public, unlabelled inputs (grouped by task)."""
    rounds_per_task: int = 3
    """FedAvg rounds per task; FD clients train for the same number of local epochs."""
    local: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2))
    """Client optimisation per round (``epochs`` = local epochs per round)."""
    server: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10))
    """FD student distillation per task."""
    temperature: float = 2.0
    """FD: clients soften their predictions at T; the student is softened at T too."""
    aggregation: str = "mean"
    """FD aggregation rule (:func:`strategies.aggregation.available_rules`)."""
    query: Literal["seen", "current"] = "seen"
    """FD: clients predict on the public inputs of every task seen so far, or of the current
    task only (fewer bytes; the student then relies on its retention term for old tasks)."""
    model: str = "mlp"
    """Registered fedkd model, the same for clients and student."""
    model_options: Mapping[str, Any] = field(default_factory=dict)
    """Architecture options (e.g. ``hidden_sizes``)."""
    device: str = "cpu"
    """Torch device of every model."""
    schedule_shift: int = 0
    """0: every client meets task ``t`` at stage ``t``. ``k > 0``: client ``c`` starts at task
    ``(c * k) mod T`` and meets the rest in order, wrapping round (a shifted schedule;
    :func:`fedkd.continual.federated.client_order`)."""

    def __post_init__(self) -> None:
        labels = [v.label for v in self.variants]
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"FCLConfig.variants: need unique labels, got {labels}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"FCLConfig.seeds must be distinct and non-empty, got {self.seeds}")
        if self.sequence.task_count < 2:
            raise ValueError("FCLConfig.sequence.num_tasks must be >= 2 (forgetting needs two)")
        checks = [
            ("num_clients", self.num_clients >= 1),
            ("rounds_per_task", self.rounds_per_task >= 1),
            ("min_rows", self.min_rows >= 1),
            ("alpha", self.alpha > 0),
            ("public_fraction", 0 < self.public_fraction < 1),
            ("temperature", self.temperature > 0),
            ("aggregation", self.aggregation in available_rules()),
            ("query", self.query in ("seen", "current")),
            ("partition", self.partition in ("dirichlet", "iid")),
            ("model", self.model in available_models()),
            ("schedule_shift", isinstance(self.schedule_shift, int) and self.schedule_shift >= 0),
        ]
        for name, ok in checks:
            if not ok:
                raise ValueError(f"FCLConfig.{name} is invalid: {getattr(self, name)!r}")


# --------------------------------------------------------------------------- transport


class Federation(Protocol):
    """How the stage loop reaches the clients. Each call returns one entry per client that
    answered well; a client that did not is left out (and logged by the transport)."""

    def fedavg_round(
        self, weights: Mapping[str, Tensor], stage: int, task_start: bool
    ) -> list[tuple[dict[str, Tensor], int]]:
        """Every client trains its stage's task from ``weights``: (new weights, rows)."""
        ...

    def fd_stage(self, stage: int, query: Query) -> list[ClientUpload]:
        """Every client learns its stage's task, then predicts on the tasks
        :func:`fedkd.continual.federated.stage_queries` names for it."""
        ...

    def evaluate(self) -> list[list[float] | None]:
        """Every client's test accuracy on every task (``None`` for a client that failed)."""
        ...


class InProcessFederation:
    """Clients as Python objects in this process (fast; what the tests compare against)."""

    def __init__(self, clients: Sequence[FCLClient], tasks: FederatedTasks, temperature: float):
        self.clients, self.tasks, self.temperature = list(clients), tasks, temperature

    def fedavg_round(
        self, weights: Mapping[str, Tensor], stage: int, task_start: bool
    ) -> list[tuple[dict[str, Tensor], int]]:
        return [
            (c.fedavg_round(weights, stage, task_start), c.rows(c.task_at(stage)))
            for c in self.clients
        ]

    def fd_stage(self, stage: int, query: Query) -> list[ClientUpload]:
        return [c.fd_stage(stage, query, self.temperature) for c in self.clients]

    def evaluate(self) -> list[list[float] | None]:
        return [c.evaluate(self.tasks.sequence) for c in self.clients]


# --------------------------------------------------------------------------- one run


def client_spec(variant: VariantSpec, cfg: FCLConfig, seed: int) -> FCLClientSpec:
    """What every client of ``variant`` needs to build itself. FD clients train, per stage,
    as many epochs as FedAvg's clients do over the stage's rounds."""
    local = cfg.local
    if variant.federation == "fd":
        local = replace(cfg.local, epochs=cfg.local.epochs * cfg.rounds_per_task)
    return FCLClientSpec(
        sequence=cfg.sequence,
        num_clients=cfg.num_clients,
        seed=seed,
        learner=variant.learner,
        learner_options=dict(variant.learner_options),
        local=local,
        partition=cfg.partition,
        alpha=cfg.alpha,
        min_rows=cfg.min_rows,
        public_fraction=cfg.public_fraction,
        schedule_shift=cfg.schedule_shift,
        model=cfg.model,
        model_options=dict(cfg.model_options),
        device=cfg.device,
    )


def _fedavg_stage(
    student: torch.nn.Module, federation: Federation, stage: int, cfg: FCLConfig
) -> int:
    """``rounds_per_task`` FedAvg rounds; returns the bytes moved (weights down and up)."""
    nbytes, size = 0, weights_nbytes(student)
    for r in range(cfg.rounds_per_task):
        replies = federation.fedavg_round(student.state_dict(), stage, task_start=r == 0)
        nbytes += size * (cfg.num_clients + len(replies))  # the model down to each, up from each
        if not replies:
            log.warning("stage %d round %d: no client replied; the model is unchanged", stage, r)
            continue
        states, rows = zip(*replies, strict=True)
        student.load_state_dict(average_state_dicts(states, rows))
    return nbytes


def _teacher(task: int, uploads: Sequence[ClientUpload], rule: str) -> Tensor | None:
    """The aggregated teacher of ``task`` over the clients that sent it (None: nobody did)."""
    sent = [u for u in uploads if task in u.probs]
    if not sent:
        return None
    ctx = AggregationContext(
        num_examples=np.array([u.rows[task] for u in sent]),
        class_counts=np.stack([u.class_counts[task] for u in sent]),
    )
    probs = torch.stack([u.probs[task] for u in sent]).numpy()  # (clients, P_j, k)
    return torch.as_tensor(aggregate(rule, probs, ctx))


def _fd_stage(
    student: torch.nn.Module,
    federation: Federation,
    tasks: FederatedTasks,
    stage: int,
    orders: Sequence[Sequence[int]],
    met: Sequence[int],
    cfg: FCLConfig,
    distiller: StudentDistiller,
    generator: torch.Generator,
) -> int:
    """Clients learn their stage's task and upload predictions; the student distils the
    aggregate, keeping the tasks ``met`` at earlier stages. Returns the bytes uploaded."""
    seq = tasks.sequence
    queries = [stage_queries(order, stage, cfg.query) for order in orders]
    uploads = federation.fd_stage(stage, cfg.query)
    nbytes = sum(prediction_nbytes(p) for u in uploads for p in u.probs.values())
    inputs, teachers, heads = [], [], []
    for j in sorted({j for q in queries for j in q}):
        teacher = _teacher(j, uploads, cfg.aggregation)  # (P_j, k)
        if teacher is None:
            log.warning("stage %d: no prediction of task %d arrived; not distilled", stage, j)
            continue
        inputs.append(tasks.public[j])
        teachers.append(teacher)
        heads.append(torch.full((len(teacher),), seq.head_of(j), dtype=torch.long))
    if not teachers:
        log.warning("stage %d: no client uploaded; the student is unchanged", stage)
        return nbytes
    x = torch.cat(inputs)
    data = TrainingData(x, torch.arange(len(x)), torch.cat(heads))  # y: row ids of the teacher
    distiller.distil(
        student,  # type: ignore[arg-type]
        seq,
        stage,
        data,
        torch.cat(teachers),
        generator,
        old_tasks=met,
    )
    return nbytes


def run_variant(
    variant: VariantSpec, tasks: FederatedTasks, cfg: FCLConfig, seed: int, federation: Federation
) -> dict[str, Any]:
    """One variant through every stage for one seed: accuracy matrices, bytes, schedules.

    Returns ``student`` (T×T, columns = task ids), ``clients`` (clients×T×T; ``None`` rows
    where a client failed to report), ``bytes_per_task`` (per stage), ``orders`` (each
    client's task order), ``learned_at`` (the stage at which each task was first met) and
    ``seconds``.
    """
    seq = tasks.sequence
    num_tasks = seq.num_tasks
    spec = client_spec(variant, cfg, seed)
    orders = [spec.order(c) for c in range(cfg.num_clients)]
    student = build_net(cfg.model, seq, seed=seed, **dict(cfg.model_options)).to(cfg.device)
    lwf = LwFConfig(temperature=cfg.temperature, lam=variant.server_lam, t2_scaling=True)
    teacher_spec = kd.KDSpec(temperature=cfg.temperature, t2_scaling=True)
    distiller = StudentDistiller(seq.scenario, cfg.server, lwf, teacher_spec)
    generator = torch.Generator().manual_seed(seed)
    student_rows: list[list[float]] = []
    client_rows: list[list[list[float] | None]] = [[] for _ in orders]
    nbytes: list[int] = []
    learned_at: dict[int, int] = {}
    start = time.perf_counter()
    for stage in range(num_tasks):
        if variant.federation == "fedavg":
            nbytes.append(_fedavg_stage(student, federation, stage, cfg))
        else:
            met = sorted(learned_at)
            nbytes.append(
                _fd_stage(student, federation, tasks, stage, orders, met, cfg, distiller, generator)
            )
        for order in orders:
            learned_at.setdefault(order[stage], stage)
        student_rows.append(evaluate_tasks(student, seq).tolist())  # type: ignore[arg-type]
        for c, row in enumerate(federation.evaluate()):
            client_rows[c].append(row)
    return {
        "student": student_rows,
        "clients": client_rows,
        "bytes_per_task": nbytes,
        "orders": [list(o) for o in orders],
        "learned_at": [learned_at[j] for j in range(num_tasks)],
        "seconds": time.perf_counter() - start,
    }


def scores(matrix: Any, learned_at: Sequence[int] | None = None) -> dict[str, float]:
    """ACC, BWT (from the stage each task was first learnt) and forgetting of one matrix."""
    return {
        "acc": accuracy(matrix),
        "bwt": backward_transfer(matrix, learned_at),
        "forgetting": forgetting(matrix),
    }


def run_scores(run: Mapping[str, Any]) -> tuple[dict[str, float], list[dict[str, float] | None]]:
    """The student's scores and each client's, a client's matrix read in its own task order
    (so its BWT and forgetting are measured from when *it* learnt each task); ``None`` for a
    client with a missing row."""
    student = scores(run["student"], run["learned_at"])
    clients: list[dict[str, float] | None] = []
    for matrix, order in zip(run["clients"], run["orders"], strict=True):
        if any(row is None for row in matrix):
            clients.append(None)
            continue
        clients.append(scores(np.asarray(matrix)[:, list(order)]))
    return student, clients


def in_process(
    variant: VariantSpec, cfg: FCLConfig, seed: int
) -> tuple[FederatedTasks, Federation]:
    """The run's data and an :class:`InProcessFederation` of freshly built clients."""
    spec = client_spec(variant, cfg, seed)
    tasks = spec.tasks()
    clients = [spec.build_client(c) for c in range(cfg.num_clients)]
    return tasks, InProcessFederation(clients, tasks, cfg.temperature)
