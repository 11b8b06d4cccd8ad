"""ExpGuard (strategies.expguard): exponential weights per client, kept across rounds."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd import faults
from fedkd.config import FDConfig
from simulations.local_grid import run_fd_local
from strategies.aggregation import AggregationContext, aggregate
from strategies.expguard import ExpGuard, outlier_excess

CLIENTS, ROWS, CLASSES = 10, 60, 10


pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


def _round(seed: int, attackers: int, kind: str = "lma") -> np.ndarray:
    """Honest clients: noisy copies of one truth; the last ``attackers`` send ``kind``."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.ones(CLASSES) * 0.3, size=ROWS)
    honest = [
        rng.dirichlet(truth[i] * 50 + 0.01) for _ in range(CLIENTS - attackers) for i in range(ROWS)
    ]
    probs = np.array(honest, dtype=np.float32).reshape(CLIENTS - attackers, ROWS, CLASSES)
    bad = [faults.attack(truth.astype(np.float32), kind, rng=rng) for _ in range(attackers)]
    return np.concatenate([probs, np.array(bad, dtype=np.float32).reshape(-1, ROWS, CLASSES)])


def _ctx() -> AggregationContext:
    return AggregationContext.uniform(CLIENTS, CLASSES)


@pytest.mark.parametrize("kind", ["lma", "cpa", "label_flip"])
def test_attackers_are_down_weighted_and_stay_so(kind: str) -> None:
    guard = ExpGuard(base="median")
    nodes = list(range(100, 100 + CLIENTS))
    for seed in range(3):
        probs = _round(seed, attackers=3, kind=kind)
        teacher = guard.aggregate(probs, nodes, _ctx())
        weights = np.array([guard.last_report[str(n)]["weight"] for n in nodes])
        assert weights[-3:].max() < 1e-3  # attackers
        np.testing.assert_allclose(weights[:-3], 1 / 7, rtol=0.05)  # honest, equal
        honest_mean = probs[:-3].mean(axis=0)
        assert np.abs(teacher - honest_mean).max() < 1e-2
        np.testing.assert_allclose(teacher.sum(axis=1), 1.0, atol=1e-5)
    # The penalty is cumulative: a reformed attacker earns its weight back only slowly.
    assert all(guard.penalties[n] > 1.0 for n in nodes[-3:])
    assert all(guard.penalties[n] == 0.0 for n in nodes[:-3])


def test_a_clean_round_matches_the_plain_mean_and_penalises_nobody() -> None:
    probs = _round(0, attackers=0)
    guard = ExpGuard()
    teacher = guard.aggregate(probs, list(range(CLIENTS)), _ctx())
    np.testing.assert_allclose(teacher, aggregate("mean", probs, _ctx()), atol=1e-5)
    assert set(guard.penalties.values()) == {0.0}


def test_mean_as_base_beats_plain_mean_under_lma() -> None:
    probs = _round(1, attackers=3)
    truth = probs[:-3].mean(axis=0).argmax(axis=1)
    plain = aggregate("mean", probs, _ctx())
    guarded = ExpGuard(base="trimmed_mean").aggregate(probs, list(range(CLIENTS)), _ctx())
    assert (guarded.argmax(axis=1) == truth).mean() > (plain.argmax(axis=1) == truth).mean()


def test_state_round_trips_and_new_nodes_start_clean() -> None:
    guard = ExpGuard()
    guard.aggregate(_round(0, attackers=2), list(range(CLIENTS)), _ctx())
    restored = ExpGuard()
    restored.load_state_dict(guard.state_dict())
    assert restored.penalties == guard.penalties and restored.penalties[CLIENTS - 1] > 0
    assert restored.penalties.get(999, 0.0) == 0.0


def test_excess_is_zero_within_the_spread_and_positive_beyond() -> None:
    scores = np.array([0.10, 0.11, 0.12, 0.10, 0.90])
    excess = outlier_excess(scores, threshold=3.0)
    assert np.all(excess[:4] == 0.0) and excess[4] > 0.7


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="stateless rule"):
        ExpGuard(base="expguard")
    with pytest.raises(ValueError, match="> 0"):
        ExpGuard(eta=0.0)
    with pytest.raises(ValueError, match="one node id per client"):
        ExpGuard().aggregate(_round(0, 0), [1, 2], _ctx())


def test_expguard_in_a_run_reports_who_was_down_weighted(tmp_path) -> None:
    cfg = FDConfig(
        num_rounds=2, num_clients=4, min_train_nodes=4, local_epochs=1, server_epochs=1,
        client_models="mlp", student_model="mlp", aggregation="expguard",
        byzantine_fraction=0.25, byzantine_attack="lma", run_dir=str(tmp_path),
    )  # fmt: skip
    records = run_fd_local(cfg)
    (attacker,) = faults.attackers(cfg)
    attacker_node = str(1000 + attacker)  # the in-process grid numbers nodes 1000 + partition
    for r in records:
        assert r.status == "ok" and set(r.client_weights) == {str(1000 + i) for i in range(4)}
        weights = {n: w["weight"] for n, w in r.client_weights.items()}
        assert min(weights, key=weights.__getitem__) == attacker_node
        honest = [w for n, w in weights.items() if n != attacker_node]
        assert weights[attacker_node] < min(honest) / 10
    import torch

    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["expguard"]["penalties"][attacker_node] > 0
    assert cfg.expguard_base == "median"
    with pytest.raises(ValueError, match="expguard-base"):
        FDConfig(aggregation="expguard", expguard_base="expguard")


def test_feddistill_checkpoint_restores_the_guard(tmp_path) -> None:
    import torch

    from fedkd.models import build_model
    from strategies.fed_distill import FedDistill, PublicSet
    from strategies.fed_distill import TestSet as EvalSet

    def strategy() -> FedDistill:
        cfg = FDConfig(client_models="mlp", student_model="mlp", aggregation="expguard")
        public = PublicSet(torch.zeros(4, 1, 8, 8))
        test = EvalSet(torch.zeros(2, 1, 8, 8), torch.arange(2), CLASSES)
        return FedDistill(cfg, build_model("mlp", (1, 8, 8), CLASSES), public, test)

    saved = strategy()
    assert saved.guard is not None
    saved.guard.penalties = {2**63 + 5: 1.5, 7: 0.0}  # node ids are uint64
    saved.save_checkpoint(tmp_path / "checkpoint.pt")
    restored = strategy()
    restored.load_checkpoint(tmp_path / "checkpoint.pt")
    assert restored.guard is not None and restored.guard.penalties == {2**63 + 5: 1.5, 7: 0.0}
