"""Where a simulation runs: Flower's Ray simulation engine, or in-process.

Flower 1.41 marks its Python ``run_simulation`` entry point as deprecated in favour of the
``flwr run`` CLI. The CLI cannot take a Python config object or callbacks (W&B, sweeps) and
starts a detached SuperLink per call, so Hydra sweeps keep the Python entry point — called
only here, in :func:`run_ray`. Flower announces the deprecation on every call through its own
logger (``flwr``, not the ``warnings`` module); :mod:`simulations.noise` drops exactly that
record (and the stack's other known noise) for the call, so every other Flower message shows.
``flwr run .`` keeps working on the same ServerApp/ClientApp (see ``docs/simulation.md``). If
Flower removes the function, this file is the one to change.

Flower's message poller scans nodes × messages every 0.1 s and both ends of a message exchange
sleep 0.1 s between looks; :mod:`simulations.flower_poller` swaps in an indexed poller,
wake-ups, an actor pool that keeps a node on the worker that served it, and a Context store
that a straggler's late reply cannot roll back, during :func:`run_ray` (the one place fedkd
changes Flower's behaviour).
On a locally started Ray the ServerApp's lifespan waits until Flower's ClientApp workers have
started and imported their modules (:mod:`simulations.ray_workers`), so round 1 is a round and
not the workers' start-up; the actor count comes from Flower's own sizing rule
(``pool_size_from_resources``, in :func:`_actor_pool_size`).

Ray: Flower calls ``ray.init()`` only when Ray is not yet initialised, so we initialise it here
ourselves. With ``address`` set (or ``RAY_ADDRESS`` in the environment) we join that running
cluster and pass no resource counts (Ray refuses them when attaching).

Loopback by default: a Ray node's GCS, raylet and workers listen on the node's IP address, and
on Linux Ray 2.55 rewrites a requested ``127.0.0.1`` to the machine's reachable address
(``ray._private.services.resolve_ip_for_localhost``) unless its multi-node mode is off
(``ray_constants.ENABLE_RAY_CLUSTER``, as on macOS/Windows). A local simulation needs no other
machine, so :func:`run_ray` starts Ray with ``_node_ip_address="127.0.0.1"`` and that mode off
for the one ``ray.init`` call: every Ray socket then listens on loopback only. The switch for a
multi-machine setup is ``simulation.node_ip_address`` (``null`` = Ray's own choice, the
machine's address, reachable from other hosts), or ``simulation.address`` to join a cluster.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from fedkd.config import FDConfig
from simulations.noise import flower_logs_once, ray_tip_silenced
from simulations.ray_workers import READY_DIR_ENV, SETUP_HOOK, WorkerBarrier

log = logging.getLogger(__name__)
BACKENDS = ("ray", "local")
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class SimulationConfig:
    """How and where the federation is simulated."""

    backend: str = "ray"  # "ray" (Flower's simulation engine) or "local" (in-process, no Ray)
    client_cpus: int = 1  # CPUs reserved per ClientApp worker
    client_gpus: float = 0.0  # GPU share per worker, e.g. 0.25 = four clients per GPU
    ray_num_cpus: int | None = None  # CPUs Ray may use locally (None = all)
    ray_num_gpus: int | None = None  # GPUs Ray may use locally (None = all visible)
    address: str | None = None  # join an existing Ray cluster ("auto" or "ray://host:10001")
    # IP a locally started Ray listens on; loopback by default, None = Ray's choice (reachable)
    node_ip_address: str | None = LOOPBACK
    verbose: bool = False  # Flower's DEBUG logging

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"invalid config key 'simulation.backend': {self.backend!r}; "
                f"allowed: {', '.join(BACKENDS)}"
            )
        if self.client_cpus < 1:
            raise ValueError(
                f"invalid config key 'simulation.client_cpus': must be >= 1, got {self.client_cpus}"
            )
        for name in ("ray_num_cpus", "ray_num_gpus"):
            value = getattr(self, name)
            floor = 1 if name == "ray_num_cpus" else 0
            if value is not None and value < floor:
                raise ValueError(
                    f"invalid config key 'simulation.{name}': must be >= {floor} or null "
                    f"(null = all local), got {value}"
                )
        if not self.client_gpus >= 0.0:
            raise ValueError(
                f"invalid config key 'simulation.client_gpus': must be >= 0, got {self.client_gpus}"
            )


def ray_init_args(sim: SimulationConfig) -> dict[str, Any]:
    """Arguments for ``ray.init``: attach to a cluster, or size a local one."""
    address = sim.address or os.environ.get("RAY_ADDRESS")
    args: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": True,
    }
    if address:
        args["address"] = address
        return args
    # each local worker drops Flower's shutdown noise and imports the ClientApp as it starts
    # (simulations.ray_workers; a cluster's nodes may lack this package)
    args["runtime_env"] = {"worker_process_setup_hook": SETUP_HOOK}
    if sim.ray_num_cpus is not None:
        args["num_cpus"] = sim.ray_num_cpus
    if sim.ray_num_gpus is not None:
        args["num_gpus"] = sim.ray_num_gpus
    if sim.node_ip_address:
        args["_node_ip_address"] = sim.node_ip_address
    return args


@contextmanager
def _keep_loopback(node_ip_address: str | None) -> Iterator[None]:
    """Let Ray keep a requested loopback address for one ``ray.init`` (see module docstring).

    Ray reads ``ray_constants.ENABLE_RAY_CLUSTER`` when it resolves the node address; with it
    off, ``127.0.0.1`` stays ``127.0.0.1``. Restored afterwards. The one Ray internal fedkd
    touches: if Ray moves it, this function is the place to change.
    """
    if node_ip_address not in ("127.0.0.1", "localhost"):
        yield
        return
    from ray._private import ray_constants

    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def run_ray(
    server_app: ServerApp, client_app: ClientApp, num_supernodes: int, sim: SimulationConfig
) -> None:
    """Run the apps on Flower's Ray simulation engine (the one deprecated call lives here)."""
    import ray
    from flwr.simulation import run_simulation

    from simulations.flower_poller import patched_poller  # imports Ray's actor pool

    barrier: WorkerBarrier | None = None
    backend_config: dict[str, Any] = {
        "client_resources": {"num_cpus": sim.client_cpus, "num_gpus": sim.client_gpus}
    }
    try:
        if not ray.is_initialized():
            args = ray_init_args(sim)
            if "address" not in args:  # a local Ray: its workers get ready before round 1
                barrier = WorkerBarrier()
                args["runtime_env"]["env_vars"] = {READY_DIR_ENV: str(barrier.directory)}
            _start_ray(args, num_supernodes)
        if barrier is not None:
            barrier.expected = _actor_pool_size(backend_config["client_resources"])
            server_app.lifespan()(barrier.lifespan)  # fedkd's apps have no lifespan of their own
        with flower_logs_once(sim.verbose), patched_poller(), _imports_frozen():
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes,
                backend_name="ray",
                backend_config=backend_config,
                verbose_logging=sim.verbose,  # type: ignore[arg-type]
            )
    finally:
        ray.shutdown()
        if barrier is not None:
            barrier.close()


