"""Synthetic Gaussian-mixture data of any size, for scale and speed tests.

Real datasets fix the sample count; scaling studies (many clients, large public sets) need
data whose size and difficulty are knobs and which costs nothing to load.
"""

from __future__ import annotations

import numpy as np
import torch

from fedkd.data.splits import DataSplits, make_splits, split_three_ways, take

__all__ = ["make_synthetic_splits"]


def make_synthetic_splits(
    *,
    num_samples: int = 6000,
    num_classes: int = 10,
    dim: int = 32,
    seed: int = 0,
    class_sep: float = 2.0,
    public_fraction: float = 0.3,
    test_fraction: float = 0.2,
    num_train: int = 0,
) -> DataSplits:
    """Isotropic Gaussian mixture: ``x = mu_y + eps``, ``eps ~ N(0, I_dim)``, balanced labels.

    Class means are drawn as ``mu_k ~ N(0, (2 class_sep^2 / dim) I)``, so two means lie about
    ``2 * class_sep`` noise standard deviations apart and the Bayes error between any two
    classes is about ``Phi(-class_sep)`` (2.3 % for the default 2.0). Larger ``num_classes``
    makes the task harder; larger ``class_sep`` makes it easier.

    Parameters
    ----------
    num_samples : int
        Total samples before splitting.
    num_classes, dim : int
        Number of mixture components and feature dimension (inputs are ``(N, dim)``).
    seed : int
        Seeds the means, the samples and the split.
    class_sep : float
        Separation of the class means in noise standard deviations (see above).
    public_fraction, test_fraction : float
        Fractions of ``num_samples`` for the public (unlabelled) and test pools.
    num_train : int
        Private-pool size; 0 keeps the split's share of ``num_samples``. Larger pools are
        grown with more draws from the same mixture (after the split, so the public and test
        sets, and the first private samples, are those of the default dataset): a population
        of 100,000 clients costs its clients' data, not a 100-times larger public or test set
        that every client would evaluate on.
    """
    if num_samples < 1 or num_classes < 2 or dim < 1:
        raise ValueError("need num_samples >= 1, num_classes >= 2 and dim >= 1")
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, class_sep * np.sqrt(2.0 / dim), size=(num_classes, dim))
    labels = rng.permutation(np.arange(num_samples) % num_classes)  # balanced classes
    x_np = means[labels] + rng.standard_normal((num_samples, dim))  # (N, dim)
    x = torch.from_numpy(x_np.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    train, public, test = split_three_ways(
        labels, public_fraction=public_fraction, test_fraction=test_fraction, seed=seed
    )
    train_x, train_y = take(x, y, train)
    if num_train and num_train != len(train_y):
        extra = num_train - len(train_y)
        if extra < 0:
            train_x, train_y = train_x[:num_train], train_y[:num_train]
        else:
            more = np.random.default_rng([seed, 1]).permutation(np.arange(extra) % num_classes)
            noise = np.random.default_rng([seed, 2]).standard_normal((extra, dim))
            more_x = torch.from_numpy((means[more] + noise).astype(np.float32))
            train_x = torch.cat([train_x, more_x])
            train_y = torch.cat([train_y, torch.from_numpy(more.astype(np.int64))])
    return make_splits(
        "synthetic", (train_x, train_y), take(x, y, public), take(x, y, test), num_classes
    )
