"""Checkpoint and resume: a crashed run continues exactly where it stopped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, to_run_config
from simulations.local_grid import run_local
from strategies.fed_distill import RoundRecord
from strategies.server_app import make_server_app


class Crash(RuntimeError):
    """Stands in for a server process dying."""


def _run(
    run_dir: Path, *, rounds: int = 4, resume: bool = False, crash_after: int | None = None
) -> None:
    cfg = FDConfig(
        num_rounds=rounds,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=2,
        public_subset=200,
        co_distillation=True,
        run_dir=str(run_dir),
        resume=resume,
        client_checkpoints=True,
        seed=3,
    )
    run_config = to_run_config(cfg)

    def crash(record: RoundRecord) -> None:
        if crash_after is not None and record.round == crash_after:
            raise Crash(f"simulated crash after round {record.round}")

    run_local(make_server_app(run_config, [crash]), make_client_app(run_config), cfg.num_clients)


def _metrics(run_dir: Path) -> list[dict]:
    rows = json.loads((run_dir / "metrics.json").read_text())
    return [{k: v for k, v in row.items() if k != "wall_seconds"} for row in rows]


def test_resume_after_crash_equals_uninterrupted_run(tmp_path: Path) -> None:
    straight, crashed = tmp_path / "straight", tmp_path / "crashed"
    _run(straight)
    with pytest.raises(Crash):
        _run(crashed, crash_after=2)
    assert (crashed / "checkpoint.pt").exists()
    assert [r["round"] for r in _metrics(crashed)] == [1, 2]
    _run(crashed, resume=True)
    assert _metrics(crashed) == _metrics(straight)
    assert [r["round"] for r in _metrics(crashed)] == [1, 2, 3, 4]


def test_without_resume_a_run_starts_over(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        _run(tmp_path, rounds=3, crash_after=1)
    _run(tmp_path, rounds=2)
    assert [r["round"] for r in _metrics(tmp_path)] == [1, 2]


def test_checkpoint_write_is_atomic(tmp_path: Path) -> None:
    _run(tmp_path, rounds=1)
    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []
