"""Reference accuracies that put a federated result in context.

* **local-only**: every client trains alone on its partition for the same number of epochs it
  trains in the federation (``num_rounds × local_epochs``); FD must beat their mean to be worth
  its communication.
* **centralized**: the student architecture trained on the union of all private partitions:
  what pooling the data would give (an upper reference, not a bound).
* **public labels**: the student architecture trained on the public inputs *with their true
  labels*. FD's student only ever sees the public inputs, so this bounds what it can learn from
  any teacher, however good (without augmentation of the public set).

Every reference is trained the same stable way (:func:`fit_reference`): the learning rate is
picked from a small grid and the epoch from the run, both by accuracy on the server's labelled
**validation** set; the reported number is the test accuracy of that selected model. A run that
collapses into predicting one class is reported as such (``collapsed``), not silently averaged
in. Before this, the centralized reference was the last epoch of a CNN at lr 0.1 that diverged
on some seeds and CPU kernels (0.10 on one, 0.99 on another).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass

import torch

from fedkd.client import client_partitions, load_splits_for
from fedkd.config import FDConfig
from fedkd.data import DataSplits
from fedkd.models import build_model
from fedkd.training import TrainConfig, evaluate, resolve_threads, train_supervised

log = logging.getLogger(__name__)

LEARNING_RATES = (0.01, 0.1)
"""SGD learning rates tried per reference; validation picks one (momentum 0.9, as clients)."""

EVALUATIONS = 25
"""How many times per training run the validation accuracy is checked (epochs are spread
evenly), so the cost of selection stays small for long budgets."""


@dataclass(frozen=True)
class Fit:
    """One reference model, selected on validation, reported on test."""

    test_accuracy: float  # at the selected (learning rate, epoch)
    val_accuracy: float
    epoch: int  # 1-based epoch the validation picked
    lr: float
    collapsed: bool  # the run ended predicting (almost) one class: reported, never hidden


@dataclass(frozen=True)
class References:
    """Reference accuracies on the shared test set."""

    local_only_mean: float
    local_only: list[float]  # per client, by partition id
    centralized: float
    public_labels: float  # student architecture on the public inputs with true labels
    fits: dict[str, Fit]  # "centralized", "public_labels", "local-<pid>": how each was chosen

    def collapsed(self) -> list[str]:
        """Names of the references whose training collapsed at some learning rate's end."""
        return [name for name, fit in self.fits.items() if fit.collapsed]

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (``summary.json``)."""
        out = asdict(self)
        out["collapsed"] = self.collapsed()
        return out


def fit_reference(
    model_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: DataSplits,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    learning_rates: tuple[float, ...] = LEARNING_RATES,
) -> Fit:
    """Train ``model_name`` on ``(x, y)``; select lr and epoch on validation; report test.

    Without a validation set (``val_fraction=0``) the last epoch of the first learning rate is
    reported, as before, and a warning says the number was not selected.
    """
    has_val = len(splits.val_y) > 0
    best: Fit | None = None
    for lr in learning_rates if has_val else learning_rates[:1]:
        fit = _fit_one(model_name, x, y, splits, epochs, batch_size, lr, seed, has_val)
        if best is None or fit.val_accuracy > best.val_accuracy:
            best = fit
    assert best is not None
    if not has_val:
        log.warning("no validation set (val-fraction=0): reference is the last epoch")
    return best


def _fit_one(
    model_name: str,
    x: torch.Tensor,
    y: torch.Tensor,
    splits: DataSplits,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    has_val: bool,
) -> Fit:
    torch.manual_seed(seed)
    model = build_model(model_name, splits.input_shape, splits.num_classes)
    if len(y) == 0:  # a client without data: an untrained model, as it would be
        acc = evaluate(model, splits.test_x, splits.test_y, num_classes=splits.num_classes)
        return Fit(acc.accuracy, 0.0, 0, lr, collapsed=False)
    generator = torch.Generator().manual_seed(seed)
    step = max(1, epochs // EVALUATIONS)
    cfg = TrainConfig(epochs=step, batch_size=batch_size, lr=lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum)
    best_val, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    done = 0
    while done < epochs:
        run = TrainConfig(epochs=min(step, epochs - done), batch_size=batch_size, lr=lr)
        try:
            train_supervised(model, x, y, run, optimizer=optimizer, generator=generator)
        except RuntimeError as err:  # non-finite loss: keep what validation chose before
            log.warning(
                "reference %s at lr %g diverged after %d epochs: %s", model_name, lr, done, err
            )
            break
        done += run.epochs
        if has_val:
            val = evaluate(model, splits.val_x, splits.val_y, num_classes=splits.num_classes)
            if val.accuracy > best_val:
                best_val, best_epoch = val.accuracy, done
                best_state = copy.deepcopy(model.state_dict())
    last = evaluate(model, splits.test_x, splits.test_y, num_classes=splits.num_classes)
    if has_val:
        model.load_state_dict(best_state)
    else:
        best_val, best_epoch = float("nan"), done
    test = evaluate(model, splits.test_x, splits.test_y, num_classes=splits.num_classes)
    return Fit(test.accuracy, best_val, best_epoch, lr, collapsed=last.collapsed(y))


def compute_references(cfg: FDConfig) -> References:
    """Train the local-only clients, the centralized model and the public-labels bound."""
    torch.set_num_threads(resolve_threads(cfg.torch_threads))
    splits = load_splits_for(cfg)
    parts = client_partitions(cfg, cfg.num_clients)
    epochs = cfg.num_rounds * cfg.local_epochs

    def fit(name: str, x: torch.Tensor, y: torch.Tensor, seed: int) -> Fit:
        return fit_reference(
            name, x, y, splits, epochs=epochs, batch_size=cfg.batch_size, seed=seed
        )

    fits: dict[str, Fit] = {}
    for pid, idx in enumerate(parts):
        index = torch.as_tensor(idx, dtype=torch.long)
        fits[f"local-{pid}"] = fit(
            cfg.model_for_partition(pid),
            splits.train_x[index],
            splits.train_y[index],
            cfg.seed + pid,
        )
    pooled = torch.as_tensor(sorted(i for p in parts for i in p.tolist()), dtype=torch.long)
    fits["centralized"] = fit(
        cfg.student_model, splits.train_x[pooled], splits.train_y[pooled], cfg.seed
    )
    fits["public_labels"] = fit(
        cfg.student_model, splits.public_x, splits.oracle_public_labels(), cfg.seed
    )
    local = [fits[f"local-{pid}"].test_accuracy for pid in range(len(parts))]
    for name, f in fits.items():
        if f.collapsed:
            log.warning(
                "reference %s collapsed to one class at lr %g (reported, selected on val)",
                name,
                f.lr,
            )
    return References(
        local_only_mean=sum(local) / len(local),
        local_only=local,
        centralized=fits["centralized"].test_accuracy,
        public_labels=fits["public_labels"].test_accuracy,
        fits=fits,
    )
