"""One entry point for every dataset: ``load_splits(name, seed=..., **options)``.

Configs name a dataset by string (``dataset=digits``); this dispatch keeps that mapping in
one place. ``digits`` is the embedded default: it needs no network and loads in well under
a second once scikit-learn is imported.
"""

from __future__ import annotations

from typing import Any

from fedkd.data.digits import load_digits_splits
from fedkd.data.hub import HUB_DATASETS, load_hub_splits
from fedkd.data.splits import DataSplits
from fedkd.data.synthetic import make_synthetic_splits

__all__ = ["available_datasets", "load_splits"]

_LOCAL = ("digits", "synthetic")


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_splits`: the two local ones first, then hub datasets."""
    return [*_LOCAL, *HUB_DATASETS]


def load_splits(name: str, *, seed: int = 0, **kwargs: Any) -> DataSplits:
    """Load dataset ``name`` as :class:`DataSplits`.

    ``kwargs`` go to :func:`load_digits_splits`, :func:`make_synthetic_splits` or
    :func:`load_hub_splits` (e.g. ``public_fraction``, ``num_samples``, ``max_train``).

    Raises
    ------
    ValueError
        If ``name`` is not in :func:`available_datasets`.
    DatasetUnavailableError
        If a hub dataset cannot be reached or found in the cache.
    """
    if name == "digits":
        return load_digits_splits(seed=seed, **kwargs)
    if name == "synthetic":
        return make_synthetic_splits(seed=seed, **kwargs)
    if name in HUB_DATASETS:
        return load_hub_splits(name, seed=seed, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; available datasets: {available_datasets()}")
