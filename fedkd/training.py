"""Training utilities: supervised training, distillation, prediction and evaluation.

Data lives in in-memory tensors and is batched by index (no ``DataLoader``): the datasets used
here are small, and indexing a tensor is much faster than a worker-based loader. Training copies
its tensors to the model's device once per call (not once per batch and epoch) when they fit in
:data:`STAGE_LIMIT_BYTES`, and batches by index there; the caller's tensors are not modified.
Inference runs in chunks sized for the device (:func:`inference_batch_size`).

Reproducibility: every function that shuffles takes a ``torch.Generator``; with the same
generator seed (and the same initial weights) two CPU runs give bit-identical weights.

Callers may pass an ``optimizer`` so its state (momentum, Adam moments) persists across
federated rounds; otherwise a fresh one is built from :class:`TrainConfig` on each call.

This module imports only torch, numpy and :mod:`fedkd.kd`; never Flower, Ray or Hydra.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fedkd.kd import KDSpec, distillation_loss, validate_labels

__all__ = [
    "EvalResult",
    "TrainConfig",
    "distill",
    "evaluate",
    "evaluate_logits",
    "inference_batch_size",
    "iterate_minibatches",
    "make_optimizer",
    "predict_logits",
    "predict_probs",
    "resolve_device",
    "seed_everything",
    "train_supervised",
    "train_with_teacher",
]

DeviceLike = torch.device | str | None

STAGE_LIMIT_BYTES = 1 << 30
"""Tensors up to this size are copied to the model's device once per training call; larger
ones stay where they are and each batch is copied on its own (bounded device memory)."""

CPU_INFERENCE_ROWS = 256
"""Default inference chunk on CPU. Measured (``benchmarks.bench_hotpaths``): for conv nets on
32x32 or 28x28 images, 1024-row chunks spill the activations out of the caches and run up to
~1.8x slower than 64-256-row chunks; small models do not care either way."""

ACCELERATOR_INFERENCE_ROWS = 1024
"""Default inference chunk on CUDA and other accelerators, where bigger batches keep them busy."""


@dataclass(frozen=True)
class TrainConfig:
    """Local optimisation settings, shared by supervised training and distillation.

    ``__post_init__`` raises ``ValueError`` naming the offending field.
    """

    epochs: int = 1
    """Passes over the local data per call (>= 1)."""
    batch_size: int = 32
    """Examples per optimizer step (>= 1); the last batch of an epoch may be smaller."""
    lr: float = 0.05
    """Learning rate (> 0)."""
    optimizer: Literal["sgd", "adam"] = "sgd"
    """``"sgd"`` (with momentum, the usual FL client optimizer) or ``"adam"``."""
    momentum: float = 0.9
    """SGD momentum in [0, 1); ignored by Adam."""
    weight_decay: float = 0.0
    """L2 penalty (>= 0), applied by the optimizer."""
    label_smoothing: float = 0.0
    """Label smoothing in [0, 1) for the supervised cross-entropy."""

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", _is_int(self.epochs) and self.epochs >= 1, "an int >= 1"),
            ("batch_size", _is_int(self.batch_size) and self.batch_size >= 1, "an int >= 1"),
            ("lr", _is_real(self.lr) and self.lr > 0, "a finite number > 0"),
            ("optimizer", self.optimizer in ("sgd", "adam"), "'sgd' or 'adam'"),
            ("momentum", _is_real(self.momentum) and 0 <= self.momentum < 1, "in [0, 1)"),
            ("weight_decay", _is_real(self.weight_decay) and self.weight_decay >= 0, ">= 0"),
            (
                "label_smoothing",
                _is_real(self.label_smoothing) and 0 <= self.label_smoothing < 1,
                "in [0, 1)",
            ),
        ]
        for field, ok, want in checks:
            if not ok:
                got = getattr(self, field)
                raise ValueError(f"TrainConfig.{field} must be {want}, got {got!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# --------------------------------------------------------------------------- setup


def resolve_threads(requested: int = 0) -> int:
    """torch CPU threads for this process: ``requested``, or for 0 ``OMP_NUM_THREADS`` if set.

    Ray sets ``OMP_NUM_THREADS`` to the CPUs it reserved for a worker (``client-cpus``), so
    "auto" follows the reservation there; elsewhere it is 1, the fastest setting measured for
    fedkd's small models on few cores (docs/benchmarks.md: 2 workers × 2 threads on 2 cores
    were 3–46× slower than 1 thread each).
    """
    if requested > 0:
        return requested
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ValueError:
        return 1


def resolve_device(name: str = "auto") -> torch.device:
    """Map a device name to a ``torch.device``.

    ``"auto"`` picks CUDA when available, else CPU. Asking for CUDA explicitly on a machine
    without it raises instead of silently training on CPU.

    Raises
    ------
    ValueError
        If ``name`` is not a device string torch understands.
    RuntimeError
        If a CUDA device is requested but unavailable (or the index is out of range).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r} (try 'auto', 'cpu' or 'cuda:0')") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {name!r} requested but only {torch.cuda.device_count()} CUDA devices exist"
            )
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global RNG and torch (CPU and all CUDA devices).

    Prefer passing explicit ``torch.Generator`` objects to the functions here; this covers
    whatever still draws from global state (weight initialisation, dropout).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Build the optimizer named by ``cfg`` over the model's trainable parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters")
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def iterate_minibatches(
    n: int, batch_size: int, generator: torch.Generator | None, shuffle: bool = True
) -> Iterator[Tensor]:
    """Yield CPU index tensors covering ``range(n)`` once, in batches of ``batch_size``.

    Shuffles with ``generator`` (``None`` draws from torch's global RNG); the last batch keeps
    the remainder rather than dropping it, so every example is seen each epoch.
    """
    if n < 0 or batch_size < 1:
        raise ValueError(f"need n >= 0 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    if n == 0:
        return  # Tensor.split would yield one empty batch
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    yield from order.split(batch_size)


def _stage(tensor: Tensor, device: torch.device) -> Tensor:
    """``tensor`` on ``device`` once, for a whole training call, unless it is too big.

    Saves the ``epochs x batches`` host-to-device copies of per-batch transfers (and the sync
    each one may cost); a no-op when the tensor is already there (always, on CPU).
    """
    if tensor.device == device or tensor.nbytes > STAGE_LIMIT_BYTES:
        return tensor
    return tensor.to(device, non_blocking=True)


def _rows(tensor: Tensor, idx: Tensor, device: torch.device) -> Tensor:
    """Rows ``idx`` of ``tensor`` (indexed where the tensor lives), on ``device``."""
    return tensor[idx.to(tensor.device, non_blocking=True)].to(device, non_blocking=True)


def inference_batch_size(device: torch.device) -> int:
    """Rows per inference chunk when the caller gives none: cache-sized on CPU, large elsewhere."""
    return CPU_INFERENCE_ROWS if device.type == "cpu" else ACCELERATOR_INFERENCE_ROWS


def _place(model: nn.Module, device: DeviceLike) -> torch.device:
    """Move ``model`` to ``device`` if given; return the device batches must go to."""
    if device is not None:
        target = resolve_device(str(device))  # same checks for "cuda" and torch.device("cuda")
        model.to(target)
        return target
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- training


def _fit(
    model: nn.Module,
    n: int,
    cfg: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator | None,
    batch_loss: Callable[[Tensor], Tensor],
) -> float:
    """Run ``cfg.epochs`` epochs of minibatch steps; return the last epoch's mean batch loss."""
    model.train()
    mean = float("nan")
    for epoch in range(cfg.epochs):
        total: Tensor | float = 0.0  # stays on the loss's device: one sync per epoch
        for idx in iterate_minibatches(n, cfg.batch_size, generator):
            loss = batch_loss(idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total = total + loss.detach().double() * idx.numel()
        mean = float(total) / n
        if not math.isfinite(mean):
            raise RuntimeError(f"training diverged (loss {mean}) in epoch {epoch}; lower cfg.lr")
    return mean


def _check_rows(x: Tensor, other: Tensor, name: str) -> None:
    if x.shape[0] == 0:
        raise ValueError("no training examples: x has 0 rows")
    if other.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but {name} has {other.shape[0]}")


def train_supervised(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cfg: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    device: DeviceLike = None,
) -> float:
    """Train ``model`` with (label-smoothed) cross-entropy on ``(x, y)``.

    Parameters
    ----------
    model : nn.Module
        Maps ``(batch, *features)`` to ``(batch, classes)`` logits.
    x : Tensor
        ``(n, *features)`` inputs, left on their device.
    y : Tensor
        ``(n,)`` integer labels.
    cfg : TrainConfig
        Epochs, batch size, optimizer settings, label smoothing.
    optimizer : torch.optim.Optimizer, optional
        Reused as is (its state persists across calls); else built by :func:`make_optimizer`.
    generator : torch.Generator, optional
        Shuffling RNG; pass a seeded one for reproducible runs.
    device : torch.device or str, optional
        Move the model here first; ``None`` trains where the model already is.

    Returns
    -------
    float
        Mean training loss over the last epoch (each batch's loss before its step).
    """
    _check_rows(x, y, "y")
    dev = _place(model, device)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    checked = False
    x_dev, y_dev = _stage(x, dev), _stage(y, dev)  # once per call, not per batch

    def batch_loss(idx: Tensor) -> Tensor:
        nonlocal checked
        logits = model(_rows(x_dev, idx, dev))  # (batch, classes)
        if not checked:  # label range needs the output width, known after one forward
            validate_labels(y, logits.shape[1])
            checked = True
        target = _rows(y_dev, idx, dev)
        return F.cross_entropy(logits, target, label_smoothing=cfg.label_smoothing)

    return _fit(model, x.shape[0], cfg, opt, generator, batch_loss)


def distill(
    model: nn.Module,
    inputs: Tensor,
    teacher: Tensor,
    spec: KDSpec,
    cfg: TrainConfig,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    teacher_is_probs: bool = True,
    teacher_temperature: float | None = 1.0,
    device: DeviceLike = None,
) -> float:
    """Train ``model`` so its softened outputs on ``inputs`` match ``teacher``.

    The server-side step of Federated Distillation: the aggregated client predictions on the
    public inputs are the teacher. Defaults treat ``teacher`` as probabilities the clients
    already softened (``teacher_temperature=1.0``: used as is); the loss is
    :func:`fedkd.kd.distillation_loss` with ``spec``.

    Parameters
    ----------
    model : nn.Module
        The student.
    inputs : Tensor
        ``(n, *features)`` public (transfer) inputs.
    teacher : Tensor
        ``(n, classes)`` teacher probabilities (or logits with ``teacher_is_probs=False``).
    spec : KDSpec
        Temperature, divergence and T² scaling.
    cfg : TrainConfig
        Epochs, batch size and optimizer settings (``label_smoothing`` unused).
    optimizer, generator, device
        As in :func:`train_supervised`.
    teacher_is_probs, teacher_temperature
        Passed to :func:`fedkd.kd.distillation_loss`.

    Returns
    -------
    float
        Mean distillation loss over the last epoch.
    """
    _check_rows(inputs, teacher, "teacher")
    if teacher.dim() != 2:
        raise ValueError(f"teacher must be 2-D (n, classes), got shape {tuple(teacher.shape)}")
    dev = _place(model, device)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    inputs_dev, teacher_dev = _stage(inputs, dev), _stage(teacher, dev)  # once per call

    def batch_loss(idx: Tensor) -> Tensor:
        logits = model(_rows(inputs_dev, idx, dev))  # (batch, classes)
        return distillation_loss(
            logits,
            _rows(teacher_dev, idx, dev),
            spec,
            teacher_is_probs=teacher_is_probs,
            teacher_temperature=teacher_temperature,
        )

    return _fit(model, inputs.shape[0], cfg, opt, generator, batch_loss)


def train_with_teacher(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    public_x: Tensor,
    teacher: Tensor,
    spec: KDSpec,
    cfg: TrainConfig,
    *,
    lam: float,
    optimizer: torch.optim.Optimizer | None = None,
    generator: torch.Generator | None = None,
    device: DeviceLike = None,
) -> float:
    """Supervised training with a distillation term on public inputs in *every* step.

    Each step pairs a private batch with ``cfg.batch_size`` public rows drawn at random (with
    replacement) and minimises ``CE(private) + lam * KD(public, teacher)``. This is how fedkd's
    clients co-distil: FedMD's digest-then-revisit order lets the revisit epochs on a client's
    one or two classes overwrite what the digest taught about the others (catastrophic
    forgetting, as in continual learning); optimising both terms together keeps both, as LwF
    keeps old tasks (Li & Hoiem 2017). docs/recipes.md shows the measurement.

    Parameters
    ----------
    model, x, y, cfg, optimizer, generator, device
        As in :func:`train_supervised` (epochs count passes over the private data).
    public_x : Tensor
        ``(m, *features)`` public inputs the teacher refers to.
    teacher : Tensor
        ``(m, classes)`` teacher probabilities, already softened (used as is).
    spec : KDSpec
        Temperature, divergence and T² scaling of the distillation term.
    lam : float
        Weight (>= 0) of the distillation term.

    Returns
    -------
    float
        Mean total loss over the last epoch.
    """
    _check_rows(x, y, "y")
    _check_rows(public_x, teacher, "teacher")
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    dev = _place(model, device)
    opt = optimizer if optimizer is not None else make_optimizer(model, cfg)
    x_dev, y_dev = _stage(x, dev), _stage(y, dev)
    pub_dev, teacher_dev = _stage(public_x, dev), _stage(teacher, dev)
    validate_labels(y, int(teacher.shape[1]))
    num_public = public_x.shape[0]

    def batch_loss(idx: Tensor) -> Tensor:
        logits = model(_rows(x_dev, idx, dev))  # (batch, classes)
        ce = F.cross_entropy(logits, _rows(y_dev, idx, dev), label_smoothing=cfg.label_smoothing)
        pick = torch.randint(num_public, (cfg.batch_size,), generator=generator)
        kd = distillation_loss(
            model(_rows(pub_dev, pick, dev)),
            _rows(teacher_dev, pick, dev),
            spec,
            teacher_is_probs=True,
            teacher_temperature=1.0,
        )
        return ce + lam * kd

    return _fit(model, x.shape[0], cfg, opt, generator, batch_loss)


# --------------------------------------------------------------------------- inference


def predict_logits(
    model: nn.Module, x: Tensor, *, batch_size: int | None = None, device: DeviceLike = None
) -> Tensor:
    """Model outputs on ``x``, in chunks, in eval mode under ``torch.inference_mode``.

    One forward per chunk (never a Python loop over samples). ``batch_size`` ``None`` picks
    :func:`inference_batch_size` for the model's device. Outputs stay on the device until the
    end and cross to the host in one copy. The model's train/eval mode is restored afterwards,
    so calling this mid-training (e.g. to record LwF's old-task outputs) has no hidden side
    effect.

    Returns
    -------
    Tensor
        ``(n, classes)`` float32 logits on the CPU (an ordinary tensor, usable as a teacher).
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _place(model, device)
    rows = batch_size or inference_batch_size(dev)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            outs = [
                model(x[i : i + rows].to(dev, non_blocking=True)).float()  # stays on device
                for i in range(0, max(x.shape[0], 1), rows)  # n = 0: one empty batch
            ]
    finally:
        model.train(was_training)
    # Outside inference mode: a normal tensor autograd may save; one device-to-host copy.
    return torch.cat(outs).cpu()


def predict_probs(
    model: nn.Module,
    x: Tensor,
    *,
    temperature: float = 1.0,
    batch_size: int | None = None,
    device: DeviceLike = None,
) -> Tensor:
    """Softened predictions ``softmax(logits / temperature)``: ``(n, classes)`` CPU float32.

    This is what a Federated Distillation client sends: probabilities already softened at the
    sender's temperature.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    logits = predict_logits(model, x, batch_size=batch_size, device=device)
    return torch.softmax(logits / temperature, dim=1)


@dataclass(frozen=True)
class EvalResult:
    """Classification metrics of one evaluation."""

    accuracy: float
    """Fraction of examples whose argmax prediction equals the label."""
    loss: float
    """Mean cross-entropy (T = 1, no label smoothing)."""
    per_class_accuracy: list[float]
    """Accuracy per class, indexed by label; ``nan`` for classes absent from ``y`` (so an
    average over present classes is ``np.nanmean``, and absence is never mistaken for 0)."""
    num_examples: int
    """Number of evaluated examples (the weight in federated averaging of metrics)."""
    top_prediction_share: float = 0.0
    """Share of examples predicted as the most predicted class (1.0: constant predictions)."""

    def collapsed(self, train_labels: Tensor, *, share: float = 0.95) -> bool:
        """Whether the model collapsed into (almost) constant predictions.

        True when at least ``share`` of the examples get one class although no class holds
        more than half of ``train_labels``: a model that saw several classes and answers one
        has diverged (loss near ln C), which the loss alone does not flag. A client holding one
        class predicting it everywhere is not a collapse.
        """
        counts = torch.bincount(train_labels.detach().cpu().long())
        balanced = len(train_labels) > 0 and float(counts.max()) <= 0.5 * len(train_labels)
        return balanced and self.top_prediction_share >= share


def evaluate(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    batch_size: int | None = None,
    device: DeviceLike = None,
) -> EvalResult:
    """Accuracy, cross-entropy and per-class accuracy of ``model`` on ``(x, y)``.

    Raises ``ValueError`` for an empty set, mismatched rows, labels outside
    ``[0, num_classes)`` or a model whose output width is not ``num_classes``.
    """
    if x.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    validate_labels(y, num_classes, rows=x.shape[0])  # before the forward pass
    logits = predict_logits(model, x, batch_size=batch_size, device=device)  # (n, classes)
    return _scores(logits, y, num_classes)


def evaluate_logits(logits: Tensor, y: Tensor, *, num_classes: int) -> EvalResult:
    """:func:`evaluate`'s metrics from logits already computed: ``(n, classes)`` on the CPU.

    Split out so a caller that computed many models' logits in one batched call
    (:mod:`fedkd.vectorized`) scores each exactly as :func:`evaluate` would.
    """
    if logits.shape[0] == 0:
        raise ValueError("cannot evaluate on an empty set")
    validate_labels(y, num_classes, rows=logits.shape[0])
    return _scores(logits, y, num_classes)


def _scores(logits: Tensor, y: Tensor, num_classes: int) -> EvalResult:
    """The metrics of checked labels ``y`` against ``(n, classes)`` logits."""
    if logits.shape[1] != num_classes:
        raise ValueError(f"model outputs {logits.shape[1]} classes but num_classes={num_classes}")
    labels = y.detach().cpu().long()
    correct = logits.argmax(dim=1) == labels  # (n,)
    seen = torch.bincount(labels, minlength=num_classes).double()  # (classes,)
    hits = torch.bincount(labels[correct], minlength=num_classes).double()
    per_class = torch.where(seen > 0, hits / seen.clamp_min(1), torch.nan)
    predicted = torch.bincount(logits.argmax(dim=1), minlength=num_classes)
    return EvalResult(
        accuracy=float(correct.double().mean()),
        loss=float(F.cross_entropy(logits, labels)),
        per_class_accuracy=per_class.tolist(),
        num_examples=int(logits.shape[0]),
        top_prediction_share=float(predicted.max()) / int(logits.shape[0]),
    )
