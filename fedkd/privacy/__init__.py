"""Differential privacy in fedkd: one accountant, several mechanisms (docs/privacy.md).

* :mod:`fedkd.privacy.accountant` — the one ledger of Gaussian events (Opacus RDP/PRV).
* :mod:`fedkd.privacy.central` — client-level DP at the server: clip per client, noise the sum.
* :mod:`fedkd.privacy.pate` — client votes, GNMax noisy-argmax labels.
* :mod:`fedkd.privacy.dpsgd` — example-level DP-SGD on the clients (Opacus).

``dp-mechanism`` (:class:`fedkd.config.FDConfig`) picks one; ``none`` turns DP off. (An earlier
mode in which every client noised its own upload was removed: at ε ≤ 8 its student stayed at
chance, docs/privacy.md.)
"""

from fedkd.privacy.accountant import (
    GaussianEvent,
    Ledger,
    epsilon,
    epsilon_spent,
    noise_for_epsilon,
)
from fedkd.privacy.central import clip_rows, to_distributions

MECHANISMS = ("none", "central", "pate", "dpsgd")
"""Values of ``dp-mechanism``; ``fedkd.config`` repeats them (a test keeps the two in sync)."""

__all__ = [
    "MECHANISMS",
    "GaussianEvent",
    "Ledger",
    "clip_rows",
    "epsilon",
    "epsilon_spent",
    "noise_for_epsilon",
    "to_distributions",
]