@contextmanager
def _imports_frozen() -> Iterator[None]:
    """The driver's existing objects kept out of the cyclic collector for the run.

    After the imports and Ray's start the driver holds ~400,000 objects that never change;
    each full collection walked them all (0.35-0.5 s of CPU, three times in an 8-round
    100-client run, measured with ``gc.callbacks``; 0.04-0.19 s frozen). Garbage is collected
    first, so nothing collectable is frozen, and everything is unfrozen after the run (a
    notebook that runs many simulations keeps collecting them).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _start_ray(args: dict[str, Any], num_supernodes: int) -> None:
    import ray

    where = args.get("address") or f"this machine ({args.get('num_cpus', 'all')} CPUs)"
    log.info("starting Ray on %s ...", where)  # 3-30 s of silence otherwise
    started = time.perf_counter()
    with _keep_loopback(args.get("_node_ip_address")), ray_tip_silenced():
        ray.init(**args)
    log.info(
        "Ray ready in %.1fs; starting %d clients", time.perf_counter() - started, num_supernodes
    )


def _actor_pool_size(client_resources: dict[str, float]) -> int:
    """How many ClientApp actors Flower's Ray backend will start (its own sizing rule)."""
    from flwr.simulation.ray_transport.ray_actor import pool_size_from_resources

    return int(pool_size_from_resources(client_resources))  # type: ignore[arg-type]


def scratch_client_state(cfg: FDConfig, run_dir: Path) -> tuple[FDConfig, Path | None]:
    """With ``client-state=disk`` and no directory given, keep client state in the run's own
    ``<run dir>/client-state`` and return that directory for removal after the run.

    A directory per run: concurrent runs never share one (in-process runs all have run id 1),
    and the files (47 KB per node for the MLP, 430 KB for the CNN) go away with the run instead
    of piling up in the system temp directory. Resuming does not need them (a resumed run's
    clients start from ``client-checkpoints``).
    """
    if cfg.client_state != "disk" or cfg.client_state_dir:
        return cfg, None
    scratch = run_dir / "client-state"
    return dataclasses.replace(cfg, client_state_dir=str(scratch)), scratch


def run_apps(
    server_app: ServerApp, client_app: ClientApp, num_supernodes: int, sim: SimulationConfig
) -> None:
    """Dispatch to the configured backend."""
    if sim.backend == "local":
        from simulations.local_grid import run_local

        with flower_logs_once(sim.verbose):
            run_local(server_app, client_app, num_supernodes)
    else:
        run_ray(server_app, client_app, num_supernodes, sim)
