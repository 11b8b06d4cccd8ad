"""The ClientApp keeps clients alive between messages without changing a single number."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedkd import client_app
from fedkd import protocol as P
from fedkd.client_app import make_client_app
from fedkd.client_state import LiveClients, StateFiles
from fedkd.config import FDConfig, replace, to_run_config
from simulations.local_grid import run_fd_local, run_local
from strategies.server_app import make_server_app
from tests.helpers import tiny_federation

pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


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
    rebuilt_every_time = _run(replace(cfg, live_client_mib=0))
    rebuilds = len(built)
    built.clear()
    reused = _run(cfg)
    assert reused == rebuilt_every_time
    assert any(r["rejected"] for r in reused)  # some crashes happened
    assert rebuilds == cfg.num_clients * cfg.num_rounds
    assert cfg.num_clients <= len(built) < rebuilds  # crashed clients are rebuilt, others reused


def test_a_client_whose_state_moved_on_is_rebuilt() -> None:
    live: LiveClients[Any] = LiveClients(max_bytes=200)
    cfg = FDConfig()
    sentinel = object()
    live.put((1, 5), "token-a", sentinel, 100, cfg)
    assert live.get((1, 5), "token-a", cfg) is sentinel
    assert live.get((1, 5), "token-b", cfg) is None  # another worker saved since
    assert live.get((1, 5), "token-a", FDConfig(seed=1)) is None  # another run config
    live.put((1, 6), "t", sentinel, 50, cfg)
    live.put((1, 7), "t", sentinel, 60, cfg)  # over 200 bytes: the least recently used goes
    assert live.get((1, 5), "token-a", cfg) is None
    assert len(live) == 2 and live.bytes == 110
    live.put((1, 8), "t", sentinel, 500, cfg)  # larger than the budget: not kept
    assert live.get((1, 8), "t", cfg) is None


def test_live_clients_hit_in_a_fixed_cycle_beyond_64_clients() -> None:
    # Clients come back in the same order every round: with a count of 64 this never hit.
    live: LiveClients[int] = LiveClients(max_bytes=300 * 1000)
    cfg = FDConfig()
    for _ in range(2):
        for node in range(300):
            if live.get((1, node), "t", cfg) is None:
                live.put((1, node), "t", node, 1000, cfg)
    assert all(live.get((1, n), "t", cfg) == n for n in range(300))


def test_disk_state_gives_the_same_numbers_and_ships_only_a_token(tmp_path: Path) -> None:
    cfg = FDConfig(
        num_rounds=2,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        co_distillation=True,
        live_client_mib=0,  # every message rebuilds: the state must come back from the file
    )
    in_context = _run(cfg)
    disk = replace(cfg, client_state="disk", client_state_dir=str(tmp_path))
    assert _run(disk) == in_context
    # each node keeps the file its Context names and the one before it (StateFiles), no more
    files = Counter(f.name.split(".")[0] for f in tmp_path.glob("run-*/node-*.pt"))
    assert len(files) == cfg.num_clients and set(files.values()) == {2}  # trained twice


def test_a_state_file_is_found_by_its_token_or_not_at_all(tmp_path: Path) -> None:
    files = StateFiles(tmp_path)
    files.write(1, 7, "a" * 32, b"old")
    assert files.read(1, 7, "a" * 32) == b"old"
    files.write(1, 7, "b" * 32, b"new", previous="a" * 32)  # the older state is removed
    assert files.read(1, 7, "b" * 32) == b"new"
    with pytest.raises(LookupError, match="client-state=context"):
        files.read(1, 7, "a" * 32)
    assert len(list(tmp_path.rglob("*.pt"))) == 1


def _dying_after_its_save(cfg: FDConfig, server_round: int) -> ClientApp:
    """The real ClientApp, except that the first node served in ``server_round`` saves its new
    state and then dies before its reply leaves: Flower keeps the Context it had, which names
    the state saved before (``flwr/server/superlink/fleet/vce/vce_api.py``: no context update
    on an exception; the local grid does the same)."""
    inner = make_client_app(to_run_config(cfg))
    app = ClientApp()
    died: list[int] = []

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        client_app._GROUP_TREES.clear()  # as if another worker: states come from their files
        reply = inner(msg, context)
        if not died and P.parse_request(msg.content).server_round == server_round:
            died.append(context.node_id)
            raise RuntimeError("worker died after saving, before its reply left")
        return reply

    @app.query("soft_labels")
    def query(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return inner(msg, context)

    return app


@pytest.mark.parametrize(
    "changes",
    [{}, {"clients_per_message": 3, "vectorize_cohort": True}],
    ids=["one-client-per-message", "vectorized-cohorts"],
)
def test_a_worker_dying_after_its_save_leaves_the_state_its_context_names(
    changes: dict[str, Any], tmp_path: Path
) -> None:
    # Every node trains every round; nothing is kept alive, so each state comes from its file.
    cfg = tiny_federation(
        num_rounds=3,
        fraction_train=1.0,
        min_train_nodes=1,
        client_state="disk",
        client_state_dir=str(tmp_path),
        live_client_mib=0,
        **changes,
    )
    records = run_fd_local(cfg, _dying_after_its_save(cfg, server_round=2))
    assert [r.status for r in records] == ["ok"] * 3
    # the death: its reply is an error (one client's, or a cohort's members')
    assert records[1].valid_replies == cfg.num_clients - cfg.clients_per_message
    # afterwards the node resumes from the state its Context names, instead of failing every
    # round on a file its worker removed when it saved the newer one
    assert records[2].rejected == 0 and records[2].valid_replies == records[0].valid_replies
    assert records[0].valid_replies == cfg.num_clients


def test_a_nodes_context_counts_its_train_messages_and_not_its_queries() -> None:
    # What OrderedContexts (simulations/flower_poller.py) compares to keep a straggler's late
    # reply from bringing back an older Context.
    cfg = tiny_federation(num_rounds=3, fraction_train=1.0, separate_query=True)
    grid = run_local(
        make_server_app(to_run_config(cfg), []),
        make_client_app(to_run_config(cfg)),
        cfg.num_clients,
    )
    counts = [client_app.saves(c) for c in grid.contexts.values()]
    assert counts == [cfg.num_rounds] * cfg.num_clients
