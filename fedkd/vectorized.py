"""Vectorized cohorts: a cohort's homogeneous clients trained and queried in one batched call.

With ``clients-per-message`` K > 1 one Flower message serves K virtual clients
(:mod:`fedkd.client_app`), which removes the runtime's per-message cost; what is left is per
client, and for tiny models most of it is PyTorch's per-op overhead: K models each take a few
milliseconds of small matmuls one after another. With ``vectorize-cohort`` the members that
can share one computation are stacked (``torch.func.stack_module_state``) and trained with
``vmap(grad_and_value(functional_call(...)))``: one batched forward/backward per minibatch step
for all of them, one optimizer step on the stacked tensors, one batched forward for the local
test scores and one for the soft labels. Each member then gets its parameters and optimizer
state back, and the usual per-client bookkeeping (:meth:`fedkd.client.FDClient.answer`), so
saves, replies, metrics and later rounds are those of the per-member path.

Why the numbers match: every member draws its own batches from its own generator exactly as
:func:`fedkd.training.train_supervised` does (one ``randperm`` per epoch), members of a group
have the same number of rows so their batch schedules line up, and the optimizers' updates
(SGD with momentum, Adam) are elementwise, so one step on stacked tensors is K steps. What
may differ is the order of float sums inside batched matmuls: parameters and soft labels agree
to ~1e-6, not bit for bit (tests/fedkd/test_vectorized.py states the tolerance).

Who takes the path (:func:`plan`): members with plain local training (no co-distillation
teacher rows, no DP-SGD or PATE, no public pre-training still to do, no injected faults or
attacks), a model without buffers or dropout, and an SGD/Adam optimizer; a group is the
members with the same architecture, private-set size, optimizer settings and progress (Adam's
step count). Everyone else, and any group whose batched call fails, takes the per-member path.

This module imports torch and fedkd's client side only; never Flower or Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state, vmap

from fedkd.client import FDClient, RoundOutcome
from fedkd.kd import validate_labels
from fedkd.protocol import RoundRequest, select_public
from fedkd.stacked_chain import chain_forward
from fedkd.training import evaluate_logits, inference_batch_size

__all__ = ["plan", "run_group", "why_not"]

log = logging.getLogger(__name__)

Params = dict[str, Tensor]  # parameter name -> (members, *shape) stacked tensor
_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam)
# optimizer state entries shaped like their parameter; a member without state yet (it never
# trained) starts them at zero, which is what SGD's first step and Adam's init amount to
_ZERO_START = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")


# ----------------------------------------------------------------------------- who can join
def why_not(client: FDClient, req: RoundRequest, *, train: bool) -> str | None:
    """``None`` when ``client`` can join a vectorized group this round, else the reason."""
    cfg = client.cfg
    if cfg.dp_mechanism not in ("none", "central"):  # DP-SGD trains, PATE answers differently
        return f"dp-mechanism={cfg.dp_mechanism}"
    faults = (
        cfg.fault_crash_train,
        cfg.fault_crash_query,
        cfg.fault_straggle,
        cfg.byzantine_fraction,
    )
    if any(p > 0 for p in faults):
        return "faults or attackers injected"
    model = _model_check(client.model_name, type(client.model), client.model)
    if model:
        return model
    if not isinstance(client.optimizer, _OPTIMIZERS) or len(client.optimizer.param_groups) != 1:
        return f"optimizer {type(client.optimizer).__name__}"
    if train:
        rows = 0 if req.teacher_indices is None else len(req.teacher_indices)
        if req.teacher_probs is not None and req.teacher_indices is not None and rows:
            return "co-distillation teacher"
        if not client.restored and cfg.public_pretrain_epochs:
            return "public pre-training first"
    return None


_MODEL_CHECKS: dict[tuple[str, type], str] = {}


def _model_check(name: str, kind: type, model: nn.Module) -> str:
    """Why a model of this registry name cannot be batched ("" = it can), checked on the
    first ``model`` of each name and class (walking every client's modules each round cost
    ~0.3 ms a client)."""
    key = (name, kind)
    if key not in _MODEL_CHECKS:
        reason = ""
        if any(True for _ in model.buffers()):
            reason = "model has buffers (e.g. batch norm)"
        elif any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
            reason = "model has dropout"
        _MODEL_CHECKS[key] = reason
    return _MODEL_CHECKS[key]


def _group_key(client: FDClient) -> tuple[Any, ...]:
    """Members with equal keys can share one batched computation."""
    opt = client.optimizer
    settings = sorted((k, repr(v)) for k, v in opt.param_groups[0].items() if k not in ("params",))
    steps = tuple(float(s["step"]) for s in opt.state.values() if "step" in s)
    data = client.data
    return (
        client.model_name,
        type(client.model),
        tuple(p.shape for p in client.model.parameters()),
        str(client.device),
        len(data.train_y),
        tuple(data.train_x.shape[1:]),
        id(data.public_x),  # one public and test set per process for simulated clients
        id(data.test_x),
        data.num_classes,
        type(opt),
        tuple(settings),
        steps,  # Adam's bias correction depends on it; SGD has none
    )


def plan(
    clients: Mapping[int, FDClient], req: RoundRequest, *, train: bool
) -> tuple[list[list[int]], list[int]]:
    """Split a cohort's slots into vectorized groups (2+ members each) and the rest.

    Returns ``(groups, singles)``: lists of slots, in slot order; ``singles`` take the
    per-member path (not eligible, or alone in their group).
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    singles: list[int] = []
    for slot in sorted(clients):
        client = clients[slot]
        if why_not(client, req, train=train) is None:
            groups.setdefault(_group_key(client), []).append(slot)
        else:
            singles.append(slot)
    batched = [slots for slots in groups.values() if len(slots) > 1]
    singles += [slots[0] for slots in groups.values() if len(slots) == 1]
    return batched, sorted(singles)


