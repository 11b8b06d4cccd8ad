"""The network a continual learner trains: a fedkd backbone with one head per task.

:class:`MultiHeadNet` wraps any registered :mod:`fedkd.models` classifier; :func:`build_net`
builds one seeded for a task sequence, and :func:`evaluate_tasks` tests it on every task (one
row of the accuracy matrix).

This module imports only torch, numpy and fedkd; never Flower, Ray or Hydra.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from fedkd.continual.tasks import TaskSequence
from fedkd.models import Classifier, build_model
from fedkd.training import predict_logits

__all__ = ["MultiHeadNet", "build_net", "evaluate_tasks", "module_device"]


class MultiHeadNet(nn.Module):
    """A fedkd backbone with one linear head per task (task-IL) or a single shared head.

    Parameters
    ----------
    backbone : nn.Module
        Maps ``(n, *input_shape)`` to features ``(n, feature_dim)`` (a
        :class:`fedkd.models.Classifier`'s ``backbone``).
    feature_dim : int
        Width of the features.
    heads : sequence of nn.Linear
        One head per entry; head ``h`` maps features to ``(n, heads[h].out_features)``.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, heads: Sequence[nn.Linear]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("MultiHeadNet needs at least one head")
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.heads = nn.ModuleList(heads)

    @classmethod
    def from_classifier(cls, clf: Classifier, head_sizes: Sequence[int]) -> MultiHeadNet:
        """Reuse ``clf``'s backbone; its head becomes head 0 when the width fits, and the other
        heads are new ``nn.Linear`` layers (initialised from torch's global RNG)."""
        heads: list[nn.Linear] = []
        for h, size in enumerate(head_sizes):
            reuse = h == 0 and clf.head.out_features == size
            heads.append(clf.head if reuse else nn.Linear(clf.feature_dim, size))
        return cls(clf.backbone, clf.feature_dim, heads)

    def features(self, x: Tensor) -> Tensor:
        """Shared features ``(n, feature_dim)``."""
        return self.backbone(x)

    def forward(self, x: Tensor, head: int = 0) -> Tensor:
        """Logits ``(n, head_size)`` of head ``head``."""
        return self.heads[head](self.backbone(x))


class _HeadView(nn.Module):
    """``x -> net(x, head)``: lets single-output helpers (predict_logits) see one head."""

    def __init__(self, net: MultiHeadNet, head: int) -> None:
        super().__init__()
        self.net = net
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.head)


def build_net(
    model: str, sequence: TaskSequence, *, seed: int, **model_options: Any
) -> MultiHeadNet:
    """Build a registered fedkd model with the heads ``sequence`` needs, seeded.

    The global torch RNG is forked, so the same ``seed`` always gives the same initial
    weights (for every learner of a study) and the caller's RNG state is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        clf = build_model(model, sequence.input_shape, sequence.head_sizes[0], **model_options)
        return MultiHeadNet.from_classifier(clf, sequence.head_sizes)


def evaluate_tasks(
    net: MultiHeadNet, sequence: TaskSequence, *, batch_size: int = 1024
) -> NDArray[np.float64]:
    """Test accuracy on every task of ``sequence``: one row of the accuracy matrix, ``(T,)``.

    Task ``j`` is scored on its own head in task-IL (the task id is given) and by the argmax
    over the whole shared head otherwise (class-IL must pick among every class).
    """
    accs = []
    for j, task in enumerate(sequence.tasks):
        view = _HeadView(net, sequence.head_of(j))
        logits = predict_logits(view, task.test_x, batch_size=batch_size)  # (n, head_size)
        accs.append(float((logits.argmax(dim=1) == task.test_y).double().mean()))
    return np.asarray(accs, dtype=np.float64)


def module_device(net: nn.Module) -> torch.device:
    """The device of ``net``'s first parameter (fedkd networks live on one device)."""
    return next(net.parameters()).device
