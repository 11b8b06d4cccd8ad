"""The ServerApp warns when the federation is not num-clients SuperNodes (flwr run .: 2)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import pytest

from fedkd.config import FDConfig
from strategies.server_app import check_federation_size


class _Grid:
    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def get_node_ids(self) -> Iterable[int]:
        return list(range(1, self.nodes + 1))


def test_two_supernodes_for_ten_clients_warn_with_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="strategies.server_app"):
        message = check_federation_size(_Grid(2), FDConfig(num_clients=10))  # type: ignore[arg-type]
    assert message is not None
    assert "2 SuperNodes are connected but num-clients=10" in message
    assert 'num-supernodes=10"' in message
    assert message in caplog.text


def test_matching_federation_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="strategies.server_app"):
        assert check_federation_size(_Grid(10), FDConfig(num_clients=10)) is None  # type: ignore[arg-type]
    assert "SuperNodes" not in caplog.text