# ----------------------------------------------------------------------------- the round
def run_group(
    clients: Sequence[FDClient], req: RoundRequest, *, train: bool
) -> list[RoundOutcome | Exception] | None:
    """One FD round for a group from :func:`plan`: each member's outcome or its error.

    Returns ``None`` when the batched computation itself fails: the caller then serves the
    group one by one (nothing of the members was changed but a checkpoint reload and the
    round's learning rate, which the per-member path does as well). A member whose
    training diverges gets the per-member path's error; the others are unaffected (vmap keeps
    the members' numbers apart).
    """
    metrics = [c.begin_round(req) for c in clients]
    try:
        stacked = _Stacked(clients)
        losses: list[float | Exception] = [float("nan")] * len(clients)
        if train:
            losses = stacked.train(req)
        logits_test = stacked.logits(clients[0].data.test_x) if train else None
        probs: Tensor | None = None
        if req.with_predictions or not train:
            inputs = select_public(clients[0].data.public_x, req.public_indices)
            probs = torch.softmax(stacked.logits(inputs) / req.temperature, dim=-1)
    except Exception:  # an op vmap cannot batch, a bad request: the per-member path decides
        log.warning("vectorized cohort failed; serving its members one by one", exc_info=True)
        return None
    if train:
        stacked.write_back([not isinstance(loss, Exception) for loss in losses])
    scores = _test_scores(clients, logits_test) if logits_test is not None else None
    outcomes: list[RoundOutcome | Exception] = []
    for i, client in enumerate(clients):
        loss = losses[i]
        if isinstance(loss, Exception):
            outcomes.append(loss)
            continue
        try:
            if train and logits_test is not None:
                result = (
                    scores[i]
                    if scores is not None
                    else evaluate_logits(
                        logits_test[i], client.data.test_y, num_classes=client.data.num_classes
                    )
                )
                client.record_training(req, metrics[i], loss, result)
            member_probs = None if probs is None else probs[i].numpy()
            outcomes.append(client.answer(req, metrics[i], train=train, probs=member_probs))
        except Exception as exc:  # this member's error, as on the per-member path
            outcomes.append(exc)
    return outcomes


