"""Task sequences for continual learning, built from any fedkd dataset.

Three ways to cut one dataset into a sequence of tasks (van de Ven & Tolias, 2019, "Three
scenarios for continual learning"):

* **split** — disjoint groups of classes, one group per task. In the *task-incremental*
  scenario (``"task_il"``) the task id is known at test time and every task has its own head
  whose targets are the class's position inside its group; in the *class-incremental* scenario
  (``"class_il"``) one head covers every class seen so far and targets are global.
* **permuted** — every task sees all classes, with one fixed random pixel permutation per task
  (Goodfellow et al., 2013; Kirkpatrick et al., 2017): *domain-incremental* (``"domain_il"``).
* **rotated** — every task sees all classes, rotated by a fixed angle per task (Lopez-Paz &
  Ranzato, 2017, GEM): domain-incremental.

Class grouping, class order and permutations are drawn from a seed and can be given explicitly.
Labels are remapped once here, so learners and metrics never need to know how a task was made:
``Task.train_y`` is already the target on the task's head.

The embedded ``digits`` data works offline; hub datasets (``mnist``, ``cifar10``...) load through
:func:`fedkd.data.load_splits` when they are reachable or cached. This module imports only
torch, numpy and :mod:`fedkd.data`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from fedkd.data import DataSplits, load_splits

__all__ = [
    "SCENARIOS",
    "SEQUENCE_KINDS",
    "Scenario",
    "SequenceConfig",
    "SequenceKind",
    "Task",
    "TaskSequence",
    "build_sequence",
    "permuted_sequence",
    "rotate_images",
    "rotated_sequence",
    "sequence_from_splits",
    "split_sequence",
]

Scenario = Literal["task_il", "class_il", "domain_il"]
SequenceKind = Literal["split", "permuted", "rotated"]
SCENARIOS: tuple[str, ...] = get_args(Scenario)
SEQUENCE_KINDS: tuple[str, ...] = get_args(SequenceKind)


@dataclass(frozen=True, eq=False)
class Task:
    """One task: its train and test data, with targets already on the task's head.

    Attributes
    ----------
    index : int
        The task's id: its position in the sequence as built (tasks are numbered from 0). A
        reordered sequence (:meth:`TaskSequence.reordered`) keeps each task's id.
    train_x, test_x : Tensor
        ``(n, *input_shape)`` float32 inputs (transformed for permuted/rotated tasks).
    train_y, test_y : Tensor
        ``(n,)`` int64 targets on :attr:`TaskSequence.head_of` ``(index)``: local positions
        ``0..k-1`` (task-IL), global units (class-IL) or the original labels (domain-IL).
    classes : tuple of int
        Original dataset labels present in this task.
    units : tuple of int
        Output units of the task's head that its targets use. In class-IL these are the
        columns LwF treats as "this task's classes".
    description : str
        Human-readable summary (``"classes 3,7"``, ``"rotation 45°"``).
    transform : callable, optional
        Permuted/rotated tasks: the task's input transform, ``(n, *input_shape) -> (n,
        *input_shape)``, so other inputs of the dataset (a federation's public pool) can be
        seen as this task sees them. ``None``: inputs are used as they are (split tasks).
    """

    index: int
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    classes: tuple[int, ...]
    units: tuple[int, ...]
    description: str
    transform: Callable[[Tensor], Tensor] | None = None

    def inputs(self, x: Tensor) -> Tensor:
        """``x`` as this task presents inputs (its transform applied, if it has one)."""
        return x if self.transform is None else self.transform(x)

    def __repr__(self) -> str:
        return (
            f"Task({self.index}, {self.description!r}, train={len(self.train_y)}, "
            f"test={len(self.test_y)})"
        )


@dataclass(frozen=True, eq=False)
class TaskSequence:
    """An ordered sequence of tasks and the output heads they need.

    Attributes
    ----------
    name : str
        Short identifier, e.g. ``"split-digits"``.
    scenario : {"task_il", "class_il", "domain_il"}
        Which head a task uses and whether the task id is available at test time.
    tasks : tuple of Task
        The tasks, in training order.
    input_shape : tuple of int
        One sample's shape (what :func:`fedkd.models.build_model` takes).
    head_sizes : tuple of int
        Output width of each head: one per task in task-IL, a single shared head otherwise.
    task_heads : tuple of int, optional
        Task-IL only: the head of the task at each position. ``None`` (a sequence as built):
        task ``t`` uses head ``t``. A reordered sequence keeps every task on its own head, so
        networks trained on different orders (clients on shifted schedules) stay aligned.
    """

    name: str
    scenario: Scenario
    tasks: tuple[Task, ...]
    input_shape: tuple[int, ...]
    head_sizes: tuple[int, ...]
    task_heads: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}, got {self.scenario!r}")
        if not self.tasks:
            raise ValueError("a task sequence needs at least one task")
        expected = len(self.tasks) if self.multi_head else 1
        if len(self.head_sizes) != expected:
            raise ValueError(f"{self.scenario} needs {expected} head(s), got {self.head_sizes}")
        if self.task_heads is not None and (
            not self.multi_head or sorted(self.task_heads) != list(range(len(self.tasks)))
        ):
            raise ValueError(
                f"task_heads must be a permutation of the {len(self.tasks)} heads of a task-IL "
                f"sequence, got {self.task_heads} for {self.scenario}"
            )

    @property
    def num_tasks(self) -> int:
        """Number of tasks T."""
        return len(self.tasks)

    @property
    def multi_head(self) -> bool:
        """True in task-IL: one head per task, selected by the (known) task id."""
        return self.scenario == "task_il"

    def head_of(self, task: int) -> int:
        """Index of the head that task ``task`` trains and is evaluated on."""
        if not 0 <= task < self.num_tasks:
            raise IndexError(f"task {task} out of range [0, {self.num_tasks})")
        if not self.multi_head:
            return 0
        return task if self.task_heads is None else self.task_heads[task]

    def reordered(self, order: Sequence[int]) -> TaskSequence:
        """The same tasks met in another ``order`` (positions of this sequence), each task
        keeping its head, its id (:attr:`Task.index`) and its targets.

        A client on a shifted schedule learns ``reordered(order)``; its network's head ``h``
        still belongs to the same task as everyone else's, so predictions and weights can be
        combined across clients.
        """
        order = [int(t) for t in order]
        if sorted(order) != list(range(self.num_tasks)):
            raise ValueError(f"order must be a permutation of range({self.num_tasks}), got {order}")
        heads = tuple(self.head_of(t) for t in order) if self.multi_head else None
        tasks = tuple(self.tasks[t] for t in order)
        return dataclasses.replace(self, tasks=tasks, task_heads=heads)

    def describe(self) -> list[str]:
        """One description per task, in order."""
        return [t.description for t in self.tasks]

    def __repr__(self) -> str:
        return (
            f"TaskSequence({self.name!r}, {self.scenario}, tasks={self.num_tasks}, "
            f"heads={self.head_sizes})"
        )


# --------------------------------------------------------------------------- builders


def _check_num_tasks(num_tasks: int) -> None:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be an int >= 1, got {num_tasks!r}")


def _subsample(
    x: Tensor, y: Tensor, limit: int | None, rng: np.random.Generator
) -> tuple[Tensor, Tensor]:
    """At most ``limit`` random rows of ``(x, y)`` (all rows when ``limit`` is None)."""
    if limit is None or len(y) <= limit:
        return x, y
    keep = torch.as_tensor(np.sort(rng.choice(len(y), size=limit, replace=False)))
    return x[keep], y[keep]


def _class_groups(
    num_classes: int,
    num_tasks: int,
    classes_per_task: int | None,
    class_order: Sequence[int] | None,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Consecutive groups of ``classes_per_task`` classes from a (seeded) class order."""
    k = num_classes // num_tasks if classes_per_task is None else classes_per_task
    if k < 1 or k * num_tasks > num_classes:
        raise ValueError(
            f"{num_tasks} tasks x {k} classes per task need {num_tasks * k} classes, "
            f"but the dataset has {num_classes}"
        )
    if class_order is None:
        order = [int(c) for c in rng.permutation(num_classes)]
    else:
        order = [int(c) for c in class_order]
        if len(set(order)) != len(order):
            raise ValueError(f"class_order has duplicates: {order}")
        if any(not 0 <= c < num_classes for c in order) or len(order) < k * num_tasks:
            raise ValueError(
                f"class_order must list at least {k * num_tasks} distinct classes in "
                f"[0, {num_classes}), got {order}"
            )
    return [order[t * k : (t + 1) * k] for t in range(num_tasks)]


def split_sequence(
    splits: DataSplits,
    *,
    num_tasks: int = 5,
    scenario: Literal["task_il", "class_il"] = "task_il",
    classes_per_task: int | None = None,
    class_order: Sequence[int] | None = None,
    seed: int = 0,
    max_train_per_task: int | None = None,
) -> TaskSequence:
    """Split a dataset into tasks of disjoint classes (split MNIST-style).

    Parameters
    ----------
    splits : DataSplits
        Source data; its ``train`` and ``test`` pools are used (the public pool is not).
    num_tasks : int
        Number of tasks T.
    scenario : {"task_il", "class_il"}
        Task-IL gives every task its own head with targets ``0..k-1``; class-IL uses one head
        whose unit ``u`` is the ``u``-th class of the class order, so task ``t`` owns units
        ``t*k .. (t+1)*k - 1`` and "old classes" are always a prefix of the head.
    classes_per_task : int, optional
        k; defaults to ``num_classes // num_tasks``. Classes beyond ``T*k`` are dropped.
    class_order : sequence of int, optional
        Explicit class order (grouping and task order at once); else a permutation drawn
        from ``seed``.
    seed : int
        Seeds the class order and the optional subsampling.
    max_train_per_task : int, optional
        Keep at most this many random training examples per task (quick runs).
    """
    _check_num_tasks(num_tasks)
    if scenario not in ("task_il", "class_il"):
        raise ValueError(f"split sequences are 'task_il' or 'class_il', got {scenario!r}")
    rng = np.random.default_rng(seed)
    groups = _class_groups(splits.num_classes, num_tasks, classes_per_task, class_order, rng)
    k = len(groups[0])
    tasks = []
    for t, group in enumerate(groups):
        offset = 0 if scenario == "task_il" else t * k
        lookup = torch.full((splits.num_classes,), -1, dtype=torch.long)
        lookup[torch.tensor(group)] = torch.arange(k) + offset  # original label -> target
        tr = torch.isin(splits.train_y, torch.tensor(group))
        te = torch.isin(splits.test_y, torch.tensor(group))
        train_x, train_y = _subsample(
            splits.train_x[tr], lookup[splits.train_y[tr]], max_train_per_task, rng
        )
        tasks.append(
            Task(
                index=t,
                train_x=train_x,
                train_y=train_y,
                test_x=splits.test_x[te],
                test_y=lookup[splits.test_y[te]],
                classes=tuple(group),
                units=tuple(range(offset, offset + k)),
                description="classes " + ",".join(str(c) for c in group),
            )
        )
    heads = (k,) * num_tasks if scenario == "task_il" else (k * num_tasks,)
    return TaskSequence(f"split-{splits.name}", scenario, tuple(tasks), splits.input_shape, heads)


def _domain_sequence(
    splits: DataSplits,
    name: str,
    scenario: Literal["domain_il", "task_il"],
    transforms: Sequence[tuple[str, Any]],
    rng: np.random.Generator,
    max_train_per_task: int | None,
    apply: Any,
) -> TaskSequence:
    """Tasks that share the label space and differ by an input transform."""
    if scenario not in ("domain_il", "task_il"):
        raise ValueError(f"{name} sequences are 'domain_il' or 'task_il', got {scenario!r}")
    classes = tuple(range(splits.num_classes))
    tasks = []
    for t, (description, param) in enumerate(transforms):
        train_x, train_y = _subsample(splits.train_x, splits.train_y, max_train_per_task, rng)
        tasks.append(
            Task(
                index=t,
                train_x=apply(train_x, param),
                train_y=train_y,
                test_x=apply(splits.test_x, param),
                test_y=splits.test_y,
                classes=classes,
                units=classes,
                description=description,
                transform=functools.partial(_apply, apply, param),
            )
        )
    heads = (splits.num_classes,) * (len(tasks) if scenario == "task_il" else 1)
    return TaskSequence(f"{name}-{splits.name}", scenario, tuple(tasks), splits.input_shape, heads)


def _apply(apply: Callable[[Tensor, Any], Tensor], param: Any, x: Tensor) -> Tensor:
    """``apply(x, param)``: a domain task's transform as a picklable one-argument callable."""
    return apply(x, param)


def _permute(x: Tensor, perm: Tensor) -> Tensor:
    return x.flatten(1)[:, perm].reshape(x.shape)  # (n, *input_shape), features shuffled


def permuted_sequence(
    splits: DataSplits,
    *,
    num_tasks: int = 5,
    scenario: Literal["domain_il", "task_il"] = "domain_il",
    identity_first: bool = True,
    seed: int = 0,
    max_train_per_task: int | None = None,
) -> TaskSequence:
    """Permuted-input tasks: one fixed random permutation of all input features per task.

    Every task has every class, so the label space is shared (domain-IL, single head) unless
    ``scenario="task_il"`` gives each permutation its own head.

    Parameters
    ----------
    identity_first : bool
        Task 0 sees the original inputs (the usual convention, Kirkpatrick et al., 2017).
    seed : int
        Seeds the permutations and the optional subsampling.
    """
    _check_num_tasks(num_tasks)
    rng = np.random.default_rng(seed)
    dim = math.prod(splits.input_shape)
    transforms = []
    for t in range(num_tasks):
        identity = identity_first and t == 0
        perm = torch.arange(dim) if identity else torch.as_tensor(rng.permutation(dim))
        transforms.append(("identity" if identity else f"permutation {t}", perm))
    return _domain_sequence(
        splits, "permuted", scenario, transforms, rng, max_train_per_task, _permute
    )


def rotate_images(x: Tensor, degrees: float) -> Tensor:
    """Rotate ``(n, C, H, W)`` images counter-clockwise by ``degrees`` about their centre.

    Bilinear resampling with zero padding (``grid_sample``), so corners that rotate in from
    outside the image are background, as in rotated-MNIST benchmarks.
    """
    if x.dim() != 4:
        raise ValueError(f"rotation needs image inputs (n, C, H, W), got {tuple(x.shape)}")
    theta = math.radians(degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    affine = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], dtype=x.dtype)
    grid = F.affine_grid(affine.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def rotated_sequence(
    splits: DataSplits,
    *,
    num_tasks: int = 5,
    scenario: Literal["domain_il", "task_il"] = "domain_il",
    angles: Sequence[float] | None = None,
    max_angle: float = 180.0,
    shuffle: bool = False,
    seed: int = 0,
    max_train_per_task: int | None = None,
) -> TaskSequence:
    """Rotated-input tasks: the whole dataset rotated by one fixed angle per task.

    Parameters
    ----------
    angles : sequence of float, optional
        One angle (degrees) per task, in task order; overrides ``num_tasks``. Default: evenly
        spaced from 0 to ``max_angle``.
    shuffle : bool
        Put the angles in a random order drawn from ``seed``.
    """
    if len(splits.input_shape) != 3:
        raise ValueError(f"rotated sequences need image data (C, H, W), got {splits.input_shape}")
    if angles is None:
        _check_num_tasks(num_tasks)
        angles = [max_angle * t / max(num_tasks - 1, 1) for t in range(num_tasks)]
    angles = [float(a) for a in angles]
    _check_num_tasks(len(angles))
    rng = np.random.default_rng(seed)
    if shuffle:
        angles = [angles[i] for i in rng.permutation(len(angles))]
    transforms = [(f"rotation {a:g}°", a) for a in angles]
    return _domain_sequence(
        splits, "rotated", scenario, transforms, rng, max_train_per_task, rotate_images
    )


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SequenceConfig:
    """Which task sequence to build, as a typed config (Hydra's ``sequence`` group maps here).

    ``__post_init__`` raises ``ValueError`` naming the offending field.
    """

    dataset: str = "digits"
    """Any name from :func:`fedkd.data.available_datasets` (``digits`` works offline)."""
    kind: SequenceKind = "split"
    """``split`` (disjoint classes), ``permuted`` or ``rotated`` inputs."""
    scenario: Scenario = "task_il"
    """``task_il`` (multi-head, task id known), ``class_il`` (split only, one head) or
    ``domain_il`` (permuted/rotated only, one head)."""
    num_tasks: int = 5
    """Number of tasks T (ignored by ``rotated`` when ``angles`` is given)."""
    classes_per_task: int | None = None
    """Split only: classes per task; default ``num_classes // num_tasks``."""
    class_order: tuple[int, ...] | None = None
    """Split only: explicit class order; default a permutation drawn from the seed."""
    angles: tuple[float, ...] | None = None
    """Rotated only: one angle per task in degrees; default evenly spaced up to max_angle."""
    max_angle: float = 180.0
    """Rotated only: the largest default angle."""
    shuffle: bool = False
    """Rotated only: shuffle the task order with the seed."""
    identity_first: bool = True
    """Permuted only: task 0 sees unpermuted inputs."""
    max_train_per_task: int | None = None
    """Keep at most this many training examples per task (quick runs)."""
    test_fraction: float = 0.2
    """Embedded datasets only (digits, synthetic): fraction held out as test set."""
    seed: int | None = None
    """Seed of the class order / permutations / data split; ``None`` follows the run seed,
    so every seed of a study also sees a different sequence."""
    data_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for :func:`fedkd.data.load_splits` (e.g. ``max_train``)."""

    def __post_init__(self) -> None:
        if self.kind not in SEQUENCE_KINDS:
            raise ValueError(
                f"SequenceConfig.kind must be one of {SEQUENCE_KINDS}, got {self.kind!r}"
            )
        allowed = ("task_il", "class_il") if self.kind == "split" else ("domain_il", "task_il")
        if self.scenario not in allowed:
            raise ValueError(
                f"SequenceConfig.scenario must be one of {allowed} for kind={self.kind!r}, "
                f"got {self.scenario!r}"
            )
        if isinstance(self.num_tasks, bool) or not isinstance(self.num_tasks, int):
            raise ValueError(f"SequenceConfig.num_tasks must be an int, got {self.num_tasks!r}")
        if self.num_tasks < 1:
            raise ValueError(f"SequenceConfig.num_tasks must be >= 1, got {self.num_tasks}")
        if self.max_train_per_task is not None and self.max_train_per_task < 1:
            raise ValueError("SequenceConfig.max_train_per_task must be >= 1 or None")
        if self.angles is not None and len(self.angles) == 0:
            raise ValueError("SequenceConfig.angles must list at least one angle, or be None")

    @property
    def task_count(self) -> int:
        """The number of tasks the sequence will have: ``len(angles)`` for a rotated sequence
        with explicit angles (they override ``num_tasks``), else ``num_tasks``."""
        if self.kind == "rotated" and self.angles is not None:
            return len(self.angles)
        return self.num_tasks

    @property
    def task_count_key(self) -> str:
        """The config key that sets :attr:`task_count` (for error messages)."""
        return "angles" if self.kind == "rotated" and self.angles is not None else "num_tasks"


_EMBEDDED = ("digits", "synthetic")


def _load(cfg: SequenceConfig, seed: int) -> DataSplits:
    """The dataset with no public pool: continual learning trains on the whole train split."""
    options: dict[str, Any] = {"public_fraction": 0.0, **dict(cfg.data_options)}
    if cfg.dataset in _EMBEDDED:
        options.setdefault("test_fraction", cfg.test_fraction)
    return load_splits(cfg.dataset, seed=seed, **options)


def build_sequence(cfg: SequenceConfig, seed: int = 0) -> TaskSequence:
    """Build the task sequence ``cfg`` describes.

    Parameters
    ----------
    cfg : SequenceConfig
        Dataset, kind, scenario and their options.
    seed : int
        Run seed; used for the data split, class order and permutations unless
        ``cfg.seed`` fixes them.

    Raises
    ------
    ValueError
        For an unknown dataset or an inconsistent configuration.
    fedkd.data.DatasetUnavailableError
        If a hub dataset can be neither downloaded nor found in the cache.
    """
    s = seed if cfg.seed is None else cfg.seed
    return sequence_from_splits(cfg, _load(cfg, s), s)


def sequence_from_splits(cfg: SequenceConfig, splits: DataSplits, seed: int) -> TaskSequence:
    """The sequence ``cfg`` describes, cut from already loaded ``splits`` (their train and
    test pools; a federation keeps their public pool aside). ``seed`` seeds the class order,
    permutations and subsampling."""
    if cfg.kind == "split":
        return split_sequence(
            splits,
            num_tasks=cfg.num_tasks,
            scenario=cfg.scenario,  # type: ignore[arg-type]
            classes_per_task=cfg.classes_per_task,
            class_order=cfg.class_order,
            seed=seed,
            max_train_per_task=cfg.max_train_per_task,
        )
    if cfg.kind == "permuted":
        return permuted_sequence(
            splits,
            num_tasks=cfg.num_tasks,
            scenario=cfg.scenario,  # type: ignore[arg-type]
            identity_first=cfg.identity_first,
            seed=seed,
            max_train_per_task=cfg.max_train_per_task,
        )
    return rotated_sequence(
        splits,
        num_tasks=cfg.num_tasks,
        scenario=cfg.scenario,  # type: ignore[arg-type]
        angles=cfg.angles,
        max_angle=cfg.max_angle,
        shuffle=cfg.shuffle,
        seed=seed,
        max_train_per_task=cfg.max_train_per_task,
    )
