"""Differential privacy in fedkd: one accountant, several mechanisms (docs/privacy.md).

* :mod:`fedkd.privacy.accountant` — the one ledger of Gaussian events (Opacus RDP/PRV).
* :mod:`fedkd.privacy.central` — client-level DP at the server: clip per client, noise the sum.
* :mod:`fedkd.privacy.pate` — client votes, GNMax noisy-argmax labels.
* :mod:`fedkd.privacy.dpsgd` — example-level DP-SGD on the clients (Opacus).
* :mod:`fedkd.privacy.output` — each client noises its own upload (the first, weakest mode).

``dp-mechanism`` (:class:`fedkd.config.FDConfig`) picks one; ``none`` turns DP off.
"""

from fedkd.privacy.accountant import (
    GaussianEvent,
    Ledger,
    epsilon,
    epsilon_spent,
    noise_for_epsilon,
)
from fedkd.privacy.output import (
    DPSpec,
    clip_rows,
    gaussian_mechanism,
    privatize,
    to_distributions,
)

MECHANISMS = ("none", "output", "central", "pate", "dpsgd")
"""Values of ``dp-mechanism``; ``fedkd.config`` repeats them (a test keeps the two in sync)."""

__all__ = [
    "MECHANISMS",
    "DPSpec",
    "GaussianEvent",
    "Ledger",
    "clip_rows",
    "epsilon",
    "epsilon_spent",
    "gaussian_mechanism",
    "noise_for_epsilon",
    "privatize",
    "to_distributions",
]
