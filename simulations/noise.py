"""The stack's known log noise, handled in one place, so every line a user reads appears once.

Three sources, each handled at its source and only for the duration of a simulation call:

* **Flower's lines twice under Hydra.** Importing Flower attaches Flower's own console handler
  to the ``flwr`` logger, which also propagates to the root logger; Hydra (like pytest, or any
  ``logging.basicConfig``) puts a handler on the root. Every ``flwr`` record then prints twice.
  :func:`flower_logs_once` detaches Flower's console handler while the root logger has one, so
  the root prints each Flower line once, in the app's format, and into Hydra's ``run.log``;
  with no root handler (a bare script) Flower keeps its own.
* **Ray's accelerator FutureWarning** (Ray 2.55 warns on every ``ray.init`` that a future
  version will stop hiding GPUs from ``num_gpus=0`` actors). fedkd relies on today's behaviour
  (a CPU client must not grab the GPU), so the warning is dropped, the behaviour kept.
* **"Manually terminating ClientAppActor"**: Flower logs it at WARNING from every Ray actor on a
  normal shutdown. :func:`quiet_ray_worker` runs in each Ray worker process (Ray's
  ``worker_process_setup_hook``) and drops exactly that record there.
* Flower's deprecation notice for ``run_simulation`` (see :mod:`simulations.engine`).

Everything else Flower or Ray says still reaches the user.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

FLOWER_LOGGER = "flwr"
# Substrings of records dropped from the ``flwr`` logger: each is a message of the stack's normal
# operation that tells the user nothing (Flower 1.41 wording, checked in site-packages).
DROPPED_FLOWER_RECORDS = (
    ("run_simulation", "deprecated"),  # flwr.simulation.run_simulation, on every call
    ("Manually terminating",),  # flwr.simulation.ray_transport.ray_actor, each actor at shutdown
)
RAY_ACCELERATOR_TIP = r"Tip: In future versions of Ray"  # ray/_private/worker.py, ray.init


class DropKnownNoise(logging.Filter):
    """Drops the records listed in :data:`DROPPED_FLOWER_RECORDS`, and only those."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(all(part in message for part in parts) for parts in DROPPED_FLOWER_RECORDS)


@contextmanager
def flower_logs_once(verbose: bool = False) -> Iterator[None]:
    """Each ``flwr`` record printed once, without Flower's known noise, for the ``with`` body.

    While the root logger has a handler, Flower's console handler is detached and the ``flwr``
    logger's level takes over the handler's (INFO, or DEBUG when ``verbose``), so DEBUG records
    do not reach the root's handlers unasked. Restored afterwards.
    """
    from flwr.common.logger import ConsoleHandler

    flower = logging.getLogger(FLOWER_LOGGER)
    drop = DropKnownNoise()
    flower.addFilter(drop)
    detached: list[logging.Handler] = []
    level = flower.level
    if logging.getLogger().handlers:
        detached = [h for h in flower.handlers if isinstance(h, ConsoleHandler)]
        for handler in detached:
            flower.removeHandler(handler)
        if detached:
            flower.setLevel(logging.DEBUG if verbose else detached[0].level)
    try:
        yield
    finally:
        flower.removeFilter(drop)
        for handler in detached:
            flower.addHandler(handler)
        flower.setLevel(level)


@contextmanager
def ray_tip_silenced() -> Iterator[None]:
    """``ray.init`` without Ray's accelerator FutureWarning (see the module docstring)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=RAY_ACCELERATOR_TIP, category=FutureWarning)
        yield


def quiet_ray_worker() -> None:
    """Ray's ``worker_process_setup_hook``: drop the known Flower noise in a worker process."""
    logging.getLogger(FLOWER_LOGGER).addFilter(DropKnownNoise())
