"""Fixtures shared by every test package (builders shared as functions: tests/helpers.py)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY_TEST = "test_mypy_finds_no_errors"  # tests/test_typing.py
PACKAGES = ["fedkd", "strategies", "simulations", "benchmarks"]


@dataclass
class Mypy:
    """A running ``python -m mypy`` and the temporary file that receives its output."""

    proc: subprocess.Popen[bytes]
    output: IO[bytes]

    def result(self, timeout: float) -> tuple[int, str]:
        """Wait for it; (exit status, everything it printed)."""
        returncode = self.proc.wait(timeout=timeout)
        self.output.seek(0)
        text = self.output.read().decode(errors="replace")
        self.output.close()
        return returncode, text

    def end(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output.close()


_MYPY = pytest.StashKey[Mypy]()


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Silence warnings and below for one test: rejections, faults and stragglers are logged
    as warnings by design, and the tests that provoke them keep their output readable.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("quiet_logs")``."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


# ----------------------------------------------------------------------------- mypy, early
# mypy on a clean checkout takes 45-100 s of one core, nearly all of it reading torch's and
# numpy's types; the rest of the suite mostly keeps one core busy. So when the mypy test is
# selected, mypy starts as soon as collection ends, in the background, and the test (last in
# the run) only waits for it and asserts on what it printed.
def start_mypy() -> Mypy | None:
    """``python -m mypy`` on the packages, its cache in the checkout's ``.mypy_cache`` (None:
    mypy is not installed)."""
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        return None
    output = tempfile.TemporaryFile()  # noqa: SIM115 (outlives this function; Mypy closes it)
    args = [sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"), *PACKAGES]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    return Mypy(proc, output)


def pytest_collection_finish(session: pytest.Session) -> None:
    if session.config.option.collectonly:
        return
    if any(item.name == MYPY_TEST for item in session.items):
        mypy = start_mypy()
        if mypy is not None:
            session.config.stash[_MYPY] = mypy


def pytest_sessionfinish(session: pytest.Session) -> None:
    """End the background mypy if its test never collected it (e.g. ``-x`` stopped early)."""
    mypy = session.config.stash.get(_MYPY, None)
    if mypy is not None:
        mypy.end()


@pytest.fixture
def mypy_process(request: pytest.FixtureRequest) -> Mypy | None:
    """The mypy started after collection, or a fresh one (None when mypy is not installed)."""
    return request.config.stash.get(_MYPY, None) or start_mypy()
