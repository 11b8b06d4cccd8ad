"""Aggregation rules that turn client soft predictions into one teacher distribution.

In federated distillation (FD) every client sends, for each sample of a shared public set, a
probability vector already softened at temperature T. The server reduces these
``(clients, samples, classes)`` predictions to a ``(samples, classes)`` teacher that the central
student distils from. The rules here are pure NumPy functions (no Flower import) so they can be
tested against plain-loop references and reused outside a server.

Every rule has the signature ``rule(probs, ctx) -> teacher`` and returns non-negative float32 rows
that sum to 1. Rows that would be all-zero (possible for ``median`` or ``class_weighted`` on
adversarial inputs) fall back to the uniform distribution, which is the maximum-entropy choice
when the clients give no usable signal.

``StreamingAggregator`` computes the same result for the rules that decompose into per-client
sums, so the server can fold replies in as they arrive instead of holding every reply at once.
``median``, ``trimmed_mean`` and ``filtered_mean`` need every reply at once (order statistics
over clients) and are not streamable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "AGGREGATION_RULES",
    "LOG_EPS",
    "STREAMABLE_RULES",
    "SUPPORT_RULES",
    "AggregationContext",
    "AggregationRule",
    "StreamingAggregator",
    "aggregate",
    "available_rules",
    "evidence",
    "normalised_certainty",
    "supported_rows",
]

LOG_EPS = 1e-12
"""Probabilities are clamped to this before a log (``logit_mean``, entropies).

A client's exact zero would otherwise make the geometric mean zero for that class whatever the
other clients say (log 0 = -inf). 1e-12 (log ≈ -27.6) is far below any probability a softened
softmax produces in float32 yet keeps every logarithm finite.
"""


@dataclass(frozen=True, eq=False)  # eq=False: NumPy fields make field-wise == ambiguous
class AggregationContext:
    """What some rules need besides the predictions.

    Attributes
    ----------
    num_examples : np.ndarray
        ``(clients,)`` private training-set sizes, used by ``weighted``.
    class_counts : np.ndarray
        ``(clients, classes)`` private label counts, used by ``class_weighted``.
    era_temperature : float
        Temperature of ``era`` (DS-FL, Itahara et al. 2021) and ``sharpen`` (``beta = 1/T``).
        ``T < 1`` always sharpens ``sharpen``; ``era`` sharpens only for ``T`` below about
        ``1 / (2 C)`` and flattens at the default 0.5 (see :func:`era_rule`).
    trim_ratio : float
        Fraction of clients dropped at EACH end per coordinate by ``trimmed_mean``;
        must lie in ``[0, 0.5)`` so at least one client survives.
    outlier_threshold : float
        ``filtered_mean`` keeps clients whose distance to the coordinate-wise median is at most
        ``median distance + outlier_threshold × 1.4826 × MAD`` (a robust z-score cut).
    support : np.ndarray, optional
        ``(clients, samples)`` support scores in ``[0, 1]`` (:mod:`fedkd.support`): how much
        each public sample looks like the client's private data. Read by ``selective`` and
        ``certainty``; ``None`` means every client supports every row (they become the mean).
    scratch : bool
        ``probs`` is the caller's own throwaway copy: ``median`` and ``trimmed_mean`` then
        reorder it in place instead of copying it — one ``(clients, samples, classes)`` copy
        less, a quarter of ``median``'s peak at 1,000 clients (docs/benchmarks.md §2).
    """

    num_examples: np.ndarray
    class_counts: np.ndarray
    era_temperature: float = 0.5
    trim_ratio: float = 0.2
    outlier_threshold: float = 3.0
    support: np.ndarray | None = None
    scratch: bool = False

    @classmethod
    def uniform(cls, num_clients: int, num_classes: int, **kwargs: Any) -> AggregationContext:
        """Context with equal sizes and balanced labels, for rules that ignore the counts."""
        return cls(
            num_examples=np.ones(num_clients, dtype=np.int64),
            class_counts=np.ones((num_clients, num_classes), dtype=np.int64),
            **kwargs,
        )


AggregationRule = Callable[[np.ndarray, AggregationContext], np.ndarray]


# ----------------------------------------------------------------------------- shared helpers
def _renormalise(x: np.ndarray) -> np.ndarray:
    """Clip tiny negatives, divide rows by their sum; all-zero rows become uniform. -> float32."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, None)  # (samples, classes)
    sums = x.sum(axis=-1, keepdims=True)  # (samples, 1)
    num_classes = x.shape[-1]
    safe = np.where(sums > 0, sums, 1.0)
    out = np.where(sums > 0, x / safe, 1.0 / num_classes)
    return out.astype(np.float32)


