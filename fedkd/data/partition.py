"""Split the private train pool over clients with Flower Datasets' partitioners.

Label skew is the main axis along which FD methods differ, so the schemes are the standard
ones from the literature, taken from ``flwr_datasets.partitioner`` rather than re-written:

- ``"iid"``: uniform random split (:class:`IidPartitioner`).
- ``"dirichlet"``: per-class proportions ~ Dir(alpha) (Yurochkin et al. 2019; Hsu et al. 2019);
  small ``alpha`` means few dominant classes per client (:class:`DirichletPartitioner`).
- ``"pathological"``: exactly ``classes_per_partition`` classes per client, the first one
  assigned round-robin (Li et al. 2022, "first-deterministic"; :class:`PathologicalPartitioner`).
- ``"shard"``: sort by label, cut equal shards, deal ``shards_per_partition`` per client
  (McMahan et al. 2017, FedAvg; :class:`ShardPartitioner`).

The partitioners work on a ``datasets.Dataset``; we hand them a two-column in-memory table
(``label`` and the original row ``idx``) and read ``idx`` back, so the result indexes the
caller's tensors whatever reordering a partitioner does internally (``shard`` sorts).
``flwr_datasets``/``datasets`` (seconds to import) and matplotlib are imported lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from fedkd.data.optional import require

__all__ = ["PartitionScheme", "label_histogram", "partition_indices", "plot_label_histogram"]

PartitionScheme = Literal["iid", "dirichlet", "pathological", "shard"]
SCHEMES: tuple[str, ...] = get_args(PartitionScheme)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: PartitionScheme,
    *,
    alpha: float = 0.5,
    classes_per_partition: int = 2,
    shards_per_partition: int = 2,
    seed: int = 0,
    min_partition_size: int = 0,
) -> list[np.ndarray]:
    """Assign sample indices to ``num_partitions`` clients.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(N,)`` of the pool to split (e.g. ``DataSplits.train_y.numpy()``).
    num_partitions : int
        Number of clients, ``1 <= num_partitions <= N``.
    scheme : {"iid", "dirichlet", "pathological", "shard"}
        Partitioning scheme (see the module docstring).
    alpha : float
        Dirichlet concentration (``"dirichlet"`` only); 0.1 is highly skewed, 100 nearly IID.
    classes_per_partition : int
        Classes per client (``"pathological"`` only).
    shards_per_partition : int
        Shards per client (``"shard"`` only); shard size is ``N // (num_partitions * k)``
        and the remainder (< one shard per client) is left unassigned.
    seed : int
        Seeds the partitioner: the same seed gives the same partitions.
    min_partition_size : int
        ``"dirichlet"`` only: resample until every client has at least this many samples.
        The default 0 never resamples, so small data and small ``alpha`` cannot trigger
        the partitioner's retry loop (at most 11 full Dirichlet draws, each emitting a
        warning, before it gives up) — but a client may then receive no data. Raise it
        (e.g. to 10) for realistic runs; if it cannot be met a ValueError says so.

    Returns
    -------
    list of np.ndarray
        One sorted int64 index array per client. ``"iid"`` and ``"dirichlet"`` use every
        index exactly once; ``"pathological"`` drops classes no client drew and ``"shard"``
        drops the remainder; no index is ever used twice.
    """
    labels = _check_args(labels, num_partitions, scheme, alpha, min_partition_size)
    num_partitions = int(num_partitions)  # numpy ints from configs; ShardPartitioner wants int
    partitioner = _make_partitioner(
        labels,
        num_partitions,
        scheme,
        alpha=alpha,
        classes_per_partition=classes_per_partition,
        shards_per_partition=shards_per_partition,
        seed=seed,
        min_partition_size=min_partition_size,
    )
    partitioner.dataset = _as_dataset(labels, scheme, seed)
    try:
        with warnings.catch_warnings():
            # One warning per failed Dirichlet draw is noise (the final failure raises
            # below), and pyarrow warns about its own sort options inside ShardPartitioner.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            parts = [_read_idx(partitioner.load_partition(i)) for i in range(num_partitions)]
    except ValueError as err:
        hint = " Lower min_partition_size or raise alpha." if scheme == "dirichlet" else ""
        msg = f"{scheme} partitioning of {len(labels)} samples failed: {err}{hint}"
        raise ValueError(msg) from err
    return [np.sort(p) for p in parts]


def _read_idx(partition: Any) -> np.ndarray:
    """The ``idx`` column as int64, read in one Arrow batch (``ds["idx"]`` iterates rows)."""
    return np.asarray(partition.with_format("numpy")[:]["idx"], dtype=np.int64)


def _check_args(
    labels: np.ndarray, num_partitions: int, scheme: str, alpha: float, min_partition_size: int
) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a non-empty 1-D integer array, got {labels.shape}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {list(SCHEMES)}")
    if not isinstance(num_partitions, int | np.integer) or not 1 <= num_partitions <= labels.size:
        raise ValueError(f"num_partitions must be in [1, {labels.size}], got {num_partitions}")
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_partition_size < 0 or min_partition_size * num_partitions > labels.size:
        raise ValueError(
            f"min_partition_size={min_partition_size} is impossible for {labels.size} "
            f"samples over {num_partitions} partitions"
        )
    return labels.astype(np.int64)


def _make_partitioner(labels: np.ndarray, num_partitions: int, scheme: str, **kw: Any) -> Any:
    fp = require("flwr_datasets.partitioner", f"the simulated {scheme!r} partition")

    if scheme == "iid":
        return fp.IidPartitioner(num_partitions=num_partitions)
    if scheme == "dirichlet":
        return fp.DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=float(kw["alpha"]),
            min_partition_size=kw["min_partition_size"],
            self_balancing=False,
            shuffle=False,
            seed=kw["seed"],
        )
    if scheme == "pathological":
        k, num_labels = kw["classes_per_partition"], np.unique(labels).size
        if not 1 <= k <= num_labels:
            raise ValueError(f"classes_per_partition must be in [1, {num_labels}], got {k}")
        return fp.PathologicalPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            num_classes_per_partition=k,
            class_assignment_mode="first-deterministic",
            shuffle=False,
            seed=kw["seed"],
        )
    k = kw["shards_per_partition"]
    if not isinstance(k, int) or k < 1 or num_partitions * k > labels.size:
        raise ValueError(
            f"shards_per_partition must be a positive int with num_partitions * "
            f"shards_per_partition <= {labels.size}, got {k}"
        )
    return fp.ShardPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_shards_per_partition=k,
        shuffle=False,
        seed=kw["seed"],
    )


def _as_dataset(labels: np.ndarray, scheme: str, seed: int) -> Any:
    """In-memory ``datasets.Dataset`` with columns ``label`` and ``idx``.

    ``IidPartitioner`` cuts contiguous blocks, so for ``"iid"`` the rows are permuted first.
    """
    datasets = require("datasets", f"the simulated {scheme!r} partition")

    order = np.arange(labels.size)
    if scheme == "iid":
        order = np.random.default_rng(seed).permutation(labels.size)
    return datasets.Dataset.from_dict({"label": labels[order], "idx": order})


def label_histogram(
    labels: np.ndarray, partitions: Sequence[np.ndarray], num_classes: int
) -> np.ndarray:
    """Per-client label counts ``(partitions, classes)``: the usual picture of label skew."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes})")
    counts = [
        np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=num_classes)
        for p in partitions
    ]
    return np.stack(counts).astype(np.int64) if counts else np.zeros((0, num_classes), np.int64)


