"""Every Hydra config composes and validates; the debug experiment runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedkd.config import ConfigError, from_run_config
from simulations.hydra_config import build_run_spec, exit_on_config_error
from simulations.run import CONF_DIR

CONF = Path(CONF_DIR)
METRIC_KEYS = {
    "round",
    "student_accuracy",
    "student_loss",
    "bytes_up",
    "bytes_down",
    "cum_bytes",
    "valid_replies",
    "wall_seconds",
}


def _options() -> list[str]:
    """One override per option of every config group, read from conf/ (new files are covered)."""
    overrides = []
    for group in sorted(p for p in CONF.iterdir() if p.is_dir()):
        # every group is in the defaults list (experiment: null): no '+' needed for any
        overrides += [f"{group.name}={f.stem}" for f in sorted(group.glob("*.yaml"))]
    return overrides


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any dataset load (hub or local) fails the test: building a spec must stay offline."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("building a run spec loaded a dataset")

    import fedkd.data.hub as hub
    import fedkd.data.registry as registry

    monkeypatch.setattr(hub, "_default_loader", forbidden)
    monkeypatch.setattr(registry, "load_hub_splits", forbidden)
    monkeypatch.setattr(registry, "load_digits_splits", forbidden)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_group_under_conf_is_in_the_defaults_list() -> None:
    """``fedkd-sim --help`` lists every group under its config root: each must be one it uses
    (the continual tools' groups live in conf_continual/), and each is declared in the defaults
    list, so ``group=option`` works without '+' (``experiment: null``)."""
    defaults = OmegaConf.load(CONF / "config.yaml")["defaults"]
    declared = {next(iter(entry)) for entry in defaults if not isinstance(entry, str)}
    assert {p.name for p in CONF.iterdir() if p.is_dir()} == declared


def test_old_plus_experiment_spelling_still_works() -> None:
    from simulations.resume import combine_overrides, prepare_argv

    assert prepare_argv(["+experiment=debug", "+fd.round_timeout=9", "+fd.trim_ratio=0.1"]) == [
        "experiment=debug",
        "++fd.round_timeout=9",  # declared now: add-or-override
        "+fd.trim_ratio=0.1",
    ]
    # the declared keys compose with their old spelling, also where a preset lacks them
    cfg = _compose(*prepare_argv(["+fd.round_timeout=9", "strategy=fd",
                                  "+strategy.codistill_min_certainty=0.3"]))  # fmt: skip
    assert cfg.fd.round_timeout == 9 and cfg.strategy.codistill_min_certainty == 0.3
    # a run saved with the old spelling resumes
    assert combine_overrides(["+experiment=debug"], ["fd.num_rounds=3"]) == [
        "experiment=debug",
        "fd.num_rounds=3",
    ]


def test_every_group_has_options() -> None:
    groups = {o.lstrip("+").split("=")[0] for o in _options()}
    assert {
        "dataset",
        "partition",
        "models",
        "strategy",
        "aggregation",
        "simulation",
        "logging",
        "experiment",
    } <= groups


@pytest.mark.parametrize("override", _options())
def test_every_option_composes_and_validates(override: str, no_downloads: None) -> None:
    cfg = _compose(override)
    spec = build_run_spec(cfg, run_dir="/tmp/unused")
    group, option = override.lstrip("+").split("=")
    # The option really took effect where it names an FD field or a section we read.
    if group == "dataset":
        assert spec.fd.dataset == option
    elif group == "aggregation":
        assert spec.fd.aggregation == option
    elif group == "partition":
        assert spec.fd.partition == option
    elif group == "models":
        assert spec.fd.student_model == OmegaConf.select(cfg, "models.student_model")
    elif group == "simulation":
        assert spec.simulation.backend == cfg.simulation.backend
        assert spec.simulation.address == cfg.simulation.address
    elif group == "logging":
        assert spec.logging.mode == cfg.logging.wandb.mode


def test_group_defaults_reach_fdconfig() -> None:
    spec = build_run_spec(_compose("partition=dirichlet", "partition.alpha=0.1", "fd.num_rounds=3"))
    assert (spec.fd.alpha, spec.fd.num_rounds) == (0.1, 3)


def test_unknown_key_names_the_hydra_key() -> None:
    with pytest.raises(ConfigError, match=r"fd\.num_roundz"):
        build_run_spec(_compose("+fd.num_roundz=3"))
    with pytest.raises(ConfigError, match=r"partition\.beta"):
        build_run_spec(_compose("+partition.beta=0.3"))


@pytest.mark.parametrize(
    ("override", "hydra_key"),
    [
        ("partition.alpha=-1", "partition.alpha"),
        ("fd.temperature=0", "fd.temperature"),
        ("aggregation.aggregation=krum", "aggregation.aggregation"),
        ("fd.num_rounds=abc", "fd.num_rounds"),
    ],
)
def test_bad_value_names_the_hydra_key(override: str, hydra_key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_run_spec(_compose(override))
    assert f"Hydra key: {hydra_key}" in str(err.value)


def test_key_set_in_two_groups_is_refused() -> None:
    with pytest.raises(ConfigError, match="set twice"):
        build_run_spec(_compose("+fd.alpha=0.3"))


def test_bad_simulation_and_logging_values_are_refused() -> None:
    with pytest.raises(ValueError, match=r"simulation\.backend"):
        build_run_spec(_compose("simulation.backend=slurm"))
    with pytest.raises(ConfigError, match=r"logging\.wandb\.mode"):
        build_run_spec(_compose("logging.wandb.mode=cloud"))


def test_bad_simulation_values_become_config_errors_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"simulation\.client_cpus"):
        build_run_spec(_compose("simulation.client_cpus=0"))
    with pytest.raises(ConfigError, match=r"unknown config key 'simulation\.bogus'"):
        build_run_spec(_compose("+simulation.bogus=1"))
    with pytest.raises(ConfigError, match=r"logging\.wandb\.colour"):
        build_run_spec(_compose("+logging.wandb.colour=red"))


def test_exit_on_config_error_prints_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        exit_on_config_error("prog", ConfigError("invalid config key 'lr': must be > 0"))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "prog: error: invalid config key 'lr': must be > 0\n"
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")  # asks for the full trace: re-raise
    with pytest.raises(ConfigError):
        exit_on_config_error("prog", ConfigError("x"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("fd.temperature=-1", "invalid config key 'temperature'"),
        ("dataset.dataset=foo", "(Hydra key: dataset.dataset)"),
    ],
)
def test_cli_bad_value_fails_with_one_line_and_no_traceback(
    tmp_path: Path, override: str, message: str
) -> None:
    """``fedkd-sim <bad value>``: exit status 2, one stderr line naming the key, no trace."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.run", override, f"hydra.run.dir={run_dir}"],
        cwd=CONF.parent,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("fedkd-sim: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (run_dir / "partition.json").exists()  # stopped before any work


def test_debug_experiment_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.docs_outputs import committed, comparable, printed_lines
    from simulations.run import print_summary, run_experiment

    cfg = _compose("experiment=debug")
    spec = build_run_spec(cfg, run_dir=str(tmp_path))
    assert spec.simulation.backend == "local" and spec.logging.mode == "disabled"
    summary = run_experiment(spec, OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    print_summary(summary, str(tmp_path))
    # what `fedkd-sim experiment=debug` prints is what docs/simulation.md shows (the committed
    # docs/generated/debug.txt), to the printed precision; only times and the run dir may differ
    assert comparable(printed_lines(capsys.readouterr().out)) == comparable(committed("debug")), (
        "regenerate: PYTHONPATH=. python -m benchmarks.docs_outputs debug"
    )

    for name in (
        "metrics.json",
        "summary.json",
        "run_config.json",
        "partition.png",
        "accuracy_vs_round.png",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert isinstance(metrics, list) and [m["round"] for m in metrics] == [1, 2]
    for row in metrics:
        assert set(row) >= METRIC_KEYS
        assert row["valid_replies"] == spec.fd.num_clients
    assert metrics[-1]["cum_bytes"] == sum(m["bytes_up"] + m["bytes_down"] for m in metrics)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["rounds"] == 2 == summary["rounds"]
    assert on_disk["final_student_accuracy"] == metrics[-1]["student_accuracy"]
    assert from_run_config(json.loads((tmp_path / "run_config.json").read_text())) == spec.fd
    assert not (tmp_path / "wandb").exists()  # logging disabled
    assert spec.fd.client_state == "disk"  # the CLI's default on one machine ...
    assert not (tmp_path / "client-state").exists()  # ... kept in the run dir, removed after


def test_offline_tracker_writes_a_local_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedkd.plots import plot_accuracy_vs_round
    from simulations.tracking import Tracker

    for var in (
        "WANDB_DIR",
        "WANDB_CACHE_DIR",
        "WANDB_CONFIG_DIR",
        "WANDB_DATA_DIR",
        "WANDB_ARTIFACT_DIR",
    ):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    tracker = Tracker(
        mode="offline", project="fedkd-test", name="t", run_dir=tmp_path, config={"lr": 0.1}
    )
    assert tracker.active
    tracker.log({"student_accuracy": 0.5, "status": "ok"}, step=1)
    tracker.step_axis("lwf/seed0/*", "lwf/seed0/task")  # the continual study's per-series axes
    tracker.log({"lwf/seed0/task": 0, "lwf/seed0/avg_acc_seen": 0.9})
    figure = plot_accuracy_vs_round(
        {"student": [{"round": 1, "student_accuracy": 0.5}]}, tmp_path / "a.png"
    )
    tracker.images({"accuracy_vs_round": figure, "missing": tmp_path / "none.png"}, step=1)
    tracker.summary({"final": 0.5})
    tracker.finish()
    tracker.finish()  # idempotent
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(runs[0].glob("*.wandb"))  # the run's event log, ready for `wandb sync`
    assert any(runs[0].glob("files/media/images/accuracy_vs_round*.png"))  # the figure, as an image


def test_online_tracker_without_key_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from simulations.tracking import Tracker

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(ValueError, match="WANDB_API_KEY"):
        Tracker(mode="online")


def test_summary_after_a_resume_covers_every_round(tmp_path: Path) -> None:
    from simulations.run import run_experiment

    first = build_run_spec(_compose("experiment=debug"), run_dir=str(tmp_path))
    run_experiment(first)
    before = json.loads((tmp_path / "metrics.json").read_text())
    longer = build_run_spec(
        _compose("experiment=debug", "fd.num_rounds=3", "fd.resume=true"), run_dir=str(tmp_path)
    )
    summary = run_experiment(longer)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [m["round"] for m in metrics] == [1, 2, 3]
    assert metrics[:2] == before  # replayed from the checkpoint (wall times too), not rerun
    assert summary["rounds"] == 3
    assert summary["final_student_accuracy"] == metrics[-1]["student_accuracy"]
    assert summary["selected_round"] in (1, 2, 3)  # picked on validation over every round
    assert "best_student_accuracy" not in summary  # never a max over test accuracies
    assert summary["cum_bytes"] == metrics[-1]["cum_bytes"]
