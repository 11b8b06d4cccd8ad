"""Resume keeps the run's own configuration and never overwrites the run's saved config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedkd.config import ConfigError
from simulations.resume import combine_overrides, merge_resume, prepare_argv, resume_dir
from simulations.run import CONF_DIR

SAVED = {
    "fd": {"num_rounds": 6, "lr": 0.1, "resume": False},
    "simulation": {"backend": "local", "verbose": False},
    "logging": {"wandb": {"mode": "disabled"}},
}


def test_defaults_of_todays_command_line_do_not_leak_into_a_resume() -> None:
    # the first run had no overrides; today's defaults differ from the saved run (Ray, 10 rounds)
    base = {"fd": {"num_rounds": 10, "lr": 0.1, "resume": False}, "simulation": {"backend": "ray"}}
    requested = {
        "fd": {"num_rounds": 10, "lr": 0.1, "resume": True},
        "simulation": {"backend": "ray"},
    }
    effective = merge_resume(SAVED, base, requested)
    assert effective["simulation"]["backend"] == "local"
    assert effective["fd"]["num_rounds"] == 6
    assert effective["fd"]["resume"] is True
    assert SAVED["fd"]["resume"] is False  # the saved config is not mutated


def test_allowed_changes_reach_the_resumed_config() -> None:
    base = {"fd": {"num_rounds": 6}, "logging": {"wandb": {"mode": "disabled"}}}
    requested = {"fd": {"num_rounds": 9}, "logging": {"wandb": {"mode": "offline"}}}
    effective = merge_resume(SAVED, base, requested)
    assert effective["fd"]["num_rounds"] == 9
    assert effective["logging"]["wandb"]["mode"] == "offline"
    assert effective["fd"]["lr"] == 0.1


@pytest.mark.parametrize(
    ("base", "requested", "key"),
    [
        ({"fd": {"lr": 0.1}}, {"fd": {"lr": 0.5}}, "'fd.lr'"),
        (
            {"simulation": {"backend": "local"}},
            {"simulation": {"backend": "ray"}},
            "'simulation.backend'",
        ),
        ({"fd": {"num_rounds": 6}}, {"fd": {"num_rounds": 4}}, "'fd.num_rounds'"),
    ],
)
def test_changing_the_run_on_resume_is_refused_naming_the_key(
    base: dict, requested: dict, key: str
) -> None:
    with pytest.raises(ConfigError, match=key):
        merge_resume(SAVED, base, requested)


def test_restating_the_runs_own_value_is_accepted() -> None:
    effective = merge_resume(SAVED, {"fd": {"lr": 0.3}}, {"fd": {"lr": 0.1}})
    assert effective["fd"]["lr"] == 0.1


def test_argv_of_a_resume_keeps_hydra_from_rewriting_the_run(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("fd: {}\n")
    argv = [f"hydra.run.dir={tmp_path}", "fd.resume=true"]
    assert resume_dir(argv) == tmp_path
    assert prepare_argv(argv)[-1] == "hydra.output_subdir=null"
    assert prepare_argv([f"hydra.run.dir={tmp_path}"]) == [f"hydra.run.dir={tmp_path}"]
    empty = tmp_path / "new"
    assert resume_dir([f"hydra.run.dir={empty}", "fd.resume=true"]) is None
    assert combine_overrides(["experiment=debug", "fd.lr=0.2"], ["experiment=debug"]) == [
        "fd.lr=0.2",
        "experiment=debug",
    ]


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulations.run", *args],
        cwd=Path(CONF_DIR).parent,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


def test_cli_resume_runs_the_saved_config_and_keeps_its_files(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = _sim("experiment=debug", "fd.lr=0.05", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    saved = (run / "config.yaml").read_text()
    overrides = (run / ".hydra" / "overrides.yaml").read_text()

    refused = _sim(f"hydra.run.dir={run}", "fd.resume=true", "fd.lr=0.5")
    assert refused.returncode == 2
    assert refused.stderr.startswith("fedkd-sim: error: resume cannot change config key 'fd.lr'")
    assert len(refused.stderr.strip().splitlines()) == 1

    # no experiment=debug, no simulation=local: the run's own config says so
    resumed = _sim(f"hydra.run.dir={run}", "fd.resume=true", "fd.num_rounds=3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (run / "config.yaml").read_text() == saved
    assert (run / ".hydra" / "overrides.yaml").read_text() == overrides
    assert "fd.num_rounds=3" in (run / "resume-1.overrides.yaml").read_text()
    effective = (run / "resume-1.config.yaml").read_text()
    assert "backend: local" in effective and "lr: 0.05" in effective
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert not (run / "wandb").exists()  # the run's logging=disabled, not today's default
