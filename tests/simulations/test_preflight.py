"""Config that cannot work fails before any work: one line naming the key, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

from fedkd.config import ConfigError, FDConfig
from simulations.engine import SimulationConfig
from simulations.hydra_config import build_run_spec, flatten_fd_groups
from simulations.run import CONF_DIR, preflight


def _spec(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return build_run_spec(cfg), flatten_fd_groups(cfg)[1]


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigError, match="'seed'"):
        FDConfig(seed=-1)


@pytest.mark.parametrize("key", ["ray_num_cpus", "ray_num_gpus"])
def test_negative_ray_resources_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match=rf"'simulation\.{key}'"):
        SimulationConfig(**{key: -2})
    with pytest.raises(ValueError, match=r"'simulation\.ray_num_cpus'"):
        SimulationConfig(ray_num_cpus=0)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "strategy.topk=11",
            "'topk': 11 exceeds the 10 classes of dataset 'digits' (Hydra key: strategy.topk)",
        ),
        ("fd.byzantine_target=10", "'byzantine-target': 10 is not a class"),
    ],
)
def test_values_outside_the_datasets_classes_are_refused(override: str, message: str) -> None:
    spec, paths = _spec("experiment=debug", override)
    with pytest.raises(ConfigError) as info:
        preflight(spec, paths)
    assert message in str(info.value)


def test_the_largest_class_index_is_accepted() -> None:
    preflight(*_spec("experiment=debug", "strategy.topk=10", "fd.byzantine_target=9"))


@pytest.mark.parametrize("override", ["fd.client_device=cuda", "fd.device=cuda"])
def test_cuda_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch, override: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    spec, paths = _spec("experiment=debug", override)
    with pytest.raises(ConfigError, match=r"'(client-)?device': 'cuda' but torch sees no CUDA"):
        preflight(spec, paths)


def test_gpu_shares_without_a_gpu_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError, match=r"'simulation\.client_gpus'"):
        preflight(*_spec("simulation=ray_gpu"))
    with pytest.raises(ConfigError, match=r"'simulation\.client_cpus'"):
        preflight(*_spec("simulation.client_cpus=4", "simulation.ray_num_cpus=2"))


def test_cli_ray_gpu_without_gpu_fails_at_once_with_one_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.run", "simulation=ray_gpu", f"hydra.run.dir={run_dir}"],
        cwd=Path(CONF_DIR).parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("fedkd-sim: error: invalid config key 'simulation.client_gpus'")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (run_dir / "partition.json").exists()


def test_unreachable_hub_switches_to_the_cache_only(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedkd.data.hub as hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")  # so that the test's changes are undone afterwards
        monkeypatch.delenv(var)
    fake = SimpleNamespace(HF_HUB_OFFLINE=False, HF_DATASETS_OFFLINE=False)
    monkeypatch.setitem(sys.modules, "datasets.config", fake)
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: True)
    hub._go_offline_if_unreachable()
    assert "HF_HUB_OFFLINE" not in os.environ and fake.HF_HUB_OFFLINE is False
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: False)
    hub._go_offline_if_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert fake.HF_HUB_OFFLINE is True and fake.HF_DATASETS_OFFLINE is True


def test_explicit_offline_setting_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import fedkd.data.hub as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hub, "_hub_reachable", lambda timeout=3.0: False)
    hub._go_offline_if_unreachable()
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_a_run_without_a_successful_round_is_a_failure() -> None:
    from simulations.run import no_round_succeeded
    from strategies.fed_distill import RoundRecord

    def row(n: int, status: str) -> RoundRecord:
        return RoundRecord(n, 0.1, 2.3, None, None, 0, 0, 0, 0, 0, status=status)

    skipped = "skipped: 0 valid replies < min-replies=1"
    assert (
        no_round_succeeded([row(1, skipped), row(2, skipped)])
        == f"no round succeeded; round 2 {skipped}"
    )
    assert no_round_succeeded([]) is not None
    assert no_round_succeeded([row(1, skipped), row(2, "ok")]) is None


def test_cli_run_where_every_round_fails_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "simulations.run",
            "experiment=debug",
            "fd.fault_crash_train=1.0",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=Path(CONF_DIR).parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "fedkd-sim: error: no round completed" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
