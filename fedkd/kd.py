"""The one knowledge-distillation loss core (pure torch).

Every distillation in fedkd goes through this module: the federated student that learns from the
clients' averaged soft predictions (Federated Distillation) and the continual learner that keeps
its old outputs (Learning without Forgetting) both call :func:`distillation_loss`, so a fix or a
new divergence lands everywhere at once.

Conventions
-----------
* The *teacher* distribution ``p`` and the *student* distribution ``q`` are compared per row;
  ``"kl"`` means the forward divergence ``KL(p || q)`` used by Hinton et al. (2015).
* Everything is computed in log space (``log_softmax``) so logits of magnitude ``1e4`` and
  teachers with exact zeros (one-hot labels, clipped client predictions) never produce NaN.
* The teacher is always detached: gradients flow to the student only.

This module imports only torch; it must stay importable without Flower, Ray or Hydra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "REVERSE_KL_LOG_FLOOR",
    "Divergence",
    "FeatureHintLoss",
    "KDSpec",
    "Reduction",
    "bidirectional_kl_loss",
    "cosine_angle_loss",
    "distillation_loss",
    "hinge_distillation_loss",
    "kd_objective",
    "log_soft_targets",
    "soft_targets",
    "validate_distribution",
    "validate_labels",
]

Divergence = Literal["kl", "reverse_kl", "symmetric_kl", "soft_ce", "mse"]
Reduction = Literal["batchmean", "sum", "none"]

DIVERGENCES: tuple[str, ...] = get_args(Divergence)
REDUCTIONS: tuple[str, ...] = get_args(Reduction)

# Reverse KL, KL(q || p), is infinite wherever the teacher puts exactly zero mass and the student
# does not. Teacher log-probabilities are floored at log(1e-8) in that direction only, so a
# one-hot teacher gives a large but finite, smooth penalty. Where p >= 1e-8 the value is exact.
REVERSE_KL_LOG_FLOOR: float = math.log(1e-8)


@dataclass(frozen=True)
class KDSpec:
    """How to distil a teacher distribution into a student.

    Raises ``ValueError`` (naming the field) for a non-positive temperature, an unknown
    divergence, or a ``balance`` outside ``[0, 1]``.
    """

    temperature: float = 2.0
    """Softening temperature T applied to the student (and, by default, to the teacher).
    T > 1 spreads mass onto non-argmax classes, exposing the teacher's "dark knowledge"
    (Hinton et al., 2015)."""

    divergence: Divergence = "kl"
    """Row-wise discrepancy between teacher ``p`` and student ``q``: ``"kl"`` = KL(p||q)
    (mass-covering, Hinton et al.); ``"reverse_kl"`` = KL(q||p) (mode-seeking);
    ``"symmetric_kl"`` = balance·KL(p||q) + (1-balance)·KL(q||p); ``"soft_ce"`` =
    -Σ p log q, the "modified cross-entropy" of LwF (same gradient as KL, offset by H(p));
    ``"mse"`` = Σ (p - q)², squared error between the softened probabilities."""

    t2_scaling: bool = True
    """Multiply the loss by T² (default True). Softening at T scales the gradients of the soft
    term by 1/T²; Hinton et al. (2015) multiply by T² so changing T does not silently re-weight
    the soft term against a hard-label loss. Learning without Forgetting (Li & Hoiem, 2017)
    uses no T² factor: set False to reproduce it."""

    balance: float = 0.5
    """Weight of the forward KL in ``"symmetric_kl"``; ignored by the other divergences."""

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"KDSpec.temperature must be a finite number > 0, got {t!r}")
        if self.divergence not in DIVERGENCES:
            raise ValueError(
                f"KDSpec.divergence must be one of {DIVERGENCES}, got {self.divergence!r}"
            )
        b = self.balance
        if isinstance(b, bool) or not isinstance(b, int | float) or not 0.0 <= b <= 1.0:
            raise ValueError(f"KDSpec.balance must be in [0, 1], got {b!r}")
        if not isinstance(self.t2_scaling, bool):
            raise ValueError(f"KDSpec.t2_scaling must be a bool, got {self.t2_scaling!r}")


# --------------------------------------------------------------------------- validation


def _check_temperature(temperature: float, name: str) -> None:
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {temperature!r}")


def _check_finite(x: Tensor, name: str) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def validate_distribution(probs: Tensor, *, atol: float = 1e-4, name: str = "teacher") -> None:
    """Check that ``probs`` is a batch of probability distributions.

    Federated teachers arrive over the wire as probabilities; a malformed row (a client that sent
    logits, NaN from a diverged model) would otherwise poison the aggregate silently.

    Parameters
    ----------
    probs : Tensor
        ``(rows, classes)`` candidate distributions.
    atol : float
        Allowed absolute deviation of each row sum from 1.
    name : str
        Used in error messages.

    Raises
    ------
    ValueError
        If ``probs`` is not 2-D, is non-finite, has negative entries, or a row does not sum to 1.
    """
    if probs.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, classes), got shape {tuple(probs.shape)}")
    _check_finite(probs, name)
    if bool((probs < 0).any()):
        raise ValueError(f"{name} has negative entries; expected probabilities")
    sums = probs.sum(dim=1, dtype=torch.float64)  # (rows,)
    bad = (sums - 1.0).abs() > atol
    if bool(bad.any()):
        row = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"{name} rows must sum to 1 (atol={atol}); row {row} sums to {float(sums[row]):.6g}"
            " — did you pass logits with teacher_is_probs=True?"
        )


def validate_labels(labels: Tensor, num_classes: int, *, rows: int | None = None) -> None:
    """Check that ``labels`` are integer class indices in ``[0, num_classes)``.

    Raises ``ValueError`` early, instead of the opaque index error (or CUDA device-side assert)
    that ``cross_entropy`` gives for an out-of-range label.

    Parameters
    ----------
    labels : Tensor
        ``(rows,)`` integer class indices.
    num_classes : int
        Number of output columns.
    rows : int, optional
        Expected number of labels (the batch size of the logits).
    """
    if labels.dim() != 1:
        raise ValueError(f"labels must be 1-D (rows,), got shape {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must have an integer dtype, got {labels.dtype}")
    if rows is not None and labels.shape[0] != rows:
        raise ValueError(f"labels has {labels.shape[0]} rows but the logits have {rows}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must be in [0, {num_classes}), got range "
            f"[{int(labels.min())}, {int(labels.max())}]"
        )


def _column_index(class_mask: Tensor | Sequence[int], num_classes: int) -> Tensor:
    """Turn a class mask (indices or bool mask) into a validated 1-D index tensor."""
    mask = torch.as_tensor(class_mask)
    if mask.dim() != 1 or mask.numel() == 0:
        raise ValueError(
            f"class_mask must be a non-empty 1-D index list or bool mask, got shape "
            f"{tuple(mask.shape)}"
        )
    if mask.dtype == torch.bool:
        if mask.numel() != num_classes:
            raise ValueError(
                f"bool class_mask has length {mask.numel()} but there are {num_classes} classes"
            )
        if not bool(mask.any()):
            raise ValueError("class_mask selects no class")
        return mask.nonzero().squeeze(1)
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise ValueError(f"class_mask must hold integer indices or bools, got {mask.dtype}")
    mask = mask.long()
    if int(mask.min()) < 0 or int(mask.max()) >= num_classes:
        raise ValueError(
            f"class_mask indices must be in [0, {num_classes}), got range "
            f"[{int(mask.min())}, {int(mask.max())}]"
        )
    if mask.unique().numel() != mask.numel():
        raise ValueError("class_mask has duplicate indices")
    return mask


# --------------------------------------------------------------------------- soft targets


def log_soft_targets(teacher: Tensor, temperature: float, *, is_probs: bool = False) -> Tensor:
    """Log of the softened teacher distribution, computed stably in log space.

    Parameters
    ----------
    teacher : Tensor
        ``(rows, classes)`` logits, or probabilities when ``is_probs``.
    temperature : float
        Softening temperature T > 0.
    is_probs : bool
        Treat ``teacher`` as probabilities: ``p^(1/T)`` renormalised, i.e. ``softmax(log p / T)``.
        Exact zeros stay zero (their log is ``-inf``).

    Returns
    -------
    Tensor
        ``(rows, classes)`` log-probabilities; ``-inf`` only where a probability teacher is 0.
    """
    _check_temperature(temperature, "temperature")
    log_t = torch.log(teacher) if is_probs else teacher  # log(0) = -inf, kept on purpose
    return F.log_softmax(log_t / temperature, dim=-1)


def soft_targets(teacher: Tensor, temperature: float, *, is_probs: bool = False) -> Tensor:
    """Softened teacher distribution (Hinton et al., 2015).

    Logits become ``softmax(z / T)``. Probabilities become ``p^(1/T)`` renormalised, computed
    as ``softmax(log p / T)``: the same distribution the sender's logits would give at T when
    ``p`` itself was ``softmax(z)``. Exact zeros stay zero.

    Parameters
    ----------
    teacher : Tensor
        ``(rows, classes)`` logits, or probabilities when ``is_probs``.
    temperature : float
        Softening temperature T > 0.
    is_probs : bool
        Whether ``teacher`` holds probabilities rather than logits.

    Returns
    -------
    Tensor
        ``(rows, classes)`` rows summing to 1.
    """
    return log_soft_targets(teacher, temperature, is_probs=is_probs).exp()


# --------------------------------------------------------------------------- losses


def _row_divergence(log_q: Tensor, log_p: Tensor, spec: KDSpec) -> Tensor:
    """Per-row divergence between teacher ``log_p`` and student ``log_q``, both (rows, classes).

    ``log_q`` is always finite; ``log_p`` may be ``-inf`` where the teacher is exactly zero.
    """
    p = log_p.exp()  # (rows, classes); exact 0 where log_p = -inf

    def forward_kl() -> Tensor:  # KL(p || q); 0·log 0 = 0
        present = p > 0
        safe_log_p = torch.where(present, log_p, torch.zeros_like(log_p))  # no -inf past here
        return torch.where(present, p * (safe_log_p - log_q), torch.zeros_like(p)).sum(dim=1)

    def reverse_kl() -> Tensor:  # KL(q || p), teacher log floored (see REVERSE_KL_LOG_FLOOR)
        q = log_q.exp()  # only the divergences that read q pay for it
        return (q * (log_q - log_p.clamp_min(REVERSE_KL_LOG_FLOOR))).sum(dim=1)

    if spec.divergence == "kl":
        return forward_kl()
    if spec.divergence == "reverse_kl":
        return reverse_kl()
    if spec.divergence == "symmetric_kl":
        return spec.balance * forward_kl() + (1.0 - spec.balance) * reverse_kl()
    if spec.divergence == "soft_ce":
        return -(p * log_q).sum(dim=1)
    return (p - log_q.exp()).pow(2).sum(dim=1)  # "mse"


def _check_pair(student_logits: Tensor, teacher: Tensor) -> None:
    if student_logits.dim() != 2 or student_logits.shape != teacher.shape:
        raise ValueError(
            "student_logits and teacher must both be 2-D (rows, classes) of the same shape; got "
            f"student {tuple(student_logits.shape)} and teacher {tuple(teacher.shape)}"
        )
    if student_logits.shape[0] == 0 or student_logits.shape[1] == 0:
        raise ValueError(f"empty batch: student_logits has shape {tuple(student_logits.shape)}")


def _prepare_pair(student_logits: Tensor, teacher: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check ``reduction`` and the pair's shapes; return both in (at least) float32 on the
    student's device, the teacher detached. Half-precision students are scored in float32:
    log_softmax and the row-sum check need it."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if not student_logits.dtype.is_floating_point:
        raise ValueError(f"student_logits must be floating point, got {student_logits.dtype}")
    dtype = torch.promote_types(student_logits.dtype, torch.float32)
    student_logits = student_logits.to(dtype)
    teacher = teacher.detach().to(device=student_logits.device, dtype=dtype)
    _check_pair(student_logits, teacher)
    return student_logits, teacher


def distillation_loss(
    student_logits: Tensor,
    teacher: Tensor,
    spec: KDSpec = KDSpec(),  # frozen dataclass: safe as a default
    *,
    teacher_is_probs: bool = False,
    teacher_temperature: float | None = None,
    class_mask: Tensor | Sequence[int] | None = None,
    reduction: Reduction = "batchmean",
    validate: bool = True,
) -> Tensor:
    """Distillation loss of a student against a (detached) teacher.

    The student is softened at ``spec.temperature``; the teacher at ``teacher_temperature``
    (``None`` means ``spec.temperature``). Federated teachers arrive as probabilities the
    senders already softened, so Federated Distillation passes ``teacher_is_probs=True,
    teacher_temperature=1.0`` and the teacher is used as is. The loss is multiplied by
    ``spec.temperature ** 2`` when ``spec.t2_scaling`` (Hinton et al., 2015).

    Parameters
    ----------
    student_logits : Tensor
        ``(rows, classes)`` raw student outputs; gradients flow here.
    teacher : Tensor
        ``(rows, classes)`` teacher logits, or probabilities when ``teacher_is_probs``
        (validated with :func:`validate_distribution`). Detached and moved to the student's
        device; both are computed in the student's dtype, or float32 for half-precision students.
    spec : KDSpec
        Temperature, divergence, T² scaling and symmetric balance.
    teacher_is_probs : bool
        Whether ``teacher`` holds probabilities rather than logits.
    teacher_temperature : float, optional
        Temperature applied to the teacher; ``None`` uses ``spec.temperature``.
    class_mask : Tensor or sequence of int, optional
        Column subset (indices, or a bool mask of length ``classes``). Student and teacher are
        both restricted to these columns and renormalised over them — LwF distils only the old
        classes' outputs (Li & Hoiem, 2017).
    reduction : {"batchmean", "sum", "none"}
        ``"batchmean"`` sums over classes and averages over rows (the true per-example
        divergence); ``"sum"`` sums everything; ``"none"`` returns the ``(rows,)`` vector.
    validate : bool
        Check the values (finite student and teacher, a teacher that is a distribution, a
        ``class_mask`` in range without duplicates). Each check reads a result back to the
        host, a device sync on accelerators. ``False`` skips them (shapes, dtypes and the
        reduction are still checked) for hot loops whose inputs the caller has checked once:
        LwF validates its first batch of a task and reuses one mask tensor. An integer
        ``class_mask`` should then already be a long tensor on the student's device. The
        value returned is the same either way.

    Returns
    -------
    Tensor
        Scalar, or ``(rows,)`` for ``reduction="none"``.

    Raises
    ------
    ValueError
        On shape mismatch, empty or non-finite inputs, a teacher that is not a distribution,
        non-positive temperature, a bad ``class_mask``, or an unknown reduction.
    """
    student_logits, teacher = _prepare_pair(student_logits, teacher, reduction)
    t_teacher = spec.temperature if teacher_temperature is None else teacher_temperature
    _check_temperature(t_teacher, "teacher_temperature")
    if validate:
        _check_finite(student_logits, "student_logits")
        if teacher_is_probs:
            validate_distribution(teacher, name="teacher")
        else:
            _check_finite(teacher, "teacher")

    if class_mask is not None:
        if validate:
            cols = _column_index(class_mask, student_logits.shape[1])
        else:  # trusted: no range/duplicate checks (each would sync)
            cols = torch.as_tensor(class_mask)
            cols = cols.nonzero().squeeze(1) if cols.dtype == torch.bool else cols.long()
        cols = cols.to(student_logits.device)
        student_logits = student_logits.index_select(1, cols)  # (rows, kept)
        teacher = teacher.index_select(1, cols)
        if validate and teacher_is_probs and bool((teacher.sum(dim=1) <= 0).any()):
            raise ValueError("teacher has a row with zero mass on the class_mask columns")

    log_q = F.log_softmax(student_logits / spec.temperature, dim=1)  # (rows, classes)
    log_p = log_soft_targets(teacher, t_teacher, is_probs=teacher_is_probs)
    per_row = _row_divergence(log_q, log_p, spec)  # (rows,)
    if spec.t2_scaling:
        per_row = per_row * spec.temperature**2
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


def kd_objective(
    student_logits: Tensor,
    labels: Tensor,
    teacher: Tensor,
    spec: KDSpec,
    *,
    lam: float,
    label_smoothing: float = 0.0,
    teacher_is_probs: bool = False,
    teacher_temperature: float | None = None,
    class_mask: Tensor | Sequence[int] | None = None,
) -> Tensor:
    """Hard-label cross-entropy plus ``lam`` times the distillation loss.

    ``CE(student_logits, labels) + lam * distillation_loss(...)`` — the combined objective of
    Hinton et al. (2015) and of LwF (Li & Hoiem, 2017, where ``lam`` is λ_o). The CE term uses
    all columns at T = 1; ``class_mask`` restricts only the distillation term.

    Parameters
    ----------
    student_logits : Tensor
        ``(rows, classes)`` raw student outputs.
    labels : Tensor
        ``(rows,)`` integer labels in ``[0, classes)``.
    teacher, spec, teacher_is_probs, teacher_temperature, class_mask
        As in :func:`distillation_loss`.
    lam : float
        Weight (>= 0) of the distillation term.
    label_smoothing : float
        Label smoothing in ``[0, 1)`` for the CE term.

    Returns
    -------
    Tensor
        Scalar loss (averaged over rows).
    """
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if student_logits.dim() != 2:
        raise ValueError(
            f"student_logits must be 2-D (rows, classes), got {tuple(student_logits.shape)}"
        )
    validate_labels(labels, student_logits.shape[1], rows=student_logits.shape[0])
    kd = distillation_loss(
        student_logits,
        teacher,
        spec,
        teacher_is_probs=teacher_is_probs,
        teacher_temperature=teacher_temperature,
        class_mask=class_mask,
    )
    ce = F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)
    return ce + lam * kd


# --------------------------------------------------------------------------- feature hints


class FeatureHintLoss(nn.Module):
    """FitNets-style hint loss between intermediate features (Romero et al., 2015).

    When the widths differ, a learnable linear regressor maps the student's features to the
    teacher's width (FitNets' "regressor"); when they are equal the map is the identity, so the
    loss has no parameters. Put this module's parameters in the student's optimizer.

    Parameters
    ----------
    student_dim, teacher_dim : int
        Feature widths (after flattening all but the batch dimension).
    kind : {"mse", "cosine"}
        ``"mse"``: mean squared error over all elements. ``"cosine"``: mean over rows of
        ``1 - cos(student, teacher)``, insensitive to feature scale.
    """

    def __init__(
        self, student_dim: int, teacher_dim: int, kind: Literal["mse", "cosine"] = "mse"
    ) -> None:
        super().__init__()
        if student_dim <= 0 or teacher_dim <= 0:
            raise ValueError(
                f"student_dim and teacher_dim must be > 0, got {student_dim} and {teacher_dim}"
            )
        if kind not in ("mse", "cosine"):
            raise ValueError(f"kind must be 'mse' or 'cosine', got {kind!r}")
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.kind = kind
        self.projection: nn.Module = (
            nn.Identity() if student_dim == teacher_dim else nn.Linear(student_dim, teacher_dim)
        )

    def forward(self, student_features: Tensor, teacher_features: Tensor) -> Tensor:
        """Hint loss of ``(rows, student_dim)`` features against ``(rows, teacher_dim)`` ones.

        Trailing dimensions are flattened; the teacher is detached.
        """
        if student_features.dim() < 2 or teacher_features.dim() < 2:
            raise ValueError(
                "features must be at least 2-D (rows, ...); got student "
                f"{tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)}"
            )
        s = student_features.flatten(1)  # (rows, student_dim)
        t = teacher_features.detach().flatten(1).to(s.dtype)  # (rows, teacher_dim)
        if (
            s.shape[0] != t.shape[0]
            or s.shape[1] != self.student_dim
            or t.shape[1] != self.teacher_dim
        ):
            raise ValueError(
                f"expected student (rows, {self.student_dim}) and teacher (rows, "
                f"{self.teacher_dim}) features; got student {tuple(student_features.shape)} and "
                f"teacher {tuple(teacher_features.shape)}"
            )
        _check_finite(s, "student_features")
        _check_finite(t, "teacher_features")
        s = self.projection(s)  # (rows, teacher_dim)
        if self.kind == "mse":
            return F.mse_loss(s, t)
        return (1.0 - F.cosine_similarity(s, t, dim=1)).mean()


# --------------------------------------------------------------------------- seed loss zoo
# The loss formulas of the seed texts that the divergences above do not cover. Kept in one
# block: each is a plain function on the same conventions (teacher p detached, student q,
# log-space where probabilities appear, "batchmean" = mean over rows).

HingeAggregate = Literal["sum", "max"]


def hinge_distillation_loss(
    student_logits: Tensor,
    teacher: Tensor,
    margin: float = 1.0,
    *,
    teacher_is_probs: bool = False,
    aggregate: HingeAggregate = "sum",
    reduction: Reduction = "batchmean",
) -> Tensor:
    """Hinge (margin δ) distillation: the student must rank the teacher's class first by δ.

    With ``c = argmax_j teacher_j`` per row and student logits ``z``, the per-row loss is the
    multi-class hinge against the teacher's label: ``Σ_{j≠c} max(0, δ − (z_c − z_j))``
    (``aggregate="sum"``, Weston & Watkins 1999) or ``max_{j≠c} max(0, δ − (z_c − z_j))``
    (``aggregate="max"``, Crammer & Singer 2001). Unlike KL it transfers only the teacher's
    decision and stops pushing once the margin holds, which makes it robust to an
    over-confident or noisy teacher distribution. It is computed on raw logits (no temperature:
    a margin on softened logits is just δ·T on the raw ones). Ties in the teacher go to the
    lowest class index, as ``argmax`` does.

    Parameters
    ----------
    student_logits : Tensor
        ``(rows, classes)`` raw student outputs; gradients flow here.
    teacher : Tensor
        ``(rows, classes)`` teacher logits, or probabilities when ``teacher_is_probs``
        (validated). Only its argmax is used; it is detached.
    margin : float
        δ >= 0: the logit gap the student must keep between the teacher's class and any other.
    aggregate : {"sum", "max"}
        Sum or max of the per-class violations in a row.
    reduction : {"batchmean", "sum", "none"}
        As in :func:`distillation_loss`.

    Returns
    -------
    Tensor
        Scalar, or ``(rows,)`` for ``reduction="none"``.
    """
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if aggregate not in ("sum", "max"):
        raise ValueError(f"aggregate must be 'sum' or 'max', got {aggregate!r}")
    z, teacher = _prepare_pair(student_logits, teacher, reduction)
    _check_finite(z, "student_logits")
    if teacher_is_probs:
        validate_distribution(teacher, name="teacher")
    else:
        _check_finite(teacher, "teacher")
    target = teacher.argmax(dim=1, keepdim=True)  # (rows, 1)
    z_target = z.gather(1, target)  # (rows, 1)
    violation = (margin - (z_target - z)).clamp_min(0.0)  # (rows, classes)
    violation = violation.scatter(1, target, 0.0)  # the target column never counts
    per_row = violation.sum(dim=1) if aggregate == "sum" else violation.amax(dim=1)
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()


def bidirectional_kl_loss(
    student_logits: Tensor,
    teacher: Tensor,
    lam: float = 1.0,
    *,
    temperature: float = 2.0,
    t2_scaling: bool = True,
    teacher_is_probs: bool = False,
    teacher_temperature: float | None = None,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """λ-weighted bidirectional KL: ``λ·KL(p‖q) + KL(q‖p)``, as the seed text writes it.

    ``p`` is the softened teacher, ``q`` the softened student. It is the ``"symmetric_kl"``
    divergence of :class:`KDSpec` in another parametrisation: ``balance·KL(p‖q) +
    (1 − balance)·KL(q‖p)`` equals ``(1 − balance)·(λ·KL(p‖q) + KL(q‖p))`` with
    ``λ = balance / (1 − balance)``. The seed form lets the forward (mass-covering) term grow
    without bound relative to the reverse (mode-seeking) one, and keeps the reverse term's
    weight fixed at 1. Both directions go through :func:`distillation_loss`, so validation,
    the reverse-KL floor (:data:`REVERSE_KL_LOG_FLOOR`) and T² scaling are the same.

    Parameters
    ----------
    student_logits, teacher, teacher_is_probs, teacher_temperature, reduction
        As in :func:`distillation_loss`.
    lam : float
        λ >= 0, the weight of the forward KL(p‖q).
    temperature : float
        Softening temperature T of the student (and the teacher unless ``teacher_temperature``).
    t2_scaling : bool
        Multiply both terms by T² (Hinton et al., 2015).

    Returns
    -------
    Tensor
        Scalar, or ``(rows,)`` for ``reduction="none"``.
    """
    if isinstance(lam, bool) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    directions: tuple[Divergence, Divergence] = ("kl", "reverse_kl")
    forward, reverse = (
        distillation_loss(
            student_logits,
            teacher,
            KDSpec(temperature=temperature, divergence=divergence, t2_scaling=t2_scaling),
            teacher_is_probs=teacher_is_probs,
            teacher_temperature=teacher_temperature,
            reduction=reduction,
        )
        for divergence in directions
    )
    return lam * forward + reverse


def cosine_angle_loss(
    student_features: Tensor,
    teacher_features: Tensor,
    *,
    eps: float = 1e-7,
    reduction: Reduction = "batchmean",
) -> Tensor:
    """Angle between student and teacher feature vectors: ``arccos(cos(s, t))`` in radians.

    A scale-free feature loss: only the direction of each row's feature vector is matched.
    Compared with ``1 − cos`` (:class:`FeatureHintLoss` with ``kind="cosine"``) the angle keeps
    a useful gradient near alignment (``1 − cos θ ≈ θ²/2`` flattens as θ → 0; the angle does
    not), so the last few degrees are not neglected. ``cos`` is clamped to ``[−1 + eps,
    1 − eps]`` because ``arccos``'s derivative is infinite at ±1; a zero vector has
    ``cos = 0`` (angle π/2), as ``torch.nn.functional.cosine_similarity`` defines it.
    Features of different widths must be projected first (e.g. by ``FeatureHintLoss``'s
    regressor); the teacher is detached.

    Parameters
    ----------
    student_features, teacher_features : Tensor
        ``(rows, ...)`` features of equal shape; trailing dimensions are flattened.
    eps : float
        Clamp margin in ``(0, 1)``.
    reduction : {"batchmean", "sum", "none"}
        Mean over rows, sum, or the ``(rows,)`` vector of angles.

    Returns
    -------
    Tensor
        Scalar in ``[0, π]``, or ``(rows,)`` for ``reduction="none"``.
    """
    if not 0.0 < eps < 1.0:
        raise ValueError(f"eps must be in (0, 1), got {eps!r}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if student_features.dim() < 2 or student_features.shape != teacher_features.shape:
        raise ValueError(
            "features must be at least 2-D (rows, ...) and of equal shape; got student "
            f"{tuple(student_features.shape)} and teacher {tuple(teacher_features.shape)}"
        )
    if student_features.shape[0] == 0:
        raise ValueError("empty batch: no feature rows")
    dtype = torch.promote_types(student_features.dtype, torch.float32)
    s = student_features.flatten(1).to(dtype)  # (rows, dim)
    t = teacher_features.detach().flatten(1).to(device=s.device, dtype=dtype)
    _check_finite(s, "student_features")
    _check_finite(t, "teacher_features")
    cos = F.cosine_similarity(s, t, dim=1)  # (rows,)
    per_row = torch.arccos(cos.clamp(-1.0 + eps, 1.0 - eps))
    if reduction == "none":
        return per_row
    return per_row.sum() if reduction == "sum" else per_row.mean()
