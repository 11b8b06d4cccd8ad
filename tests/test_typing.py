"""The public API stays typed: mypy finds no errors in the packages (a regression guard).

mypy keeps its incremental cache in the checkout's ``.mypy_cache`` (git-ignored; where a plain
``mypy`` run keeps it too): a clean clone checks everything (~45 s on 2 cores, most of it
torch's and numpy's own types), a later run only what changed (a few seconds). mypy validates
every cached module against its source and options, so a warm cache finds the same errors.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_mypy_finds_no_errors() -> None:
    if shutil.which("mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("mypy is not installed (it comes with the dev extra)")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            "fedkd",
            "strategies",
            "simulations",
            "benchmarks",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