MAX_PLOTTED_CLIENTS = 100  # the picture shows this many clients; the JSON keeps every one


def plot_label_histogram(
    hist: np.ndarray, path: str | Path, *, title: str = "Label distribution per client"
) -> Path:
    """Save a stacked bar chart (one bar per client, one colour per class) as an image.

    At most the first :data:`MAX_PLOTTED_CLIENTS` clients are drawn (the title says so): the
    figure is 0.4 inch per bar, so 100,000 clients would be a 4-million-pixel-wide image.

    Uses matplotlib's object API with the Agg canvas, so it never touches pyplot's global
    state or needs a display.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    hist = np.asarray(hist)  # (partitions, classes)
    if hist.ndim != 2:
        raise ValueError(f"hist must be (partitions, classes), got shape {hist.shape}")
    if len(hist) > MAX_PLOTTED_CLIENTS:  # a bar per client stops being readable (and cheap)
        title = f"{title} (first {MAX_PLOTTED_CLIENTS} of {len(hist)})"
        hist = hist[:MAX_PLOTTED_CLIENTS]
    num_clients, num_classes = hist.shape
    fig = Figure(figsize=(max(4.0, 0.4 * num_clients + 2.0), 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    cmap = colormaps["tab20" if num_classes > 10 else "tab10"]
    bottom = np.zeros(num_clients)
    clients = np.arange(num_clients)
    for c in range(num_classes):
        ax.bar(clients, hist[:, c], bottom=bottom, color=cmap(c % cmap.N), label=str(c))
        bottom += hist[:, c]
    ax.set(xlabel="client", ylabel="samples", title=title)
    ax.set_xticks(clients)
    if num_classes <= 20:
        ax.legend(title="class", fontsize="small", bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
