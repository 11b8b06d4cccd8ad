"""ExpGuard: per-client exponential weights, kept across rounds, on top of a robust base rule.

Roux, Zimmer & Pokutta (ICLR 2025, "On the Byzantine-Resilience of Distillation-Based Federated
Learning") observe that prediction-space defences that look at one round at a time (median,
filtering) are broken by attacks such as LMA and CPA (``fedkd.faults``), and propose ExpGuard:
remember how far each client has strayed, round after round, and weigh it by an exponential of
that history. This module follows that protocol as described in the paper; the score and its
scale are this module's choices:

1. ``reference = base_rule(probs)``: any robust rule of :mod:`strategies.aggregation`
   (``expguard-base``, ``median`` by default).
2. ``score_k``: mean total-variation distance of client ``k``'s rows from ``reference``,
   in ``[0, 1]``.
3. ``excess_k = max(0, score_k − median(score) − threshold × max(1.4826·MAD(score), floor))``:
   only what is an outlier *this round* counts, so honest clients whose non-IID data makes them
   differ a little are not punished (``threshold`` is ``outlier-threshold``).
4. ``penalty_k += excess_k``, kept across rounds (and in checkpoints); a client seen for the
   first time starts at 0.
5. ``weight_k ∝ exp(−η · penalty_k)`` (``expguard-eta``), and the teacher is the weighted mean
   of the clients' rows.

Each round's weights, scores and penalties go into the round record (``client_weights``), so
who was down-weighted, and why, is in ``metrics.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from strategies.aggregation import AGGREGATION_RULES, AggregationContext, aggregate

MAD_TO_SIGMA = 1.4826  # MAD × this estimates a normal standard deviation
SCORE_FLOOR = 0.01  # smallest spread assumed, so identical honest scores do not make 0 a cliff


@dataclass
class ExpGuard:
    """The stateful guard: one cumulative penalty per node id.

    Parameters
    ----------
    base : str
        Robust rule giving the reference the clients are scored against (any stateless rule).
    eta : float
        Learning rate of the exponential weights; larger forgets an offender more slowly.
    threshold : float
        Robust z-score above which a client's distance counts against it.
    """

    base: str = "median"
    eta: float = 10.0
    threshold: float = 3.0
    penalties: dict[int, float] = field(default_factory=dict)
    last_report: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.base not in AGGREGATION_RULES:
            raise ValueError(
                f"expguard base rule {self.base!r} is not a stateless rule; "
                f"choose one of {sorted(AGGREGATION_RULES)}"
            )
        if not self.eta > 0 or not self.threshold > 0:
            raise ValueError(f"eta and threshold must be > 0, got {self.eta}, {self.threshold}")

    def aggregate(self, probs: np.ndarray, nodes: list[int], ctx: AggregationContext) -> np.ndarray:
        """Teacher ``(samples, classes)`` from ``probs`` ``(clients, samples, classes)``, whose
        rows belong to ``nodes``; updates the penalties and :attr:`last_report`."""
        if probs.ndim != 3 or len(nodes) != probs.shape[0]:
            raise ValueError(f"need one node id per client, got {len(nodes)} for {probs.shape}")
        reference = aggregate(self.base, probs, ctx)  # (samples, classes)
        scores = 0.5 * np.abs(probs - reference[None]).sum(axis=2).mean(axis=1)  # (clients,)
        excess = outlier_excess(scores, self.threshold)
        for node, extra in zip(nodes, excess, strict=True):
            self.penalties[int(node)] = self.penalties.get(int(node), 0.0) + float(extra)
        penalty = np.array([self.penalties[int(n)] for n in nodes])
        weights = np.exp(-self.eta * (penalty - penalty.min()))  # shifted: no underflow to 0/0
        weights /= weights.sum()
        teacher = np.einsum("k,ksc->sc", weights, probs.astype(np.float64))
        self.last_report = {
            str(int(n)): {"weight": float(w), "score": float(s), "penalty": float(p)}
            for n, w, s, p in zip(nodes, weights, scores, penalty, strict=True)
        }
        teacher /= teacher.sum(axis=1, keepdims=True)
        return teacher.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """Plain types only (checkpoints load with ``weights_only=True``)."""
        return {"penalties": {str(k): v for k, v in self.penalties.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.penalties = {int(k): float(v) for k, v in state.get("penalties", {}).items()}


def outlier_excess(scores: np.ndarray, threshold: float) -> np.ndarray:
    """How far each score lies above ``median + threshold × robust spread`` (0 when within)."""
    median = float(np.median(scores))
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(scores - median))), SCORE_FLOOR)
    return np.maximum(0.0, scores - median - threshold * spread)
