"""Server-side DP through the real ServerApp and ClientApps (in process): every ε printed is
checked against an independent computation, and the budget stops the run cleanly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from fedkd.client import FDClient, load_client_data
from fedkd.config import FDConfig
from simulations.local_grid import run_fd_local
from strategies.private import ServerPrivacy
from tests.helpers import round_request

pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


def _cfg(**changes: Any) -> FDConfig:
    base: dict[str, Any] = dict(
        num_rounds=3,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        public_subset=20,
    )
    return FDConfig(**{**base, **changes})


def _analytic_epsilon(mu: float, delta: float) -> float:
    """ε of a μ-GDP Gaussian mechanism at δ, exactly (Balle & Wang 2018, Theorem 8)."""

    def delta_of(eps: float) -> float:
        return norm.cdf(mu / 2 - eps / mu) - math.exp(eps) * norm.cdf(-mu / 2 - eps / mu)

    return brentq(lambda e: delta_of(e) - delta, 0.0, 500.0)


def test_central_dp_prints_the_analytic_epsilon_and_stops_at_the_budget(capsys) -> None:
    z = 1.5
    exact = [_analytic_epsilon(math.sqrt(k) / z, 1e-5) for k in (1, 2, 3)]
    budget = (exact[1] + exact[2]) / 2  # two rounds fit, the third would not
    cfg = _cfg(dp_mechanism="central", dp_noise_multiplier=z, dp_max_epsilon=budget)
    records = run_fd_local(cfg)
    out = capsys.readouterr().out
    assert [r.round for r in records] == [1, 2]  # stopped cleanly, no exception
    assert [r.dp_epsilon for r in records] == pytest.approx(exact[:2], rel=0.02)
    assert "privacy budget reached" in out and f"ε {records[-1].dp_epsilon:.2f} at δ 1e-05" in out
    assert all(r.dp_delta == 1e-5 for r in records)
    # Clients sent no counts, losses or test accuracy outside the DP release.
    assert all(r.client_accuracy is None for r in records)
    assert all(r.valid_replies == 3 for r in records)


def test_pate_labels_rows_once_and_prints_the_gaussian_epsilon_of_its_votes() -> None:
    sigma = 4.0
    cfg = _cfg(num_rounds=2, dp_mechanism="pate", dp_noise_multiplier=sigma, dp_labels_per_round=20)
    records = run_fd_local(cfg)
    # 20 labels per round, each a Gaussian of L2 sensitivity √2: μ = √(2·labels)/σ.
    exact = [_analytic_epsilon(math.sqrt(2 * 20 * k) / sigma, 1e-5) for k in (1, 2)]
    assert [r.dp_epsilon for r in records] == pytest.approx(exact, rel=0.02)
    assert all(np.isfinite(r.student_loss) for r in records)


def test_central_sampling_is_poisson_and_amplified() -> None:
    full = ServerPrivacy(_cfg(dp_mechanism="central", dp_noise_multiplier=1.0))
    half = ServerPrivacy(
        _cfg(dp_mechanism="central", dp_noise_multiplier=1.0, fraction_train=0.5, min_train_nodes=1)
    )
    assert not full.poisson_sampling() and half.poisson_sampling()
    one, sampled = full.epsilon_after(20), half.epsilon_after(20)
    assert one is not None and sampled is not None and sampled < one


def test_dpsgd_client_trains_privately_and_reports_its_own_epsilon() -> None:
    from fedkd.privacy.dpsgd import round_event

    cfg = _cfg(
        dp_mechanism="dpsgd",
        dp_noise_multiplier=1.2,
        batch_size=16,
        partition="iid",
    )
    data = load_client_data(cfg, 0, 3)
    client = FDClient(cfg, data, "mlp", 0)
    req = round_request(data.public_x, public_indices=np.arange(10))
    out = client.run_round(req, train=True)
    n = len(data.train_y)
    event = round_event(n, 16, 1, 1.2)
    assert event.steps == math.ceil(n / 16) and event.sample_rate == pytest.approx(1 / event.steps)
    from tests.fedkd.test_privacy import _classic_sampled_gaussian_epsilon

    bound = _classic_sampled_gaussian_epsilon(1.2, event.sample_rate, event.steps, 1e-5)
    eps = out.metrics["dp-epsilon"]
    assert isinstance(eps, float) and 0.5 * bound <= eps <= bound + 1e-9
    assert out.metrics["num-examples"] == 0 and "train-loss" not in out.metrics
    assert 0.0 <= float(out.metrics["test-accuracy"]) <= 1.0  # type: ignore[arg-type]
    restored = FDClient(cfg, data, "mlp", 0)
    restored.load_state_bytes(client.state_bytes())
    assert restored.ledger.epsilon() == pytest.approx(eps)
    assert sorted(restored.model.state_dict()) == sorted(client.model.state_dict())
