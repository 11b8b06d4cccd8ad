"""Client-level central DP (``dp-mechanism=central``): clip each client, noise the sum once.

DP-FedAvg's recipe (McMahan et al. 2018) applied to soft labels. The server holds the clients'
uploads (it is trusted, as a curator), and what it *releases* — the teacher sent back to
clients, the student trained on it, anything derived — is (ε, δ)-DP with respect to adding or
removing one whole client (all of its data at once).

Sensitivity
    Every row of a client's ``(rows, classes)`` upload is clipped to L2 norm ``clip`` (rows of
    probabilities have norm ≤ 1, so ``clip = 1`` clips nothing), hence one client's whole
    contribution has Frobenius norm ≤ ``clip·√rows``. Adding or removing a client moves the
    *sum* by at most that: ``Δ = clip·√rows``, whatever the other clients send.

Release
    ``(Σ clipped + N(0, (z·Δ)²)) / m`` with a *fixed* denominator ``m`` = the expected number of
    participants (``fraction × connected``), so the count of replies is not itself released.
    Per coordinate the noise on the mean is ``z·clip·√rows / m``: it falls as 1/m, which is why
    client-level DP needs many clients. The noisy mean is projected back to distributions
    (post-processing).

Sampling
    With ``fraction-train < 1`` the server samples clients by Poisson sampling (each one
    independently with probability q), which the accountant amplifies (sampled Gaussian);
    the amplification assumes the sample stays secret from whoever sees the releases.
"""

from __future__ import annotations

import math

import numpy as np

from fedkd.privacy.accountant import GaussianEvent


def clip_rows(probs: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row whose L2 norm exceeds ``clip`` down to norm ``clip`` (scaling keeps
    probabilities non-negative; shorter rows are left alone)."""
    norms = np.linalg.norm(probs, axis=-1, keepdims=True)  # (rows, 1)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    return probs * scale


def to_distributions(x: np.ndarray) -> np.ndarray:
    """Project noisy rows back to distributions: clamp at 0, renormalise, all-zero → uniform.
    Post-processing: it cannot weaken DP, and the student and clients see probabilities."""
    x = np.clip(x, 0.0, None)
    sums = x.sum(axis=-1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[-1])
    return np.where(sums > 0, x / np.where(sums > 0, sums, 1.0), uniform)


def client_sensitivity(rows: int, clip: float) -> float:
    """L2 bound ``clip·√rows`` of one client's clipped ``(rows, classes)`` upload."""
    return clip * math.sqrt(rows)


def round_event(noise_multiplier: float, sample_rate: float) -> GaussianEvent:
    """What one round costs: one sampled Gaussian of ``noise_multiplier`` (units of Δ)."""
    return GaussianEvent(noise_multiplier, sample_rate, 1)


class CentralDPSum:
    """Running sum of clipped uploads; :meth:`release` adds the noise once.

    Parameters
    ----------
    num_samples, num_classes : int
        Shape of every upload.
    clip : float
        L2 bound of each row.
    """

    def __init__(self, num_samples: int, num_classes: int, clip: float) -> None:
        self.clip = clip
        self.total = np.zeros((num_samples, num_classes))  # (rows, classes) float64
        self.num_clients = 0

    def add(self, probs: np.ndarray) -> None:
        """Fold one client's ``(rows, classes)`` upload, clipped row by row."""
        if probs.shape != self.total.shape:
            raise ValueError(f"upload has shape {probs.shape}, expected {self.total.shape}")
        self.total += clip_rows(np.asarray(probs, dtype=np.float64), self.clip)
        self.num_clients += 1

    def noise_std(self, noise_multiplier: float) -> float:
        """Per-coordinate standard deviation of the noise added to the sum."""
        return noise_multiplier * client_sensitivity(self.total.shape[0], self.clip)

    def release(
        self,
        noise_multiplier: float,
        expected_clients: float,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """The DP teacher: noisy sum over a fixed denominator, projected to distributions.

        ``rng`` exists for tests; leave it ``None`` in real runs (OS entropy: seeded noise could
        be regenerated and subtracted).
        """
        rng = rng if rng is not None else np.random.default_rng()
        noise = rng.normal(0.0, self.noise_std(noise_multiplier), size=self.total.shape)
        return to_distributions((self.total + noise) / max(expected_clients, 1.0)).astype(
            np.float32
        )
