"""``flwr run .`` on Flower's local simulation federation, as docs/simulation.md writes it.

The test starts the local SuperLink itself (the command ``flwr`` would start, on free ports
inside ``FLWR_HOME`` under ``tmp_path``) so that it owns and ends it; ``flwr run`` finds it on
the ports named by ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``/``FLWR_LOCAL_CONTROL_API_PORT``.
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` keeps the pinned stack (no ``uv sync``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import Federation, deployment, free_port


@deployment("local-simulation")
def flwr_run_local_simulation(federation: Federation) -> tuple[int, str, str]:
    """(exit code, output, the logs' ends) of ``flwr run .`` on the local simulation."""
    http_port, control_port = free_port(), free_port()
    federation.env.update(
        FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(http_port),
        FLWR_LOCAL_CONTROL_API_PORT=str(control_port),
        FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    )
    home: Path = federation.home
    superlink = federation.start(
        "local-superlink",
        [
            "flower-superlink",
            "--insecure",
            "--simulation",
            "--isolation",
            "subprocess",
            "--control-api-address",
            f"127.0.0.1:{control_port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(http_port),
            "--database",
            str(home / "state.db"),
        ],
    )
    federation._wait_for_port(superlink, http_port)
    code, output = federation.cli(
        [
            "flwr",
            "run",
            str(federation.app),
            "--stream",
            "--run-config",
            "num-rounds=1 num-clients=3 local-epochs=1 server-epochs=1 "
            "client-models='mlp' student-model='mlp'",
            "--federation-config",
            "num-supernodes=3",
        ],
        timeout=300,
        name="flwr-run",
    )
    return code, output, federation.tail()


@pytest.mark.slow
@pytest.mark.deployment("local-simulation")
def test_flwr_run_local_simulation_on_the_pinned_stack(deployed: tuple[int, str, str]) -> None:
    code, output, tail = deployed
    assert code == 0, tail
    assert "Starting local SuperLink" not in output  # it used ours
    assert "(3 simulated SuperNodes)" in output
    assert "replies 3 ok" in output  # every simulated client took part in round 1
    assert "SuperNodes are connected but num-clients" not in output


def test_the_documented_switch_turns_runtime_dependency_installation_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/simulation.md's ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``, on the installed
    Flower: the local SuperLink ``flwr run`` starts inherits the environment and reads it."""
    import importlib

    flower_superlink = importlib.import_module("flwr.superlink.cli.flower_superlink")

    monkeypatch.delenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", raising=False)
    assert flower_superlink._runtime_dependency_install_default() is True  # Flower's default
    monkeypatch.setenv("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    assert flower_superlink._runtime_dependency_install_default() is False
