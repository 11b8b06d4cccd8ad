"""Image benchmarks from the Hugging Face Hub (MNIST, Fashion-MNIST, CIFAR-10/100).

These are the datasets FD papers report on (FedMD, FedDF, DS-FL). They need network access
once; afterwards ``datasets`` reads them from its cache (``~/.cache/huggingface`` or
``$HF_HOME``). Offline, loading fails fast with :class:`DatasetUnavailableError`, which points
to the embedded default ``dataset=digits``. ``datasets`` is imported only inside functions
(it takes seconds to import).

The public pool is carved out of the hub *train* split (as in FedDF, which distils on
unlabelled data from the training distribution); the hub *test* split stays the test set.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from fedkd.data.optional import require
from fedkd.data.splits import DataSplits, carve_public, make_splits, take

log = logging.getLogger(__name__)

__all__ = [
    "HUB_DATASETS",
    "DatasetUnavailableError",
    "HubSpec",
    "hub_to_splits",
    "load_hub_splits",
]


@dataclass(frozen=True)
class HubSpec:
    """Where a hub dataset lives and how to read it.

    Attributes
    ----------
    name : str
        Short name used in configs (``dataset=cifar10``).
    hub_id : str
        Repository id on the Hugging Face Hub.
    image_column, label_column : str
        Column names of the image (PIL images or arrays) and the integer label.
    num_classes : int
        Number of classes.
    mode : {"L", "RGB"}
        PIL mode every image is converted to, so all samples share one channel count.
    train_split, test_split : str
        Split names in the hub ``DatasetDict``.
    """

    name: str
    hub_id: str
    image_column: str
    label_column: str
    num_classes: int
    mode: Literal["L", "RGB"]
    train_split: str = "train"
    test_split: str = "test"


HUB_DATASETS: dict[str, HubSpec] = {
    spec.name: spec
    for spec in [
        HubSpec("mnist", "ylecun/mnist", "image", "label", 10, "L"),
        HubSpec("fashion_mnist", "zalando-datasets/fashion_mnist", "image", "label", 10, "L"),
        HubSpec("cifar10", "uoft-cs/cifar10", "img", "label", 10, "RGB"),
        HubSpec("cifar100", "uoft-cs/cifar100", "img", "fine_label", 100, "RGB"),
    ]
}


class DatasetUnavailableError(RuntimeError):
    """A hub dataset could not be loaded (typically: no network and nothing cached)."""

    def __init__(self, name: str, hub_id: str, cause: BaseException | None = None) -> None:
        self.dataset = name
        self.hub_id = hub_id
        reason = f": {type(cause).__name__}: {cause}" if cause is not None else ""
        super().__init__(
            f"dataset {name!r} ('{hub_id}' on the Hugging Face Hub) could not be loaded"
            f"{reason}. It needs network access once; afterwards it is read from the "
            "Hugging Face cache (~/.cache/huggingface or $HF_HOME). Without network, use the "
            "embedded default `dataset=digits` (or `dataset=synthetic`). "
            "Set HF_HUB_OFFLINE=1 to fail at once instead of retrying the connection."
        )


def _unavailable_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "cannot reach or find the data", not a bug in our code.

    Every ``huggingface_hub`` and ``datasets`` offline/not-found error subclasses ``OSError``
    (``ConnectionError``, ``FileNotFoundError``, ``HfHubHTTPError``); raw ``httpx`` transport
    errors do not, so they are added when ``httpx`` is installed.
    """
    errors: list[type[BaseException]] = [OSError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:  # pragma: no cover - httpx ships with huggingface_hub >= 1.0
        pass
    return tuple(errors)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint (``$HF_ENDPOINT``) opens within ``timeout``."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout):
            return True
    except OSError:
        return False


def _go_offline_if_unreachable() -> None:
    """Read from the cache only when the Hub cannot be reached: ``datasets`` would otherwise retry
    every request (about 30 s) before failing. Leaves an explicit ``HF_HUB_OFFLINE`` or
    ``HF_DATASETS_OFFLINE`` alone. Both libraries read the switch at import time, so the
    already-imported constants are set as well."""
    if "HF_HUB_OFFLINE" in os.environ or "HF_DATASETS_OFFLINE" in os.environ:
        return
    if _hub_reachable():
        return
    log.warning("the Hugging Face Hub is unreachable: reading datasets from the cache only")
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module, attribute in (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
    ):
        if module in sys.modules:
            setattr(sys.modules[module], attribute, True)


def _default_loader(hub_id: str) -> Any:
    _go_offline_if_unreachable()
    datasets = require("datasets", f"the hub dataset {hub_id!r}")

    return datasets.load_dataset(hub_id)


def load_hub_splits(
    name: str,
    *,
    seed: int = 0,
    public_fraction: float = 0.3,
    max_train: int | None = None,
    max_test: int | None = None,
    loader: Callable[[str], Any] | None = None,
) -> DataSplits:
    """Load a hub dataset from :data:`HUB_DATASETS` and split it for federated distillation.

    Parameters
    ----------
    name : str
        A key of :data:`HUB_DATASETS`.
    seed : int
        Seeds the subsampling and the public/train split.
    public_fraction : float
        Fraction of the (possibly subsampled) hub train split used as public pool.
    max_train, max_test : int, optional
        Random subsets of the hub train / test splits, for quick runs on small machines.
    loader : callable, optional
        ``loader(hub_id) -> DatasetDict``; defaults to ``datasets.load_dataset(hub_id)``.
        Tests inject in-memory data or failures here.

    Raises
    ------
    ValueError
        If ``name`` is not a hub dataset.
    DatasetUnavailableError
        If the loader cannot reach or find the data (the original error is chained).
    """
    if name not in HUB_DATASETS:
        raise ValueError(f"unknown hub dataset {name!r}; available: {sorted(HUB_DATASETS)}")
    spec = HUB_DATASETS[name]
    try:
        dataset_dict = (loader or _default_loader)(spec.hub_id)
    except _unavailable_errors() as err:
        raise DatasetUnavailableError(name, spec.hub_id, err) from err
    return hub_to_splits(
        dataset_dict,
        spec,
        seed=seed,
        public_fraction=public_fraction,
        max_train=max_train,
        max_test=max_test,
    )


def hub_to_splits(
    dataset_dict: Any,
    spec: HubSpec,
    *,
    seed: int,
    public_fraction: float,
    max_train: int | None,
    max_test: int | None = None,
) -> DataSplits:
    """Convert a hub ``DatasetDict`` into :class:`DataSplits`.

    Images become float32 ``(N, C, H, W)`` scaled to ``[0, 1]`` (``C`` = 1 for mode ``"L"``,
    3 for ``"RGB"``), the same range as the digits, so one model config fits every dataset.
    Labels become int64.
    """
    train_ds = _subsample(dataset_dict[spec.train_split], max_train, seed)
    test_ds = _subsample(dataset_dict[spec.test_split], max_test, seed)
    x, y = _to_tensors(train_ds, spec)
    train, public = carve_public(y.numpy(), public_fraction=public_fraction, seed=seed)
    return make_splits(
        spec.name,
        take(x, y, train),
        take(x, y, public),
        _to_tensors(test_ds, spec),
        spec.num_classes,
    )


def _subsample(dataset: Any, limit: int | None, seed: int) -> Any:
    """A seeded random subset of ``limit`` rows, selected *before* images are decoded."""
    if limit is None or limit >= len(dataset):
        return dataset
    if limit < 1:
        raise ValueError(f"max_train/max_test must be >= 1, got {limit}")
    rows = np.random.default_rng(seed).choice(len(dataset), size=limit, replace=False)
    return dataset.select(np.sort(rows))


def _to_tensors(dataset: Any, spec: HubSpec) -> tuple[Tensor, Tensor]:
    """Decode one split into ``(x, y)``: float32 ``(N, C, H, W)`` in [0, 1], int64 ``(N,)``."""
    datasets = require("datasets", "a hub dataset")

    dataset = dataset.select_columns([spec.image_column, spec.label_column])
    if isinstance(dataset.features[spec.image_column], datasets.Image):
        # Decode with a fixed PIL mode so a stray grayscale image in an RGB set still stacks.
        dataset = dataset.cast_column(spec.image_column, datasets.Image(mode=spec.mode))
    batch = dataset.with_format("numpy")[:]
    images = np.asarray(batch[spec.image_column])  # (N, H, W) or (N, H, W, C)
    if images.ndim == 3:
        images = images[:, None]  # (N, 1, H, W)
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)  # (N, C, H, W)
    else:
        raise ValueError(f"{spec.name}: cannot read images of shape {images.shape}")
    x = images.astype(np.float32)
    if np.issubdtype(images.dtype, np.integer):
        x /= 255.0
    y = np.asarray(batch[spec.label_column]).astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)
