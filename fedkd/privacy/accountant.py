"""The one privacy accountant of fedkd: every mechanism reports Gaussian events here.

Every DP mechanism fedkd runs is, per release, a (sub)sampled Gaussian mechanism: a function of
bounded L2 sensitivity, Gaussian noise of ``noise_multiplier × sensitivity``, applied to a
Poisson sample of rate ``sample_rate`` (1 = everybody, no amplification). A run's privacy loss
is the composition of such events, so one ledger of ``(noise_multiplier, sample_rate, steps)``
serves them all:

* ``central`` (client-level, server side): one event per round, ``q = fraction-train``.
* ``pate`` (GNMax votes, data-independent): one event per labelled row, multiplier ``σ/√2``
  (one client changes two vote counts by 1: sensitivity √2; Papernot et al. 2018, Prop. 8
  gives RDP α/σ² per query, which is exactly this Gaussian's).
* ``dpsgd`` (example-level, per client): one event per optimizer step, ``q = batch/n``.

The numbers come from Opacus (a dependency already): its RDP accountant (Mironov 2017;
Mironov et al. 2019 for the sampled Gaussian) is a valid upper bound for any history; its PRV
accountant (Gopi et al. 2021) is tighter and refines the bound below
:data:`PRV_REFINES_BELOW` (the smaller of two valid bounds is reported). The accountant never
raises for a valid history: a server must not crash over its privacy report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

PRV_REFINES_BELOW = 100.0
"""PRV refines the RDP bound only below this ε: above it, PRV's discretisation grows huge (35 s
for z = 0.01) or fails, and the difference no longer matters to anyone."""

PRV_MAX_STEPS = 5_000
"""Histories longer than this are reported by RDP alone: PRV's cost grows with the steps."""


@dataclass(frozen=True)
class GaussianEvent:
    """``steps`` releases of a Gaussian mechanism with ``noise_multiplier`` on a Poisson
    sample of rate ``sample_rate`` (1 = no sampling)."""

    noise_multiplier: float
    sample_rate: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        if not (self.noise_multiplier > 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(
                f"noise_multiplier must be finite and > 0, got {self.noise_multiplier}"
            )
        if not 0 < self.sample_rate <= 1:
            raise ValueError(f"sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")


History = tuple[tuple[float, float, int], ...]


def _history(events: Iterable[GaussianEvent]) -> History:
    """Merge consecutive events of the same kind: Opacus's own history format."""
    merged: list[list[Any]] = []
    for e in events:
        if e.steps == 0:
            continue
        if merged and merged[-1][0] == e.noise_multiplier and merged[-1][1] == e.sample_rate:
            merged[-1][2] += e.steps
        else:
            merged.append([e.noise_multiplier, e.sample_rate, e.steps])
    return tuple((float(z), float(q), int(n)) for z, q, n in merged)


def epsilon(events: Iterable[GaussianEvent], delta: float) -> float:
    """ε at ``delta`` of the composition of ``events`` (0 when nothing was released)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    return _epsilon(_history(events), delta)


@lru_cache(maxsize=1024)
def _epsilon(history: History, delta: float) -> float:
    if not history:
        return 0.0
    from opacus.accountants import PRVAccountant, RDPAccountant

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        # sample_rate = 1 makes Opacus take log(0) on a branch it then discards.
        warnings.simplefilter("ignore")
        bound = _opacus_epsilon(RDPAccountant(), history, delta)
        steps = sum(n for _, _, n in history)
        if bound < PRV_REFINES_BELOW and steps <= PRV_MAX_STEPS:
            bound = min(bound, _opacus_epsilon(PRVAccountant(), history, delta))
    return bound


def _opacus_epsilon(accountant: Any, history: History, delta: float) -> float:
    accountant.history = [list(h) for h in history]
    try:
        return float(accountant.get_epsilon(delta=delta))
    except (RuntimeError, ValueError, FloatingPointError, OverflowError):  # PRV: "Discrete mean"
        return math.inf


@dataclass
class Ledger:
    """What one party (the server, or one client) has released so far, and its budget.

    ``max_epsilon`` 0 means no budget. :meth:`allows` answers *before* a release whether it
    still fits, so a run stops with the budget unspent rather than overspent.
    """

    delta: float
    max_epsilon: float = 0.0
    events: list[GaussianEvent] = field(default_factory=list)

    def spend(self, event: GaussianEvent) -> None:
        """Record a release that happened."""
        self.events.append(event)

    def epsilon(self) -> float:
        """ε spent so far at :attr:`delta`."""
        return epsilon(self.events, self.delta)

    def epsilon_after(self, event: GaussianEvent) -> float:
        """ε if ``event`` were released next."""
        return epsilon([*self.events, event], self.delta)

    def allows(self, event: GaussianEvent) -> bool:
        """True when there is no budget, or ``event`` keeps ε within it."""
        return self.max_epsilon <= 0 or self.epsilon_after(event) <= self.max_epsilon

    def state_dict(self) -> list[list[float]]:
        """Plain lists for a checkpoint."""
        return [[e.noise_multiplier, e.sample_rate, e.steps] for e in self.events]

    def load_state_dict(self, state: list[list[float]]) -> None:
        """Restore :meth:`state_dict`."""
        self.events = [GaussianEvent(float(z), float(q), int(n)) for z, q, n in state]


def epsilon_spent(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε at ``delta`` after ``releases`` unsampled Gaussian mechanisms of ``noise_multiplier``.

    ``inf`` when the multiplier is 0 (no noise), 0 when nothing was released.
    """
    if releases <= 0:
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    return epsilon([GaussianEvent(noise_multiplier, 1.0, releases)], delta)


def noise_for_epsilon(
    target: float,
    delta: float,
    events_for: Callable[[float], Iterable[GaussianEvent]],
    *,
    low: float = 0.05,
    high: float = 500.0,
) -> float:
    """The smallest noise multiplier ``z`` (to 0.5 %) whose run ``events_for(z)`` stays within
    ε ≤ ``target`` at ``delta``: calibrate a mechanism to a budget before running it.

    Bisection in log-space; ε falls as ``z`` grows. Raises ``ValueError`` when even ``high``
    does not reach the target.
    """
    if epsilon(events_for(high), delta) > target:
        raise ValueError(f"ε ≤ {target} needs a noise multiplier above {high}")
    while high / low > 1.005:
        mid = math.sqrt(low * high)
        if epsilon(events_for(mid), delta) <= target:
            high = mid
        else:
            low = mid
    return high
