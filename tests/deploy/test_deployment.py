"""A real Flower deployment on 127.0.0.1: SuperLink, SuperNodes and ``flwr run`` of this repo.

The commands are the ones docs/deploy.md gives (insecure; TLS with SuperNode authentication).
Each run is small (2 clients, 1-2 rounds, one epoch) because SuperNodes poll every ~3 s and
every message starts a fresh ClientApp process; the assertions are on what the ServerApp wrote
to ``<run-dir>/metrics.json``, i.e. that federated distillation actually ran over the wire.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fedkd.config import FDConfig, to_run_config
from fedkd.device_data import write_partitions, write_private_npz

from .harness import REPO, Federation, deployment, free_port, make_certs, stage_app

SMALL = "local-epochs=1 server-epochs=1 num-clients=2 min-train-nodes=2 client-models='mlp'"
DEMO = FDConfig(num_clients=2)  # the config whose partitions the devices' .npz files hold


def _run_config(run_dir: Path, rounds: int) -> str:
    return f"{SMALL} num-rounds={rounds} run-dir='{run_dir}'"


def _assert_student_metrics(rounds: list[dict], num_rounds: int, valid: int) -> None:
    assert [r["round"] for r in rounds] == list(range(1, num_rounds + 1))
    for r in rounds:
        assert r["status"] == "ok", r
        assert r["valid_replies"] == valid, r
        assert math.isfinite(r["student_accuracy"]) and 0.0 <= r["student_accuracy"] <= 1.0
        assert math.isfinite(r["student_loss"]) and r["student_loss"] > 0.0
        assert r["bytes_up"] > 0 and r["bytes_down"] > 0  # soft labels up, requests down
    cum = [r["cum_bytes"] for r in rounds]
    assert cum == sorted(cum) and cum[0] > 0


# --------------------------------------------------------------------------- fast checks
def test_pyproject_run_config_is_fdconfig_defaults() -> None:
    """``flwr run --run-config`` only overrides keys the app declares: declare all of them."""
    app = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert app["config"] == to_run_config(FDConfig())
    assert "federations" not in tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the requirements pull in, by installed metadata (offline)."""
    seen: set[tuple[str, tuple[str, ...]]] = set()
    stack = list(roots)
    while stack:
        req = stack.pop()
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            specs = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for spec in map(Requirement, specs):
            extras = {"", *req.extras}
            if spec.marker is None or any(spec.marker.evaluate({"extra": e}) for e in extras):
                stack.append(spec)
    return {name for name, _ in seen}


LEAN_DEVICE_EXCLUDES = {
    "flwr-datasets",
    "datasets",
    "pyarrow",
    "pandas",
    "matplotlib",
    "huggingface-hub",
    "tqdm",
}
DEVICE_DATA = """
import sys
import numpy as np
import fedkd.client_app
import strategies.server_app
from fedkd.client import load_client_data
from fedkd.config import FDConfig
from fedkd.data.optional import MissingDataExtra
from fedkd.device_data import load_device_data, write_private_npz

cfg = FDConfig(num_clients=2, local_epochs=1)
rng = np.random.default_rng(0)
path = write_private_npz(sys.argv[1], rng.random((64, 1, 8, 8), dtype=np.float32),
                         rng.integers(0, 10, 64))
data = load_device_data(cfg, {"data-path": str(path)})
print("rows", len(data.train_x), "public", len(data.public_x))
try:
    load_client_data(cfg, 0, 2)  # a simulated partition: the data extra, named in one line
except MissingDataExtra as error:
    print("simulated:", error)
"""


def test_device_install_is_lean_and_reads_its_own_data(tmp_path: Path) -> None:
    """`pip install "fedkd[client]"` pulls no Ray, Hydra, W&B, plots or data extra; on the
    base install the apps import (ServerApp, ClientApp) and a device loads its own .npz with
    the package's public set (the deploy tests train on it over the wire);
    a simulated partition there fails with one line naming the extra. One subprocess, with the
    excluded packages shadowed by ones whose import fails (as if not installed)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + project["optional-dependencies"]["client"]
    closure = _closure([Requirement(s) for s in specs])
    assert {"flwr", "torch", "scikit-learn"} <= closure  # the walk found the real tree
    assert not {"ray", "hydra-core", "omegaconf", "wandb"} & closure
    # nor the simulated partitions' and hub datasets' stack, nor plots (issue 12: 367 MiB)
    assert not LEAN_DEVICE_EXCLUDES & closure, sorted(LEAN_DEVICE_EXCLUDES & closure)

    blocked = tmp_path / "not-installed"
    for name in (
        "flwr_datasets",
        "datasets",
        "pyarrow",
        "pandas",
        "matplotlib",
        "hydra",
        "omegaconf",
        "ray",
        "wandb",
        "tqdm",
        "simulations",
    ):
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ModuleNotFoundError('{name}')")
    proc = subprocess.run(
        [sys.executable, "-c", DEVICE_DATA, str(tmp_path / "own.npz")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{blocked}{os.pathsep}{REPO}"},
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rows 64 public 539" in proc.stdout  # own rows; the public set from the package
    assert "simulated: flwr_datasets is not installed" in proc.stdout
    assert "pip install 'fedkd[data]'" in proc.stdout


@pytest.mark.slow
def test_fab_ships_only_the_apps_code(tmp_path: Path) -> None:
    """The FAB `flwr run .` sends holds the two apps' packages, not .venv, tests or outputs;
    the deployments below run the copy stage_app makes, whose FAB is the same bytes."""
    from flwr.cli.build import build_fab_from_disk

    fab = build_fab_from_disk(REPO)
    assert build_fab_from_disk(stage_app(tmp_path / "app")) == fab
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"pyproject.toml", "fedkd", "strategies", ".info"}, top
    assert {"fedkd/client_app.py", "strategies/server_app.py", "fedkd/device_data.py"} <= set(names)
    assert len(fab) < 2 * 2**20  # Flower refuses FABs over 10 MB


# --------------------------------------------------------------------------- deployments
# Each launcher runs one deployment to the end (tests/deploy/conftest.py starts the selected
# ones side by side) and returns what its test asserts on.
@dataclass
class Outcome:
    """``flwr run``'s exit code and output, the logs' ends and the run's metrics.json rows."""

    code: int
    output: str
    tail: str
    rounds: list[dict] | None  # None: the ServerApp wrote no metrics.json
    outsider_exit: int | None = None
    outsider_log: str = ""


