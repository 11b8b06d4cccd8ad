"""Simulated faults and attackers: deterministic, at the configured rates, doing what they say."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from fedkd import faults
from fedkd.config import FDConfig


def _probs(rows: int = 40, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(classes), size=rows).astype(np.float32)


@pytest.mark.parametrize(("fraction", "count"), [(0.0, 0), (0.1, 1), (0.3, 3), (1.0, 10)])
def test_attackers_are_the_configured_share_and_depend_on_the_seed(fraction, count) -> None:
    picked = faults.attackers(FDConfig(byzantine_fraction=fraction, num_clients=10))
    assert len(picked) == count and picked <= set(range(10))
    assert picked == faults.attackers(FDConfig(byzantine_fraction=fraction, num_clients=10))
    if 0 < count < 10:
        others = {faults.attackers(FDConfig(byzantine_fraction=fraction, seed=s)) for s in range(8)}
        assert len(others) > 1


def test_uniform_attack_is_random_distributions() -> None:
    out = faults.attack(_probs(), "uniform", rng=np.random.default_rng(5))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
    assert np.corrcoef(out.ravel(), _probs().ravel())[0, 1] < 0.3


def test_label_flip_reverses_the_classes() -> None:
    p = _probs()
    out = faults.attack(p, "label_flip", rng=np.random.default_rng(0))
    assert np.array_equal(out.argmax(axis=1), 9 - p.argmax(axis=1))
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_targeted_attack_puts_all_mass_on_the_target() -> None:
    out = faults.attack(_probs(), "targeted", rng=np.random.default_rng(0), target=3)
    assert np.all(out[:, 3] == 1.0) and out.sum() == len(out)
    with pytest.raises(ValueError, match="byzantine-target"):
        faults.attack(_probs(), "targeted", rng=np.random.default_rng(0), target=10)


def test_peaked_attack_is_one_hot_on_many_classes() -> None:
    out = faults.attack(_probs(400), "peaked", rng=np.random.default_rng(0))
    assert np.all(out.max(axis=1) == 1.0) and np.all(out.sum(axis=1) == 1.0)
    assert len(np.unique(out.argmax(axis=1))) == 10


def test_scaled_attack_is_no_longer_a_distribution() -> None:
    out = faults.attack(_probs(), "scaled", rng=np.random.default_rng(0))
    np.testing.assert_allclose(out.sum(axis=1), faults.SCALE_FACTOR, rtol=1e-5)


def test_honest_clients_upload_their_own_predictions() -> None:
    cfg = FDConfig(byzantine_fraction=0.3)
    p = _probs()
    honest = next(i for i in range(10) if i not in faults.attackers(cfg))
    bad = next(iter(faults.attackers(cfg)))
    assert faults.maybe_attack(cfg, honest, 1, p) is p
    assert not np.allclose(faults.maybe_attack(cfg, bad, 1, p), p)


@pytest.mark.parametrize("phase", ["train", "query"])
def test_crashes_happen_at_the_configured_rate_and_reproducibly(phase) -> None:
    key = "fault_crash_train" if phase == "train" else "fault_crash_query"
    cfg = FDConfig(**{key: 0.3})

    def crashed(partition: int, rnd: int) -> bool:
        try:
            faults.crash(cfg, partition, rnd, phase)
        except faults.InjectedFault:
            return True
        return False

    grid = [(p, r) for p in range(20) for r in range(1, 51)]  # 1 000 draws
    first = [crashed(p, r) for p, r in grid]
    assert first == [crashed(p, r) for p, r in grid]
    assert 0.25 < np.mean(first) < 0.35  # binomial sd ≈ 0.015


def test_no_faults_by_default() -> None:
    cfg = FDConfig()
    for r in range(1, 30):
        faults.crash(cfg, 0, r, "train")
        faults.crash(cfg, 0, r, "query")


def test_stragglers_sleep_past_the_round_timeout(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    cfg = FDConfig(fault_straggle=0.5, round_timeout=7.0)
    for r in range(1, 201):
        faults.straggle(cfg, 0, r, "train")
    assert 70 < len(slept) < 130 and all(7.9 < t <= 8.0 for t in slept)


def test_a_straggler_waits_from_when_the_server_sent_the_message(monkeypatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(faults.time, "sleep", slept.append)
    sent = SimpleNamespace(created_at=time.time() - 5.0)  # queued for 5 s already
    faults.straggle(FDConfig(fault_straggle=1.0, round_timeout=7.0), 0, 1, "train", sent)
    assert len(slept) == 1 and 2.9 < slept[0] <= 3.0


# ----------------------------------------------------------------------------- issue 13 attacks
def test_lma_puts_all_mass_on_the_least_likely_class() -> None:
    p = _probs()
    out = faults.attack(p, "lma", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.argmax(axis=1), p.argmin(axis=1))
    np.testing.assert_array_equal(out.max(axis=1), 1.0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_cpa_targets_the_class_least_similar_to_the_top_class() -> None:
    # Classes 0 and 1 are predicted together (similar), class 2 never with class 0.
    mean = np.array([[0.6, 0.4, 0.0], [0.5, 0.5, 0.0], [0.0, 0.3, 0.7], [0.0, 0.2, 0.8]])
    similarity = faults.class_similarity(mean)
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    assert similarity[0, 2] == 0.0 and similarity[0, 1] > 0.5
    out = faults.attack(mean.astype(np.float32), "cpa", rng=np.random.default_rng(0))
    np.testing.assert_array_equal(out.argmax(axis=1), [2, 2, 0, 0])
    assert np.all(out.argmax(axis=1) != mean.argmax(axis=1))  # never the honest top class
    np.testing.assert_allclose(out.sum(axis=1), 1.0)


def test_topk_attack_keeps_each_rows_values_but_moves_its_argmax() -> None:
    p = _probs(50)
    out = faults.attack(p, "topk", rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.sort(out, axis=1), np.sort(p, axis=1), rtol=1e-6)
    order = np.argsort(-p, axis=1)
    k = faults.TOPK_ATTACK_K
    rows = np.arange(len(p))
    # The former top class now holds the k-th largest value, and the k-th class the largest.
    np.testing.assert_allclose(out[rows, order[:, 0]], p[rows, order[:, k - 1]], rtol=1e-6)
    np.testing.assert_allclose(out[rows, order[:, k - 1]], p[rows, order[:, 0]], rtol=1e-6)
    assert np.all(out.argmax(axis=1) != p.argmax(axis=1))


@pytest.mark.parametrize("kind", ["lma", "cpa", "topk"])
def test_new_attacks_are_valid_distributions_and_configurable(kind: str) -> None:

    cfg = FDConfig(byzantine_fraction=0.3, byzantine_attack=kind)
    bad = sorted(faults.attackers(cfg))[0]
    out = faults.maybe_attack(cfg, bad, 1, _probs())
    assert out.shape == _probs().shape and np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
