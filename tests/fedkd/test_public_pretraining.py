"""FedMD's transfer phase: clients pretrain on the labelled public set (opt-in setting)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedkd import protocol as P
from fedkd.client import FDClient, load_client_data
from fedkd.config import FDConfig
from fedkd.training import evaluate
from tests.helpers import round_request


def _request(client: FDClient) -> P.RoundRequest:
    """Train only (no predictions), at the client's own lr and temperature."""
    cfg = client.cfg
    return round_request(
        client.data.public_x, lr=cfg.lr, temperature=cfg.temperature, with_predictions=False
    )


def _first_round_accuracy(pretrain_epochs: int) -> float:
    cfg = FDConfig(alpha=0.1, seed=0, public_pretrain_epochs=pretrain_epochs, client_models="mlp")
    client = FDClient(cfg, load_client_data(cfg, 0, cfg.num_clients), "mlp", 0)
    client.train(_request(client))
    data = client.data
    return evaluate(client.model, data.test_x, data.test_y, num_classes=data.num_classes).accuracy


def test_pretraining_teaches_a_skewed_client_the_classes_it_lacks() -> None:
    """Partition 0 at α = 0.1 holds few classes; after the labelled-public transfer phase its
    first-round model is far better on the all-class test set than without it."""
    cfg = FDConfig(alpha=0.1, seed=0)
    counts = np.asarray(load_client_data(cfg, 0, cfg.num_clients).class_counts)
    assert (counts > 0).sum() <= 5  # the setting the test is about
    with_transfer, without = _first_round_accuracy(10), _first_round_accuracy(0)
    assert with_transfer >= without + 0.2, (with_transfer, without)


def test_public_labels_travel_only_when_pretraining_is_on() -> None:
    cfg = FDConfig(seed=0)
    assert load_client_data(cfg, 0, cfg.num_clients).public_y is None
    on = dataclasses.replace(cfg, public_pretrain_epochs=1)
    assert load_client_data(on, 0, cfg.num_clients).public_y is not None


def test_pretraining_without_public_labels_fails_with_the_key() -> None:
    cfg = FDConfig(seed=0, public_pretrain_epochs=2, client_models="mlp")
    data = dataclasses.replace(load_client_data(cfg, 0, cfg.num_clients), public_y=None)
    client = FDClient(cfg, data, "mlp", 0)
    with pytest.raises(ValueError, match="public-pretrain-epochs"):
        client.train(_request(client))
