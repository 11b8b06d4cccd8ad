"""Aggregation rules against plain-loop NumPy references, plus properties and robustness."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from strategies.aggregation import (
    AGGREGATION_RULES,
    LOG_EPS,
    STREAMABLE_RULES,
    SUPPORT_RULES,
    AggregationContext,
    StreamingAggregator,
    aggregate,
    available_rules,
    evidence,
    outlier_mask,
    supported_rows,
)

ERA_T = 0.3
TRIM = 0.25


# ----------------------------------------------------------------------------- references
# Written with explicit loops over clients / samples / classes, independent of the module.
def _normalise_row(row: list[float]) -> list[float]:
    total = sum(row)
    return [v / total for v in row] if total > 0 else [1.0 / len(row)] * len(row)


def _softmax_row(z: list[float]) -> list[float]:
    top = max(z)
    e = [math.exp(v - top) for v in z]
    return [v / sum(e) for v in e]


def _entropy(row) -> float:
    return -sum(v * math.log(v) for v in row if v > 0)


def _mean_row(p, s):
    num_clients, _, num_classes = p.shape
    return [sum(p[k, s, c] for k in range(num_clients)) / num_clients for c in range(num_classes)]


def ref_mean(p, ctx):
    return [_normalise_row(_mean_row(p, s)) for s in range(p.shape[1])]


def ref_logit_mean(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    out = []
    for s in range(num_samples):
        z = [
            sum(math.log(max(p[k, s, c], LOG_EPS)) for k in range(num_clients)) / num_clients
            for c in range(num_classes)
        ]
        out.append(_softmax_row(z))
    return out


def ref_weighted(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    n = [float(v) for v in ctx.num_examples]
    out = []
    for s in range(num_samples):
        row = [
            sum(n[k] * p[k, s, c] for k in range(num_clients)) / sum(n) for c in range(num_classes)
        ]
        out.append(_normalise_row(row))
    return out


def ref_class_weighted(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    out = []
    for s in range(num_samples):
        row = []
        for c in range(num_classes):
            total = sum(float(ctx.class_counts[k, c]) for k in range(num_clients))
            acc = 0.0
            for k in range(num_clients):
                w = ctx.class_counts[k, c] / total if total > 0 else 1.0 / num_clients
                acc += w * p[k, s, c]
            row.append(acc)
        out.append(_normalise_row(row))
    return out


def ref_confidence(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    out = []
    for s in range(num_samples):
        w = [max(math.log(num_classes) - _entropy(p[k, s]), 0.0) for k in range(num_clients)]
        if sum(w) == 0:
            w = [1.0] * num_clients
        row = [
            sum(w[k] * p[k, s, c] for k in range(num_clients)) / sum(w) for c in range(num_classes)
        ]
        out.append(_normalise_row(row))
    return out


def ref_era(p, ctx):
    return [
        _softmax_row([v / ctx.era_temperature for v in _mean_row(p, s)]) for s in range(p.shape[1])
    ]


def ref_sharpen(p, ctx):
    beta = 1.0 / ctx.era_temperature
    return [_normalise_row([v**beta for v in _mean_row(p, s)]) for s in range(p.shape[1])]


def ref_median(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    return [
        _normalise_row(
            [
                statistics.median(float(p[k, s, c]) for k in range(num_clients))
                for c in range(num_classes)
            ]
        )
        for s in range(num_samples)
    ]


def ref_trimmed_mean(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    cut = int(ctx.trim_ratio * num_clients)
    out = []
    for s in range(num_samples):
        row = []
        for c in range(num_classes):
            kept = sorted(float(p[k, s, c]) for k in range(num_clients))[cut : num_clients - cut]
            row.append(sum(kept) / len(kept))
        out.append(_normalise_row(row))
    return out


def ref_filtered_mean(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    centre = ref_median_unnormalised(p)
    dist = []
    for k in range(num_clients):
        per_sample = [
            0.5 * sum(abs(float(p[k, s, c]) - centre[s][c]) for c in range(num_classes))
            for s in range(num_samples)
        ]
        dist.append(sum(per_sample) / num_samples)
    mid = statistics.median(dist)
    mad = statistics.median(abs(d - mid) for d in dist)
    cut = mid + ctx.outlier_threshold * max(1.4826 * mad, 1e-6)
    kept = [k for k in range(num_clients) if dist[k] <= cut]
    return [
        _normalise_row(
            [sum(float(p[k, s, c]) for k in kept) / len(kept) for c in range(num_classes)]
        )
        for s in range(num_samples)
    ]


def ref_median_unnormalised(p):
    num_clients, num_samples, num_classes = p.shape
    return [
        [
            statistics.median(float(p[k, s, c]) for k in range(num_clients))
            for c in range(num_classes)
        ]
        for s in range(num_samples)
    ]


def _support_ref(p, ctx, hard: bool):
    num_clients, num_samples, num_classes = p.shape
    out = []
    for s in range(num_samples):
        w = [float(ctx.support[k][s]) for k in range(num_clients)]
        if hard:
            w = [1.0 if v >= 0.5 else 0.0 for v in w]
        if sum(w) == 0:
            w = [1.0] * num_clients  # nobody supports the row: the plain mean
        row = [
            sum(w[k] * p[k, s, c] for k in range(num_clients)) / sum(w) for c in range(num_classes)
        ]
        out.append(_normalise_row(row))
    return out


def ref_selective(p, ctx):
    return _support_ref(p, ctx, hard=True)


def ref_certainty(p, ctx):
    return _support_ref(p, ctx, hard=False)


def ref_selective_era(p, ctx):
    return [
        _softmax_row([v / ctx.era_temperature for v in row])
        for row in _support_ref(p, ctx, hard=True)
    ]


def ref_selective_class(p, ctx):
    num_clients, num_samples, num_classes = p.shape
    out = []
    for s in range(num_samples):
        supporters = [k for k in range(num_clients) if ctx.support[k, s] >= 0.5]
        if not supporters:
            mean = [sum(p[k, s, c] for k in range(num_clients)) for c in range(num_classes)]
            out.append(_normalise_row(mean))
            continue
        row = []
        for c in range(num_classes):
            total = sum(float(ctx.class_counts[k, c]) for k in range(num_clients))
            share = [
                ctx.class_counts[k, c] / total if total > 0 else 1.0 / num_clients
                for k in range(num_clients)
            ]
            row.append(sum(share[k] * p[k, s, c] for k in supporters))
        out.append(_normalise_row(row))
    return out


REFERENCES = {
    "mean": ref_mean,
    "logit_mean": ref_logit_mean,
    "weighted": ref_weighted,
    "class_weighted": ref_class_weighted,
    "confidence": ref_confidence,
    "era": ref_era,
    "sharpen": ref_sharpen,
    "median": ref_median,
    "trimmed_mean": ref_trimmed_mean,
    "filtered_mean": ref_filtered_mean,
    "selective": ref_selective,
    "certainty": ref_certainty,
    "selective_era": ref_selective_era,
    "selective_class": ref_selective_class,
}
ALL_RULES = available_rules()
STREAMABLE = sorted(STREAMABLE_RULES)


# ----------------------------------------------------------------------------- fixtures
def random_case(seed: int, clients: int = 5, samples: int = 7, classes: int = 4, alpha=0.5):
    """Dirichlet client predictions plus random, partly zero, label counts."""
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, alpha), size=(clients, samples)).astype(np.float32)
    counts = rng.integers(0, 50, size=(clients, classes))
    counts[:, 0] = 0  # a class nobody holds exercises the uniform fallback of class_weighted
    support = rng.uniform(size=(clients, samples))
    support[:, 0] = 0.0  # a row nobody supports exercises the mean fallback of selective
    ctx = AggregationContext(
        num_examples=counts.sum(axis=1) + 1,
        class_counts=counts,
        era_temperature=ERA_T,
        trim_ratio=TRIM,
        support=support,
    )
    return probs, ctx


def permuted(ctx: AggregationContext, perm: np.ndarray) -> AggregationContext:
    return AggregationContext(
        num_examples=ctx.num_examples[perm],
        class_counts=ctx.class_counts[perm],
        era_temperature=ctx.era_temperature,
        trim_ratio=ctx.trim_ratio,
        support=None if ctx.support is None else ctx.support[perm],
    )


def entropy_rows(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.maximum(p, 1e-30))).sum(axis=-1)


def assert_distributions(out: np.ndarray, shape: tuple[int, int]) -> None:
    assert out.shape == shape
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out))
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- registry
def test_every_rule_has_a_reference():
    assert set(REFERENCES) == set(ALL_RULES) == set(AGGREGATION_RULES)
    assert set(STREAMABLE_RULES) == set(ALL_RULES) - {"median", "trimmed_mean", "filtered_mean"}


def test_unknown_rule_names_the_options():
    probs, ctx = random_case(0)
    with pytest.raises(ValueError, match=r"nope.*mean"):
        aggregate("nope", probs, ctx)


# ----------------------------------------------------------------------------- references
@pytest.mark.parametrize("name", ALL_RULES)
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_loop_reference(name, seed):
    probs, ctx = random_case(seed)
    expected = np.array(REFERENCES[name](probs.astype(np.float64), ctx))
    np.testing.assert_allclose(aggregate(name, probs, ctx), expected, atol=2e-6)


@pytest.mark.parametrize("name", ALL_RULES)
def test_matches_reference_on_even_client_count(name):
    # Even K exercises the median's averaging of the two middle values.
    probs, ctx = random_case(7, clients=4)
    expected = np.array(REFERENCES[name](probs.astype(np.float64), ctx))
    np.testing.assert_allclose(aggregate(name, probs, ctx), expected, atol=2e-6)


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", ALL_RULES)
@pytest.mark.parametrize("seed", range(4))
def test_rows_are_distributions_and_client_order_is_irrelevant(name, seed):
    rng = np.random.default_rng(100 + seed)
    clients, samples, classes = rng.integers(2, 8), rng.integers(1, 30), rng.integers(2, 12)
    probs, ctx = random_case(seed, clients, samples, classes, alpha=rng.choice([0.1, 1.0]))
    out = aggregate(name, probs, ctx)
    assert_distributions(out, (samples, classes))
    perm = rng.permutation(clients)
    np.testing.assert_allclose(aggregate(name, probs[perm], permuted(ctx, perm)), out, atol=1e-6)


@pytest.mark.parametrize("name", sorted(set(ALL_RULES) - {"era", "sharpen", "selective_era"}))
def test_single_client_gets_its_own_distribution_back(name):
    probs, ctx = random_case(3, clients=1, samples=20, classes=6)
    np.testing.assert_allclose(aggregate(name, probs, ctx), probs[0], atol=1e-6)


@pytest.mark.parametrize("name", ALL_RULES)
def test_identical_clients_give_a_fixed_point_for_non_sharpening_rules(name):
    probs, _ = random_case(4, clients=1, samples=10, classes=5)
    stacked = np.repeat(probs, 6, axis=0)
    ctx6 = AggregationContext.uniform(6, 5, era_temperature=ERA_T)
    out = aggregate(name, stacked, ctx6)
    if name in ("era", "sharpen", "selective_era"):
        assert not np.allclose(out, probs[0], atol=1e-3)  # they reshape the mean on purpose
    else:
        np.testing.assert_allclose(out, probs[0], atol=1e-6)


@pytest.mark.parametrize("name", ALL_RULES)
def test_zeros_and_one_hots_stay_finite(name):
    probs = np.zeros((3, 4, 5), dtype=np.float32)
    probs[0, :, 0] = 1.0  # client 0: one-hot on class 0
    probs[1, :, 1] = 1.0  # client 1: one-hot on class 1
    probs[2, :, 2:4] = 0.5  # client 2: two classes
    ctx = AggregationContext(np.array([0, 0, 0]), np.zeros((3, 5)), era_temperature=0.05)
    assert_distributions(aggregate(name, probs, ctx), (4, 5))


def test_all_zero_medians_fall_back_to_uniform():
    probs = np.zeros((3, 2, 3), dtype=np.float32)
    for k in range(3):
        probs[k, :, k] = 1.0  # three disagreeing one-hot clients: every coordinate median is 0
    out = aggregate("median", probs, AggregationContext.uniform(3, 3))
    np.testing.assert_allclose(out, 1.0 / 3, atol=1e-7)


def test_confidence_with_all_uniform_clients_is_uniform():
    probs = np.full((4, 3, 5), 0.2, dtype=np.float32)
    np.testing.assert_allclose(
        aggregate("confidence", probs, AggregationContext.uniform(4, 5)), 0.2, atol=1e-6
    )


def test_confidence_ignores_a_maximally_unsure_client():
    probs, _ = random_case(5, clients=2, samples=10, classes=4)
    probs[1] = 0.25  # uniform client: zero certainty, so zero weight
    out = aggregate("confidence", probs, AggregationContext.uniform(2, 4))
    np.testing.assert_allclose(out, probs[0], atol=1e-6)


# ----------------------------------------------------------------------------- weighting
def test_weighted_equals_mean_for_equal_counts():
    probs, ctx = random_case(6, clients=6, samples=15, classes=7)
    equal = AggregationContext(np.full(6, 123), ctx.class_counts)
    np.testing.assert_allclose(
        aggregate("weighted", probs, equal), aggregate("mean", probs, equal), atol=1e-7
    )


def test_weighted_follows_the_big_client():
    probs, _ = random_case(8, clients=2, samples=50, classes=5)
    ctx = AggregationContext(np.array([1, 999]), np.ones((2, 5)))
    out = aggregate("weighted", probs, ctx)
    assert np.abs(out - probs[1]).max() < 5e-3 < np.abs(out - probs[0]).max()


def test_class_weighted_takes_each_class_from_its_expert():
    # Client k holds only class k, so column k of the teacher is client k's column, renormalised.
    probs, _ = random_case(9, clients=3, samples=25, classes=3)
    ctx = AggregationContext(np.full(3, 100), np.diag([10, 20, 30]))
    expert_columns = np.stack([probs[c, :, c] for c in range(3)], axis=1)
    expected = expert_columns / expert_columns.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(aggregate("class_weighted", probs, ctx), expected, atol=1e-6)


def test_class_weighted_beats_mean_under_label_skew():
    # One expert saw class 0; three clients never did and call every class-0 sample class 1.
    probs = np.empty((4, 30, 2), dtype=np.float32)
    rng = np.random.default_rng(10)
    probs[0, :, 0] = rng.uniform(0.85, 0.95, size=30)
    probs[1:, :, 0] = rng.uniform(0.2, 0.3, size=(3, 30))
    probs[..., 1] = 1.0 - probs[..., 0]
    ctx = AggregationContext(np.full(4, 100), np.array([[100, 0], [0, 100], [0, 100], [0, 100]]))
    assert np.all(aggregate("class_weighted", probs, ctx).argmax(axis=1) == 0)
    assert np.all(aggregate("mean", probs, ctx).argmax(axis=1) == 1)


# ----------------------------------------------------------------------------- sharpening
def test_era_sharpens_only_when_temperature_is_small_for_the_class_count():
    probs, _ = random_case(11, clients=8, samples=200, classes=10, alpha=1.0)
    mean = aggregate("mean", probs, AggregationContext.uniform(8, 10))

    def era(t):
        return aggregate("era", probs, AggregationContext.uniform(8, 10, era_temperature=t))

    assert np.all(entropy_rows(era(0.01)) < entropy_rows(mean))
    # Documented pitfall: at T = 0.5 (> 1/C) softmax(mean / T) flattens every row.
    assert np.all(entropy_rows(era(0.5)) > entropy_rows(mean))


@pytest.mark.parametrize("temperature", [0.9, 0.5, 0.1])
@pytest.mark.parametrize("classes", [2, 10, 100])
def test_sharpen_lowers_entropy_for_any_temperature_below_one(temperature, classes):
    probs, _ = random_case(12, clients=6, samples=100, classes=classes, alpha=1.0)
    ctx = AggregationContext.uniform(6, classes, era_temperature=temperature)
    sharp, mean = aggregate("sharpen", probs, ctx), aggregate("mean", probs, ctx)
    assert np.all(entropy_rows(sharp) < entropy_rows(mean))
    np.testing.assert_array_equal(sharp.argmax(axis=1), mean.argmax(axis=1))


def test_sharpen_at_temperature_one_is_the_mean():
    probs, _ = random_case(13)
    ctx = AggregationContext.uniform(5, 4, era_temperature=1.0)
    np.testing.assert_allclose(
        aggregate("sharpen", probs, ctx), aggregate("mean", probs, ctx), atol=1e-6
    )


# ----------------------------------------------------------------------------- robustness
def _tv(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 0.5 * np.abs(a - b).sum(axis=-1)


@pytest.mark.parametrize(
    ("honest", "attackers", "rule", "trim_ratio"),
    [
        (3, 1, "median", 0.0),
        (3, 2, "median", 0.0),
        (3, 1, "trimmed_mean", 0.25),
        (3, 2, "trimmed_mean", 0.4),
        (7, 2, "trimmed_mean", 0.25),
        (3, 1, "filtered_mean", 0.0),
        (7, 3, "filtered_mean", 0.0),
    ],
)
@pytest.mark.parametrize("seed", range(3))
def test_robust_rules_resist_a_minority_of_extreme_clients(
    honest, attackers, rule, trim_ratio, seed
):
    rng = np.random.default_rng(seed)
    classes, samples = 6, 40
    q = rng.dirichlet(np.full(classes, 2.0), size=samples)  # (samples, classes) honest truth
    good = np.stack(
        [rng.dirichlet(200 * q[s] + 1e-3) for s in range(samples) for _ in range(honest)]
    )
    good = good.reshape(samples, honest, classes).transpose(1, 0, 2)  # (honest, samples, classes)
    wrong = (q.argmax(axis=1) + 1) % classes  # attackers: all mass on a class q does not favour
    bad = np.zeros((attackers, samples, classes))
    bad[:, np.arange(samples), wrong] = 1.0
    probs = np.concatenate([good, bad]).astype(np.float32)
    ctx = AggregationContext.uniform(honest + attackers, classes, trim_ratio=trim_ratio)
    robust_err = _tv(aggregate(rule, probs, ctx), q)
    mean_err = _tv(aggregate("mean", probs, ctx), q)
    assert robust_err.mean() < 0.1
    assert mean_err.mean() > 0.15
    assert robust_err.mean() < 0.5 * mean_err.mean()


# ----------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("name", STREAMABLE)
@pytest.mark.parametrize("seed", range(3))
def test_streaming_equals_batch(name, seed):
    probs, ctx = random_case(seed, clients=6, samples=20, classes=5)
    probs[1, 0] = 0.2  # a uniform row: zero confidence weight for that client on sample 0
    streaming = StreamingAggregator(name, 20, 5, era_temperature=ctx.era_temperature)
    for k in range(6):
        streaming.add(
            probs[k],
            num_examples=ctx.num_examples[k],
            class_counts=ctx.class_counts[k],
            support=ctx.support[k],
        )
    assert streaming.num_clients == 6
    np.testing.assert_allclose(streaming.result(), aggregate(name, probs, ctx), atol=1e-6)
    np.testing.assert_allclose(streaming.evidence(), evidence(name, probs, ctx), atol=1e-6)
    expected_rows = supported_rows(ctx.support, 20) if name in SUPPORT_RULES else np.ones(20)
    np.testing.assert_array_equal(streaming.covered(), expected_rows.astype(bool))


def test_evidence_is_the_teacher_before_sharpening():
    probs, ctx = random_case(8, clients=5, samples=9, classes=4)
    np.testing.assert_allclose(evidence("era", probs, ctx), aggregate("mean", probs, ctx))
    np.testing.assert_allclose(
        evidence("selective_era", probs, ctx), aggregate("selective", probs, ctx)
    )
    np.testing.assert_allclose(  # reweighting by class share silences dissent: not evidence
        evidence("selective_class", probs, ctx), aggregate("selective", probs, ctx)
    )
    np.testing.assert_allclose(evidence("median", probs, ctx), aggregate("median", probs, ctx))


def test_selective_keeps_only_supporting_clients_and_flags_unsupported_rows():
    probs = np.zeros((3, 3, 3), dtype=np.float32)
    for k in range(3):
        probs[k, :, k] = 1.0  # client k always answers class k
    support = np.array([[1.0, 0.0, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.2]])
    ctx = AggregationContext(np.ones(3), np.ones((3, 3)), support=support)
    out = aggregate("selective", probs, ctx)
    np.testing.assert_allclose(out[0], [0.5, 0.5, 0.0], atol=1e-6)  # clients 0 and 1 support it
    np.testing.assert_allclose(out[1], [0.0, 1.0, 0.0], atol=1e-6)  # only client 1
    np.testing.assert_allclose(out[2], [1 / 3] * 3, atol=1e-6)  # nobody: the plain mean
    np.testing.assert_array_equal(supported_rows(support, 3), [True, True, False])
    soft = aggregate("certainty", probs, ctx)  # weights 1, 0.9 on row 0
    np.testing.assert_allclose(soft[0], [1 / 1.9, 0.9 / 1.9, 0.0], atol=1e-6)


def test_selective_class_lets_the_class_owner_outvote_a_nearby_non_owner():
    """The mechanism behind the rule: clients 0 and 1 support a sample of class 0; client 1
    holds no class-0 examples (a quarter of class 1's) and answers class 1 with more confidence
    than the class-0 owner answers class 0. Client 2 holds most of class 1 and does not support
    the sample."""
    probs = np.array([[[0.6, 0.4]], [[0.05, 0.95]], [[0.1, 0.9]]], dtype=np.float32)
    counts = np.array([[50, 0], [0, 20], [0, 60]])
    support = np.array([[1.0], [1.0], [0.0]])
    ctx = AggregationContext(counts.sum(axis=1), counts, support=support)
    assert aggregate("selective", probs, ctx)[0].argmax() == 1  # the plain support mean: wrong
    assert aggregate("selective_class", probs, ctx)[0].argmax() == 0


@pytest.mark.parametrize("name", STREAMABLE)
def test_streaming_zero_weights_fall_back_like_batch(name):
    probs = np.full((3, 2, 4), 0.25, dtype=np.float32)  # all uniform: zero confidence everywhere
    probs[0, 1] = [0.7, 0.1, 0.1, 0.1]
    ctx = AggregationContext(np.zeros(3), np.zeros((3, 4)))
    streaming = StreamingAggregator(name, 2, 4, era_temperature=ctx.era_temperature)
    for k in range(3):
        streaming.add(probs[k], num_examples=0, class_counts=np.zeros(4))
    np.testing.assert_allclose(streaming.result(), aggregate(name, probs, ctx), atol=1e-6)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "nope"])
def test_streaming_rejects_rules_that_need_every_reply(name):
    with pytest.raises(ValueError, match="mean"):
        StreamingAggregator(name, 3, 3)


def test_streaming_validates_replies():
    streaming = StreamingAggregator("mean", 3, 4)
    with pytest.raises(ValueError, match="no replies"):
        streaming.result()
    with pytest.raises(ValueError, match="shape"):
        streaming.add(np.full((3, 5), 0.2), num_examples=1, class_counts=np.ones(4))
    with pytest.raises(ValueError, match="class_counts"):
        streaming.add(np.full((3, 4), 0.25), num_examples=1, class_counts=np.ones(5))
    with pytest.raises(ValueError, match="non-negative"):
        streaming.add(np.full((3, 4), -0.25), num_examples=1, class_counts=np.ones(4))


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda p, c: (p[0], c), "3-D"),
        (lambda p, c: (p[:, :, :0], c), "3-D"),
        (lambda p, c: (-p, c), "non-negative"),
        (lambda p, c: (np.where(p > 0.5, np.nan, p), c), "finite"),
        (lambda p, c: (p[:3], c), "num_examples"),
        (
            lambda p, c: (p, AggregationContext(c.num_examples, c.class_counts[:, :2])),
            "class_counts",
        ),
        (lambda p, c: (p, AggregationContext(-c.num_examples, c.class_counts)), "num_examples"),
        (
            lambda p, c: (p, AggregationContext(c.num_examples, c.class_counts, era_temperature=0)),
            "era_temperature",
        ),
        (
            lambda p, c: (p, AggregationContext(c.num_examples, c.class_counts, trim_ratio=0.5)),
            "trim_ratio",
        ),
    ],
)
def test_bad_inputs_raise(mutate, match):
    probs, ctx = random_case(0)
    bad_probs, bad_ctx = mutate(probs, ctx)
    with pytest.raises(ValueError, match=match):
        aggregate("mean", bad_probs, bad_ctx)


@pytest.mark.parametrize("seed", range(3))
def test_filtered_mean_drops_exactly_the_attackers_and_then_equals_the_honest_mean(seed):
    rng = np.random.default_rng(seed)
    classes, samples, honest = 10, 50, 7
    q = rng.dirichlet(np.full(classes, 1.0), size=samples)
    good = np.stack([np.stack([rng.dirichlet(100 * row + 1e-3) for row in q]) for _ in range(7)])
    flipped = good[:3, :, ::-1]  # label-flipping attackers, as fedkd.faults simulates them
    probs = np.concatenate([good, flipped]).astype(np.float32)
    keep = outlier_mask(probs, threshold=3.0)
    assert keep.tolist() == [True] * honest + [False] * 3
    everyone, honest_only = (AggregationContext.uniform(n, classes) for n in (10, honest))
    np.testing.assert_allclose(
        aggregate("filtered_mean", probs, everyone),
        aggregate("mean", probs[:honest], honest_only),
        atol=1e-6,
    )


def test_filtered_mean_keeps_at_least_half_of_very_diverse_clients():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(4, 0.1), size=(9, 30)).astype(np.float32)
    for threshold in (1e-3, 0.5, 3.0):
        assert outlier_mask(probs, threshold).sum() >= 5
