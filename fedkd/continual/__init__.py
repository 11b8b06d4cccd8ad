"""Continual learning on the shared KD core: task sequences, learners, metrics, studies.

* :mod:`~fedkd.continual.tasks` — split (task-IL / class-IL), permuted and rotated sequences
  from any fedkd dataset;
* :mod:`~fedkd.continual.base` — the :class:`Learner` base (extension points, one training
  loop) on a :class:`MultiHeadNet` (:mod:`~fedkd.continual.network`);
* :mod:`~fedkd.continual.finetune`, :mod:`~fedkd.continual.lwf` (distilling through
  :mod:`fedkd.kd`), :mod:`~fedkd.continual.joint` — one method per module, named in
  :mod:`~fedkd.continual.registry` (:mod:`~fedkd.continual.learners` re-exports them all);
* :mod:`~fedkd.continual.metrics` — ACC, BWT, FWT, forgetting, intransigence from the
  accuracy matrix (pure numpy);
* :mod:`~fedkd.continual.study` — learners × seeds over one sequence, as a JSON-ready dict;
* :mod:`~fedkd.continual.plots` — accuracy-matrix heatmap and accuracy over tasks;
* :mod:`~fedkd.continual.federated` — federated continual learning: per-client task
  sequences, client learners, the FD student with LwF retention (imported on its own; the
  round loop is ``simulations/fcl.py``).

Nothing here imports Flower, Ray or Hydra; matplotlib is imported only when plotting.
"""

from fedkd.continual.base import Learner
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint, JointConfig
from fedkd.continual.lwf import LwF, LwFConfig, distill_targets
from fedkd.continual.metrics import (
    accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    intransigence,
    mean_std,
    summarize,
)
from fedkd.continual.network import MultiHeadNet, build_net, evaluate_tasks
from fedkd.continual.plots import plot_accuracy_matrix, plot_accuracy_over_tasks
from fedkd.continual.registry import available_learners, build_learner, register_learner
from fedkd.continual.study import (
    LearnerSpec,
    StudyConfig,
    TaskEvent,
    run_learner,
    run_study,
    study_steps,
)
from fedkd.continual.tasks import (
    SCENARIOS,
    Scenario,
    SequenceConfig,
    Task,
    TaskSequence,
    build_sequence,
    permuted_sequence,
    rotate_images,
    rotated_sequence,
    split_sequence,
)
from fedkd.continual.training_data import Batch, TrainingData, task_data

__all__ = [
    "SCENARIOS",
    "Batch",
    "FineTune",
    "Joint",
    "JointConfig",
    "Learner",
    "LearnerSpec",
    "LwF",
    "LwFConfig",
    "MultiHeadNet",
    "Scenario",
    "SequenceConfig",
    "StudyConfig",
    "Task",
    "TaskEvent",
    "TaskSequence",
    "TrainingData",
    "accuracy",
    "available_learners",
    "backward_transfer",
    "build_learner",
    "build_net",
    "build_sequence",
    "distill_targets",
    "evaluate_tasks",
    "forgetting",
    "forgetting_per_task",
    "forward_transfer",
    "intransigence",
    "mean_std",
    "permuted_sequence",
    "plot_accuracy_matrix",
    "plot_accuracy_over_tasks",
    "register_learner",
    "rotate_images",
    "rotated_sequence",
    "run_learner",
    "run_study",
    "split_sequence",
    "study_steps",
    "summarize",
    "task_data",
]
