"""Federated continual learning: one task sequence cut across clients, public inputs per
task, and the order in which each client meets the tasks (its schedule)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from fedkd.continual.tasks import _EMBEDDED, SequenceConfig, TaskSequence, sequence_from_splits
from fedkd.data import load_splits, partition_indices

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
