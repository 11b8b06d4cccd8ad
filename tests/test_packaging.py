"""The wheel ships the Hydra configs; the console scripts say what to install without Hydra."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here (no build backend?): {proc.stderr[-500:]}")
    (built,) = out.glob("fedkd-*.whl")
    return built


def test_wheel_ships_every_config_file(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"simulations/{root}/{p.relative_to(ROOT / root).as_posix()}"
        for root in ("conf", "conf_continual")
        for p in (ROOT / root).rglob("*.yaml")
    }
    assert {"simulations/conf/config.yaml", "simulations/conf_continual/fcl.yaml"} <= expected
    assert expected <= names, sorted(expected - names)[:5]


def test_installed_wheel_runs_fedkd_sim_with_its_packaged_configs(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # the unpacked wheel comes first on the path: the checkout's conf/ is not reachable from it
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "0"}
    where = subprocess.run(
        [sys.executable, "-c", "import simulations.paths as p; print(p.CONF_DIR)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert where.stdout.strip() == str(site / "simulations" / "conf"), where.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.run", "experiment=debug", "--cfg", "job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "num_clients: 4" in proc.stdout  # conf/experiment/debug.yaml, read from the wheel


def test_console_scripts_go_through_the_hydra_check() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "fedkd-sim": "simulations.cli:sim",
        "fedkd-fcl": "simulations.cli:fcl",
        "fedkd-compare": "simulations.cli:compare",
    }


def test_without_hydra_fedkd_sim_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from simulations import cli

    monkeypatch.setitem(sys.modules, "hydra", None)  # import hydra → ImportError
    with pytest.raises(SystemExit) as info:
        cli.sim()
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("fedkd-sim: error: hydra is not installed") and "fedkd[sim]" in err
    assert len(err.strip().splitlines()) == 1
