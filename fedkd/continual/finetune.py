"""Naive fine-tuning: the forgetting lower bound every other method is compared with."""

from __future__ import annotations

from torch import Tensor

from fedkd.continual.base import Learner, head_cross_entropy
from fedkd.continual.network import MultiHeadNet
from fedkd.continual.tasks import SCENARIOS, TaskSequence
from fedkd.continual.training_data import Batch

__all__ = ["FineTune"]


class FineTune(Learner):
    """Naive fine-tuning: plain cross-entropy on each new task — the forgetting lower bound."""

    compatibility = SCENARIOS

    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """Cross-entropy of every row on its head."""
        return head_cross_entropy(net, net.features(batch.x), batch, self.train.label_smoothing)
