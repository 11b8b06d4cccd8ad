"""Federated continual learning, the server's ML: the student's distillation with LwF
retention, weight averaging (FedAvg) and byte counts. The stage loop is
:mod:`strategies.fcl`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from fedkd import kd
from fedkd.compression import encode_probs, payload_nbytes
from fedkd.continual.base import fit
from fedkd.continual.lwf import LwF, LwFConfig, distill_targets
from fedkd.continual.network import MultiHeadNet, module_device
from fedkd.continual.tasks import TaskSequence
from fedkd.continual.training_data import Batch, TrainingData
from fedkd.models import model_nbytes
from fedkd.training import TrainConfig, make_optimizer

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

    compatibility = ("task_il", "class_il", "domain_il")

    def __init__(
        self, scenario: str, train: TrainConfig, config: LwFConfig, teacher_spec: kd.KDSpec
    ) -> None:
        super().__init__(scenario, train, config)  # type: ignore[arg-type]
        self.teacher_spec = teacher_spec
        self._probs: Tensor | None = None
        self._old: Sequence[int] | None = None

    def distil(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        probs: Tensor,
        generator: torch.Generator | None = None,
        old_tasks: Sequence[int] | None = None,
    ) -> float:
        """Train ``net`` at stage ``t`` on public ``data`` (``data.y`` = row of ``probs``,
        ``data.heads`` = the head each row is scored on) against ``probs`` ``(n, k)``.

        ``old_tasks``: the tasks the retention term keeps (those the federation met at earlier
        stages); default ``range(t)``, every client on the same schedule."""
        if probs.shape[0] != len(data):
            raise ValueError(f"probs has {probs.shape[0]} rows but data has {len(data)}")
        self._probs = probs.to(module_device(net))
        self._old = old_tasks
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

    def targets_for(
        self, sequence: TaskSequence, t: int
    ) -> list[tuple[int, tuple[int, ...] | None]]:
        """Retention targets: the tasks met before this stage (``old_tasks`` of ``distil``)."""
        return distill_targets(sequence, t, self.config.distill, old=self._old)

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
