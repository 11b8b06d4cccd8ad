"""Reference accuracies that put a federated result in context.

* **local-only**: every client trains alone on its partition for the same number of epochs it
  trains in the federation (``num_rounds × local_epochs``); FD must beat their mean to be worth
  its communication.
* **centralized**: the student architecture trained on the union of all private partitions:
  what pooling the data would give (an upper reference, not a bound).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from fedkd.client import client_partitions, load_splits_for
from fedkd.config import FDConfig
from fedkd.models import build_model
from fedkd.training import TrainConfig, evaluate, resolve_threads, train_supervised


@dataclass(frozen=True)
class References:
    """Reference accuracies on the shared test set."""

    local_only_mean: float
    local_only: list[float]  # per client, by partition id
    centralized: float


def _optimizer(name: str) -> Literal["sgd", "adam"]:
    """``FDConfig.optimizer`` (a validated ``str``) as the literal type TrainConfig declares."""
    if name == "sgd":
        return "sgd"
    if name == "adam":
        return "adam"
    raise ValueError(f"unknown optimizer {name!r}; allowed: sgd, adam")


def _train_eval(
    cfg: FDConfig, model_name: str, x: torch.Tensor, y: torch.Tensor, seed: int
) -> float:
    splits = load_splits_for(cfg)
    torch.manual_seed(seed)
    model = build_model(model_name, splits.input_shape, splits.num_classes)
    train_cfg = TrainConfig(
        epochs=cfg.num_rounds * cfg.local_epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer=_optimizer(cfg.optimizer),
    )
    if len(y):
        train_supervised(model, x, y, train_cfg, generator=torch.Generator().manual_seed(seed))
    return evaluate(model, splits.test_x, splits.test_y, num_classes=splits.num_classes).accuracy


def compute_references(cfg: FDConfig) -> References:
    """Train the local-only clients and the centralized model; evaluate on the test set."""
    torch.set_num_threads(resolve_threads(cfg.torch_threads))
    splits = load_splits_for(cfg)
    parts = client_partitions(cfg, cfg.num_clients)
    local = [
        _train_eval(
            cfg,
            cfg.model_for_partition(pid),
            splits.train_x[idx],
            splits.train_y[idx],
            cfg.seed + pid,
        )
        for pid, idx in enumerate(parts)
    ]
    pooled = torch.as_tensor(sorted(i for p in parts for i in p.tolist()), dtype=torch.long)
    central = _train_eval(
        cfg, cfg.student_model, splits.train_x[pooled], splits.train_y[pooled], cfg.seed
    )
    return References(
        local_only_mean=sum(local) / len(local), local_only=local, centralized=central
    )
