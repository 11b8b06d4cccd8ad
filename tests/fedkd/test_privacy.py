"""The DP path: clipping, the projection, the mechanisms' sensitivity, and the one accountant's
ε checked against independent computations (analytic Gaussian, an independent RDP bound)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import gammaln
from scipy.stats import norm

from fedkd.privacy import (
    GaussianEvent,
    Ledger,
    clip_rows,
    epsilon,
    epsilon_spent,
    noise_for_epsilon,
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


def test_to_distributions_maps_all_negative_rows_to_uniform() -> None:
    out = to_distributions(np.array([[-1.0, -2.0, -0.5], [2.0, -1.0, 2.0]]))
    np.testing.assert_allclose(out, [[1 / 3] * 3, [0.5, 0.0, 0.5]])


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


@pytest.mark.parametrize("z", [0.01, 0.02, 0.05])
def test_tiny_noise_gets_a_finite_upper_bound_instead_of_an_error(z: float) -> None:
    # Opacus's PRV accountant raises at z = 0.02 and gives up (inf) at 0.05; RDP bounds them.
    eps = epsilon_spent(z, 5, 1e-5)
    assert math.isfinite(eps) and eps > epsilon_spent(0.1, 5, 1e-5) > 100


# ----------------------------------------------------------------------------- the one accountant
def _classic_sampled_gaussian_epsilon(z: float, q: float, steps: int, delta: float) -> float:
    """An independent upper bound: RDP of the Poisson-sampled Gaussian at integer orders
    (Mironov, Talwar & Zhang 2019, Sec. 3.3, the binomial expansion) with the classic
    conversion ε = steps·RDP(α) + log(1/δ)/(α − 1) (Mironov 2017, Prop. 3)."""
    best = math.inf
    for alpha in range(2, 257):
        k = np.arange(alpha + 1)
        log_terms = (
            gammaln(alpha + 1)
            - gammaln(k + 1)
            - gammaln(alpha - k + 1)
            + (alpha - k) * math.log1p(-q)
            + k * math.log(q)
            + (k * k - k) / (2 * z * z)
        )
        top = log_terms.max()
        rdp = (top + math.log(np.exp(log_terms - top).sum())) / (alpha - 1)
        best = min(best, steps * rdp + math.log(1 / delta) / (alpha - 1))
    return best


@pytest.mark.parametrize(("z", "steps"), [(1.0, 3), (0.8, 20), (3.0, 100)])
def test_central_rounds_cost_what_the_analytic_gaussian_mechanism_says(z, steps) -> None:
    # central DP with every client every round: `steps` Gaussians of multiplier z, exactly.
    from fedkd.privacy.central import round_event

    ledger = Ledger(1e-5)
    for _ in range(steps):
        ledger.spend(round_event(z, 1.0))
    assert ledger.epsilon() == pytest.approx(_exact_gaussian_epsilon(z, steps, 1e-5), rel=0.02)


@pytest.mark.parametrize(("sigma", "labels"), [(4.0, 10), (10.0, 200)])
def test_gnmax_labels_cost_a_gaussian_of_sensitivity_root_two(sigma, labels) -> None:
    # Independent: counts + N(0, σ²) with L2 sensitivity √2 is the Gaussian mechanism with
    # μ = √2/σ per label; `labels` of them compose to μ = √(2·labels)/σ (analytic, exact) ...
    from fedkd.privacy.pate import label_event

    eps = epsilon([label_event(sigma, labels)], 1e-5)
    exact = _exact_gaussian_epsilon(sigma / math.sqrt(2), labels, 1e-5)
    assert eps == pytest.approx(exact, rel=0.02)
    # ... and never above PATE's own data-independent bound, RDP α·labels/σ² (Prop. 8).
    papernot = min(
        labels * a / sigma**2 + math.log(1 / 1e-5) / (a - 1) for a in np.linspace(1.01, 500, 5000)
    )
    assert eps <= papernot


@pytest.mark.parametrize(("z", "q", "steps"), [(1.0, 0.1, 50), (1.1, 0.01, 1000), (2.0, 0.3, 10)])
def test_sampled_rounds_sit_under_an_independent_rdp_bound(z, q, steps) -> None:
    # Poisson-sampled Gaussians (central DP with fraction-train < 1, and DP-SGD's steps).
    eps = epsilon([GaussianEvent(z, q, steps)], 1e-5)
    bound = _classic_sampled_gaussian_epsilon(z, q, steps, 1e-5)
    assert 0.5 * bound <= eps <= bound + 1e-9
    unsampled = epsilon([GaussianEvent(z, 1.0, steps)], 1e-5)
    assert eps < unsampled  # amplification by sampling


def test_ledger_budget_is_checked_before_a_release_and_survives_a_checkpoint() -> None:
    event = GaussianEvent(2.0, 1.0, 1)
    one, two = epsilon([event], 1e-5), epsilon([event, event], 1e-5)
    ledger = Ledger(1e-5, max_epsilon=(one + two) / 2)
    assert ledger.allows(event)
    ledger.spend(event)
    assert ledger.epsilon_after(event) == pytest.approx(two) and not ledger.allows(event)
    again = Ledger(1e-5)
    again.load_state_dict(ledger.state_dict())
    assert again.epsilon() == pytest.approx(one)
    assert Ledger(1e-5).allows(GaussianEvent(0.01, 1.0, 1000))  # no budget: always allowed


# ----------------------------------------------------------------------------- mechanisms
def test_one_client_moves_the_central_sum_by_at_most_clip_root_rows() -> None:
    from fedkd.privacy.central import CentralDPSum, client_sensitivity

    rows, classes, clip = 40, 10, 0.5
    others = [_probs(rows, classes, seed=s) for s in range(3)]
    with_x, without = CentralDPSum(rows, classes, clip), CentralDPSum(rows, classes, clip)
    for p in others:
        with_x.add(p)
        without.add(p)
    with_x.add(np.eye(classes, dtype=np.float32)[np.arange(rows) % classes] * 50)  # huge upload
    moved = np.linalg.norm(with_x.total - without.total)
    assert moved <= client_sensitivity(rows, clip) + 1e-9
    assert with_x.noise_std(2.0) == pytest.approx(2.0 * clip * math.sqrt(rows))
    teacher = with_x.release(1.0, expected_clients=4, rng=np.random.default_rng(0))
    assert teacher.shape == (rows, classes)
    np.testing.assert_allclose(teacher.sum(axis=1), 1.0, atol=1e-5)


def test_gnmax_counts_one_vote_per_client_and_row_whatever_it_sends() -> None:
    from fedkd.privacy.pate import VOTE_SENSITIVITY, VoteCounter, gnmax

    rows, classes = 30, 5
    counter = VoteCounter(rows, classes)
    for seed in range(4):
        counter.add(_probs(rows, classes, seed=seed) * 100)  # scaled: still one vote per row
    assert np.all(counter.counts.sum(axis=1) == 4)
    before = counter.counts.copy()
    changed = VoteCounter(rows, classes)
    changed.counts = before.copy()
    changed.add(_probs(rows, classes, seed=9))
    other = VoteCounter(rows, classes)
    other.counts = before.copy()
    other.add(_probs(rows, classes, seed=10))
    row_moves = np.linalg.norm(changed.counts - other.counts, axis=1)
    assert row_moves.max() <= VOTE_SENSITIVITY + 1e-9  # per released label
    tiny_noise = gnmax(counter.counts, 1e-9, np.random.default_rng(0))  # ties broken at random
    assert np.array_equal(before[np.arange(rows), tiny_noise], before.max(axis=1))
    labels = counter.release(1.0, np.random.default_rng(0))
    assert np.all(labels.sum(axis=1) == 1)


def test_calibration_finds_the_least_noise_within_the_budget() -> None:
    def run(z: float) -> list[GaussianEvent]:
        return [GaussianEvent(z, 1.0, 5)]

    z = noise_for_epsilon(4.0, 1e-5, run, low=0.5, high=20.0)
    assert epsilon(run(z), 1e-5) <= 4.0 < epsilon(run(z / 1.01), 1e-5)
    # independent: 5 Gaussians of z are one of z/√5, whose exact ε is the budget
    assert _exact_gaussian_epsilon(z, 5, 1e-5) == pytest.approx(4.0, rel=0.02)
