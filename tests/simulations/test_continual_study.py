"""The forgetting-study tool: config composition, typed conversion, and a tiny end-to-end run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from fedkd.continual import LwFConfig, accuracy, backward_transfer, forgetting
from simulations.continual_study import ConfigKeyError, run, to_tool_config

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf_continual"
TINY = [
    "seeds=[0,1]",
    "train.epochs=1",
    "sequence.num_tasks=3",
    "sequence.classes_per_task=2",
    "sequence.max_train_per_task=30",
    "logging.wandb.mode=disabled",
    "progress=false",
]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="continual", overrides=list(overrides))


def _group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / "continual" / name).glob("*.yaml"))


@pytest.mark.parametrize("sequence", _group("sequence"))
def test_every_sequence_config_converts(sequence: str) -> None:
    tool = to_tool_config(_compose(f"continual/sequence={sequence}"))
    assert tool.study.sequence.num_tasks >= 2
    assert [s.label for s in tool.study.learners] == ["finetune", "lwf", "joint"]


@pytest.mark.parametrize("learner", _group("learner"))
def test_every_learner_config_converts(learner: str) -> None:
    tool = to_tool_config(_compose(f"+continual/learner@learners.extra={learner}"))
    spec = next(s for s in tool.study.learners if s.label == "extra")
    assert spec.name == learner


def test_defaults_are_the_documented_setting_and_lwf_paper_defaults() -> None:
    tool = to_tool_config(_compose())
    study = tool.study
    assert (study.sequence.kind, study.sequence.scenario) == ("split", "task_il")
    assert study.model_options == {"hidden_sizes": (16,)} and study.train.epochs == 10
    assert tool.wandb.mode == "offline"
    lwf = next(s for s in study.learners if s.name == "lwf")
    assert LwFConfig(**lwf.options) == LwFConfig()  # the YAML repeats the dataclass defaults


def test_variants_can_be_added_and_learners_removed() -> None:
    cfg = _compose(
        "+continual/learner@learners.lwf_t2=lwf",
        "learners.lwf_t2.t2_scaling=true",
        "~continual/learner@learners.joint",
    )
    specs = {s.label: s for s in to_tool_config(cfg).study.learners}
    assert set(specs) == {"finetune", "lwf", "lwf_t2"}
    assert specs["lwf_t2"].options["t2_scaling"] is True
    assert specs["lwf"].options["t2_scaling"] is False


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("+sequence.shuffled=true", "sequence.shuffled"),
        ("+learners.lwf.lamda=2", "learners.lwf"),
        ("learners.lwf.distill=new", "learners.lwf"),
        ("logging.wandb.mode=cloud", "logging.wandb.mode"),
        ("train.lr=-1", "train"),
        ("+unknown=1", "unknown"),
        ("sequence.scenario=domain_il", "sequence"),
        ("model.name=transformer", "study"),
        ("forgetting_since=later", "study"),
    ],
)
def test_bad_keys_fail_before_any_work_and_name_their_path(override: str, path: str) -> None:
    with pytest.raises(ConfigKeyError, match=path.replace(".", r"\.")):
        to_tool_config(_compose(override))


def test_tiny_study_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = run(_compose(*TINY), tmp_path)
    for name in ("metrics.json", "config.yaml"):
        assert (tmp_path / name).is_file()
    learners = ["finetune", "lwf", "joint"]
    for label in learners:
        assert (tmp_path / f"heatmap_{label}.png").stat().st_size > 0
        assert (tmp_path / f"accuracy_over_tasks_{label}.png").stat().st_size > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["learners"] == learners and metrics["seeds"] == [0, 1]
    for key in ("acc_matrix", "acc", "bwt", "fwt", "forgetting", "intransigence", "summary"):
        assert set(metrics[key]) == set(learners), key
    for label in learners:
        matrices = metrics["acc_matrix"][label]
        assert np.asarray(matrices).shape == (2, 3, 3)  # (seeds, T, T)
        # the per-seed numbers are the metrics of the stored matrices
        assert metrics["acc"][label] == pytest.approx([accuracy(r) for r in matrices])
        assert metrics["bwt"][label] == pytest.approx([backward_transfer(r) for r in matrices])
        assert metrics["forgetting"][label] == pytest.approx([forgetting(r) for r in matrices])
        assert np.asarray(metrics["intransigence"][label]).shape == (2, 3)
        acc = metrics["summary"][label]["acc"]
        assert acc["mean"] == pytest.approx(np.mean(metrics["acc"][label]))
        assert acc["std"] == pytest.approx(np.std(metrics["acc"][label], ddof=1))
    # joint is the reference: its own intransigence is zero, a* is its diagonal
    assert np.allclose(metrics["intransigence"]["joint"], 0.0)
    assert metrics["reference_acc"][0] == pytest.approx(np.diag(metrics["acc_matrix"]["joint"][0]))
    assert "max_train_per_task: 30" in (tmp_path / "config.yaml").read_text()
    out = capsys.readouterr().out
    assert f"run directory: {tmp_path.resolve()}" in out and "| lwf |" in out


def test_reference_joint_runs_even_when_not_reported(tmp_path: Path) -> None:
    cfg = _compose(*TINY, "seeds=[0]", "plots=false", "~continual/learner@learners.joint")
    results = run(cfg, tmp_path)
    assert results["learners"] == ["finetune", "lwf"] and results["reference"] == "_joint_reference"
    assert len(results["intransigence"]["lwf"][0]) == 3
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_module_entry_point_runs_with_hydra(tmp_path: Path) -> None:
    """``python -m simulations.continual_study`` composes conf_continual/continual.yaml and
    writes the run directory it prints."""
    run_dir = tmp_path / "run"
    args = [*TINY, "seeds=[0]", "plots=false", "threads=1", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.continual_study", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "metrics.json").is_file() and (run_dir / "config.yaml").is_file()
    assert str(run_dir) in proc.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learners.lwf.lam=-1", "'learners.lwf': LwFConfig.lam"),
        ("train.lr=-1", "'train': TrainConfig.lr"),
    ],
)
def test_module_entry_point_bad_value_fails_with_one_line(
    tmp_path: Path, override: str, message: str
) -> None:
    """A bad value: exit status 2, one stderr line naming the key, no traceback, no run."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "simulations.continual_study", override, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("continual_study: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "config.yaml").exists()


def test_a_rotated_sequence_with_one_angle_fails_before_any_work() -> None:
    """Issue 15 (e): it used to pass validation, train, then fail in the metrics."""
    cfg = _compose("continual/sequence=rotated_digits", "sequence.angles=[30]")
    with pytest.raises(ConfigKeyError, match=r"sequence\.angles gives 1 task"):
        to_tool_config(cfg)


def test_forgetting_since_reaches_the_study() -> None:
    assert to_tool_config(_compose()).study.forgetting_since == "start"
    assert to_tool_config(_compose("forgetting_since=learned")).study.forgetting_since == "learned"
