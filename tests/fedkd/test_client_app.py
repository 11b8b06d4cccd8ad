"""The ClientApp keeps clients alive between messages without changing a single number."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from fedkd import client_app
from fedkd.client_app import LIVE_CLIENTS
from fedkd.config import FDConfig
from simulations.local_grid import run_fd_local


@pytest.fixture(autouse=True)
def _quiet() -> Any:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


def _run(cfg: FDConfig) -> list[dict[str, Any]]:
    return [
        {k: v for k, v in r.as_dict().items() if k != "wall_seconds"} for r in run_fd_local(cfg)
    ]


def _counting_builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    built: list[int] = []
    real = client_app.FDClient

    def build(*args: Any, **kwargs: Any) -> Any:
        built.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(client_app, "FDClient", build)
    return built


def test_live_clients_change_no_number_and_skip_rebuilds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Co-distillation and crashes after training (fault_crash_query) exercise the cases where
    # a live client must not be reused: state changed, or changed without being saved.
    cfg = FDConfig(
        num_rounds=3,
        num_clients=4,
        min_train_nodes=4,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp,cnn",
        student_model="mlp",
        co_distillation=True,
        fault_crash_query=0.3,
    )
    built = _counting_builds(monkeypatch)
    monkeypatch.setattr(LIVE_CLIENTS, "max_size", 0)
    rebuilt_every_time = _run(cfg)
    rebuilds = len(built)
    monkeypatch.setattr(LIVE_CLIENTS, "max_size", 64)
    built.clear()
    reused = _run(cfg)
    assert reused == rebuilt_every_time
    assert any(r["rejected"] for r in reused)  # some crashes happened
    assert rebuilds == cfg.num_clients * cfg.num_rounds
    assert cfg.num_clients <= len(built) < rebuilds  # crashed clients are rebuilt, others reused


def test_a_client_whose_state_moved_on_is_rebuilt() -> None:
    live = client_app.LiveClients(max_size=2)
    cfg = FDConfig()
    sentinel: Any = type("C", (), {"cfg": cfg})()
    live.put((1, 5), "token-a", sentinel)
    assert live.get((1, 5), "token-a", cfg) is sentinel
    assert live.get((1, 5), "token-b", cfg) is None  # another worker saved since
    assert live.get((1, 5), "token-a", FDConfig(seed=1)) is None  # another run config
    live.put((1, 6), "t", sentinel)
    live.put((1, 7), "t", sentinel)  # evicts the least recently used, (1, 5)
    assert live.get((1, 5), "token-a", cfg) is None
