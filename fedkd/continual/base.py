"""The extension point of every continual method: :class:`Learner` and its one training loop.

One small base class runs the same minibatch loop (:func:`fit`) for every method; a method
changes only what it must through four extension points, called in this order for each task:

1. :meth:`Learner.training_data` — which examples to train on (joint training: all tasks so
   far; a replay method would add its buffer here);
2. :meth:`Learner.before_task` — set-up (LwF: freeze a teacher copy, warm up the new head,
   cache the teacher's outputs; joint: reset the weights);
3. :meth:`Learner.batch_loss` — the loss of one minibatch (LwF: cross-entropy + λ·KD; EWC
   would add its quadratic penalty here);
4. :meth:`Learner.after_task` — bookkeeping (EWC would estimate its Fisher matrix here).

Each method declares which scenarios it supports (``compatibility``, as in Mammoth), checked
when built, and lives in its own module (:mod:`~fedkd.continual.finetune`,
:mod:`~fedkd.continual.joint`, :mod:`~fedkd.continual.lwf`); :mod:`~fedkd.continual.registry`
names them.

This module imports only torch and fedkd; never Flower, Ray or Hydra.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.continual.network import MultiHeadNet, module_device
from fedkd.continual.tasks import Scenario, TaskSequence
from fedkd.continual.training_data import Batch, TrainingData, task_data
from fedkd.training import TrainConfig, iterate_minibatches, make_optimizer

__all__ = ["Learner", "fit", "head_cross_entropy"]


def head_cross_entropy(
    net: MultiHeadNet, features: Tensor, batch: Batch, label_smoothing: float = 0.0
) -> Tensor:
    """Mean cross-entropy of each row on its own head; ``features`` is ``(b, feature_dim)``."""
    if batch.single_head is not None:
        logits = net.heads[batch.single_head](features)  # (b, head_size)
        return F.cross_entropy(logits, batch.y, label_smoothing=label_smoothing)
    total = features.new_zeros(())
    for h in batch.heads.unique().tolist():
        rows = batch.heads == h
        logits = net.heads[h](features[rows])
        total = total + F.cross_entropy(
            logits, batch.y[rows], reduction="sum", label_smoothing=label_smoothing
        )
    return total / batch.y.shape[0]


def fit(
    net: nn.Module,
    data: TrainingData,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None,
    batch_loss: Callable[[Batch], Tensor],
) -> float:
    """``cfg.epochs`` epochs of minibatch steps; returns the last epoch's mean batch loss.

    The one training loop of every learner, so methods differ only in ``batch_loss``.
    """
    device = module_device(net)
    net.train()
    mean = float("nan")
    for epoch in range(cfg.epochs):
        total: Tensor | float = 0.0  # on the loss's device: one sync per epoch
        for idx in iterate_minibatches(len(data), cfg.batch_size, generator):
            loss = batch_loss(data.batch(idx, device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach().double() * idx.numel()
        mean = float(total) / len(data)
        if not math.isfinite(mean):
            raise RuntimeError(f"training diverged (loss {mean}) in epoch {epoch}; lower lr")
    return mean


class Learner(ABC):
    """A continual-learning method: trains one network through a task sequence, task by task.

    Subclasses set ``compatibility`` (the scenarios they support) and override the extension
    points they need; :meth:`train_task` stays the same for all. Construction raises
    ``ValueError`` for a scenario the method does not support.

    Parameters
    ----------
    scenario : {"task_il", "class_il", "domain_il"}
        The scenario of the sequences this learner will be given.
    train : TrainConfig
        Epochs per task, batch size, optimizer settings (a fresh optimizer per task).
    """

    name: ClassVar[str] = ""
    compatibility: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type | None] = None
    """Dataclass of the method's options, built by :func:`build_learner`; None: no options."""

    def __init__(self, scenario: Scenario, train: TrainConfig | None = None) -> None:
        if scenario not in self.compatibility:
            raise ValueError(
                f"learner {self.name or type(self).__name__!r} supports {self.compatibility}, "
                f"not scenario {scenario!r}"
            )
        self.scenario = scenario
        self.train = train if train is not None else TrainConfig()

    def train_task(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        generator: torch.Generator | None = None,
    ) -> float:
        """Train ``net`` on task ``t`` of ``sequence``; returns the last epoch's mean loss."""
        if sequence.scenario != self.scenario:
            raise ValueError(
                f"learner was built for {self.scenario!r} but the sequence is {sequence.scenario!r}"
            )
        if len(net.heads) != len(sequence.head_sizes):
            raise ValueError(
                f"net has {len(net.heads)} heads but the sequence needs {len(sequence.head_sizes)}"
            )
        data = self.training_data(sequence, t)
        self.before_task(net, sequence, t, data, generator)
        optimizer = make_optimizer(net, self.train)
        loss = fit(
            net,
            data,
            self.train,
            optimizer,
            generator,
            lambda batch: self.batch_loss(net, batch, sequence, t),
        )
        self.after_task(net, sequence, t)
        return loss

    # ---- extension points -------------------------------------------------------------

    def training_data(self, sequence: TaskSequence, t: int) -> TrainingData:
        """Examples to train on for task ``t``; default: task ``t``'s training set."""
        return task_data(sequence, t)

    def before_task(  # noqa: B027 (an optional hook: doing nothing is the default)
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Called before the optimizer is built; default: nothing."""

    @abstractmethod
    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """Scalar loss of one minibatch while training task ``t``."""

    def after_task(self, net: MultiHeadNet, sequence: TaskSequence, t: int) -> None:  # noqa: B027
        """Called after the last epoch of task ``t``; default: nothing."""
