"""Fixtures for the deployment tests: every selected deployment runs once, all side by side.

A test marked ``@pytest.mark.deployment(name)`` asks for ``deployed`` and gets what that
deployment's launcher (registered with :func:`harness.deployment`) returned. The first such
test starts every deployment the session selected at once (:func:`harness.run_concurrently`);
the others find their outcome ready. Each deployment's processes end when its run does.
"""

from __future__ import annotations

from typing import Any

import pytest

from .harness import LAUNCHERS, run_concurrently


@pytest.fixture(scope="package")
def deployments(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """name -> outcome (or the exception its launcher raised) of every selected deployment."""
    names = sorted(
        {m.args[0] for item in request.session.items for m in item.iter_markers("deployment")}
    )
    unknown = set(names) - set(LAUNCHERS)
    assert not unknown, f"no launcher registered for {sorted(unknown)}"
    return run_concurrently(names, tmp_path_factory.mktemp("deployments"))


@pytest.fixture
def deployed(request: pytest.FixtureRequest, deployments: dict) -> Any:
    """The outcome of the deployment this test is marked with; its launcher's error, raised."""
    marker = request.node.get_closest_marker("deployment")
    assert marker is not None, "mark the test @pytest.mark.deployment(name)"
    outcome = deployments[marker.args[0]]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
