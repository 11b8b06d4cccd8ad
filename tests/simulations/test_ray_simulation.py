"""One real Ray simulation: Flower's simulation engine, Ray workers, our ServerApp/ClientApp."""

from __future__ import annotations

import math

import pytest

from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, to_run_config
from simulations.engine import SimulationConfig, run_apps
from strategies.fed_distill import RoundRecord
from strategies.server_app import make_server_app


@pytest.mark.slow
def test_ray_simulation_reports_every_round(tmp_path) -> None:
    pytest.importorskip("ray")
    cfg = FDConfig(
        num_rounds=2,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp,cnn",
        student_model="mlp",
        run_dir=str(tmp_path),
    )
    run_config = to_run_config(cfg)
    records: list[RoundRecord] = []
    sim = SimulationConfig(backend="ray", client_cpus=1, ray_num_cpus=2)
    run_apps(
        make_server_app(run_config, [records.append]),
        make_client_app(run_config),
        cfg.num_clients,
        sim,
    )

    assert [r.round for r in records] == [1, 2]
    cum = 0
    for r in records:
        assert r.status == "ok"
        assert (r.valid_replies, r.rejected, r.missing) == (3, 0, 0)
        assert r.bytes_up > 0 and r.bytes_down > 0
        cum += r.bytes_up + r.bytes_down
        assert r.cum_bytes == cum
        assert 0.0 <= r.student_accuracy <= 1.0 and math.isfinite(r.student_loss)
        assert r.client_accuracy is not None and 0.0 <= r.client_accuracy <= 1.0
    # Client state survives between rounds under Ray (Context.state, workers not pinned):
    # round-2 clients start from their round-1 models, so they are better than at round 1.
    assert records[1].client_accuracy > records[0].client_accuracy
    assert (tmp_path / "metrics.json").exists()
