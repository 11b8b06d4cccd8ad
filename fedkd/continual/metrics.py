"""Continual-learning metrics from the accuracy matrix (pure numpy).

``R[i][j]`` is the test accuracy on task ``j`` after training through task ``i``; tasks are
numbered from 0 and ``R`` is ``T x T``. The definitions below are the ones in the papers, and
the tests check them on matrices computed by hand — several libraries differ in small ways
(which row the "before" accuracy comes from, whether the last task counts, whether the
diagonal is included), which is why each function states its formula exactly.

* ``ACC = mean_j R[T-1][j]`` — average accuracy at the end (Lopez-Paz & Ranzato, 2017).
* ``BWT = mean_{j<T-1} (R[T-1][j] - R[j][j])`` — backward transfer: the change on each old
  task between *right after learning it* and the end (Lopez-Paz & Ranzato, 2017, GEM).
* ``FWT = mean_{j>=1} (R[j-1][j] - b_j)`` — forward transfer: accuracy on task ``j`` *before*
  training on it, relative to ``b_j``, the accuracy at random initialisation (GEM).
* ``forgetting = mean_{j<T-1} (max_{l<T-1} R[l][j] - R[T-1][j])`` — the drop from the *best
  earlier* accuracy (Chaudhry et al., 2018, "Riemannian Walk"). It differs from ``-BWT`` when
  a task's accuracy kept improving after it was learnt. The maximum runs over *every* earlier
  row, as printed in the paper (``since="start"``, the default); ``since="learned"`` takes it
  only over rows ``l >= j`` (after task ``j`` was learnt), as several libraries do. The two
  differ only when a task scored higher before it was trained than at any point after —
  e.g. a recurring domain in domain-IL, or transfer from a similar earlier task.
* ``intransigence_k = a*_k - R[k][k]`` — how much worse task ``k`` is learnt than by a
  reference trained jointly on tasks ``0..k`` (Chaudhry et al., 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "FORGETTING_SINCE",
    "ForgettingSince",
    "accuracy",
    "backward_transfer",
    "forgetting",
    "forgetting_per_task",
    "forward_transfer",
    "intransigence",
    "mean_std",
    "summarize",
]

Matrix = NDArray[np.float64]
ForgettingSince = Literal["start", "learned"]
FORGETTING_SINCE: tuple[str, ...] = get_args(ForgettingSince)


def _matrix(acc_matrix: ArrayLike, *, min_tasks: int = 1) -> Matrix:
    """Validate ``acc_matrix`` as a finite square ``(T, T)`` float matrix with T >= min_tasks."""
    r = np.asarray(acc_matrix, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1]:
        raise ValueError(f"the accuracy matrix must be square (T, T), got shape {r.shape}")
    if r.shape[0] < min_tasks:
        raise ValueError(f"this metric needs at least {min_tasks} tasks, got T={r.shape[0]}")
    if not np.isfinite(r).all():
        raise ValueError("the accuracy matrix has non-finite entries")
    return r


def _vector(values: ArrayLike, length: int, name: str) -> NDArray[np.float64]:
    v = np.asarray(values, dtype=np.float64)
    if v.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {v.shape}")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has non-finite entries")
    return v


def accuracy(acc_matrix: ArrayLike) -> float:
    """ACC: mean accuracy over all tasks after training on the last one, ``mean_j R[T-1][j]``."""
    r = _matrix(acc_matrix)
    return float(r[-1].mean())


def backward_transfer(acc_matrix: ArrayLike, learned_at: Sequence[int] | None = None) -> float:
    """BWT (Lopez-Paz & Ranzato, 2017): ``mean_{j<T-1} (R[T-1][j] - R[j][j])``.

    Negative values are forgetting measured from the accuracy *right after* learning each
    task. Needs T >= 2.

    ``learned_at[j]`` is the row after which task ``j`` was first learnt, when that is not
    ``j`` — a federation whose clients meet the tasks on shifted schedules learns several
    tasks in one stage. BWT then averages ``R[T-1][j] - R[learned_at[j]][j]`` over the tasks
    first learnt before the last row; ``None`` is the usual ``learned_at[j] = j``.
    """
    r = _matrix(acc_matrix, min_tasks=2)
    t = r.shape[0]
    if learned_at is None:
        return float(np.mean(r[t - 1, : t - 1] - np.diag(r)[: t - 1]))
    rows = np.asarray(learned_at, dtype=np.int64)
    if rows.shape != (t,) or rows.min() < 0 or rows.max() >= t:
        raise ValueError(f"learned_at needs one row in [0, {t}) per task, got {list(learned_at)}")
    early = np.flatnonzero(rows < t - 1)
    if early.size == 0:
        raise ValueError("BWT needs a task learnt before the last row")
    return float(np.mean(r[t - 1, early] - r[rows[early], early]))


def forward_transfer(acc_matrix: ArrayLike, random_init_acc: ArrayLike) -> float:
    """FWT (Lopez-Paz & Ranzato, 2017): ``mean_{j>=1} (R[j-1][j] - b_j)``.

    Parameters
    ----------
    acc_matrix : array_like
        ``(T, T)`` accuracy matrix, T >= 2.
    random_init_acc : array_like
        ``(T,)`` accuracies ``b`` of the randomly initialised model on each task (``b_0`` is
        required for the shape but unused).
    """
    r = _matrix(acc_matrix, min_tasks=2)
    t = r.shape[0]
    b = _vector(random_init_acc, t, "random_init_acc")
    before = r[np.arange(t - 1), np.arange(1, t)]  # R[j-1][j] for j = 1..T-1
    return float(np.mean(before - b[1:]))


def forgetting_per_task(
    acc_matrix: ArrayLike, *, since: ForgettingSince = "start"
) -> NDArray[np.float64]:
    """Per-task forgetting ``f_j = max_l R[l][j] - R[T-1][j]`` for ``j < T-1``.

    Parameters
    ----------
    acc_matrix : array_like
        ``(T, T)`` accuracy matrix, T >= 2.
    since : {"start", "learned"}
        Which earlier rows the maximum runs over. ``"start"`` (default): every row before the
        last, ``l < T-1``, including rows before task ``j`` was trained — exactly as printed
        in Chaudhry et al. (2018). ``"learned"``: only rows ``j <= l < T-1``, from the moment
        task ``j`` was learnt (what libraries that track the best accuracy *since training on
        the task* report).

    Returns
    -------
    ndarray
        ``(T-1,)`` forgetting of each old task.
    """
    if since not in FORGETTING_SINCE:
        raise ValueError(f"since must be one of {FORGETTING_SINCE}, got {since!r}")
    r = _matrix(acc_matrix, min_tasks=2)
    t = r.shape[0]
    earlier = r[: t - 1, : t - 1]  # (T-1, T-1): rows l < T-1, old tasks j < T-1
    if since == "learned":  # mask rows l < j (before task j was trained)
        rows, cols = np.indices(earlier.shape)
        earlier = np.where(rows >= cols, earlier, -np.inf)
    best = earlier.max(axis=0)  # (T-1,) best earlier accuracy per old task
    return best - r[t - 1, : t - 1]


def forgetting(acc_matrix: ArrayLike, *, since: ForgettingSince = "start") -> float:
    """Average forgetting (Chaudhry et al., 2018): mean of :func:`forgetting_per_task`."""
    return float(forgetting_per_task(acc_matrix, since=since).mean())


def intransigence(acc_matrix: ArrayLike, reference_acc: ArrayLike) -> NDArray[np.float64]:
    """Per-task intransigence ``I_k = a*_k - R[k][k]`` (Chaudhry et al., 2018).

    Parameters
    ----------
    acc_matrix : array_like
        ``(T, T)`` accuracy matrix of the learner.
    reference_acc : array_like
        ``(T,)`` values ``a*_k``: accuracy on task ``k`` of a reference model trained jointly
        on tasks ``0..k`` — the diagonal of the joint learner's accuracy matrix.

    Returns
    -------
    ndarray
        ``(T,)``; positive where the learner learns task ``k`` worse than joint training.
    """
    r = _matrix(acc_matrix)
    a_star = _vector(reference_acc, r.shape[0], "reference_acc")
    return a_star - np.diag(r)


def mean_std(values: Sequence[float] | ArrayLike) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value) over seeds."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.size)}


def summarize(
    acc_matrix: ArrayLike,
    random_init_acc: ArrayLike,
    reference_acc: ArrayLike | None = None,
    *,
    forgetting_since: ForgettingSince = "start",
) -> dict[str, float | list[float]]:
    """Every metric of one run, JSON-ready; ``forgetting_since`` as in :func:`forgetting`.

    Returns
    -------
    dict
        ``acc``, ``bwt``, ``fwt``, ``forgetting`` (floats) and, with ``reference_acc``,
        ``intransigence`` (list of T floats) and ``intransigence_mean``.
    """
    out: dict[str, float | list[float]] = {
        "acc": accuracy(acc_matrix),
        "bwt": backward_transfer(acc_matrix),
        "fwt": forward_transfer(acc_matrix, random_init_acc),
        "forgetting": forgetting(acc_matrix, since=forgetting_since),
    }
    if reference_acc is not None:
        intr = intransigence(acc_matrix, reference_acc)
        out["intransigence"] = [float(v) for v in intr]
        out["intransigence_mean"] = float(intr.mean())
    return out
