"""The embedded default dataset: scikit-learn's 8x8 handwritten digits.

It ships inside scikit-learn (1,797 images, 10 classes), so every test, example and CI run
works offline and in seconds. It is small enough that FD's three pools stay meaningful:
with the defaults, 899 private / 539 public / 359 test samples.
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.data.splits import DataSplits, make_splits, split_three_ways, take

__all__ = ["load_digits_splits"]


def load_digits_splits(
    *, seed: int = 0, public_fraction: float = 0.3, test_fraction: float = 0.2
) -> DataSplits:
    """Load sklearn's digits as ``(N, 1, 8, 8)`` float32 in ``[0, 1]`` and split it three ways.

    Parameters
    ----------
    seed : int
        Seed of the stratified split; the same seed always gives the same splits.
    public_fraction, test_fraction : float
        Fractions of all 1,797 samples that go to the public (unlabelled) and test pools;
        the private train pool gets the rest.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N, 1, 8, 8)
    y = torch.from_numpy(bunch.target.astype(np.int64))
    train, public, test = split_three_ways(
        bunch.target, public_fraction=public_fraction, test_fraction=test_fraction, seed=seed
    )
    return make_splits(
        "digits", take(x, y, train), take(x, y, public), take(x, y, test), num_classes=10
    )
