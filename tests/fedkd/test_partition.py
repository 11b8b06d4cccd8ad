"""Tests for client partitioning (flwr_datasets partitioners) and label histograms."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.data import label_histogram, partition_indices, plot_label_histogram

NUM_CLASSES = 10


def _labels(n: int = 1000, seed: int = 0) -> np.ndarray:
    """Balanced labels in random order (like a real train pool)."""
    return np.random.default_rng(seed).permutation(np.arange(n) % NUM_CLASSES)


def _assert_disjoint(parts: list[np.ndarray]) -> None:
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)


def _assert_exact_cover(parts: list[np.ndarray], n: int) -> None:
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def _mean_client_entropy(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    hist = label_histogram(labels, parts, NUM_CLASSES).astype(float)
    hist = hist[hist.sum(1) > 0]
    p = hist / hist.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    return float(ent.mean())


@pytest.mark.parametrize("num_partitions", [1, 7, 10])
@pytest.mark.parametrize("scheme", ["iid", "dirichlet"])
def test_every_index_exactly_once(scheme: str, num_partitions: int) -> None:
    labels = _labels(997)
    parts = partition_indices(labels, num_partitions, scheme, seed=3)  # type: ignore[arg-type]
    assert len(parts) == num_partitions
    assert all(p.dtype == np.int64 for p in parts)
    _assert_exact_cover(parts, len(labels))


def test_iid_is_balanced_in_size_and_labels() -> None:
    labels = _labels(2000)
    parts = partition_indices(labels, 10, "iid", seed=0)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    hist = label_histogram(labels, parts, NUM_CLASSES)
    # Each client should hold all classes in roughly equal measure (20 expected per cell).
    assert (hist > 0).all()
    assert hist.max() < 45


def test_partitions_are_deterministic_per_seed() -> None:
    labels = _labels()
    for scheme in ["iid", "dirichlet", "pathological", "shard"]:
        a = partition_indices(labels, 5, scheme, seed=11)  # type: ignore[arg-type]
        b = partition_indices(labels, 5, scheme, seed=11)  # type: ignore[arg-type]
        c = partition_indices(labels, 5, scheme, seed=12)  # type: ignore[arg-type]
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True)), scheme


def test_dirichlet_small_alpha_is_more_skewed() -> None:
    labels = _labels(2000)
    seeds = range(5)
    skewed = [
        _mean_client_entropy(labels, partition_indices(labels, 10, "dirichlet", alpha=0.1, seed=s))
        for s in seeds
    ]
    near_iid = [
        _mean_client_entropy(labels, partition_indices(labels, 10, "dirichlet", alpha=100, seed=s))
        for s in seeds
    ]
    # log(10) = 2.30 is the IID maximum; alpha=100 sits close to it, alpha=0.1 far below.
    assert np.mean(near_iid) > 2.1
    assert np.mean(skewed) + 0.8 < np.mean(near_iid)
    assert max(skewed) < min(near_iid)


def test_dirichlet_min_partition_size_is_respected() -> None:
    labels = _labels(1000)
    parts = partition_indices(labels, 10, "dirichlet", alpha=0.5, seed=0, min_partition_size=30)
    assert min(len(p) for p in parts) >= 30
    _assert_exact_cover(parts, len(labels))


def test_dirichlet_unsatisfiable_min_size_fails_clearly() -> None:
    labels = _labels(30)
    with pytest.raises(ValueError, match="dirichlet"):
        partition_indices(labels, 10, "dirichlet", alpha=0.01, seed=0, min_partition_size=3)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_pathological_limits_classes_per_client(k: int) -> None:
    labels = _labels(1000)
    parts = partition_indices(labels, 10, "pathological", classes_per_partition=k, seed=0)
    _assert_disjoint(parts)
    for p in parts:
        assert len(p) > 0
        assert len(np.unique(labels[p])) <= k
    # "first-deterministic": client i always holds class i % 10, so no class is dropped here.
    _assert_exact_cover(parts, len(labels))


def test_shard_sizes_and_label_locality() -> None:
    labels = _labels(1003)
    parts = partition_indices(labels, 10, "shard", shards_per_partition=2, seed=0)
    shard_size = 1003 // (10 * 2)
    assert [len(p) for p in parts] == [2 * shard_size] * 10
    _assert_disjoint(parts)
    # Shards are cut from the label-sorted pool and smaller than a class (100), so one
    # shard spans at most two labels and a client with 2 shards at most four.
    assert all(len(np.unique(labels[p])) <= 4 for p in parts)
    mean_classes = np.mean([len(np.unique(labels[p])) for p in parts])
    iid_classes = np.mean(
        [len(np.unique(labels[p])) for p in partition_indices(labels, 10, "iid", seed=0)]
    )
    assert mean_classes < iid_classes


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scheme": "zipf"}, "zipf"),
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 101}, "num_partitions"),
        ({"alpha": 0.0}, "alpha"),
        ({"scheme": "pathological", "classes_per_partition": 11}, "classes_per_partition"),
        ({"scheme": "shard", "shards_per_partition": 0}, "shards_per_partition"),
        ({"min_partition_size": 11}, "min_partition_size"),
        ({"min_partition_size": -1}, "min_partition_size"),
    ],
)
def test_invalid_arguments(kwargs: dict, match: str) -> None:
    args = {"labels": _labels(100), "num_partitions": 10, "scheme": "dirichlet", **kwargs}
    with pytest.raises(ValueError, match=match):
        partition_indices(**args)


@pytest.mark.parametrize("labels", [np.zeros((4, 2), int), np.array([]), np.array([0.5, 1.0])])
def test_invalid_labels(labels: np.ndarray) -> None:
    with pytest.raises(ValueError, match="labels"):
        partition_indices(labels, 1, "iid")


def test_label_histogram_counts() -> None:
    labels = _labels(500)
    parts = partition_indices(labels, 6, "dirichlet", alpha=0.3, seed=1)
    hist = label_histogram(labels, parts, NUM_CLASSES)
    assert hist.shape == (6, NUM_CLASSES)
    assert hist.sum() == 500
    assert np.array_equal(hist.sum(1), [len(p) for p in parts])
    assert np.array_equal(hist.sum(0), np.bincount(labels, minlength=NUM_CLASSES))
    small = label_histogram(np.array([0, 1, 1, 2]), [np.array([0, 1]), np.array([2, 3])], 4)
    assert small.tolist() == [[1, 1, 0, 0], [0, 1, 1, 0]]
    with pytest.raises(ValueError):
        label_histogram(np.array([0, 5]), [np.array([0, 1])], 3)


def test_plot_label_histogram_writes_png(tmp_path) -> None:
    labels = _labels(300)
    hist = label_histogram(labels, partition_indices(labels, 5, "pathological", seed=0), 10)
    out = plot_label_histogram(hist, tmp_path / "plots" / "hist.png", title="test")
    assert out.exists() and out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError):
        plot_label_histogram(hist[0], tmp_path / "bad.png")


def test_iid_partition_of_one_client_equals_flower_datasets_cut() -> None:
    # fedkd.client cuts IID partitions directly (one client per worker, no Arrow); the cut
    # must be the IidPartitioner's, including the uneven first shards (103 = 7 x 14 + 5).
    from fedkd.client import _iid_order, iid_partition

    labels = np.arange(103) % 10
    reference = partition_indices(labels, 7, "iid", seed=3)
    order = _iid_order(("synthetic", 3), labels.size)  # the cache key's second field is the seed
    for i in range(7):
        assert np.array_equal(iid_partition(order, 7, i), reference[i])
