"""Task sequences: class splits (task-IL / class-IL), permuted and rotated inputs."""

from __future__ import annotations

import pytest
import torch

from fedkd.continual.tasks import (
    SequenceConfig,
    TaskSequence,
    build_sequence,
    permuted_sequence,
    rotate_images,
    rotated_sequence,
    split_sequence,
)
from fedkd.data import DataSplits, load_splits


@pytest.fixture(scope="module")
def digits() -> DataSplits:
    return load_splits("digits", seed=0, public_fraction=0.0)


def _original_labels(splits: DataSplits, classes: tuple[int, ...], test: bool = False):
    y = splits.test_y if test else splits.train_y
    return y[torch.isin(y, torch.tensor(classes))]


# --------------------------------------------------------------------------- split


def test_split_task_il_covers_every_class_once_with_local_targets(digits: DataSplits) -> None:
    seq = split_sequence(digits, num_tasks=5, scenario="task_il", seed=3)
    assert seq.num_tasks == 5 and seq.multi_head and seq.head_sizes == (2,) * 5
    all_classes = [c for task in seq.tasks for c in task.classes]
    assert sorted(all_classes) == list(range(10))
    assert sum(len(t.train_y) for t in seq.tasks) == len(digits.train_y)
    for t, task in enumerate(seq.tasks):
        assert seq.head_of(t) == t
        assert set(task.train_y.tolist()) == {0, 1} and task.units == (0, 1)
        # mapping a target back through the task's classes gives the original label
        back = torch.tensor(task.classes)[task.train_y]
        assert torch.equal(back, _original_labels(digits, task.classes))
        back_test = torch.tensor(task.classes)[task.test_y]
        assert torch.equal(back_test, _original_labels(digits, task.classes, test=True))


def test_split_class_il_uses_global_contiguous_units(digits: DataSplits) -> None:
    seq = split_sequence(digits, num_tasks=5, scenario="class_il", seed=3)
    assert not seq.multi_head and seq.head_sizes == (10,)
    order = [c for task in seq.tasks for c in task.classes]
    for t, task in enumerate(seq.tasks):
        assert seq.head_of(t) == 0
        assert task.units == (2 * t, 2 * t + 1)
        assert set(task.train_y.tolist()) == set(task.units)
        back = torch.tensor(order)[task.train_y]  # unit u is the u-th class of the order
        assert torch.equal(back, _original_labels(digits, task.classes))


