"""Continual learners: fine-tuning, Learning without Forgetting, joint training.

One small base class, :class:`Learner`, runs the same minibatch loop for every method; a method
changes only what it must through four extension points, called in this order for each task:

1. :meth:`Learner.training_data` — which examples to train on (joint training: all tasks so
   far; a replay method would add its buffer here);
2. :meth:`Learner.before_task` — set-up (LwF: freeze a teacher copy, warm up the new head,
   cache the teacher's outputs; joint: reset the weights);
3. :meth:`Learner.batch_loss` — the loss of one minibatch (LwF: cross-entropy + λ·KD; EWC
   would add its quadratic penalty here);
4. :meth:`Learner.after_task` — bookkeeping (EWC would estimate its Fisher matrix here).

Each method declares which scenarios it supports (``compatibility``, as in Mammoth) and is
checked when built. Methods are registered by name with :func:`register_learner`, explicitly,
in this module, so :func:`build_learner` can build any of them from a config.

The distillation loss of LwF comes from :mod:`fedkd.kd` — the same core Federated Distillation
uses — called as ``kd.distillation_loss`` so that one fix lands everywhere.

This module imports only torch, numpy and fedkd; never Flower, Ray or Hydra.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import Tensor, nn

from fedkd import kd
from fedkd.continual.tasks import SCENARIOS, Scenario, TaskSequence
from fedkd.models import Classifier, build_model
from fedkd.training import TrainConfig, iterate_minibatches, make_optimizer, predict_logits

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
    "register_learner",
    "task_data",
]


# --------------------------------------------------------------------------- network


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


# --------------------------------------------------------------------------- data


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


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


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
    device = _device(net)
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


# --------------------------------------------------------------------------- base class


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


_LEARNERS: dict[str, type[Learner]] = {}


def register_learner(name: str) -> Callable[[type[Learner]], type[Learner]]:
    """Class decorator: register a :class:`Learner` subclass under ``name``.

    Raises ``ValueError`` for a taken name or a class that declares no compatible scenario.
    """

    def decorator(cls: type[Learner]) -> type[Learner]:
        if name in _LEARNERS:
            raise ValueError(f"learner {name!r} is already registered")
        if not cls.compatibility or not set(cls.compatibility) <= set(SCENARIOS):
            raise ValueError(f"{cls.__name__}.compatibility must be a subset of {SCENARIOS}")
        cls.name = name
        _LEARNERS[name] = cls
        return cls

    return decorator


def available_learners() -> list[str]:
    """Names accepted by :func:`build_learner`, sorted."""
    return sorted(_LEARNERS)


def build_learner(
    name: str,
    scenario: Scenario,
    train: TrainConfig | None = None,
    options: Mapping[str, Any] | None = None,
) -> Learner:
    """Build the learner registered as ``name`` with its options (a mapping of config fields).

    Raises
    ------
    ValueError
        For an unknown name, an unsupported scenario, or an option the method does not have.
    """
    if name not in _LEARNERS:
        raise ValueError(f"unknown learner {name!r}; available learners: {available_learners()}")
    cls = _LEARNERS[name]
    options = dict(options or {})
    if cls.config_class is None:
        if options:
            raise ValueError(f"learner {name!r} takes no options, got {sorted(options)}")
        return cls(scenario, train)
    allowed = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"learner {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}")
    return cls(scenario, train, cls.config_class(**options))  # type: ignore[call-arg]


# --------------------------------------------------------------------------- methods


@register_learner("finetune")
class FineTune(Learner):
    """Naive fine-tuning: plain cross-entropy on each new task — the forgetting lower bound."""

    compatibility = SCENARIOS

    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """Cross-entropy of every row on its head."""
        return head_cross_entropy(net, net.features(batch.x), batch, self.train.label_smoothing)


@dataclass(frozen=True)
class JointConfig:
    """Options of :class:`Joint`."""

    from_scratch: bool = True
    """Restart from the initial weights at every task, so the model after task ``k`` is the
    reference "trained jointly on tasks 0..k" of Chaudhry et al. (2018); False continues
    from the previous task's weights (cheaper; Avalanche's "Cumulative")."""


@register_learner("joint")
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
    sequence: TaskSequence, t: int, units: DistillUnits
) -> list[tuple[int, tuple[int, ...] | None]]:
    """Which outputs LwF distils while training task ``t``: ``[(head, columns or None)]``.

    Each entry is one softmax: task-IL distils each old head separately (as Li & Hoiem and
    Avalanche do; FACIL instead concatenates old heads under one softmax); class-IL distils the
    old classes' columns of the shared head, renormalised over them; ``None`` means every
    column of that head. Empty for task 0 (no teacher yet).
    """
    if t == 0:
        return []
    if units == "all":
        return [(h, None) for h in range(len(sequence.head_sizes))]
    if sequence.scenario == "task_il":
        return [(h, None) for h in range(t)]
    if sequence.scenario == "class_il":
        old = tuple(u for task in sequence.tasks[:t] for u in task.units)
        return [(0, old)]
    return [(0, None)]  # domain-IL: every class is an old class


@register_learner("lwf")
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
        self._spec = self.config.spec
        self._teacher: MultiHeadNet | None = None
        self._targets: list[tuple[int, Tensor | None]] = []  # (head, column index or None)
        self._cache: dict[int, Tensor] = {}  # head -> (n, head_size) teacher logits

    def before_task(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Freeze a teacher copy, optionally warm up the new head, then cache teacher outputs."""
        self._teacher, self._cache = None, {}
        self._targets = [
            (head, None if columns is None else torch.tensor(columns))
            for head, columns in distill_targets(sequence, t, self.config.distill)
        ]
        if t > 0 and self.config.lam_for(t) == 0:
            self._targets = []
        if self._targets:
            self._teacher = copy.deepcopy(net).requires_grad_(False)
            self._teacher.train(self.config.teacher_mode == "train")
        if t > 0 and self.config.warmup_epochs > 0:
            self._warm_up(net, sequence, t, data, generator)
        if self._teacher is not None and self.config.teacher_outputs == "cached":
            self._cache = self._teacher_logits_full(data.x)

    def after_task(self, net: MultiHeadNet, sequence: TaskSequence, t: int) -> None:
        """Drop the teacher and its cached outputs."""
        self._teacher, self._cache = None, {}

    def batch_loss(self, net: MultiHeadNet, batch: Batch, sequence: TaskSequence, t: int) -> Tensor:
        """``CE(new task) + λ_t · Σ_targets kd.distillation_loss(student, teacher)``."""
        features = net.features(batch.x)  # (b, feature_dim)
        loss = head_cross_entropy(net, features, batch, self.train.label_smoothing)
        if not self._targets:
            return loss
        teacher = self._teacher_logits(batch)
        if self._stackable(net):  # one core call for all old heads (same value, less overhead)
            heads = [h for h, _ in self._targets]
            student = torch.cat([net.heads[h](features) for h in heads])  # (heads*b, k)
            target = torch.cat([teacher[h] for h in heads])
            # batchmean over heads*b rows, times heads = the sum over heads of per-head means
            distill = len(heads) * kd.distillation_loss(student, target, self._spec)
        else:
            distill = features.new_zeros(())
            for head, columns in self._targets:
                distill = distill + kd.distillation_loss(
                    net.heads[head](features), teacher[head], self._spec, class_mask=columns
                )
        return loss + self.config.lam_for(t) * distill

    def _stackable(self, net: MultiHeadNet) -> bool:
        """Several whole heads of one width: their softmaxes can share one batched call."""
        if len(self._targets) < 2 or any(c is not None for _, c in self._targets):
            return False
        return len({net.heads[h].out_features for h, _ in self._targets}) == 1

    # ---- teacher ----------------------------------------------------------------------

    def _heads(self) -> list[int]:
        return sorted({h for h, _ in self._targets})

    def _teacher_logits(self, batch: Batch) -> dict[int, Tensor]:
        if self._cache:
            device = batch.x.device
            return {h: out[batch.index].to(device) for h, out in self._cache.items()}
        assert self._teacher is not None
        with torch.no_grad():
            features = self._teacher.features(batch.x)
            return {h: self._teacher.heads[h](features) for h in self._heads()}

    def _teacher_logits_full(self, x: Tensor, batch_size: int = 1024) -> dict[int, Tensor]:
        """Teacher logits for every row of ``x`` (the paper's recorded responses Y_o)."""
        assert self._teacher is not None
        device = _device(self._teacher)
        out: dict[int, list[Tensor]] = {h: [] for h in self._heads()}
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                features = self._teacher.features(x[i : i + batch_size].to(device))
                for h in out:
                    out[h].append(self._teacher.heads[h](features).cpu())
        return {h: torch.cat(parts) for h, parts in out.items()}  # head -> (n, head_size)

    # ---- warm-up ----------------------------------------------------------------------

    def _warm_up(
        self,
        net: MultiHeadNet,
        sequence: TaskSequence,
        t: int,
        data: TrainingData,
        generator: torch.Generator | None,
    ) -> None:
        """Train only the new task's head on frozen (eval-mode) features (Li & Hoiem, 2017)."""
        head_index = sequence.head_of(t)
        head = net.heads[head_index]
        columns = list(sequence.tasks[t].units) if sequence.scenario == "class_il" else None
        offset = columns[0] if columns else 0
        was_training = net.training
        net.eval()
        with torch.no_grad():
            device = _device(net)
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

        def warm_loss(batch: Batch) -> Tensor:
            logits = head(batch.x)  # (b, head_size); batch.x holds features here
            if columns is not None:  # class-IL: only the new classes' units move
                return F.cross_entropy(logits[:, columns], batch.y - offset)
            return F.cross_entropy(logits, batch.y)

        fit(
            head,
            TrainingData(features, data.y, data.heads),
            cfg,
            make_optimizer(head, cfg),
            generator,
            warm_loss,
        )