def _outcome(federation: Federation, code: int, output: str, run_dir: Path) -> Outcome:
    path = run_dir / "metrics.json"
    rounds = json.loads(path.read_text()) if path.exists() else None
    return Outcome(code, output, federation.tail(), rounds)


def _rounds(outcome: Outcome) -> list[dict]:
    assert outcome.code == 0, f"{outcome.output}\n{outcome.tail}"
    assert outcome.rounds is not None, "the ServerApp wrote no metrics.json"
    return outcome.rounds


@deployment("insecure")
def insecure_fd_run(federation: Federation) -> Outcome:
    data = write_partitions(DEMO, 2, federation.root / "device-data")
    port = free_port()
    federation.superlink(port)
    federation.supernode("supernode-0", port, f"data-path='{data[0]}' partition-id=0")
    federation.supernode("supernode-1", port, "partition-id=1 num-partitions=2")
    federation.connection("loopback", port)
    run_dir = federation.root / "run"
    code, output = federation.flwr_run("loopback", _run_config(run_dir, rounds=2))
    return _outcome(federation, code, output, run_dir)


@pytest.mark.slow
@pytest.mark.deployment("insecure")
def test_insecure_federation_runs_fd_to_completion(deployed: Outcome) -> None:
    """Two SuperNodes (one reading its own .npz, one a demo partition), two FD rounds."""
    _assert_student_metrics(_rounds(deployed), num_rounds=2, valid=2)
    assert re.search(r"round\s+2/2", deployed.output)  # progress reached the terminal


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


@deployment("tls-auth")
def tls_auth_run_with_a_bad_device(federation: Federation) -> Outcome:
    tmp = federation.root
    certs = make_certs(tmp / "certs")
    bad = tmp / "bad.npz"
    write_private_npz(bad, np.zeros((4, 1, 8, 8)), np.array([0, 1, 2, 42]))  # label 42: no class
    keys = [_ssh_keypair(tmp, f"supernode-{i}") for i in range(3)]
    port = free_port()
    federation.superlink(port, certs=certs, auth=True)
    federation.connection("loopback-auth", port, certs=certs)
    for i, (_, public) in enumerate(keys[:2]):
        code, out = federation.cli(
            ["flwr", "supernode", "register", str(public), "loopback-auth"],
            timeout=60,
            name=f"register-{i}",
        )
        assert code == 0 and "registered successfully" in out, out
    node_configs = ["partition-id=0 num-partitions=2", f"data-path='{bad}' partition-id=1"]
    for i, ((private, _), config) in enumerate(zip(keys[:2], node_configs, strict=True)):
        federation.supernode(f"supernode-{i}", port, config, certs=certs, auth_key=private)
    outsider = federation.supernode(  # its key was never registered
        "outsider", port, "partition-id=0 num-partitions=2", certs=certs, auth_key=keys[2][0]
    )
    run_dir = tmp / "run"
    code, output = federation.flwr_run("loopback-auth", _run_config(run_dir, rounds=1))
    outcome = _outcome(federation, code, output, run_dir)
    outcome.outsider_exit = outsider.popen.poll()  # read while the SuperLink still runs
    outcome.outsider_log = outsider.log.read_text(errors="replace")
    return outcome


@pytest.mark.slow
@pytest.mark.deployment("tls-auth")
def test_tls_authenticated_supernodes_and_a_device_with_bad_data(deployed: Outcome) -> None:
    """TLS everywhere plus SuperNode authentication (one deployment checks both): registered
    keys join, an unregistered one is kept out; one registered device's data file is
    malformed, so its reply is rejected, the round goes on with the other, and the device's
    error (naming its file) reaches the server."""
    (record,) = _rounds(deployed)
    _assert_student_metrics([record], num_rounds=1, valid=1)
    assert record["rejected_reasons"] == {"client-error": 1}, record
    assert "bad.npz" in deployed.output, deployed.output  # the server logs the device's error
    assert record["missing"] == 0  # only the two registered nodes were ever connected
    assert deployed.outsider_exit not in (None, 0)  # the SuperLink refused it; it gave up
    assert "Failed to activate SuperNode" in deployed.outsider_log
