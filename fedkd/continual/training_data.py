"""What a continual learner trains on: :class:`TrainingData` for one task and its minibatches.

A learner chooses its examples (one task, or every task so far for joint training) as a
:class:`TrainingData`; the training loop moves one :class:`Batch` at a time to the model's
device. Each row carries the head it is scored on, so rows of different task-IL tasks can
share a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from fedkd.continual.tasks import TaskSequence

__all__ = ["Batch", "TrainingData", "task_data"]


@dataclass(frozen=True, eq=False)
class Batch:
    """One minibatch on the model's device; ``index`` addresses rows of the TrainingData."""

    x: Tensor  # (b, *input_shape)
    y: Tensor  # (b,) targets on each row's head
    heads: Tensor  # (b,) head of each row
    index: Tensor  # (b,) CPU row indices into the TrainingData
    single_head: int | None  # the head of every row, when they share one


@dataclass(frozen=True, eq=False)
class TrainingData:
    """The examples a learner trains on for one task: inputs, targets and each row's head."""

    x: Tensor  # (n, *input_shape)
    y: Tensor  # (n,)
    heads: Tensor  # (n,) int64

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        if n == 0 or self.y.shape != (n,) or self.heads.shape != (n,):
            raise ValueError(
                f"TrainingData needs n >= 1 rows and (n,) targets/heads, got x "
                f"{tuple(self.x.shape)}, y {tuple(self.y.shape)}, heads {tuple(self.heads.shape)}"
            )

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def single_head(self) -> int | None:
        """The head every row uses, or None when rows use different heads (joint task-IL)."""
        first = int(self.heads[0])
        return first if bool((self.heads == first).all()) else None

    def batch(self, index: Tensor, device: torch.device) -> Batch:
        """Rows ``index`` moved to ``device``."""
        heads = self.heads[index]
        single = int(heads[0]) if bool((heads == heads[0]).all()) else None
        return Batch(
            x=self.x[index].to(device, non_blocking=True),
            y=self.y[index].to(device, non_blocking=True),
            heads=heads.to(device),
            index=index,
            single_head=single,
        )


def task_data(sequence: TaskSequence, t: int) -> TrainingData:
    """Training data of task ``t`` alone, every row on head ``sequence.head_of(t)``."""
    task = sequence.tasks[t]
    heads = torch.full((len(task.train_y),), sequence.head_of(t), dtype=torch.long)
    return TrainingData(task.train_x, task.train_y, heads)
