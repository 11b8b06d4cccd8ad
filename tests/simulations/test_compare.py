"""``fedkd-compare``: groups by config without the seed, labels by what differs, bands, refs.

The run directories are written in the formats a run writes (``metrics.json`` from
``RoundRecord.as_dict``, ``config.yaml`` from a real composition, ``summary.json``): the
numbers are chosen so the expected means and spreads are exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fedkd.plots import human_bytes
from simulations.compare import differing_labels, main
from simulations.paths import CONF_DIR
from simulations.tracking import names_from_overrides
from strategies.fed_distill import RoundRecord


def _config(*overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        tree = OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=True)
    assert isinstance(tree, dict)
    return tree


def _write_run(path: Path, config: dict, accuracies: list[float], refs: float | None) -> None:
    path.mkdir(parents=True)
    step = 1000 if config["strategy"]["strategy"] == "fd" else 100_000
    records = [
        RoundRecord(
            round=r,
            student_accuracy=acc,
            student_loss=1.0,
            client_accuracy=None,
            teacher_accuracy=None,
            bytes_up=step,
            bytes_down=0,
            cum_bytes=step * r,
            valid_replies=2,
            rejected=0,
            missing=0,
            wall_seconds=0.1,
        ).as_dict()
        for r, acc in enumerate(accuracies, start=1)
    ]
    (path / "metrics.json").write_text(json.dumps(records))
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"final_student_accuracy": accuracies[-1]}
    if refs is not None:
        summary |= {
            "local_only_accuracy": refs - 0.3,
            "centralized_accuracy": refs,
            "public_labels_accuracy": refs - 0.1,
        }
    (path / "summary.json").write_text(json.dumps(summary))


def test_a_sweep_and_a_run_overlay_with_seed_bands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fd = _config("aggregation=median")
    sweep = tmp_path / "multirun"
    for seed, accs in ((0, [0.5, 0.7]), (1, [0.7, 0.9])):
        fd["fd"]["seed"] = seed
        _write_run(sweep / f"{seed}_fd.seed={seed}", fd, accs, refs=0.95)
    _write_run(tmp_path / "fedavg", _config("strategy=fedavg"), [0.4, 0.6], refs=0.95)
    out = tmp_path / "cmp"

    assert main([str(sweep), str(tmp_path / "fedavg"), "--out", str(out)]) == 0

    rows = {row["label"]: row for row in json.loads((out / "compare.json").read_text())}
    assert set(rows) == {"FD aggregation=median (2 seeds)", "FedAvg"}
    fd_row = rows["FD aggregation=median (2 seeds)"]
    assert fd_row["final_accuracy_mean"] == pytest.approx(0.8)
    assert fd_row["final_accuracy_std"] == pytest.approx(0.1)
    assert fd_row["centralized_accuracy"] == pytest.approx(0.95)
    assert rows["FedAvg"]["cum_mib"] == pytest.approx(200_000 / 2**20)
    for name in ("accuracy_vs_round.png", "accuracy_vs_bytes.png"):
        assert (out / name).stat().st_size > 10_000
    assert "FD aggregation=median (2 seeds)" in capsys.readouterr().out


def test_labels_name_what_differs_within_a_strategy() -> None:
    base = {
        "strategy.strategy": "'fd'",
        "aggregation.aggregation": "'mean'",
        "partition.alpha": "0.5",
    }
    fedavg = {**base, "strategy.strategy": "'fedavg'", "strategy.co_distillation": "False"}
    median = {**base, "aggregation.aggregation": "'median'"}
    assert differing_labels([base, median, fedavg]) == [
        "FD aggregation=mean",
        "FD aggregation=median",
        "FedAvg",
    ]
    assert differing_labels([base]) == ["FD aggregation=mean"]


def test_no_run_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fedkd-compare: error: no run (metrics.json) at or below {tmp_path}"]


def test_traffic_ticks_in_human_units() -> None:
    assert [human_bytes(v) for v in (512, 2048, 3.5 * 2**20, 2**31)] == [
        "512 B",
        "2 KiB",
        "3.5 MiB",
        "2 GiB",
    ]


def test_wandb_names_come_from_what_the_run_varies() -> None:
    overrides = ["aggregation=median", "fd.seed=1", "hydra.run.dir=x", "logging=offline"]
    assert names_from_overrides(overrides) == ("aggregation=median,fd.seed=1", "aggregation=median")
    assert names_from_overrides(["experiment=debug"]) == ("experiment=debug",) * 2
    assert names_from_overrides([]) == ("defaults", "defaults")
