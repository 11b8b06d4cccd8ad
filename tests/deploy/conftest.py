"""Fixtures for the deployment tests: a :class:`Federation` that always cleans up, certs, and
the real runs (tests/deploy/runs.py) the slow tests share."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import REPO, Certs, Federation
from .runs import Run, start_and_wait


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """A :class:`Federation` whose processes all end when the test does, pass or fail."""
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


@pytest.fixture(scope="package")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a 127.0.0.1 server certificate made by ``scripts/make_certs.sh``."""
    out = tmp_path_factory.mktemp("certs")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "make_certs.sh"), str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return Certs(ca=out / "ca.crt", cert=out / "server.pem", key=out / "server.key")


@pytest.fixture(scope="package")
def runs(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[dict[str, Run]]:
    """Every real run in tests/deploy/runs.py, started at once on first use; each federation's
    processes end when the package's tests are done, pass or fail."""
    found: dict[str, Run] = {}
    try:
        start_and_wait(tmp_path_factory, certs, found)
        yield found
    finally:
        for run in reversed(found.values()):
            run.federation.close()
