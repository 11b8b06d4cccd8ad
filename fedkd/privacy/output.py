"""Per-client output noise (``dp-mechanism=output``): each client noises its own upload.

What is protected
    Each client's upload (its soft labels on the queried public rows) is released through the
    Gaussian mechanism, so the server (or anyone on the wire) learns about any single private
    training example of that client only what (ε, δ)-DP allows. This is *example-level* DP of
    each client's releases, applied on the device; the server needs no trust.

Sensitivity
    Changing one private example may change the trained model, hence every row of the upload.
    Each row is clipped to L2 norm ``clip`` (scaling, so rows stay non-negative). For two
    non-negative vectors of norm ≤ c, ``‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b ≤ 2c²``, so one row moves
    by at most ``c·√2`` and the whole ``(rows, classes)`` upload by ``Δ = c·√(2·rows)``. The noise
    standard deviation is ``noise_multiplier × Δ`` per coordinate. The cost grows with √rows:
    query fewer public rows per round (``public-subset``) to buy accuracy at the same ε.

Post-processing
    Noisy rows are projected back to distributions (negatives clamped to 0, rows renormalised,
    an all-zero row becomes uniform). Post-processing cannot weaken DP, and the server's reply
    validation then sees ordinary probabilities.

Accounting
    A client that uploads in ``k`` rounds composes ``k`` Gaussian mechanisms with the same
    noise multiplier (:mod:`fedkd.privacy.accountant`). Participation is known to the server, so no
    amplification by sampling is claimed (``sample_rate = 1``). The server reports ε for the
    client that uploaded most often.

Not covered: the metadata every reply carries in the clear (sample count, class counts, the
client's test accuracy) — aggregation rules such as ``weighted`` and ``class_weighted`` use it.

Noise comes from the operating system's entropy, never from the run seed: seeded noise could be
regenerated and subtracted. DP runs are therefore not bit-reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DPSpec:
    """Gaussian-mechanism settings shared by clients (noise) and server (accounting)."""

    noise_multiplier: float  # noise std in units of the L2 sensitivity; 0 = DP off
    clip: float = 1.0  # L2 bound of each soft-label row
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not (self.noise_multiplier >= 0 and math.isfinite(self.noise_multiplier)):
            raise ValueError(
                f"noise_multiplier must be finite and >= 0, got {self.noise_multiplier}"
            )
        if not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be finite and > 0, got {self.clip}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    @property
    def enabled(self) -> bool:
        return self.noise_multiplier > 0

    def sensitivity(self, num_rows: int) -> float:
        """L2 sensitivity ``c·√(2·rows)`` of a clipped, non-negative upload (module docstring)."""
        return self.clip * math.sqrt(2.0 * num_rows)

    def noise_std(self, num_rows: int) -> float:
        """Per-coordinate standard deviation of the Gaussian noise for an upload of ``num_rows``."""
        return self.noise_multiplier * self.sensitivity(num_rows)


def clip_rows(probs: np.ndarray, clip: float) -> np.ndarray:
    """Scale every row whose L2 norm exceeds ``clip`` down to norm ``clip`` (signs unchanged)."""
    norms = np.linalg.norm(probs, axis=-1, keepdims=True)  # (rows, 1)
    scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
    return probs * scale


def to_distributions(x: np.ndarray) -> np.ndarray:
    """Project noisy rows back to distributions: clamp at 0, renormalise, all-zero → uniform."""
    x = np.clip(x, 0.0, None)
    sums = x.sum(axis=-1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[-1])
    return np.where(sums > 0, x / np.where(sums > 0, sums, 1.0), uniform)


def privatize(
    probs: np.ndarray, spec: DPSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """The Gaussian mechanism on one upload: clip rows, add noise, project to distributions.

    ``rng`` exists for tests; leave it ``None`` in real runs (OS entropy, see module docstring).
    """
    if not spec.enabled:
        return probs
    return to_distributions(gaussian_mechanism(probs, spec, rng)).astype(np.float32)


def gaussian_mechanism(
    probs: np.ndarray, spec: DPSpec, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Clipped rows plus N(0, noise_std²) per coordinate, before the projection (float64)."""
    rng = rng if rng is not None else np.random.default_rng()
    clipped = clip_rows(probs.astype(np.float64), spec.clip)
    return clipped + rng.normal(0.0, spec.noise_std(len(probs)), size=clipped.shape)
