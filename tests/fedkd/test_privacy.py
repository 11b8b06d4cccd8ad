"""The DP path: clipping, the noise scale, the projection, and the accountant's ε."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedkd.privacy import (
    DPSpec,
    clip_rows,
    epsilon_spent,
    gaussian_mechanism,
    privatize,
    to_distributions,
)


def _probs(rows: int = 200, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows).astype(np.float32)


def test_clip_rows_bounds_norms_and_leaves_short_rows_alone() -> None:
    p = _probs()
    clipped = clip_rows(p, 0.3)
    norms = np.linalg.norm(clipped, axis=1)
    assert norms.max() <= 0.3 + 1e-6
    short = np.linalg.norm(p, axis=1) <= 0.3
    np.testing.assert_allclose(clipped[short], p[short])
    assert np.all(clipped >= 0)  # scaling keeps probabilities non-negative


def test_sensitivity_bounds_the_largest_possible_change_of_an_upload() -> None:
    spec = DPSpec(1.0, clip=0.5)
    rows, classes = 30, 4
    a = np.zeros((rows, classes))
    b = np.zeros((rows, classes))
    a[:, 0], b[:, 1] = 1.0, 1.0  # every row moves from one corner of the simplex to another
    moved = np.linalg.norm(clip_rows(a, 0.5) - clip_rows(b, 0.5))
    assert moved == pytest.approx(spec.sensitivity(rows))  # the bound is attained


@pytest.mark.parametrize(("z", "clip", "rows"), [(0.5, 1.0, 300), (2.0, 0.2, 200)])
def test_noise_has_the_stated_standard_deviation(z: float, clip: float, rows: int) -> None:
    spec = DPSpec(z, clip=clip)
    p = _probs(rows)
    noise = gaussian_mechanism(p, spec, np.random.default_rng(1)) - clip_rows(p, clip)
    expected = z * clip * math.sqrt(2 * rows)
    assert spec.noise_std(rows) == pytest.approx(expected)
    # 2 000 draws or more: the sample std is within 5 % with overwhelming probability.
    assert noise.std() == pytest.approx(expected, rel=0.05)
    assert abs(noise.mean()) < 4 * expected / math.sqrt(noise.size)


def test_privatize_returns_distributions_and_is_off_at_zero_noise() -> None:
    p = _probs()
    out = privatize(p, DPSpec(1.0), np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == p.shape
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out, p)
    assert privatize(p, DPSpec(0.0)) is p


def test_to_distributions_maps_all_negative_rows_to_uniform() -> None:
    out = to_distributions(np.array([[-1.0, -2.0, -0.5], [2.0, -1.0, 2.0]]))
    np.testing.assert_allclose(out, [[1 / 3] * 3, [0.5, 0.0, 0.5]])


def test_real_runs_draw_fresh_noise() -> None:
    p = _probs(20)
    spec = DPSpec(1.0)
    assert not np.allclose(privatize(p, spec), privatize(p, spec))


def _exact_gaussian_epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """ε of the Gaussian mechanism, analytically (Balle & Wang 2018, Theorem 8).

    ``releases`` Gaussian mechanisms of multiplier z compose exactly into one of multiplier
    z/√releases; for it, δ(ε) = Φ(μ/2 − ε/μ) − e^ε Φ(−μ/2 − ε/μ) with μ = √releases / z.
    """
    mu = math.sqrt(releases) / noise_multiplier

    def delta_of(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    return brentq(lambda e: delta_of(e) - delta, 0.0, 500.0)


@pytest.mark.parametrize(("z", "releases"), [(1.0, 10), (2.0, 10), (5.0, 20)])
def test_accountant_epsilon_matches_the_exact_gaussian_value(z: float, releases: int) -> None:
    exact = _exact_gaussian_epsilon(z, releases, 1e-5)  # 17.86, 7.51, 3.85
    assert epsilon_spent(z, releases, 1e-5) == pytest.approx(exact, rel=0.01)


def test_epsilon_grows_with_releases_and_shrinks_with_noise() -> None:
    assert epsilon_spent(1.0, 0, 1e-5) == 0.0
    assert epsilon_spent(0.0, 3, 1e-5) == math.inf
    by_rounds = [epsilon_spent(2.0, r, 1e-5) for r in (1, 5, 20)]
    assert by_rounds == sorted(by_rounds) and by_rounds[0] > 0
    by_noise = [epsilon_spent(z, 10, 1e-5) for z in (0.5, 1.0, 4.0)]
    assert by_noise == sorted(by_noise, reverse=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": -1.0},
        {"noise_multiplier": 1.0, "clip": 0.0},
        {"noise_multiplier": 1.0, "delta": 1.0},
    ],
)
def test_bad_spec_is_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DPSpec(**kwargs)


@pytest.mark.parametrize("z", [0.01, 0.02, 0.05])
def test_tiny_noise_gets_a_finite_upper_bound_instead_of_an_error(z: float) -> None:
    # Opacus's PRV accountant raises at z = 0.02 and gives up (inf) at 0.05; RDP bounds them.
    eps = epsilon_spent(z, 5, 1e-5)
    assert math.isfinite(eps) and eps > epsilon_spent(0.1, 5, 1e-5) > 100