def _test_scores(clients: Sequence[FDClient], logits: Tensor) -> list[_Scores] | None:
    """Every member's local test accuracy and loss from ``(K, rows, classes)`` logits in one
    batched call (what ``record_training`` reads of :func:`fedkd.training.evaluate_logits`;
    scoring members one by one cost more than training them). ``None`` when the members do
    not share one test set or the scores cannot be computed as they stand (empty set, wrong
    width, bad labels): the caller then scores each member on its own, which raises that
    member's error exactly as before."""
    data = clients[0].data
    k, n, classes = logits.shape
    if any(c.data.test_y is not data.test_y for c in clients) or n == 0:
        return None
    if classes != data.num_classes:
        return None
    try:
        validate_labels(data.test_y, data.num_classes, rows=n)
    except ValueError:
        return None
    labels = data.test_y.detach().cpu().long()
    accuracy = (logits.argmax(dim=2) == labels).double().mean(dim=1)
    flat = F.cross_entropy(logits.reshape(k * n, classes), labels.repeat(k), reduction="none")
    loss = flat.reshape(k, n).mean(dim=1)
    return [_Scores(a, l_) for a, l_ in zip(accuracy.tolist(), loss.tolist(), strict=True)]


class _Scores(NamedTuple):
    """A member's local test accuracy and loss (the fields ``record_training`` reads)."""

    accuracy: float
    loss: float


