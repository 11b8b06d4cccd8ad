"""Learning without Forgetting (Li & Hoiem, 2017): its options, what it distils, the learner.

The distillation loss comes from :mod:`fedkd.kd` — the same core Federated Distillation
uses — called as ``kd.distillation_loss`` so that one fix lands everywhere. ``docs/lwf.md``
maps every option to the paper and to other libraries' defaults.

This module imports only torch and fedkd; never Flower, Ray or Hydra.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd import kd
from fedkd.continual.base import fit, head_cross_entropy
from fedkd.continual.finetune import FineTune
from fedkd.continual.network import MultiHeadNet, module_device
from fedkd.continual.tasks import SCENARIOS, Scenario, TaskSequence
from fedkd.continual.training_data import Batch, TrainingData
from fedkd.training import TrainConfig, make_optimizer

__all__ = [
    "DistillUnits",
    "LwF",
    "LwFConfig",
    "TeacherMode",
    "TeacherOutputs",
    "distill_targets",
    "warmup_generator",
]


DistillUnits = Literal["old", "all"]
TeacherOutputs = Literal["cached", "per_batch"]
TeacherMode = Literal["eval", "train"]


@dataclass(frozen=True)
class LwFConfig:
    """Options of Learning without Forgetting (Li & Hoiem, 2017); see ``docs/lwf.md``.

    Defaults follow the paper: T = 2, λ = 1, no T² factor, only the old tasks' outputs
    distilled, teacher outputs recorded once per task with the teacher frozen in eval mode,
    no warm-up. ``__post_init__`` raises ``ValueError`` naming the offending field.
    """

    temperature: float = 2.0
    """Softening temperature T of teacher and student (paper: 2)."""
    lam: float = 1.0
    """Weight λ_o of the distillation term (paper: 1; Mammoth 0.5; PyCIL 3)."""
    lam_schedule: tuple[float, ...] | None = None
    """λ per task: entry ``t`` is used while training task ``t`` (entry 0 is never used, task 0
    has no teacher), as Avalanche's list-valued ``alpha``; overrides ``lam``."""
    t2_scaling: bool = False
    """Multiply the KD term by T² (Hinton et al., 2015). The paper does not."""
    divergence: kd.Divergence = "kl"
    """``kl`` has the gradient of the paper's modified cross-entropy (``soft_ce``) but reads 0
    when the student matches the teacher; ``soft_ce`` reproduces the paper's loss value."""
    distill: DistillUnits = "old"
    """``old``: only units of earlier tasks (old heads in task-IL, old classes' columns in
    class-IL; the whole shared head in domain-IL). ``all``: every unit of every head."""
    teacher_outputs: TeacherOutputs = "cached"
    """``cached``: teacher outputs on the new task's inputs computed once per task (the paper's
    "record Y_o"; Mammoth); ``per_batch``: recomputed every step (Avalanche, FACIL, PyCIL).
    Identical without data augmentation and with an eval-mode teacher."""
    teacher_mode: TeacherMode = "eval"
    """Mode of the frozen teacher's forward pass; ``train`` makes BatchNorm use batch
    statistics (and dropout active), which is what a copy left in train mode does."""
    warmup_epochs: int = 0
    """Epochs of the paper's warm-up: train only the new task's head on frozen features
    before joint optimisation (class-IL: only the new classes' units). 0 disables it."""
    warmup_lr: float | None = None
    """Learning rate of the warm-up; None uses the training lr."""

    def __post_init__(self) -> None:
        checks = [
            ("temperature", _positive(self.temperature), "a finite number > 0"),
            ("lam", _non_negative(self.lam), "a finite number >= 0"),
            (
                "lam_schedule",
                self.lam_schedule is None or all(_non_negative(v) for v in self.lam_schedule),
                "None or a list of finite numbers >= 0",
            ),
            ("divergence", self.divergence in kd.DIVERGENCES, f"one of {kd.DIVERGENCES}"),
            ("distill", self.distill in ("old", "all"), "'old' or 'all'"),
            (
                "teacher_outputs",
                self.teacher_outputs in ("cached", "per_batch"),
                "'cached' or 'per_batch'",
            ),
            ("teacher_mode", self.teacher_mode in ("eval", "train"), "'eval' or 'train'"),
            (
                "warmup_epochs",
                isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0,
                "an int >= 0",
            ),
            ("warmup_lr", self.warmup_lr is None or _positive(self.warmup_lr), "None or > 0"),
            ("t2_scaling", isinstance(self.t2_scaling, bool), "a bool"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ValueError(f"LwFConfig.{name} must be {want}, got {getattr(self, name)!r}")
        if self.lam_schedule is not None:
            object.__setattr__(self, "lam_schedule", tuple(float(v) for v in self.lam_schedule))

    @property
    def spec(self) -> kd.KDSpec:
        """The :class:`fedkd.kd.KDSpec` handed to the shared KD core."""
        return kd.KDSpec(
            temperature=float(self.temperature),
            divergence=self.divergence,
            t2_scaling=self.t2_scaling,
        )

    def lam_for(self, t: int) -> float:
        """λ while training task ``t``."""
        if self.lam_schedule is None:
            return float(self.lam)
        if t >= len(self.lam_schedule):
            raise ValueError(
                f"LwFConfig.lam_schedule has {len(self.lam_schedule)} entries; task {t} needs one"
            )
        return self.lam_schedule[t]


def _positive(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _non_negative(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def distill_targets(
    sequence: TaskSequence, t: int, units: DistillUnits, old: Sequence[int] | None = None
) -> list[tuple[int, tuple[int, ...] | None]]:
    """Which outputs LwF distils while training task ``t``: ``[(head, columns or None)]``.

    Each entry is one softmax: task-IL distils each old head separately (as Li & Hoiem and
    Avalanche do; FACIL instead concatenates old heads under one softmax); class-IL distils the
    old classes' columns of the shared head, renormalised over them; ``None`` means every
    column of that head. Empty for task 0 (no teacher yet).

    ``old`` lists the positions of the tasks already learnt when that is not ``range(t)`` (a
    federation's student on shifted schedules meets several tasks per stage).
    """
    old = list(range(t)) if old is None else sorted(old)
    if not old:
        return []
    if units == "all":
        return [(h, None) for h in range(len(sequence.head_sizes))]
    if sequence.scenario == "task_il":
        return [(sequence.head_of(j), None) for j in old]
    if sequence.scenario == "class_il":
        columns = tuple(u for j in old for u in sequence.tasks[j].units)
        return [(0, columns)]
    return [(0, None)]  # domain-IL: every class is an old class


class LwF(FineTune):
    """Learning without Forgetting (Li & Hoiem, 2017): cross-entropy on the new task plus
    ``λ ×`` a distillation term that keeps the old outputs on the new inputs close to those
    of a frozen copy of the network taken before the task.

    The distillation term is ``fedkd.kd.distillation_loss`` — the core shared with Federated
    Distillation — summed over :func:`distill_targets`. With ``λ = 0`` (for a task) the term is
    skipped and the step is exactly fine-tuning's.
    """

    compatibility = SCENARIOS
    config_class = LwFConfig

    def __init__(
        self, scenario: Scenario, train: TrainConfig | None = None, config: LwFConfig | None = None
    ) -> None:
        super().__init__(scenario, train)
        self.config = config if config is not None else LwFConfig()
        if scenario == "domain_il" and self.config.warmup_epochs > 0:
            # The paper's warm-up trains only the new task's parameters. A domain-IL task adds
            # none: every unit of the shared head belongs to old classes, and training it
            # without distillation erases the old tasks before joint optimisation starts.
            raise ValueError(
                "LwFConfig.warmup_epochs must be 0 for scenario 'domain_il': the warm-up trains "
                "only a new task's units, and a domain-IL task has none (every unit of the "
                f"shared head is an old class's); got {self.config.warmup_epochs}"
            )
        self._spec = self.config.spec
        self._teacher: MultiHeadNet | None = None
        self._targets: list[tuple[int, Tensor | None]] = []  # (head, column index or None)
        self._cache: dict[int, Tensor] = {}  # head -> (n, head_size) teacher logits, on device
        self._stacked: Tensor | None = None  # (heads, n, k) cached logits of stackable heads
        self._validated = False  # the KD core has checked one batch of this task

    def before_task(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Freeze a teacher copy, optionally warm up the new head, then cache teacher outputs.

        The warm-up shuffles with its own generator (:func:`warmup_generator`), so switching
        it on or off leaves the batch order of the joint optimisation unchanged.
        """
        self.after_task(net, sequence, t)
        device = module_device(net)
        self._targets = [  # column indices live on the model's device, built once per task
            (head, None if columns is None else torch.tensor(columns, device=device))
            for head, columns in self.targets_for(sequence, t)
        ]
        if t > 0 and self.config.lam_for(t) == 0:
            self._targets = []
        if self._targets:
            self._teacher = self.teacher_copy(net).requires_grad_(False)
            self._teacher.train(self.config.teacher_mode == "train")
        if t > 0 and self.config.warmup_epochs > 0:
            self._warm_up(net, sequence, t, data, warmup_generator(generator, t))
        if self._teacher is not None and self.config.teacher_outputs == "cached":
            self._cache = self._teacher_logits_full(data.x)
            if self._stackable(net):  # one (heads, n, k) tensor: no per-batch torch.cat
                self._stacked = torch.stack([self._cache[h] for h, _ in self._targets])

    def targets_for(
        self, sequence: TaskSequence, t: int
    ) -> list[tuple[int, tuple[int, ...] | None]]:
        """The outputs the retention term keeps while training task ``t``
        (:func:`distill_targets`). The federation's student overrides it: on shifted schedules
        the tasks it must keep are those seen at earlier stages, not positions ``< t``."""
        return distill_targets(sequence, t, self.config.distill)

    def teacher_copy(self, net: MultiHeadNet) -> MultiHeadNet:
        """The frozen teacher of the task about to start: a copy of ``net`` as it is now.

        A federated client overrides this to distil from the federation's model at the start
        of the task rather than from its own weights at the start of a round.
        """
        return copy.deepcopy(net)

    def after_task(self, net: MultiHeadNet, sequence: TaskSequence, t: int) -> None:
        """Drop the teacher and its cached outputs."""
        self._teacher, self._cache, self._stacked, self._validated = None, {}, None, False

    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """``CE(new task) + λ_t · Σ_targets kd.distillation_loss(student, teacher)``."""
        features = net.features(batch.x)  # (b, feature_dim)
        loss = head_cross_entropy(net, features, batch, self.train.label_smoothing)
        if not self._targets:
            return loss
        return loss + self.config.lam_for(t) * self.retention_loss(net, features, batch)

    def retention_loss(self, net: MultiHeadNet, features: Tensor, batch: Batch) -> Tensor:
        """``Σ_targets kd.distillation_loss(student, teacher)``: the old outputs' term, without λ.

        ``features`` are the student's ``(b, feature_dim)`` features of ``batch``; needs a
        teacher from :meth:`before_task` (``self._targets`` non-empty).
        """
        # The core checks values (finiteness, mask range: host syncs) on the task's first
        # batch only; the cached teacher outputs were checked whole when recorded.
        validate = not self._validated
        self._validated = True
        if self._stackable(net):  # one core call for all old heads (same value, less overhead)
            heads = [h for h, _ in self._targets]
            student = torch.cat([net.heads[h](features) for h in heads])  # (heads*b, k)
            target = self._stacked_teacher(batch, heads)  # (heads*b, k)
            # batchmean over heads*b rows, times heads = the sum over heads of per-head means
            distill = len(heads) * kd.distillation_loss(
                student, target, self._spec, validate=validate
            )
        else:
            teacher = self._teacher_logits(batch)
            distill = features.new_zeros(())
            for head, columns in self._targets:
                distill = distill + kd.distillation_loss(
                    net.heads[head](features),
                    teacher[head],
                    self._spec,
                    class_mask=columns,
                    validate=validate,
                )
        return distill

    def _stackable(self, net: MultiHeadNet) -> bool:
        """Several whole heads of one width: their softmaxes can share one batched call."""
        if len(self._targets) < 2 or any(c is not None for _, c in self._targets):
            return False
        return len({net.heads[h].out_features for h, _ in self._targets}) == 1

    # ---- teacher ----------------------------------------------------------------------

    def _heads(self) -> list[int]:
        return sorted({h for h, _ in self._targets})

    def _teacher_logits(self, batch: Batch) -> dict[int, Tensor]:
        if self._cache:  # cached on the model's device: index there, no host copy per batch
            index = batch.index.to(batch.x.device, non_blocking=True)
            return {h: out[index] for h, out in self._cache.items()}
        assert self._teacher is not None
        with torch.no_grad():
            features = self._teacher.features(batch.x)
            return {h: self._teacher.heads[h](features) for h in self._heads()}

    def _stacked_teacher(self, batch: Batch, heads: list[int]) -> Tensor:
        """Teacher logits of ``heads`` on the batch, stacked head-major: ``(heads*b, k)``."""
        if self._stacked is not None:
            index = batch.index.to(batch.x.device, non_blocking=True)
            return self._stacked[:, index].flatten(0, 1)  # = cat over heads of (b, k)
        teacher = self._teacher_logits(batch)
        return torch.cat([teacher[h] for h in heads])

    def _teacher_logits_full(self, x: Tensor, batch_size: int = 1024) -> dict[int, Tensor]:
        """Teacher logits for every row of ``x`` (the paper's recorded responses Y_o), kept on
        the model's device and checked finite once here rather than in every step."""
        assert self._teacher is not None
        device = module_device(self._teacher)
        out: dict[int, list[Tensor]] = {h: [] for h in self._heads()}
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                features = self._teacher.features(x[i : i + batch_size].to(device))
                for h in out:
                    out[h].append(self._teacher.heads[h](features))
        cache = {h: torch.cat(parts) for h, parts in out.items()}  # head -> (n, head_size)
        if not all(bool(torch.isfinite(v).all()) for v in cache.values()):
            raise ValueError("the LwF teacher's recorded outputs contain NaN or inf")
        return cache

    # ---- warm-up ----------------------------------------------------------------------

    def _warm_up(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Train only the new task's units on frozen (eval-mode) features (Li & Hoiem, 2017).

        The new units (the new head in task-IL; the new classes' rows of the shared head in
        class-IL) are copied into a standalone layer, trained, and copied back, so every
        other unit stays exactly as it was — weight decay and momentum included.
        """
        head = net.heads[sequence.head_of(t)]
        assert isinstance(head, nn.Linear)  # MultiHeadNet's heads are linear layers
        device = head.weight.device
        units = (
            list(sequence.tasks[t].units)
            if sequence.scenario == "class_il"
            else list(range(head.out_features))
        )
        cols = torch.tensor(units, device=device)
        position = torch.full((head.out_features,), -1, dtype=torch.long)
        position[torch.tensor(units)] = torch.arange(len(units))  # head unit -> new-layer unit
        new = nn.Linear(head.in_features, len(units), bias=head.bias is not None)
        new = new.to(device=device, dtype=head.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(head.weight[cols])
            if head.bias is not None and new.bias is not None:
                new.bias.copy_(head.bias[cols])
        was_training = net.training
        net.eval()
        with torch.no_grad():
            features = torch.cat(
                [
                    net.features(data.x[i : i + 1024].to(device)).cpu()
                    for i in range(0, len(data), 1024)
                ]
            )  # (n, feature_dim)
        net.train(was_training)
        cfg = dataclasses.replace(
            self.train,
            epochs=self.config.warmup_epochs,
            lr=self.config.warmup_lr if self.config.warmup_lr is not None else self.train.lr,
        )
        fit(
            new,
            TrainingData(features, position[data.y], data.heads),  # batch.x holds features
            cfg,
            make_optimizer(new, cfg),
            generator,
            lambda batch: F.cross_entropy(new(batch.x), batch.y),
        )
        with torch.no_grad():
            head.weight[cols] = new.weight
            if head.bias is not None and new.bias is not None:
                head.bias[cols] = new.bias


_WARMUP_STREAM = 0x9E3779B97F4A7C15  # odd 64-bit constant (SplitMix64's increment)


def warmup_generator(generator: torch.Generator | None, t: int) -> torch.Generator:
    """The warm-up's own shuffling generator for task ``t``, derived without drawing from
    ``generator`` (or from torch's global RNG when it is None), so the warm-up never shifts
    the batch order of the training that follows."""
    base = generator.initial_seed() if generator is not None else torch.initial_seed()
    return torch.Generator().manual_seed((base + _WARMUP_STREAM * (t + 1)) % 2**63)
