"""Tests for DataSplits loaders: digits, synthetic, hub conversion and dispatch."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedkd.data import (
    HUB_DATASETS,
    DatasetUnavailableError,
    DataSplits,
    HubSpec,
    available_datasets,
    hub_to_splits,
    load_digits_splits,
    load_hub_splits,
    load_splits,
    make_synthetic_splits,
)


def _row_hashes(x: torch.Tensor) -> set[str]:
    rows = x.reshape(len(x), -1).numpy()
    return {hashlib.sha1(r.tobytes()).hexdigest() for r in rows}


def _assert_disjoint(s: DataSplits) -> None:
    train, public, test = _row_hashes(s.train_x), _row_hashes(s.public_x), _row_hashes(s.test_x)
    assert not train & public
    assert not train & test
    assert not public & test


# ----------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_digits_splits(seed=0)


def test_digits_shapes_and_ranges(digits: DataSplits) -> None:
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    for x in (digits.train_x, digits.public_x, digits.test_x):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 8, 8)
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert digits.train_y.dtype == torch.int64
    assert set(digits.train_y.tolist()) == set(range(10))


def test_digits_splits_are_disjoint_and_sized_by_fraction(digits: DataSplits) -> None:
    n = 1797  # sklearn's digits: 1,797 distinct 8x8 images
    all_x = torch.cat([digits.train_x, digits.public_x, digits.test_x])
    assert len(all_x) == n
    assert len(_row_hashes(all_x)) == n  # nothing lost, nothing duplicated
    _assert_disjoint(digits)
    assert abs(len(digits.public_x) - 0.3 * n) <= 1
    assert abs(len(digits.test_x) - 0.2 * n) <= 1


def test_digits_split_indices_are_disjoint() -> None:
    from fedkd.data.splits import split_three_ways

    labels = np.arange(1000) % 10
    train, public, test = split_three_ways(labels, public_fraction=0.25, test_fraction=0.15, seed=3)
    assert len(np.intersect1d(train, public)) == len(np.intersect1d(train, test)) == 0
    assert len(np.intersect1d(public, test)) == 0
    assert sorted(np.concatenate([train, public, test]).tolist()) == list(range(1000))
    assert (len(public), len(test)) == (250, 150)
    # Stratified: every class keeps its 10 % share of the public pool.
    assert np.all(np.bincount(labels[public], minlength=10) == 25)


def test_digits_deterministic_per_seed(digits: DataSplits) -> None:
    again = load_digits_splits(seed=0)
    other = load_digits_splits(seed=1)
    assert torch.equal(again.train_x, digits.train_x)
    assert torch.equal(again.public_x, digits.public_x)
    assert torch.equal(again.test_y, digits.test_y)
    assert not torch.equal(other.train_x, digits.train_x)


def test_digits_custom_fractions() -> None:
    s = load_digits_splits(public_fraction=0.1, test_fraction=0.5)
    n = len(s.train_x) + len(s.public_x) + len(s.test_x)
    assert abs(len(s.public_x) - 0.1 * n) <= 1 and abs(len(s.test_x) - 0.5 * n) <= 1
    with pytest.raises(ValueError, match="train pool"):
        load_digits_splits(public_fraction=0.6, test_fraction=0.4)


def test_public_split_exposes_no_labels(digits: DataSplits) -> None:
    public_fields = [f.name for f in dataclasses.fields(DataSplits) if "public" in f.name]
    assert public_fields == ["public_x", "_public_y_oracle"]
    assert not hasattr(digits, "public_y")
    assert "public_y" not in repr(digits) and "oracle" not in repr(digits)
    oracle = digits.oracle_public_labels()
    assert oracle.shape == (len(digits.public_x),) and oracle.dtype == torch.int64


def test_datasplits_validates_shapes(digits: DataSplits) -> None:
    with pytest.raises(ValueError, match="train"):
        dataclasses.replace(digits, train_y=digits.train_y[:-1])
    with pytest.raises(TypeError):
        dataclasses.replace(digits, test_x=digits.test_x.double())
    with pytest.raises(ValueError, match="labels outside"):
        dataclasses.replace(digits, num_classes=5)


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_sizes_and_shapes() -> None:
    s = make_synthetic_splits(num_samples=1000, num_classes=4, dim=6, seed=2)
    assert s.input_shape == (6,)
    assert (len(s.train_x), len(s.public_x), len(s.test_x)) == (500, 300, 200)
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert set(s.train_y.tolist()) == {0, 1, 2, 3}
    _assert_disjoint(s)
    assert torch.equal(
        make_synthetic_splits(num_samples=1000, num_classes=4, dim=6, seed=2).train_x, s.train_x
    )


def test_synthetic_is_learnable() -> None:
    s = make_synthetic_splits(num_samples=3000, num_classes=5, dim=16, seed=0)
    means = torch.stack([s.train_x[s.train_y == c].mean(0) for c in range(5)])  # (C, D)
    gaps = torch.cdist(means, means)[~torch.eye(5, dtype=torch.bool)]
    assert gaps.min() > 1.0  # well apart relative to unit noise
    # Nearest-class-mean on the test set beats chance (0.2) by a wide margin.
    pred = torch.cdist(s.test_x, means).argmin(1)
    assert (pred == s.test_y).float().mean() > 0.6


def test_synthetic_class_sep_controls_difficulty() -> None:
    def ncm_accuracy(sep: float) -> float:
        s = make_synthetic_splits(num_samples=3000, num_classes=10, dim=32, class_sep=sep)
        means = torch.stack([s.train_x[s.train_y == c].mean(0) for c in range(10)])
        return (torch.cdist(s.test_x, means).argmin(1) == s.test_y).float().mean().item()

    assert ncm_accuracy(0.5) + 0.2 < ncm_accuracy(3.0)


# ----------------------------------------------------------------------------- hub


def _tiny_dataset_dict(mode: str, size: int, column: str, label: str, n_train: int, n_test: int):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    shape = (size, size) if mode == "L" else (size, size, 3)

    def split(n: int, pin: bool):
        pixels = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        if pin:  # one all-white and one all-black image, so the [0, 1] check is exact
            pixels[0], pixels[1] = 255, 0
        images = [Image.fromarray(p, mode=mode) for p in pixels]
        features = datasets.Features(
            {column: datasets.Image(), label: datasets.ClassLabel(num_classes=3)}
        )
        return datasets.Dataset.from_dict(
            {column: images, label: (np.arange(n) % 3).tolist()}, features=features
        ), pixels

    (train, train_px), (test, _) = split(n_train, True), split(n_test, False)
    return datasets.DatasetDict({"train": train, "test": test}), train_px


@pytest.mark.parametrize(
    ("mode", "size", "column", "label"),
    [("L", 28, "image", "label"), ("RGB", 32, "img", "fine_label")],
)
def test_hub_to_splits_converts_pil_images(mode: str, size: int, column: str, label: str) -> None:
    dd, train_px = _tiny_dataset_dict(mode, size, column, label, n_train=30, n_test=9)
    spec = HubSpec("tiny", "someone/tiny", column, label, 3, mode)  # type: ignore[arg-type]
    s = hub_to_splits(dd, spec, seed=0, public_fraction=0.2, max_train=None)
    channels = 1 if mode == "L" else 3
    assert s.input_shape == (channels, size, size)
    assert (len(s.train_x), len(s.public_x), len(s.test_x)) == (24, 6, 9)
    for x in (s.train_x, s.public_x, s.test_x):
        assert x.dtype == torch.float32 and x.shape[1:] == (channels, size, size)
        assert x.min() >= 0.0 and x.max() <= 1.0
    assert s.train_x.max() == 1.0 or s.public_x.max() == 1.0
    assert s.test_y.dtype == torch.int64 and s.test_y.tolist() == [0, 1, 2] * 3
    _assert_disjoint(s)
    # Pixel layout survives: every converted train/public image is a source image / 255.
    source = train_px.reshape(30, size, size, channels).transpose(0, 3, 1, 2) / 255.0
    source_rows = _row_hashes(torch.from_numpy(source.astype(np.float32)))
    assert _row_hashes(torch.cat([s.train_x, s.public_x])) == source_rows


def test_hub_to_splits_max_train_and_determinism() -> None:
    dd, _ = _tiny_dataset_dict("L", 28, "image", "label", n_train=40, n_test=6)
    spec = HubSpec("tiny", "someone/tiny", "image", "label", 3, "L")
    a = hub_to_splits(dd, spec, seed=1, public_fraction=0.25, max_train=20)
    b = hub_to_splits(dd, spec, seed=1, public_fraction=0.25, max_train=20)
    assert (len(a.train_x), len(a.public_x)) == (15, 5)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.public_x, b.public_x)


def test_load_hub_splits_uses_loader_with_hub_id() -> None:
    dd, _ = _tiny_dataset_dict("L", 28, "image", "label", n_train=30, n_test=6)
    seen: list[str] = []

    def loader(hub_id: str):
        seen.append(hub_id)
        return dd

    s = load_hub_splits("mnist", loader=loader, public_fraction=0.1)
    assert seen == ["ylecun/mnist"]
    assert s.name == "mnist" and s.num_classes == 10 and s.input_shape == (1, 28, 28)


@pytest.mark.parametrize("error", [ConnectionError("no route"), OSError("offline")])
@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_load_hub_splits_offline_raises_helpful_error(name: str, error: Exception) -> None:
    def loader(hub_id: str):
        raise error

    with pytest.raises(DatasetUnavailableError) as info:
        load_hub_splits(name, loader=loader)
    msg = str(info.value)
    assert name in msg and HUB_DATASETS[name].hub_id in msg
    assert "digits" in msg and "network" in msg
    assert info.value.__cause__ is error


def test_load_hub_splits_does_not_mask_bugs() -> None:
    def loader(hub_id: str):
        raise KeyError("a bug, not a network problem")

    with pytest.raises(KeyError):
        load_hub_splits("mnist", loader=loader)


def test_hub_registry_entries() -> None:
    assert HUB_DATASETS["mnist"].hub_id == "ylecun/mnist"
    assert HUB_DATASETS["fashion_mnist"].hub_id == "zalando-datasets/fashion_mnist"
    assert (HUB_DATASETS["cifar10"].image_column, HUB_DATASETS["cifar10"].mode) == ("img", "RGB")
    assert HUB_DATASETS["cifar100"].label_column == "fine_label"
    assert HUB_DATASETS["cifar100"].num_classes == 100
    with pytest.raises(ValueError, match="cifar10"):
        load_hub_splits("imagenet")


# ----------------------------------------------------------------------------- dispatch


def test_available_datasets() -> None:
    assert available_datasets() == [
        "digits",
        "synthetic",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "cifar100",
    ]


def test_load_splits_dispatch() -> None:
    assert load_splits("digits", seed=0).name == "digits"
    s = load_splits("synthetic", seed=0, num_samples=100, dim=3)
    assert s.name == "synthetic" and s.input_shape == (3,)
    with pytest.raises(ValueError) as info:
        load_splits("imagenet")
    assert "imagenet" in str(info.value) and "digits" in str(info.value)


def test_import_is_light() -> None:
    code = (
        "import sys, fedkd.data, fedkd.models; "
        "heavy = [m for m in ('datasets', 'flwr_datasets', 'matplotlib', 'flwr', 'ray', "
        "'hydra', 'omegaconf') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_larger_synthetic_pool_keeps_public_test_and_first_private_rows() -> None:
    from fedkd.data import make_synthetic_splits

    base = make_synthetic_splits(num_samples=600, seed=1)
    grown = make_synthetic_splits(num_samples=600, seed=1, num_train=5000)
    assert len(grown.train_y) == 5000
    assert torch.equal(grown.public_x, base.public_x) and torch.equal(grown.test_x, base.test_x)
    assert torch.equal(grown.train_x[: len(base.train_y)], base.train_x)
    assert torch.bincount(grown.train_y).min() >= 5000 // 10 - 30  # still about balanced