class _Stacked:
    """K members' parameters and optimizer state stacked along a new leading dimension."""

    def __init__(self, clients: Sequence[FDClient]) -> None:
        self.clients = clients
        self.template = clients[0].model  # functional_call swaps the stacked values in
        self.params, _ = stack_module_state([c.model for c in clients])  # type: ignore[arg-type]
        self.params = {k: v.detach() for k, v in self.params.items()}  # (K, *shape), leaves
        self.names = list(self.params)
        self.trained: torch.optim.Optimizer | None = None  # the stacked optimizer after train

    # ------------------------------------------------------------ training
    def train(self, req: RoundRequest) -> list[float | Exception]:
        """``train_supervised`` for every member at once; each member's last-epoch mean loss,
        or the divergence error it would have raised."""
        clients = self.clients
        cfg = clients[0].round_cfg(req.local_epochs, req.lr)  # validates epochs, lr
        optimizer = self._optimizer(req.lr)
        x = torch.stack([c.data.train_x for c in clients]).to(clients[0].device)  # (K, n, *f)
        y = torch.stack([c.data.train_y for c in clients]).to(clients[0].device)  # (K, n)
        for c in clients:  # the label check train_supervised makes on its first batch
            validate_labels(c.data.train_y, c.data.num_classes)
        k, n = y.shape
        members = torch.arange(k, device=y.device)[:, None]  # (K, 1): row index per member
        generators = [c._generator(req.server_round) for c in clients]

        def batch_loss(params: Params, xb: Tensor, yb: Tensor) -> Tensor:
            logits = functional_call(self.template, params, (xb,))  # (batch, classes)
            return F.cross_entropy(logits, yb, label_smoothing=cfg.label_smoothing)

        step = vmap(grad_and_value(batch_loss))
        self.template.train()
        failed: list[Exception | None] = [None] * k
        means = [float("nan")] * k
        for epoch in range(cfg.epochs):
            # each member's own shuffle, drawn as iterate_minibatches draws it
            order = torch.stack([torch.randperm(n, generator=g) for g in generators])  # (K, n)
            total = torch.zeros(k, dtype=torch.float64, device=y.device)
            for idx in order.to(y.device).split(cfg.batch_size, dim=1):  # (K, batch)
                grads, loss = step(self.params, x[members, idx], y[members, idx])
                optimizer.zero_grad(set_to_none=True)
                for name, tensor in self.params.items():
                    tensor.grad = grads[name]
                optimizer.step()
                total = total + loss.detach().double() * idx.shape[1]
            for i, mean in enumerate((total / n).tolist()):
                means[i] = mean
                if failed[i] is None and not np.isfinite(mean):
                    failed[i] = RuntimeError(
                        f"training diverged (loss {mean}) in epoch {epoch}; lower cfg.lr"
                    )
        self.trained = optimizer
        return [f if f is not None else m for f, m in zip(failed, means, strict=True)]

    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The members' optimizer over the stacked tensors, with their stacked state.

        Same class and settings as the members' (so the same update rule and implementation);
        a member without state yet contributes zeros, which is exactly how SGD's momentum and
        Adam's moments start (members with different Adam step counts are never grouped).
        """
        first = self.clients[0].optimizer
        leaves = [self.params[name] for name in self.names]
        optimizer = type(first)(leaves, **first.defaults)
        group = optimizer.param_groups[0]
        group.update({k: v for k, v in first.param_groups[0].items() if k != "params"})
        group["lr"] = lr
        for c in self.clients:  # the per-member path sets it too: it is in the saved state
            for member_group in c.optimizer.param_groups:
                member_group["lr"] = lr
        for j, leaf in enumerate(leaves):
            states = [_param_state(c.optimizer, j) for c in self.clients]
            keys = next((list(s) for s in states if s), [])
            if not keys:
                continue
            optimizer.state[leaf] = {
                key: _stack_state(key, [s.get(key) for s in states], leaf) for key in keys
            }
        return optimizer

    def write_back(self, keep: Sequence[bool]) -> None:
        """Each kept member's trained parameters and optimizer state, in its own tensors
        (the parameter objects stay, so the member's optimizer still keys its state by them)."""
        optimizer = self.trained
        if optimizer is None:
            raise RuntimeError("write_back before train")
        leaves = [self.params[name] for name in self.names]
        with torch.no_grad():
            for i, client in enumerate(self.clients):
                if not keep[i]:
                    continue
                own = dict(client.model.named_parameters())
                member_params = client.optimizer.param_groups[0]["params"]
                for j, (name, leaf) in enumerate(zip(self.names, leaves, strict=True)):
                    own[name].copy_(leaf[i])
                    state = optimizer.state.get(leaf)
                    if state:
                        client.optimizer.state[member_params[j]] = {
                            key: _unstack_state(value, leaf, i) for key, value in state.items()
                        }

    # ------------------------------------------------------------ inference
    def logits(self, x: Tensor) -> Tensor:
        """``(K, rows, classes)`` float32 CPU logits of every member on the shared ``x``, in
        chunks as :func:`fedkd.training.predict_logits` (eval mode, no autograd)."""
        device = self.clients[0].device
        rows = inference_batch_size(device)
        chain = chain_forward(self.template)  # a plain MLP: batched matrix products instead
        if chain is not None:
            with torch.no_grad():
                return chain.logits(self.params, x, rows).float().cpu()

        def forward(params: Params, xb: Tensor) -> Tensor:
            return functional_call(self.template, params, (xb,))

        batched: Callable[[Params, Tensor], Tensor] = vmap(forward, in_dims=(0, None))
        was_training = self.template.training
        self.template.eval()
        try:
            with torch.no_grad():
                outs = [
                    batched(self.params, x[i : i + rows].to(device)).float()
                    for i in range(0, max(x.shape[0], 1), rows)
                ]
        finally:
            self.template.train(was_training)
        return torch.cat(outs, dim=1).cpu()


def _param_state(optimizer: torch.optim.Optimizer, index: int) -> dict[str, Any]:
    """The optimizer state of the member's ``index``-th parameter (empty before its first step)."""
    param = optimizer.param_groups[0]["params"][index]
    return dict(optimizer.state.get(param, {}))


def _stack_state(key: str, values: list[Any], leaf: Tensor) -> Any:
    """One optimizer-state entry for the stacked ``leaf``: parameter-shaped entries stacked
    (zeros where a member has none yet), scalars (Adam's step, equal within a group) shared."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if key in _ZERO_START:
        zeros = torch.zeros_like(leaf[0])
        return torch.stack([v if v is not None else zeros for v in values])
    if all(isinstance(v, Tensor) and v.dim() == 0 for v in present) and len(present) == len(values):
        return present[0].clone()
    raise ValueError(f"optimizer state {key!r} cannot be stacked")


def _unstack_state(value: Any, leaf: Tensor, member: int) -> Any:
    """Member ``member``'s own copy of a stacked state entry."""
    if isinstance(value, Tensor) and value.dim() == leaf.dim() and value.shape == leaf.shape:
        return value[member].clone()
    if isinstance(value, Tensor):
        return value.clone()
    return value
