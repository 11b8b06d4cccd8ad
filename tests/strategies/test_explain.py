"""strategies.explain: provenance, agreement, reliability and contributions of FD clients."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from strategies.aggregation import AggregationContext, aggregate
from strategies.explain import (
    ReliabilityHistory,
    class_reliability,
    client_agreement,
    explain_round,
    leave_one_out,
    plot_explanation,
    provenance,
    shapley_sampled,
)

CLASSES = 4


def _onehot(labels: np.ndarray, sharp: float = 0.85) -> np.ndarray:
    rest = (1 - sharp) / (CLASSES - 1)
    out = np.full((len(labels), CLASSES), rest)
    out[np.arange(len(labels)), labels] = sharp
    return out


@pytest.fixture
def replies() -> tuple[np.ndarray, np.ndarray]:
    """4 honest clients that know the truth (one errs on class 3) and 1 label flipper."""
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(CLASSES), 10)  # 40 samples
    honest = [_onehot(truth) for _ in range(3)]
    weak = truth.copy()
    weak[truth == 3] = 2  # client 3 confuses class 3 with 2
    flipper = (truth + 1) % CLASSES
    probs = np.stack([*honest, _onehot(weak), _onehot(flipper, 0.99)])
    probs = probs + rng.uniform(0, 0.01, probs.shape)
    return probs / probs.sum(axis=2, keepdims=True), truth


def ctx(n: int) -> AggregationContext:
    return AggregationContext.uniform(n, CLASSES)


def test_provenance_matches_a_loop_reference(replies):
    probs, _ = replies
    teacher = aggregate("mean", probs, ctx(5))
    prov = provenance(probs, teacher)
    for s in range(probs.shape[1]):
        label = int(np.argmax(teacher[s]))
        mass = [probs[c, s, label] for c in range(5)]
        assert prov.label[s] == label
        np.testing.assert_allclose(prov.share[:, s], np.array(mass) / sum(mass))
        assert prov.vote_agreement[s] == sum(np.argmax(probs[c, s]) == label for c in range(5)) / 5
        assert prov.driver[s] == int(np.argmax(mass))
    # on class-3 samples the weak client and the flipper both vote elsewhere: 3 of 5 agree
    assert np.allclose(prov.vote_agreement[30:], 0.6)
    assert np.allclose(prov.vote_agreement[:30], 0.8)


def test_agreement_and_reliability_single_out_the_weak_and_the_byzantine(replies):
    probs, truth = replies
    teacher = aggregate("mean", probs, ctx(5))
    agree = client_agreement(probs, teacher)
    np.testing.assert_allclose(agree, [1, 1, 1, 0.75, 0])
    rel = class_reliability(probs, truth)
    assert rel.shape == (5, CLASSES)
    np.testing.assert_allclose(rel[3], [1, 1, 1, 0])
    np.testing.assert_allclose(rel[4], [0, 0, 0, 0])
    partial = class_reliability(probs[:, :20], truth[:20])  # classes 2 and 3 absent
    assert np.isnan(partial[:, 2:]).all() and not np.isnan(partial[:, :2]).any()


def test_reliability_history_pools_counts_over_rounds(replies):
    probs, truth = replies
    ids = ["a", "b", "c", "weak", "byz"]
    hist = ReliabilityHistory(CLASSES).update(ids, probs, truth)
    hist = hist.update(["weak", "new"], probs[[3, 0], :20], truth[:20])  # round 2: a subset
    rel = hist.reliability()
    assert hist.rounds == 2 and set(rel) == set(ids) | {"new"}
    assert rel["weak"] == [1.0, 1.0, 1.0, 0.0]
    assert rel["byz"] == [0.0, 0.0, 0.0, 0.0]
    assert rel["new"][:2] == [1.0, 1.0] and all(math.isnan(v) for v in rel["new"][2:])
    np.testing.assert_array_equal(hist.counts["weak"], [20, 20, 10, 10])
    with pytest.raises(ValueError, match="client ids"):
        hist.update(["x"], probs, truth)


def test_leave_one_out_matches_a_direct_recomputation(replies):
    probs, truth = replies
    for rule in ("mean", "median", "filtered_mean"):
        loo = leave_one_out(probs, ctx(5), rule, reference=truth)
        full = aggregate(rule, probs, ctx(5))
        for i in range(5):
            rest = np.delete(probs, i, axis=0)
            without = aggregate(rule, rest, ctx(4))
            expected = (full.argmax(1) == truth).mean() - (without.argmax(1) == truth).mean()
            assert loo["accuracy_effect"][i] == pytest.approx(expected)
            tv = 0.5 * np.abs(without - full).sum(axis=1).mean()
            assert loo["tv_shift"][i] == pytest.approx(tv)


def test_leave_one_out_shows_the_byzantine_client_hurts():
    # 2 honest, 1 weak, 2 flippers: under "mean" the flippers decide some labels
    truth = np.repeat(np.arange(CLASSES), 5)
    probs = np.stack(
        [_onehot(truth), _onehot(truth, 0.6), _onehot(truth, 0.6)]
        + [_onehot((truth + 1) % CLASSES, 0.9)] * 2
    )
    loo = leave_one_out(probs, ctx(5), "mean", reference=truth)
    assert loo["accuracy_effect"][3] < 0 and loo["accuracy_effect"][4] < 0
    assert loo["accuracy_effect"][0] >= 0
    consensus = leave_one_out(probs, ctx(5), "mean")  # no labels: effects are >= 0
    assert (consensus["accuracy_effect"] >= 0).all()
    assert np.array_equal(consensus["accuracy_effect"], consensus["label_flips"])


def test_shapley_is_exact_on_average_and_matches_enumeration_for_three_clients(replies):
    probs, truth = replies
    three = probs[[0, 3, 4]]
    c = ctx(3)
    est = shapley_sampled(three, c, "mean", reference=truth, permutations=300, seed=1)
    # exact Shapley by enumerating all 3! orders
    exact = np.zeros(3)
    for order in itertools.permutations(range(3)):
        prev = 1 / CLASSES
        for k in range(1, 4):
            members = sorted(order[:k])
            cur = (aggregate("mean", three[members], ctx(k)).argmax(1) == truth).mean()
            exact[order[k - 1]] += cur - prev
            prev = cur
    exact /= 6
    np.testing.assert_allclose(est, exact, atol=0.05)
    full_acc = (aggregate("mean", three, c).argmax(1) == truth).mean()
    assert est.sum() == pytest.approx(full_acc - 1 / CLASSES)  # efficiency, every permutation
    assert est[2] < 0 < est[0]


def test_explain_round_is_json_and_plots(tmp_path, replies):
    probs, truth = replies
    ids = ["a", "b", "c", "weak", "byz"]
    report = explain_round(
        probs, ctx(5), "mean", ids, reference=truth, shapley_permutations=5, seed=0
    )
    text = json.dumps(report)  # NaN-free here; json would write NaN for unseen classes
    assert json.loads(text)["clients"] == ids
    assert report["teacher_accuracy"] == pytest.approx(1.0)
    assert report["loo_accuracy_effect"][4] <= 0
    assert len(report["samples"]["driver"]) == probs.shape[1]
    assert report["samples"]["driver"][0] in ids and len(report["shapley"]) == 5
    path = plot_explanation(report, tmp_path / "round.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="client ids"):
        explain_round(probs, ctx(5), "mean", ids[:2])
