"""Example-level DP on the clients (``dp-mechanism=dpsgd``): local training with DP-SGD.

Each client trains its private data with DP-SGD (Abadi et al. 2016) through Opacus: Poisson
batches of rate ``q = 1/⌈n / batch-size⌉``, every example's gradient clipped to L2 norm
``dp-clip``, Gaussian noise of ``dp-noise-multiplier × dp-clip`` added to each batch's sum.
Everything the client sends afterwards (soft labels on any number of public rows, its test
accuracy) is post-processing of a DP model: querying costs nothing more.

Accounting, per client and across rounds, is one sampled-Gaussian event per optimizer step
(:mod:`fedkd.privacy.accountant`), kept in the client's state. Co-distillation in ``digest``
mode trains on public rows toward a teacher made of other DP models' outputs: it reads no
private example, so it costs nothing; ``joint`` mode would mix private examples into the KD
steps and is refused by the config.

The server sees each client's ε in its reply (``dp-epsilon``) and the ε one more round would
take it to (``dp-epsilon-next``), which is what its budget check reads.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor, nn

from fedkd.privacy.accountant import GaussianEvent


def round_event(
    num_examples: int, batch_size: int, epochs: int, noise_multiplier: float
) -> GaussianEvent:
    """The steps one round of DP-SGD takes, as Opacus's Poisson loader runs them: ``⌈n/batch⌉``
    steps per epoch, each example drawn with probability ``q = 1/⌈n/batch⌉`` (≈ batch/n)."""
    steps_per_epoch = math.ceil(max(num_examples, 1) / batch_size)
    return GaussianEvent(noise_multiplier, 1.0 / steps_per_epoch, epochs * steps_per_epoch)


def train_dpsgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    noise_multiplier: float,
    max_grad_norm: float,
) -> float:
    """Train ``model`` in place with DP-SGD (Opacus, Poisson sampling); mean loss of the last
    epoch. The model comes back unwrapped (Opacus's hooks removed), ready to save or query.

    A fresh SGD optimizer each round: momentum carried across rounds would be fine for DP
    (post-processing) but Opacus's optimizer wraps its own state.
    """
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # secure-RNG and "optimizer.step" advice
        private, dp_optimizer, dp_loader = PrivacyEngine(accountant="rdp").make_private(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
        )
        loss_fn = nn.CrossEntropyLoss()
        losses: list[float] = []
        model.train()
        for _ in range(epochs):
            losses = []
            for xb, yb in dp_loader:
                dp_optimizer.zero_grad()
                if len(yb) == 0:  # an empty Poisson batch still takes a (noise-only) step
                    dp_optimizer.step()
                    continue
                loss = loss_fn(private(xb), yb)
                loss.backward()
                dp_optimizer.step()
                losses.append(float(loss))
    private.remove_hooks()  # type: ignore[operator]
    for p in model.parameters():  # drop Opacus's per-sample buffers
        p.grad_sample = None  # type: ignore[attr-defined]
        p.grad = None
    return sum(losses) / len(losses) if losses else float("nan")
