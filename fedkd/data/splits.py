"""The container every dataset loader returns, and the seeded splitting helpers behind it.

Federated distillation needs three disjoint pools (Li & Wang 2019, FedMD; Lin et al. 2020,
FedDF): a *private* training pool that gets partitioned over clients, a *public* pool of
unlabelled inputs on which clients share soft predictions, and a held-out *test* set.
The public pool's labels are deliberately not a field clients or the server can read: they
exist only behind :meth:`DataSplits.oracle_public_labels` for simulator diagnostics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "DataSplits",
    "carve_public",
    "make_splits",
    "split_three_ways",
    "take",
    "with_validation",
]


@dataclass(frozen=True, eq=False)
class DataSplits:
    """Private-train pool, public UNLABELED inputs, and test set, as in-memory tensors.

    Attributes
    ----------
    name : str
        Dataset name as accepted by :func:`fedkd.data.load_splits`.
    train_x, train_y : Tensor
        Private pool, float32 ``(N, C, H, W)`` or ``(N, D)``, int64 labels ``(N,)``.
        Partition it over clients with :func:`fedkd.data.partition_indices`.
    public_x : Tensor
        Public inputs ``(P, *input_shape)``, with no labels: FD's server and clients only
        ever exchange predictions on them.
    test_x, test_y : Tensor
        Held-out evaluation set.
    num_classes : int
        Number of classes; labels lie in ``[0, num_classes)``.
    input_shape : tuple of int
        One sample's shape (what :func:`fedkd.models.build_model` takes).
    val_x, val_y : Tensor
        Labelled validation set held by the server (the experimenter), carved from the
        private pool by :func:`with_validation`; empty until then. Everything that selects
        (best round, early stopping, tuning of references) looks here, never at the test set.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    public_x: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    _public_y_oracle: Tensor = field(repr=False)
    val_x: Tensor = field(default_factory=lambda: torch.empty(0), repr=False)
    val_y: Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64), repr=False)

    def __post_init__(self) -> None:
        if len(self.val_y) == 0:  # no validation set: an empty one of the right shape
            object.__setattr__(self, "val_x", torch.empty(0, *self.input_shape))
        for split, x, y in [
            ("train", self.train_x, self.train_y),
            ("public", self.public_x, self._public_y_oracle),
            ("test", self.test_x, self.test_y),
            ("val", self.val_x, self.val_y),
        ]:
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise TypeError(f"{split}: expected float32 inputs and int64 labels")
            if tuple(x.shape[1:]) != tuple(self.input_shape) or len(x) != len(y):
                raise ValueError(
                    f"{split}: inputs {tuple(x.shape)} and labels {tuple(y.shape)} do not "
                    f"match input_shape {self.input_shape}"
                )
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
                raise ValueError(f"{split}: labels outside [0, {self.num_classes})")

    def oracle_public_labels(self) -> Tensor:
        """True labels of ``public_x``: for simulator diagnostics and references, never for
        training — except in the explicitly labelled-public setting ``public-pretrain-epochs``
        (FedMD's transfer phase, :meth:`fedkd.client.FDClient.pretrain_on_public`).

        A simulator may report e.g. the accuracy of the aggregated teacher on the public set.
        """
        return self._public_y_oracle

    def __repr__(self) -> str:
        return (
            f"DataSplits(name={self.name!r}, train={len(self.train_y)}, "
            f"public={len(self.public_x)}, val={len(self.val_y)}, test={len(self.test_y)}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape})"
        )


def _split(
    indices: np.ndarray, labels: np.ndarray, n_second: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``indices`` into ``(len - n_second, n_second)``, stratified if possible.

    Stratification keeps every split's class mix equal to the dataset's; sklearn refuses it
    when a class has a single member or ``n_second`` is smaller than the number of classes
    (tiny or truncated data), and then a plain seeded shuffle is used.
    """
    from sklearn.model_selection import train_test_split

    if n_second == 0:
        return np.sort(indices), indices[:0]
    try:
        first, second = train_test_split(
            indices, test_size=n_second, random_state=seed, stratify=labels
        )
    except ValueError:
        first, second = train_test_split(indices, test_size=n_second, random_state=seed)
    return np.sort(first), np.sort(second)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")


def split_three_ways(
    labels: np.ndarray, *, public_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train, public, test)`` over ``len(labels)`` samples.

    Both fractions are of the *whole* dataset (sizes rounded to the nearest integer); train
    gets the rest. For datasets that ship without a test split (digits, synthetic).
    """
    _check_fraction("public_fraction", public_fraction)
    _check_fraction("test_fraction", test_fraction)
    if public_fraction + test_fraction >= 1.0:
        raise ValueError("public_fraction + test_fraction must be < 1 to leave a train pool")
    n = len(labels)
    n_test, n_public = round(test_fraction * n), round(public_fraction * n)
    rest, test = _split(np.arange(n), labels, n_test, seed)
    train, public = _split(rest, labels[rest], n_public, seed + 1)
    return train, public, test


def carve_public(
    labels: np.ndarray, *, public_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint sorted index arrays ``(train, public)``: the public pool is cut from train data.

    For hub datasets whose official test split stays the test set.
    """
    _check_fraction("public_fraction", public_fraction)
    return _split(np.arange(len(labels)), labels, round(public_fraction * len(labels)), seed)


def make_splits(
    name: str,
    train: tuple[Tensor, Tensor],
    public: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
) -> DataSplits:
    """Assemble :class:`DataSplits` from ``(inputs, labels)`` pairs; ``public`` labels go
    to the oracle slot only."""
    return DataSplits(
        name=name,
        train_x=train[0].contiguous(),
        train_y=train[1].contiguous(),
        public_x=public[0].contiguous(),
        test_x=test[0].contiguous(),
        test_y=test[1].contiguous(),
        num_classes=num_classes,
        input_shape=tuple(train[0].shape[1:]),
        _public_y_oracle=public[1].contiguous(),
    )


def take(x: Tensor, y: Tensor, index: np.ndarray) -> tuple[Tensor, Tensor]:
    """Rows ``index`` of ``(x, y)``."""
    i = torch.as_tensor(index, dtype=torch.long)
    return x[i], y[i]


def with_validation(splits: DataSplits, val_fraction: float, *, seed: int) -> DataSplits:
    """``splits`` with ``val_fraction`` of the private pool moved to a labelled validation set.

    Stratified and seeded like the other splits. The clients' partitions are then drawn from
    what remains, so no validation sample is ever a client's training sample.
    """
    _check_fraction("val_fraction", val_fraction)
    labels = splits.train_y.numpy()
    n_val = round(val_fraction * len(labels))
    train, val = _split(np.arange(len(labels)), labels, n_val, seed + 2)
    return dataclasses.replace(
        splits,
        train_x=splits.train_x[torch.as_tensor(train)].contiguous(),
        train_y=splits.train_y[torch.as_tensor(train)].contiguous(),
        val_x=splits.train_x[torch.as_tensor(val, dtype=torch.long)].contiguous(),
        val_y=splits.train_y[torch.as_tensor(val, dtype=torch.long)].contiguous(),
    )