def _softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row max for stability."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _certainty(probs: np.ndarray) -> np.ndarray:
    """``log C - H(p)`` over the last axis, clipped at 0: 0 for uniform, ``log C`` for one-hot."""
    p = np.asarray(probs)
    plogp = p * np.log(np.maximum(p, LOG_EPS))  # 0 * log(eps) = 0, the 0 log 0 = 0 convention
    entropy = -plogp.sum(axis=-1, dtype=np.float64)
    return np.clip(np.log(p.shape[-1]) - entropy, 0.0, None)


def normalised_certainty(probs: np.ndarray) -> np.ndarray:
    """``1 - H(p) / log C`` over the last axis: 0 for uniform rows, 1 for one-hot rows."""
    return _certainty(probs) / np.log(np.asarray(probs).shape[-1])


def _share_weights(weights: np.ndarray) -> np.ndarray:
    """Normalise non-negative weights over axis 0; columns summing to 0 become uniform."""
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum(axis=0, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    return np.where(total > 0, w / safe, 1.0 / w.shape[0])


# ----------------------------------------------------------------------------- the rules
def mean_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Uniform mean of the client probabilities.

    The FedMD consensus (Li & Wang 2019, "FedMD: Heterogenous Federated Learning via Model
    Distillation") and DS-FL's aggregation without ERA (Itahara et al. 2021).
    """
    return _renormalise(probs.mean(axis=0, dtype=np.float64))  # (samples, classes)


def logit_mean_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Mean of log-probabilities, then softmax: the normalised geometric mean.

    Averaging logits (as FedDF does, Lin et al. 2020) is the same as averaging log-probabilities,
    because ``log softmax(z) = z - logsumexp(z)`` only shifts each row by a constant that the
    final softmax removes. Exact zeros are clamped to ``LOG_EPS`` first, so one client's zero
    vetoes a class only down to ``LOG_EPS ** (1/K)`` rather than to exactly 0.
    """
    logs = np.log(np.maximum(probs, LOG_EPS))  # (clients, samples, classes)
    return _renormalise(_softmax(logs.mean(axis=0, dtype=np.float64)))


def weighted_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Mean weighted by each client's private sample count, as FedAvg weights models.

    ``w[k] = n[k] / sum_k n[k]``; if every count is zero the weights fall back to uniform.
    """
    w = _share_weights(ctx.num_examples)  # (clients,)
    return _renormalise(np.tensordot(w, probs, axes=(0, 0)))


def class_weighted_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Per-class vote weighted by each client's share of that class in the private data.

    ``w[k, c] = class_counts[k, c] / sum_k class_counts[k, c]`` (uniform ``1/K`` for a class no
    client holds), ``teacher[s, c] = sum_k w[k, c] * p[k, s, c]``, then each row is renormalised.
    The intuition is that under label skew the client that has seen class ``c`` is the expert on
    ``c``. It refines the uniform ensembles of FedDF (Lin et al. 2020) and FedED (Sui et al. 2020);
    the per-class label-share weighting itself is this module's choice, not taken from a paper.
    """
    w = _share_weights(ctx.class_counts)  # (clients, classes)
    teacher = np.einsum("kc,ksc->sc", w, probs, dtype=np.float64)
    return _renormalise(teacher)


def confidence_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Per-sample certainty weighting: ``w[k, s] ∝ log C - H(p[k, s])``.

    The weight is the information gain over a uniform guess: 0 for a client that is maximally
    unsure on a sample and ``log C`` for a one-hot one, so uncertain (likely out-of-distribution)
    clients lose their vote sample by sample, in the spirit of uncertainty-weighted averaging
    (Kovalchuk et al. 2025, "Who to Trust? Aggregating Client Predictions in Federated
    Distillation"). When every client is exactly uniform on a sample the weights are all zero and
    fall back to uniform (the result is then the uniform mean, i.e. uniform).
    """
    w = _share_weights(_certainty(probs))  # (clients, samples)
    return _renormalise(np.einsum("ks,ksc->sc", w, probs, dtype=np.float64))


def era_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """DS-FL Entropy Reduction Aggregation: ``softmax(mean_k p[k] / T_era)``.

    Itahara et al. 2021, "Distillation-Based Semi-Supervised Federated Learning for
    Communication-Efficient Collaborative Training with Non-IID Private Data" (IEEE TMC).
    The aim is to counter the entropy that averaging non-IID clients adds.

    Caution: the softmax is applied to *probabilities* in ``[0, 1]``, so whether it sharpens
    depends on the class count C, not only on ``T < 1``. Near-uniform means are scaled away from
    uniform by about ``1 / (C T)``: ``T = 0.5`` *flattens* every row for any ``C >= 2`` (a one-hot
    mean over 10 classes becomes max ``e^2 / (e^2 + 9) ≈ 0.45``), and sharpening needs roughly
    ``T <= 1 / (2 C)``. Azuma et al. 2025 (SCARLET) call this the instability of temperature-based
    ERA; ``"sharpen"`` is their C-independent fix.
    """
    mean = probs.mean(axis=0, dtype=np.float64)  # (samples, classes)
    return _renormalise(_softmax(mean / ctx.era_temperature))


def sharpen_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Power sharpening of the mean: ``m ** beta / sum m ** beta`` with ``beta = 1 / T_era``.

    "Enhanced ERA" of Azuma et al. 2025, "Soft-Label Caching and Sharpening for
    Communication-Efficient Federated Distillation" (SCARLET). Unlike ``era`` it sharpens for
    every ``T_era < 1`` whatever the class count (``T_era = 1`` returns the mean). Computed as
    ``softmax(log m / T_era)`` with ``m`` clamped to ``LOG_EPS`` so a large ``beta`` cannot
    underflow a whole row to zero.
    """
    mean = probs.mean(axis=0, dtype=np.float64)  # (samples, classes)
    return _power_sharpen(mean, ctx.era_temperature)


def _power_sharpen(mean: np.ndarray, temperature: float) -> np.ndarray:
    return _renormalise(_softmax(np.log(np.maximum(mean, LOG_EPS)) / temperature))


def median_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Coordinate-wise median over clients, then row renormalisation.

    The Byzantine-robust coordinate-wise median (Yin et al. 2018, "Byzantine-Robust Distributed
    Learning: Towards Optimal Statistical Rates") applied to soft labels: fewer than half the
    clients cannot drag any coordinate outside the honest range. Rows whose medians are all zero
    fall back to uniform. Not streamable: it needs every reply.
    """
    return _renormalise(np.median(probs, axis=0, overwrite_input=ctx.scratch))


def trimmed_mean_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Coordinate-wise trimmed mean, then row renormalisation.

    Drops the ``floor(trim_ratio * K)`` lowest and highest values of each coordinate before
    averaging (Yin et al. 2018). Tolerates that many extreme clients at either end while averaging
    away more noise than the median. Not streamable: it needs every reply.
    """
    num_clients = probs.shape[0]
    cut = int(np.floor(ctx.trim_ratio * num_clients))
    if ctx.scratch:  # the caller's copy: sorted in place
        probs.sort(axis=0)
    ordered = probs if ctx.scratch else np.sort(probs, axis=0)  # sorted per coordinate
    kept = ordered[cut : num_clients - cut]
    return _renormalise(kept.mean(axis=0, dtype=np.float64))


def client_distances(probs: np.ndarray) -> np.ndarray:
    """``(clients,)`` mean total-variation distance of each client to the coordinate-wise median.

    Total variation (half the L1 distance) is in ``[0, 1]`` per sample whatever the class count,
    so the threshold means the same on 10 or 100 classes.
    """
    centre = np.median(probs, axis=0)  # (samples, classes)
    return 0.5 * np.abs(probs - centre).sum(axis=-1).mean(axis=-1)


def outlier_mask(probs: np.ndarray, threshold: float) -> np.ndarray:
    """``(clients,)`` True for clients ``filtered_mean`` keeps (at least half always are)."""
    dist = client_distances(probs)
    centre = np.median(dist)
    spread = 1.4826 * np.median(np.abs(dist - centre))  # MAD, scaled to σ for Gaussian data
    return dist <= centre + threshold * max(spread, 1e-6)


def filtered_mean_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Mean of the clients that are not outliers with respect to the coordinate-wise median.

    Drops replies whose distance to the median (:func:`client_distances`) is more than
    ``outlier_threshold`` robust standard deviations (MAD) above the median distance, then
    averages the rest. Unlike ``median`` it keeps the mean's low variance when nobody attacks;
    unlike ``trimmed_mean`` it removes whole clients, so an attacker cannot pass some
    coordinates through. Since the cut lies above the median distance, at least half the
    clients are kept. Not streamable: the centre needs every reply.
    """
    keep = outlier_mask(probs, ctx.outlier_threshold)
    return _renormalise(probs[keep].mean(axis=0, dtype=np.float64))


def _support(ctx: AggregationContext, shape: tuple[int, int]) -> np.ndarray:
    """``(clients, samples)`` scores; without any (``None``) every client supports every row."""
    if ctx.support is None:
        return np.ones(shape)
    return np.asarray(ctx.support, dtype=np.float64).reshape(shape)


def _supported_mean(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_k w[k,s] p[k,s] / sum_k w[k,s]``; rows no client supports take the plain mean."""
    total = weights.sum(axis=0)  # (samples,)
    weighted = np.einsum("ks,ksc->sc", weights, probs, dtype=np.float64)
    mean = probs.mean(axis=0, dtype=np.float64)
    safe = np.where(total > 0, total, 1.0)[:, None]
    return _renormalise(np.where(total[:, None] > 0, weighted / safe, mean))


def selective_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Mean over the clients whose private data supports each sample (Selective-FD).

    Shao et al. 2024, "Selective Knowledge Sharing for Privacy-Preserving Federated
    Distillation without A Good Teacher" (Nature Communications): a client's prediction
    counts on a public sample only when its selector says the sample looks like its own data
    (here :func:`fedkd.support.in_support`, a nearest-neighbour radius test). Under label
    skew this removes the confident wrong votes of clients that never saw the class. Rows no
    client supports fall back to the plain mean; the server leaves them out of distillation
    (:func:`supported_rows`).
    """
    from fedkd.support import in_support

    mask = in_support(_support(ctx, probs.shape[:2])).astype(np.float64)  # (clients, samples)
    return _supported_mean(probs, mask)


def selective_era_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """DS-FL's entropy reduction applied to the support-aware mean: ``softmax(sel / T_era)``.

    ERA (Itahara et al. 2021) sharpens whatever mean it is given. Under strong label skew the
    plain mean is dominated by clients that never saw the class, so ERA turns a near-uniform,
    mostly wrong plurality into a confident label; co-distilling clients learn it, agree on it,
    and the federation locks in (measured: DS-FL with the plain mean collapsed on 4 of 5 seeds
    at α = 0.1, docs/recipes.md). Sharpening the :func:`selective_rule` mean keeps ERA's
    purpose — low-entropy targets — on evidence the clients can speak for.
    """
    return _renormalise(_softmax(selective_rule(probs, ctx) / ctx.era_temperature))


def selective_class_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Selective-FD's support mask, each supporter's vote weighted by its share of the class.

    ``teacher[s, c] ∝ sum_k m[k, s] · w[k, c] · p[k, s, c]`` with ``m`` the support mask of
    :func:`selective_rule` and ``w[k, c] = n[k, c] / sum_j n[j, c]`` the client's share of the
    federation's examples of class ``c`` (:func:`class_weighted_rule`). Why both: the support
    mask asks *whether* a client has seen inputs like this one; under label skew a client
    whose private data sit near a ``3`` but hold only ``8``s still supports it and votes ``8``
    with confidence. The class share asks whether it has seen *this class*. The same replies
    re-aggregated by each rule are compared in docs/recipes.md (``benchmarks.fd_teacher_probe``).
    Rows nobody supports take the plain mean (and are not distilled). Its co-distillation gate
    reads the selective mean (:data:`SHARPENED_BASE`).
    fedkd's combination, not a published rule.
    """
    from fedkd.support import in_support

    mask = in_support(_support(ctx, probs.shape[:2])).astype(np.float64)  # (clients, samples)
    share = _share_weights(ctx.class_counts)  # (clients, classes)
    weighted = np.einsum("ks,kc,ksc->sc", mask, share, probs, dtype=np.float64)
    supported = mask.sum(axis=0) > 0
    mean = probs.mean(axis=0, dtype=np.float64)
    return _renormalise(np.where(supported[:, None], weighted, mean))


def certainty_rule(probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Mean weighted by each client's soft support score per sample (FedAUX-style).

    Sattler et al. 2021, "FedAUX: Leveraging Unlabeled Auxiliary Data in Federated Learning"
    weigh each client's prediction on an auxiliary sample by a certainty score of how well the
    sample matches the client's data. fedkd's score is :func:`fedkd.support.support_scores`
    (FedAUX trains a differentially private logistic scorer on features instead).
    """
    return _supported_mean(probs, _support(ctx, probs.shape[:2]))


def supported_rows(support: np.ndarray | None, num_samples: int) -> np.ndarray:
    """``(samples,)`` bool: rows at least one client supports (all rows without scores).

    Selective-FD's server-side filter: a row nobody can speak for carries no knowledge, so the
    student does not distil on it and co-distilling clients are not sent it.
    """
    if support is None:
        return np.ones(num_samples, dtype=bool)
    from fedkd.support import in_support

    mask = in_support(np.asarray(support).reshape(-1, num_samples))  # (clients, samples)
    return np.asarray(mask.any(axis=0), dtype=bool)


AGGREGATION_RULES: dict[str, AggregationRule] = {
    "mean": mean_rule,
    "logit_mean": logit_mean_rule,
    "weighted": weighted_rule,
    "class_weighted": class_weighted_rule,
    "confidence": confidence_rule,
    "era": era_rule,
    "sharpen": sharpen_rule,
    "median": median_rule,
    "trimmed_mean": trimmed_mean_rule,
    "filtered_mean": filtered_mean_rule,
    "selective": selective_rule,
    "certainty": certainty_rule,
    "selective_era": selective_era_rule,
    "selective_class": selective_class_rule,
}

SUPPORT_RULES: frozenset[str] = frozenset(
    {"selective", "certainty", "selective_era", "selective_class"}
)
"""Rules that need each client's per-sample support scores (clients then compute and send them)."""

SHARPENED_BASE: dict[str, str] = {
    "era": "mean",
    "sharpen": "mean",
    "selective_era": "selective",
    "selective_class": "selective",
}
"""Rules that sharpen or reweight another rule's teacher, and that rule: neither adds evidence,
so how certain the clients really are is read from the base (the co-distillation gate).
``selective_class`` belongs here by measurement: weighting votes by class share silences the
supporters that disagree, so its own certainty lets most of its wrong rows through the gate
(``benchmarks.fd_teacher_probe``); gated on it, co-distilling clients learnt those rows and the
teacher decayed over the rounds (docs/recipes.md)."""


STUDENT_ONLY_RULES: frozenset[str] = frozenset({"selective_class"})
"""Rules whose teacher only the server's student distils; co-distilling clients get the base
rule's teacher (:data:`SHARPENED_BASE`), values and gate alike. Measured for ``selective_class``
(5 seeds, docs/recipes.md): sent back to clients, its class-reweighted rows taught them labels
the disagreeing supporters had been right to doubt, and the teacher decayed over the rounds;
with the selective rows sent back instead, the clients follow Selective-FD's course and the
student distils the better teacher."""


def evidence(name: str, probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """The teacher of rule ``name`` before any sharpening: what the clients' replies support."""
    return aggregate(SHARPENED_BASE.get(name, name), probs, ctx)


STREAMABLE_RULES: frozenset[str] = frozenset(
    {
        "mean",
        "logit_mean",
        "weighted",
        "class_weighted",
        "confidence",
        "era",
        "sharpen",
        "selective",
        "certainty",
        "selective_era",
        "selective_class",
    }
)
"""Rules that decompose into per-client sums; ``median``, ``trimmed_mean`` and
``filtered_mean`` need all replies at once."""


STATEFUL_RULES: frozenset[str] = frozenset({"expguard"})
"""Rules that keep state across rounds (``strategies.expguard``), so are not pure functions
here; the strategy builds them. ``fedkd.config.AGGREGATION_RULES`` lists both kinds."""


def available_rules() -> list[str]:
    """Names accepted by :func:`aggregate`, sorted."""
    return sorted(AGGREGATION_RULES)


# ----------------------------------------------------------------------------- validation
def _check_rule(name: str, options: list[str]) -> None:
    if name not in options:
        raise ValueError(f"Unknown aggregation rule {name!r}; choose one of {options}")


def _check_probs(probs: np.ndarray, ndim: int) -> None:
    if probs.ndim != ndim or 0 in probs.shape:
        raise ValueError(f"probs must be a non-empty {ndim}-D array, got shape {probs.shape}")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be finite and non-negative")


def _check_counts(values: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if values.shape != shape:
        raise ValueError(f"{what} has shape {values.shape}, expected {shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{what} must be finite and non-negative")


def _check_context(ctx: AggregationContext, num_clients: int, num_classes: int) -> None:
    _check_counts(np.asarray(ctx.num_examples), (num_clients,), "num_examples")
    _check_counts(np.asarray(ctx.class_counts), (num_clients, num_classes), "class_counts")
    if not ctx.era_temperature > 0:
        raise ValueError(f"era_temperature must be > 0, got {ctx.era_temperature}")
    if not 0 <= ctx.trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must lie in [0, 0.5), got {ctx.trim_ratio}")
    if not ctx.outlier_threshold > 0:
        raise ValueError(f"outlier_threshold must be > 0, got {ctx.outlier_threshold}")
    if ctx.support is not None:
        support = np.asarray(ctx.support, dtype=np.float64)
        if support.shape[0] != num_clients or not np.all((support >= 0) & (support <= 1)):
            raise ValueError(f"support must be ({num_clients}, samples) scores in [0, 1]")


def aggregate(name: str, probs: np.ndarray, ctx: AggregationContext) -> np.ndarray:
    """Aggregate client soft predictions with the rule called ``name``.

    Parameters
    ----------
    name : str
        A key of ``AGGREGATION_RULES`` (see :func:`available_rules`).
    probs : np.ndarray
        ``(clients, samples, classes)`` non-negative client distributions on the public set.
    ctx : AggregationContext
        Counts and hyper-parameters; its shapes must match ``probs``.

    Returns
    -------
    np.ndarray
        ``(samples, classes)`` float32 teacher distributions (rows sum to 1).

    Raises
    ------
    ValueError
        Unknown rule (the message lists the options), bad shapes, negative or non-finite values.
    """
    _check_rule(name, available_rules())
    probs = np.asarray(probs)
    _check_probs(probs, ndim=3)
    _check_context(ctx, num_clients=probs.shape[0], num_classes=probs.shape[2])
    return AGGREGATION_RULES[name](probs, ctx)


# ----------------------------------------------------------------------------- streaming
class StreamingAggregator:
    """Fold client replies in one at a time; ``result()`` equals ``aggregate()`` on all of them.

    Memory is a few ``(samples, classes)`` float64 accumulators instead of the full
    ``(clients, samples, classes)`` stack. Supports the rules in ``STREAMABLE_RULES``;
    ``median`` and ``trimmed_mean`` are order statistics over clients and need every reply, so
    they are rejected here (call :func:`aggregate` with the stacked replies instead).

    Parameters
    ----------
    name : str
        A rule in ``STREAMABLE_RULES``.
    num_samples, num_classes : int
        Shape of every reply.
    era_temperature : float
        Temperature for ``era`` and ``sharpen``.
    """

    def __init__(
        self, name: str, num_samples: int, num_classes: int, *, era_temperature: float = 0.5
    ) -> None:
        _check_rule(name, sorted(STREAMABLE_RULES))
        if num_samples < 1 or num_classes < 1:
            raise ValueError(f"need num_samples, num_classes >= 1, got {num_samples, num_classes}")
        if not era_temperature > 0:
            raise ValueError(f"era_temperature must be > 0, got {era_temperature}")
        self.name = name
        self.shape = (num_samples, num_classes)
        self.era_temperature = float(era_temperature)
        self.num_clients = 0
        self._plain = np.zeros(self.shape)  # sum_k p[k]: mean, era and every zero-weight fallback
        # sum_k w[k] * p[k] (or log p[k] for logit_mean); the mean-based rules need none.
        needs_weighted = name not in ("mean", "era", "sharpen")
        self._covered = np.zeros(num_samples, dtype=bool)  # rows some client supports
        self._weighted = np.zeros(self.shape if needs_weighted else ())
        self._weight = np.zeros(self._weight_shape())  # sum_k w[k]
        # selective_class: sum_k n[k] (per class) and sum_k m[k] p[k] for classes nobody holds
        self._class_total = np.zeros(num_classes)
        self._masked = np.zeros(self.shape if name == "selective_class" else ())

    def _weight_shape(self) -> tuple[int, ...]:
        if self.name == "class_weighted":
            return (self.shape[1],)  # per class
        if self.name in ("confidence", *SUPPORT_RULES):
            return (self.shape[0], 1)  # per sample
        return ()

    def add(
        self,
        probs: np.ndarray,
        *,
        num_examples: int,
        class_counts: np.ndarray,
        support: np.ndarray | None = None,
    ) -> None:
        """Fold one client's ``(samples, classes)`` reply (and ``(samples,)`` support scores,
        for the rules in :data:`SUPPORT_RULES`) into the running sums."""
        probs = np.asarray(probs)
        _check_probs(probs, ndim=2)
        if probs.shape != self.shape:
            raise ValueError(f"reply has shape {probs.shape}, expected {self.shape}")
        _check_counts(np.asarray(num_examples), (), "num_examples")
        _check_counts(np.asarray(class_counts), (self.shape[1],), "class_counts")
        if self.name in SUPPORT_RULES:
            support = _checked_support(support, self.shape[0])
            self._covered |= supported_rows(support[None, :], self.shape[0])
        self.num_clients += 1
        self._plain += probs
        if self.name == "selective_class":
            self._add_class_share(probs, np.asarray(class_counts, dtype=np.float64), support)
        elif self.name == "logit_mean":
            self._weighted += np.log(np.maximum(probs, LOG_EPS))
        elif self.name in ("weighted", "class_weighted", "confidence", *SUPPORT_RULES):
            w = self._client_weight(probs, num_examples, class_counts, support)
            self._weighted += w * probs
            self._weight += w

    def _add_class_share(
        self, probs: np.ndarray, class_counts: np.ndarray, support: np.ndarray | None
    ) -> None:
        """``selective_class``: the class shares' denominators are only known at the end, and
        are per class, so the sums keep raw counts and divide column by column in result()."""
        from fedkd.support import in_support

        assert support is not None  # checked in add()
        mask = in_support(support).astype(np.float64)[:, None]  # (samples, 1)
        self._weighted += mask * class_counts[None, :] * probs
        self._masked += mask * probs
        self._weight += mask
        self._class_total += class_counts

    def _client_weight(
        self,
        probs: np.ndarray,
        num_examples: int,
        class_counts: np.ndarray,
        support: np.ndarray | None,
    ) -> np.ndarray:
        if self.name in SUPPORT_RULES:
            assert support is not None  # checked in add()
            if self.name in ("selective", "selective_era"):
                from fedkd.support import in_support

                return in_support(support).astype(np.float64)[:, None]  # (samples, 1)
            return support[:, None]  # (samples, 1)
        if self.name == "weighted":
            return np.asarray(num_examples, dtype=np.float64)  # ()
        if self.name == "class_weighted":
            return np.asarray(class_counts, dtype=np.float64)  # (classes,)
        return _certainty(probs)[:, None]  # (samples, 1)

    def evidence(self) -> np.ndarray:
        """The teacher before any sharpening (see :data:`SHARPENED_BASE`)."""
        if self.name in ("era", "sharpen"):
            return _renormalise(self._plain / self.num_clients)
        if self.name in ("selective_era", "selective_class"):  # the support-aware mean
            supported_sum = self._masked if self.name == "selective_class" else self._weighted
            safe = np.where(self._weight > 0, self._weight, 1.0)
            plain = self._plain / self.num_clients
            return _renormalise(np.where(self._weight > 0, supported_sum / safe, plain))
        return self.result()

    def covered(self) -> np.ndarray:
        """``(samples,)`` rows some client supports (all rows for rules without support)."""
        if self.name not in SUPPORT_RULES:
            return np.ones(self.shape[0], dtype=bool)
        return self._covered.copy()

    def result(self) -> np.ndarray:
        """The ``(samples, classes)`` float32 teacher for all replies added so far."""
        if self.num_clients == 0:
            raise ValueError("no replies added yet")
        mean = self._plain / self.num_clients
        if self.name == "mean":
            return _renormalise(mean)
        if self.name == "era":
            return _renormalise(_softmax(mean / self.era_temperature))
        if self.name == "sharpen":
            return _power_sharpen(mean, self.era_temperature)
        if self.name == "logit_mean":
            return _renormalise(_softmax(self._weighted / self.num_clients))
        if self.name == "selective_class":
            return self._class_share_result(mean)
        # weighted / class_weighted / confidence / support rules: zero total weight falls back
        # to the plain mean.
        safe = np.where(self._weight > 0, self._weight, 1.0)
        weighted = _renormalise(np.where(self._weight > 0, self._weighted / safe, mean))
        if self.name == "selective_era":
            return _renormalise(_softmax(weighted / self.era_temperature))
        return weighted

    def _class_share_result(self, mean: np.ndarray) -> np.ndarray:
        held = self._class_total > 0  # (classes,) a class nobody holds: uniform shares 1/K
        safe = np.where(held, self._class_total, 1.0)
        weighted = np.where(held, self._weighted / safe, self._masked / self.num_clients)
        return _renormalise(np.where(self._weight > 0, weighted, mean))


def _checked_support(support: np.ndarray | None, num_samples: int) -> np.ndarray:
    if support is None:  # no scores: the client speaks for every row, as in aggregate()
        return np.ones(num_samples)
    scores = np.asarray(support, dtype=np.float64)
    if scores.shape != (num_samples,) or not np.all((scores >= 0) & (scores <= 1)):
        raise ValueError(f"support must be ({num_samples},) scores in [0, 1]")
    return scores
