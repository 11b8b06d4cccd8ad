"""Datasets and client partitions for federated distillation.

Every loader returns :class:`DataSplits` (private train pool, unlabelled public inputs, test
set); :func:`partition_indices` splits the private pool over clients with Flower Datasets'
partitioners. Importing this package loads neither ``datasets``, ``flwr_datasets`` nor
matplotlib; they are imported when first needed.
"""

from fedkd.data.digits import load_digits_splits
from fedkd.data.hub import (
    HUB_DATASETS,
    DatasetUnavailableError,
    HubSpec,
    hub_to_splits,
    load_hub_splits,
)
from fedkd.data.partition import (
    PartitionScheme,
    label_histogram,
    partition_indices,
    plot_label_histogram,
)
from fedkd.data.registry import available_datasets, load_splits
from fedkd.data.splits import DataSplits
from fedkd.data.synthetic import make_synthetic_splits

__all__ = [
    "HUB_DATASETS",
    "DataSplits",
    "DatasetUnavailableError",
    "HubSpec",
    "PartitionScheme",
    "available_datasets",
    "hub_to_splits",
    "label_histogram",
    "load_digits_splits",
    "load_hub_splits",
    "load_splits",
    "make_synthetic_splits",
    "partition_indices",
    "plot_label_histogram",
]
