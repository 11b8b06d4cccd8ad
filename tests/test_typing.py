"""The public API stays typed: mypy finds no errors in the packages (a regression guard).

mypy keeps its incremental cache in the checkout's ``.mypy_cache`` (git-ignored; where a plain
``mypy`` run keeps it too): a clean clone checks everything (~45 s on 2 cores, most of it
torch's and numpy's own types), a later run only what changed (a few seconds). mypy validates
every cached module against its source and options, so a warm cache finds the same errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.conftest import Mypy


@pytest.mark.slow
def test_mypy_finds_no_errors(mypy_process: Mypy | None) -> None:
    """mypy runs in the background from the end of collection (tests/conftest.py)."""
    if mypy_process is None:
        pytest.skip("mypy is not installed (it comes with the dev extra)")
    returncode, output = mypy_process.result(timeout=600)
    assert returncode == 0, output[-6000:]
