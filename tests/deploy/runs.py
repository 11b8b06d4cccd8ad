"""The real Flower runs the slow deploy tests assert on, started together and waited for once.

Four independent federations, each on its own free ports, ``FLWR_HOME`` and run dir:

* ``insecure``: two SuperNodes (one reading its own .npz, one a demo partition), two FD rounds;
* ``tls``: TLS everywhere, one device's data file malformed (label 42: no such class), 1 round;
* ``auth``: TLS + SuperNode authentication, two registered keys and one never registered;
* ``local-simulation``: ``flwr run .`` on Flower's local simulation federation
  (docs/simulation.md), against a local SuperLink the test starts itself.

The commands are the ones docs/deploy.md and docs/simulation.md give. Most of a run's wall time
is SuperNodes polling (~3 s) and ClientApp processes starting, so :func:`start_and_wait`
launches every ``flwr run`` before waiting for any: together they take little longer than the
slowest alone (while the CPUs allow). Each test then asserts on its own run only; a run whose
setup failed fails (with its own error) only the test that owns it. Every process is ended by
:meth:`Federation.close`, which touches only the PIDs its federation started.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedkd.config import FDConfig
from fedkd.device_data import write_partitions, write_private_npz

from .harness import REPO, RUN_TIMEOUT, Certs, Federation, Started, free_port, wait_all

SMALL = "local-epochs=1 server-epochs=1 num-clients=2 min-train-nodes=2 client-models='mlp'"
DEMO = FDConfig(num_clients=2)  # the config whose partitions the devices' .npz files hold
LOCAL_RUN_CONFIG = (
    "num-rounds=1 num-clients=3 local-epochs=1 server-epochs=1 "
    "client-models='mlp' student-model='mlp'"
)


@dataclass
class Run:
    """One federation, its `flwr run`'s result and what its test inspects afterwards."""

    federation: Federation
    run_dir: Path
    code: int = -1
    output: str = ""
    error: BaseException | None = None
    outsider: Started | None = None  # the auth deployment's unregistered SuperNode

    def result(self) -> tuple[int, str]:
        """(exit code, output) of the `flwr run`; re-raises the run's setup error."""
        if self.error is not None:
            raise self.error
        return self.code, self.output


def run_config(run_dir: Path, rounds: int) -> str:
    """The deployments' small FD run (2 clients, one epoch), writing into ``run_dir``."""
    return f"{SMALL} num-rounds={rounds} run-dir='{run_dir}'"


def _start_insecure(fed: Federation, run: Run, certs: Certs) -> Started:
    data = write_partitions(DEMO, 2, fed.root / "device-data")
    port = free_port()
    fed.superlink(port)
    fed.supernode("supernode-0", port, f"data-path='{data[0]}' partition-id=0")
    fed.supernode("supernode-1", port, "partition-id=1 num-partitions=2")
    fed.connection("loopback", port)
    return fed.start_flwr_run("loopback", run_config(run.run_dir, rounds=2))


def _start_tls(fed: Federation, run: Run, certs: Certs) -> Started:
    bad = fed.root / "bad.npz"
    write_private_npz(bad, np.zeros((4, 1, 8, 8)), np.array([0, 1, 2, 42]))
    port = free_port()
    fed.superlink(port, certs=certs)
    fed.supernode("supernode-0", port, "partition-id=0 num-partitions=2", certs=certs)
    fed.supernode("supernode-1", port, f"data-path='{bad}' partition-id=1", certs=certs)
    fed.connection("loopback-tls", port, certs=certs)
    return fed.start_flwr_run("loopback-tls", run_config(run.run_dir, rounds=1))


def _start_auth(fed: Federation, run: Run, certs: Certs) -> Started:
    keys = [_ssh_keypair(fed.root, f"supernode-{i}") for i in range(3)]
    port = free_port()
    fed.superlink(port, certs=certs, auth=True)
    fed.connection("loopback-auth", port, certs=certs)
    for i, (_, public) in enumerate(keys[:2]):
        code, out = fed.cli(
            ["flwr", "supernode", "register", str(public), "loopback-auth"],
            timeout=60,
            name=f"register-{i}",
        )
        assert code == 0 and "registered successfully" in out, out
    for i, (private, _) in enumerate(keys[:2]):
        config = f"partition-id={i} num-partitions=2"
        fed.supernode(f"supernode-{i}", port, config, certs=certs, auth_key=private)
    run.outsider = fed.supernode(  # its key was never registered
        "outsider", port, "partition-id=0 num-partitions=2", certs=certs, auth_key=keys[2][0]
    )
    return fed.start_flwr_run("loopback-auth", run_config(run.run_dir, rounds=1))


def _start_local_simulation(fed: Federation, run: Run, certs: Certs) -> Started:
    """The local SuperLink ``flwr run`` would start, on free ports inside ``FLWR_HOME``, so
    that the federation owns and ends it; ``flwr run`` finds it on the ports named by
    ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``/``FLWR_LOCAL_CONTROL_API_PORT``.
    ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` keeps the pinned stack (no ``uv sync``).
    """
    http_port, control_port = free_port(), free_port()
    fed.env.update(
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    )
    superlink = fed.start(
        "local-superlink",
        [
            "flower-superlink",
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--database",
            str(fed.home / "state.db"),
        ],
    )
    fed._wait_for_port(superlink, http_port)
    args = ["flwr", "run", str(REPO), "--stream", "--run-config", LOCAL_RUN_CONFIG]
    return fed.start("flwr-run", [*args, "--federation-config", "num-supernodes=3"])


STARTS: dict[str, Callable[[Federation, Run, Certs], Started]] = {
    "insecure": _start_insecure,
    "tls": _start_tls,
    "auth": _start_auth,
    "local-simulation": _start_local_simulation,
}


def start_and_wait(
    tmp_path_factory: pytest.TempPathFactory, certs: Certs, into: dict[str, Run]
) -> None:
    """Start every run in :data:`STARTS`, then wait for all their `flwr run`s together.

    Runs go into ``into`` as soon as their federation exists, so that the caller can close
    every federation afterwards, also when this raises.
    """
    running: list[tuple[Run, Started]] = []
    for name, start in STARTS.items():
        root = tmp_path_factory.mktemp(f"run-{name}")
        into[name] = run = Run(Federation(root), root / "run")
        try:
            running.append((run, start(run.federation, run, certs)))
        except Exception as error:  # reported by this run's own test
            run.error = error
    results = wait_all([(run.federation, proc) for run, proc in running], RUN_TIMEOUT)
    for (run, _), (code, output) in zip(running, results, strict=True):
        run.code, run.output = code, output


def _ssh_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """An EC P-384 key pair in OpenSSH format, what `ssh-keygen -t ecdsa -b 384` writes."""
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    private.chmod(0o600)
    return private, public
