"""Ray workers that are ready before round one, and a barrier that waits for them.

Under Flower's Ray engine every ClientApp actor is a fresh worker process. It used to import
torch, Flower and fedkd when its first message arrived (3-5 CPU-seconds per worker on this
2-core box), so round 1 carried the whole start-up: 17-25 s against a 1 s warm round at
100 tiny clients (docs/benchmarks.md §2b). Start-up is not a round: it made the first round's
time meaningless, and a round timeout had to be long enough to cover it (a fault test timed
out on a busy box for exactly that reason).

So a locally started Ray gets :func:`setup_worker` as its ``worker_process_setup_hook``: each
worker process, as it starts, drops Flower's known noise, imports the ClientApp's modules and
then marks itself ready (an empty file named by its pid in a per-run directory). The
ServerApp's lifespan (:meth:`WorkerBarrier.lifespan`, registered by
:func:`simulations.engine.run_ray`) waits, with progress output, until as many workers are
ready as Flower's actor pool holds, before the strategy's first round; past ``timeout`` it
warns and goes on (round 1 then absorbs the rest, as before). The start-up is then reported
on its own line (``Ray workers ready in …``) and round 1 is a round.

Attached to an existing cluster (``simulation.address``) none of this is installed: its nodes
may not have fedkd's modules at start, and their workers are not this machine's files.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from simulations.noise import quiet_ray_worker

log = logging.getLogger(__name__)
READY_DIR_ENV = "FEDKD_RAY_READY_DIR"  # where setup_worker marks a worker ready
SETUP_HOOK = "simulations.ray_workers.setup_worker"


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook``: quiet, import the ClientApp, mark ready.

    Besides the ClientApp's own modules and the module of Flower's actor class, two imports
    the first message would otherwise make lazily, seen in round 1 of a 100-client run:
    scikit-learn (``fedkd.data.splits`` splits the data with it; 2-4 s) and ``torch._dynamo``
    (torch builds it on the first optimizer; 1-3 s). Then ``gc.freeze()``: the ~400,000
    objects the imports created never change, and without it each full collection walks all
    of them (0.36 s of CPU for one, measured in process with ``gc.callbacks``).
    """
    quiet_ray_worker()
    import flwr.simulation.ray_transport.ray_actor  # noqa: F401  (the actor's own class)
    import sklearn.model_selection  # noqa: F401
    import torch._dynamo  # noqa: F401

    import fedkd.client_app  # noqa: F401  (torch, Flower, fedkd: the first message's imports)

    gc.freeze()
    ready = os.environ.get(READY_DIR_ENV)
    if ready and Path(ready).is_dir():
        (Path(ready) / str(os.getpid())).touch()


class WorkerBarrier:
    """A per-run ready directory, and the wait for ``expected`` ready workers."""

    def __init__(self, timeout: float = 300.0, poll: float = 0.2) -> None:
        self.timeout = timeout
        self.poll = poll
        self.directory = Path(tempfile.mkdtemp(prefix="fedkd-ray-ready-"))
        self.expected = 0  # set once Ray is up (the actor pool's size)
        self.waited: float | None = None  # seconds the last wait took

    def ready(self) -> int:
        """Workers that have finished their imports so far."""
        return sum(1 for _ in self.directory.iterdir())

    def wait(self) -> bool:
        """Block until ``expected`` workers are ready (``True``) or ``timeout`` passes."""
        start = time.perf_counter()
        if self.expected <= 0:
            return True
        log.info(
            "waiting for %d Ray worker%s to start and import torch, Flower and fedkd ...",
            self.expected,
            "s" * (self.expected != 1),
        )
        while (count := self.ready()) < self.expected:
            if time.perf_counter() - start > self.timeout:
                log.warning(
                    "%d of %d Ray workers ready after %.0f s; starting round 1 anyway "
                    "(it will include the rest of their start-up)",
                    count,
                    self.expected,
                    self.timeout,
                )
                self.waited = time.perf_counter() - start
                return False
            time.sleep(self.poll)
        self.waited = time.perf_counter() - start
        log.info("Ray workers ready in %.1fs", self.waited)
        return True

    def lifespan(self, _context: object) -> Iterator[None]:
        """A ServerApp lifespan: the wait before the app's main runs."""
        self.wait()
        yield

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