def test_class_order_is_seeded_and_configurable(digits: DataSplits) -> None:
    def order(seq: TaskSequence) -> list[int]:
        return [c for task in seq.tasks for c in task.classes]

    a = split_sequence(digits, seed=1)
    assert order(a) == order(split_sequence(digits, seed=1))
    assert order(a) != order(split_sequence(digits, seed=2))
    given = [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert order(split_sequence(digits, class_order=given, seed=1)) == given
    assert split_sequence(digits, num_tasks=3, classes_per_task=3, seed=0).head_sizes == (3,) * 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_tasks": 4, "classes_per_task": 3},  # 12 > 10 classes
        {"class_order": [0, 0, 1, 2, 3, 4, 5, 6, 7, 8]},  # duplicate
        {"class_order": [0, 1, 2]},  # too short
        {"scenario": "domain_il"},
        {"num_tasks": 0},
    ],
)
def test_split_rejects_inconsistent_settings(digits: DataSplits, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        split_sequence(digits, **kwargs)


def test_max_train_per_task_caps_train_not_test(digits: DataSplits) -> None:
    seq = split_sequence(digits, max_train_per_task=20, seed=0)
    full = split_sequence(digits, seed=0)
    for small, big in zip(seq.tasks, full.tasks, strict=True):
        assert len(small.train_y) == 20
        assert len(small.test_y) == len(big.test_y)


# --------------------------------------------------------------------------- permuted


def test_permuted_tasks_share_labels_and_permute_pixels(digits: DataSplits) -> None:
    seq = permuted_sequence(digits, num_tasks=3, seed=0)
    assert seq.scenario == "domain_il" and seq.head_sizes == (10,)
    first, second, third = seq.tasks
    assert torch.equal(first.train_x, digits.train_x)  # identity first
    for task in (second, third):
        assert torch.equal(task.train_y, digits.train_y)
        assert task.train_x.shape == digits.train_x.shape
        assert not torch.equal(task.train_x, digits.train_x)
        # a permutation keeps every row's multiset of pixel values
        assert torch.equal(
            task.train_x.flatten(1).sort(dim=1).values, digits.train_x.flatten(1).sort(dim=1).values
        )
    assert not torch.equal(second.test_x, third.test_x)


def test_permuted_task_il_has_one_head_per_task(digits: DataSplits) -> None:
    seq = permuted_sequence(digits, num_tasks=3, scenario="task_il", identity_first=False)
    assert seq.head_sizes == (10, 10, 10)
    assert not torch.equal(seq.tasks[0].train_x, digits.train_x)


# --------------------------------------------------------------------------- rotated


def test_rotate_images_matches_exact_rotations() -> None:
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(rotate_images(x, 0.0), x)
    torch.testing.assert_close(rotate_images(x, 90.0), torch.rot90(x, 1, dims=(2, 3)))
    torch.testing.assert_close(rotate_images(x, 180.0), torch.rot90(x, 2, dims=(2, 3)))
    with pytest.raises(ValueError, match="image"):
        rotate_images(torch.rand(3, 64), 10.0)


def test_rotated_sequence_angles(digits: DataSplits) -> None:
    seq = rotated_sequence(digits, num_tasks=5, max_angle=180.0)
    assert seq.describe() == [f"rotation {a:g}°" for a in (0, 45, 90, 135, 180)]
    torch.testing.assert_close(seq.tasks[0].test_x, digits.test_x)
    torch.testing.assert_close(seq.tasks[4].test_x, torch.rot90(digits.test_x, 2, dims=(2, 3)))
    given = rotated_sequence(digits, angles=[30, 10], num_tasks=7)
    assert given.num_tasks == 2 and given.describe() == ["rotation 30°", "rotation 10°"]
    shuffled = rotated_sequence(digits, angles=[0, 10, 20, 30, 40, 50], shuffle=True, seed=1)
    assert sorted(shuffled.describe()) == sorted(f"rotation {a}°" for a in range(0, 60, 10))
    assert shuffled.describe() != [f"rotation {a}°" for a in range(0, 60, 10)]


def test_rotated_needs_images() -> None:
    vectors = load_splits("synthetic", num_samples=200, public_fraction=0.0)
    with pytest.raises(ValueError, match="image"):
        rotated_sequence(vectors)


# --------------------------------------------------------------------------- config


def test_build_sequence_follows_run_seed_unless_fixed() -> None:
    cfg = SequenceConfig(kind="split", scenario="class_il")
    a, b = build_sequence(cfg, seed=0), build_sequence(cfg, seed=1)
    assert a.describe() != b.describe()
    fixed = SequenceConfig(kind="split", scenario="class_il", seed=7)
    assert build_sequence(fixed, seed=0).describe() == build_sequence(fixed, seed=1).describe()


@pytest.mark.parametrize("kind", ["split", "permuted", "rotated"])
def test_build_sequence_every_kind(kind: str) -> None:
    scenario = "task_il" if kind == "split" else "domain_il"
    seq = build_sequence(
        SequenceConfig(kind=kind, scenario=scenario, num_tasks=3, max_train_per_task=10), seed=0
    )
    assert seq.num_tasks == 3 and seq.scenario == scenario
    assert all(len(t.train_y) == 10 for t in seq.tasks)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "shuffled"},
        {"kind": "split", "scenario": "domain_il"},
        {"kind": "rotated", "scenario": "class_il"},
        {"num_tasks": 0},
        {"max_train_per_task": 0},
    ],
)
def test_sequence_config_validation(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="SequenceConfig"):
        SequenceConfig(**kwargs)


def test_unknown_dataset_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown dataset"):
        build_sequence(SequenceConfig(dataset="nope"))
