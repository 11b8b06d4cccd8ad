"""The ``data`` extra (flwr-datasets and Hugging Face ``datasets``), imported only when needed.

A device running the ClientApp on its own data (``--node-config "data-path=..."``) and the
embedded ``digits`` dataset needs neither: they are what simulated partitions (Flower's
partitioners) and hub datasets (MNIST, CIFAR, …) are made with. So they are not part of the
base install (docs/deploy.md measures the difference), and code that needs them imports them
through :func:`require`, which turns a missing package into one line naming the extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

DATA_EXTRA_HINT = "pip install 'fedkd[data]' (with -c constraints.txt for the tested versions)"


class MissingDataExtra(ImportError):
    """A package of the ``data`` extra is missing; the message says what to install."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` (e.g. ``"flwr_datasets.partitioner"``) or raise one clear line.

    ``purpose`` completes "... is not installed; <purpose> need(s) the data extra".
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        package = module.split(".", 1)[0]
        raise MissingDataExtra(
            f"{package} is not installed; {purpose} needs the data extra: {DATA_EXTRA_HINT}. "
            "A device on its own data needs neither (--node-config \"data-path='<file>.npz'\", "
            "docs/deploy.md)"
        ) from error
