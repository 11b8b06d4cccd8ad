"""Fixtures shared by every test package (builders shared as functions: tests/helpers.py)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Silence warnings and below for one test: rejections, faults and stragglers are logged
    as warnings by design, and the tests that provoke them keep their output readable.
    A module opts in with ``pytestmark = pytest.mark.usefixtures("quiet_logs")``."""
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)
