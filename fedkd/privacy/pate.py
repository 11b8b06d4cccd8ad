"""PATE-style votes with GNMax (``dp-mechanism=pate``): noisy-argmax labels from client votes.

Each client (a "teacher", Papernot et al. 2017, 2018) votes for one class per queried public
row: the argmax of its prediction, sent as a one-hot row. The server counts the votes and
releases only ``argmax(counts + N(0, σ²))`` per row (GNMax), i.e. a hard label. The student
learns from the labels released so far; everything after the release is post-processing.

Accounting (data-independent)
    One client changes its vote on a row: two counts move by 1, an L2 sensitivity of √2. The
    counts plus N(0, σ²) are then a Gaussian mechanism of noise multiplier ``σ/√2`` (RDP
    ``α/σ²``, Papernot et al. 2018, Prop. 8), and the argmax is post-processing. Each released
    label is one such event; labels compose. The guarantee is client-level: a client's whole
    dataset may change, it still casts one vote per row. The server re-takes the argmax of every
    upload, so a client cannot cast more than one vote whatever it sends.

Confident-GNMax's data-dependent accounting (answer only rows with a clear consensus, smaller ε
per answer) is not implemented: its ε would need smooth-sensitivity release to be printed.
"""

from __future__ import annotations

import math

import numpy as np

from fedkd.privacy.accountant import GaussianEvent

VOTE_SENSITIVITY = math.sqrt(2.0)
"""L2 change of the vote counts when one client changes its vote on one row."""


def one_hot_votes(probs: np.ndarray) -> np.ndarray:
    """``(rows, classes)`` one-hot rows of each row's argmax: one client's votes."""
    votes = np.zeros(probs.shape, dtype=np.float32)
    votes[np.arange(len(probs)), np.asarray(probs).argmax(axis=1)] = 1.0
    return votes


def gnmax(counts: np.ndarray, sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """``(rows,)`` labels ``argmax(counts + N(0, σ²))`` (GNMax). ``rng`` only for tests."""
    rng = rng if rng is not None else np.random.default_rng()
    return (counts + rng.normal(0.0, sigma, size=counts.shape)).argmax(axis=1)


def label_event(sigma: float, labels: int) -> GaussianEvent:
    """What releasing ``labels`` GNMax labels costs: Gaussians of multiplier σ/√2."""
    return GaussianEvent(sigma / VOTE_SENSITIVITY, 1.0, labels)


class VoteCounter:
    """Running ``(rows, classes)`` vote counts; :meth:`release` returns one-hot GNMax labels."""

    def __init__(self, num_samples: int, num_classes: int) -> None:
        self.counts = np.zeros((num_samples, num_classes))
        self.num_clients = 0

    def add(self, probs: np.ndarray) -> None:
        """One client's upload becomes one vote per row (its argmax), whatever it holds."""
        if probs.shape != self.counts.shape:
            raise ValueError(f"upload has shape {probs.shape}, expected {self.counts.shape}")
        self.counts += one_hot_votes(probs)
        self.num_clients += 1

    def release(self, sigma: float, rng: np.random.Generator | None = None) -> np.ndarray:
        """``(rows, classes)`` one-hot noisy-argmax labels."""
        labels = gnmax(self.counts, sigma, rng)
        return one_hot_votes(np.eye(self.counts.shape[1])[labels])
