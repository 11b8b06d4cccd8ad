"""Continual learners: fine-tuning, Learning without Forgetting, joint training.

The one import path for every learner-side name, kept for existing imports. Each idea lives
in one small module:

* :mod:`~fedkd.continual.network` — :class:`MultiHeadNet`, :func:`build_net`,
  :func:`evaluate_tasks`;
* :mod:`~fedkd.continual.training_data` — :class:`TrainingData`, :class:`Batch`,
  :func:`task_data`;
* :mod:`~fedkd.continual.base` — the :class:`Learner` base (the extension points) and the one
  training loop, :func:`fit`;
* :mod:`~fedkd.continual.finetune`, :mod:`~fedkd.continual.joint`, :mod:`~fedkd.continual.lwf`
  — one method per module;
* :mod:`~fedkd.continual.registry` — :func:`register_learner`, :func:`build_learner`.
"""

from __future__ import annotations

from fedkd.continual.base import Learner, fit, head_cross_entropy
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint, JointConfig
from fedkd.continual.lwf import LwF, LwFConfig, distill_targets
from fedkd.continual.network import MultiHeadNet, build_net, evaluate_tasks
from fedkd.continual.registry import available_learners, build_learner, register_learner
from fedkd.continual.training_data import Batch, TrainingData, task_data

__all__ = [
    "Batch",
    "FineTune",
    "Joint",
    "JointConfig",
    "Learner",
    "LwF",
    "LwFConfig",
    "MultiHeadNet",
    "TrainingData",
    "available_learners",
    "build_learner",
    "build_net",
    "distill_targets",
    "evaluate_tasks",
    "fit",
    "head_cross_entropy",
    "register_learner",
    "task_data",
]
