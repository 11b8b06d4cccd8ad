"""Fixtures for the deployment tests: a :class:`Federation` that always cleans up, and certs."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import REPO, Certs, Federation


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    """A :class:`Federation` whose processes all end when the test does, pass or fail."""
    fed = Federation(tmp_path)
    try:
        yield fed
    finally:
        fed.close()


@pytest.fixture(scope="module")
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
