"""``flwr run .`` on Flower's local simulation federation, as docs/simulation.md writes it.

The test starts the local SuperLink itself (the command ``flwr`` would start, on free ports
inside ``FLWR_HOME`` under a tmp dir) so that it owns and ends it; ``flwr run`` finds it on
the ports named by ``FLWR_LOCAL_SUPERLINK_HTTP_API_PORT``/``FLWR_LOCAL_CONTROL_API_PORT``.
``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1`` keeps the pinned stack (no ``uv sync``).
The run itself is ``local-simulation`` in tests/deploy/runs.py, started alongside the
deployments by the package fixture ``runs``.
"""

from __future__ import annotations

import pytest

from .runs import Run


@pytest.mark.slow
def test_flwr_run_local_simulation_on_the_pinned_stack(runs: dict[str, Run]) -> None:
    run = runs["local-simulation"]
    code, output = run.result()
    assert code == 0, run.federation.tail()
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
