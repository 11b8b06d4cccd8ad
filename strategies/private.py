"""The server's side of differential privacy: the DP fold, sampling rate, ledger and budget.

:class:`PrivateFold` takes the place of :class:`strategies.aggregation.StreamingAggregator` when
``dp-mechanism`` is ``central`` or ``pate``: replies are folded into a clipped sum (or vote
counts) as they are validated, and the noise is added once, when the teacher is released. The
aggregation rule (``aggregation``), support scores, sample and class counts play no part: they
would let one client's data steer the teacher outside the clip.

:class:`ServerPrivacy` keeps the run's :class:`fedkd.privacy.Ledger` and answers, before each
round, whether the round still fits ``dp-max-epsilon``.
"""

from __future__ import annotations

import math

import numpy as np

from fedkd.config import FDConfig
from fedkd.privacy import GaussianEvent, Ledger
from fedkd.privacy.central import CentralDPSum, round_event
from fedkd.privacy.pate import VoteCounter, label_event

SERVER_SIDE = ("central", "pate")
"""Mechanisms whose noise the server adds (the others run on the clients)."""


class PrivateFold:
    """Fold replies into a clipped sum (``central``) or vote counts (``pate``); release once.

    Duck-types the parts of ``StreamingAggregator`` the round uses: ``add``, ``result``,
    ``covered`` and ``evidence``.
    """

    def __init__(self, cfg: FDConfig, num_samples: int, num_classes: int, expected: float) -> None:
        self.cfg = cfg
        self.expected = expected  # the fixed denominator of central DP (expected participants)
        self.sum = CentralDPSum(num_samples, num_classes, cfg.dp_clip)
        self.votes = VoteCounter(num_samples, num_classes)
        self._released: np.ndarray | None = None

    @property
    def num_clients(self) -> int:
        return max(self.sum.num_clients, self.votes.num_clients)

    def add(self, probs: np.ndarray, **_: object) -> None:
        """Fold one validated reply (counts and support, passed by the caller, are ignored)."""
        if self.cfg.dp_mechanism == "pate":
            self.votes.add(probs)
        else:
            self.sum.add(probs)

    def result(self) -> np.ndarray:
        """The released ``(rows, classes)`` teacher; noise is drawn once, on the first call."""
        if self._released is None:
            z = self.cfg.dp_noise_multiplier
            if self.cfg.dp_mechanism == "pate":
                self._released = self.votes.release(z)
            else:
                self._released = self.sum.release(z, self.expected)
        return self._released

    def covered(self) -> np.ndarray:
        """Every row is released (no support filter under DP)."""
        return np.ones(self.sum.total.shape[0], dtype=bool)

    def evidence(self) -> np.ndarray:
        """The released teacher is the only evidence the server may use."""
        return self.result()


class ServerPrivacy:
    """The run's privacy ledger, and the budget check made before every round."""

    def __init__(self, cfg: FDConfig) -> None:
        self.cfg = cfg
        self.ledger = Ledger(cfg.dp_delta, cfg.dp_max_epsilon)
        # dpsgd: node id → (ε so far, ε after one more round) as the client last reported
        self.reported: dict[int, tuple[float, float]] = {}

    @property
    def enabled(self) -> bool:
        return self.cfg.dp_mechanism != "none"

    @property
    def sample_rate(self) -> float:
        """Poisson rate of client sampling under central DP (1 = every client, every round)."""
        return min(1.0, self.cfg.fraction_train)

    def poisson_sampling(self) -> bool:
        """Central DP with ``fraction-train < 1`` samples clients independently (amplification)."""
        return self.cfg.dp_mechanism == "central" and self.sample_rate < 1.0

    def round_event(self, rows: int) -> GaussianEvent | None:
        """What the server's release of one round costs (None: nothing server-side)."""
        z = self.cfg.dp_noise_multiplier
        if self.cfg.dp_mechanism == "central":
            return round_event(z, self.sample_rate)
        if self.cfg.dp_mechanism == "pate":
            return label_event(z, rows) if rows > 0 else None
        return None

    def epsilon(self) -> float | None:
        """ε spent so far (``dpsgd``: by the worst-off client, as reported); None if off."""
        if not self.enabled:
            return None
        if self.cfg.dp_mechanism == "dpsgd":
            return max((now for now, _ in self.reported.values()), default=0.0)
        return self.ledger.epsilon()

    def epsilon_after(self, rows: int) -> float | None:
        """ε if one more round of ``rows`` queried rows ran (None if off)."""
        if not self.enabled:
            return None
        if self.cfg.dp_mechanism == "dpsgd":  # clients account for themselves and report it
            return max((nxt for _, nxt in self.reported.values()), default=0.0)
        event = self.round_event(rows)
        return self.ledger.epsilon() if event is None else self.ledger.epsilon_after(event)

    def budget_stop(self, rows: int) -> str | None:
        """Why the next round must not run (the budget would be exceeded), or None."""
        budget = self.cfg.dp_max_epsilon
        after = self.epsilon_after(rows)
        if budget <= 0 or after is None or after <= budget:
            return None
        spent = self.epsilon() or 0.0
        return (
            f"privacy budget reached: the next round would take ε from {spent:.3g} to "
            f"{_fmt(after)} > dp-max-epsilon={budget:g} (δ={self.cfg.dp_delta:g}); stopping"
        )

    def account(
        self, uploaders: list[int], rows: int, reports: dict[int, tuple[float, float]]
    ) -> float | None:
        """Record this round's releases (``reports``: dpsgd clients' own ε, now and after one
        more round); returns ε so far."""
        self.reported.update(reports)
        event = self.round_event(rows) if uploaders or self.cfg.dp_mechanism == "central" else None
        if event is not None:
            self.ledger.spend(event)
        return self.epsilon()

    def state_dict(self) -> dict[str, object]:
        """Ledger and upload counts, for the checkpoint."""
        return {
            "events": self.ledger.state_dict(),
            "reported": {k: list(v) for k, v in self.reported.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict`."""
        self.ledger.load_state_dict(list(state.get("events", [])))  # type: ignore[call-overload]
        reported = state.get("reported", {})
        self.reported = {
            int(k): (float(v[0]), float(v[1]))
            for k, v in reported.items()  # type: ignore[attr-defined]
        }


def _fmt(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:.3g}"
