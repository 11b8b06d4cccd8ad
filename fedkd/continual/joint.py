"""Joint training on every task seen so far: the upper bound and the reference ``a*``."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from fedkd.continual.finetune import FineTune
from fedkd.continual.network import MultiHeadNet
from fedkd.continual.tasks import SCENARIOS, Scenario, TaskSequence
from fedkd.continual.training_data import TrainingData, task_data
from fedkd.training import TrainConfig

__all__ = ["Joint", "JointConfig"]


@dataclass(frozen=True)
class JointConfig:
    """Options of :class:`Joint`."""

    from_scratch: bool = True
    """Restart from the initial weights at every task, so the model after task ``k`` is the
    reference "trained jointly on tasks 0..k" of Chaudhry et al. (2018); False continues
    from the previous task's weights (cheaper; Avalanche's "Cumulative")."""


class Joint(FineTune):
    """Joint training on every task seen so far: the upper bound, and the reference ``a*``
    for intransigence (its accuracy-matrix diagonal)."""

    compatibility = SCENARIOS
    config_class = JointConfig

    def __init__(
        self,
        scenario: Scenario,
        train: TrainConfig | None = None,
        config: JointConfig | None = None,
    ) -> None:
        super().__init__(scenario, train)
        self.config = config if config is not None else JointConfig()
        self._initial: dict[str, Tensor] | None = None

    def training_data(self, sequence: TaskSequence, t: int) -> TrainingData:
        """The union of tasks ``0..t``, each row on its own task's head."""
        parts = [task_data(sequence, j) for j in range(t + 1)]
        return TrainingData(
            torch.cat([p.x for p in parts]),
            torch.cat([p.y for p in parts]),
            torch.cat([p.heads for p in parts]),
        )

    def before_task(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Remember the initial weights on the first call; restore them later if from_scratch."""
        if self._initial is None:
            self._initial = copy.deepcopy(net.state_dict())
        elif self.config.from_scratch:
            net.load_state_dict(self._initial)
