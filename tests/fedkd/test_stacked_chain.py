"""The batched-matmul forward of K stacked MLPs gives each member's own logits, and declines
every model it cannot run exactly (the vectorized path then keeps vmap)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from fedkd.models import Classifier, build_model
from fedkd.stacked_chain import chain_forward

ATOL = 1e-5  # float32 logits of order 1: only the order of sums may differ


def _stacked(models: list[nn.Module]) -> dict[str, Tensor]:
    params, _ = stack_module_state(models)  # type: ignore[arg-type]
    return {k: v.detach() for k, v in params.items()}


@pytest.mark.parametrize(
    ("name", "shape", "kwargs"),
    [
        ("mlp", (32,), {}),
        ("mlp", (1, 8, 8), {}),  # image rows: Flatten first
        ("scaled_mlp", (16,), {"width": 8, "depth": 3}),
    ],
)
def test_stacked_logits_are_each_members_own(
    name: str, shape: tuple[int, ...], kwargs: dict[str, int]
) -> None:
    torch.manual_seed(0)
    models: list[nn.Module] = [build_model(name, shape, 10, **kwargs) for _ in range(5)]
    forward = chain_forward(models[0])
    assert forward is not None
    x = torch.randn(37, *shape)
    with torch.no_grad():
        out = forward(_stacked(models), x)
        own = torch.stack([m(x) for m in models])
    assert out.shape == (5, 37, 10)
    torch.testing.assert_close(out, own, atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("mlp", {}), ("scaled_mlp", {"width": 8, "depth": 3})]
)
def test_chunks_sharing_one_workspace_give_each_members_own_logits(
    name: str, kwargs: dict[str, int]
) -> None:
    # 37 rows in chunks of 7: every hidden layer of every chunk writes into the same two
    # buffers, so a chunk whose logits still pointed into them would be overwritten.
    torch.manual_seed(2)
    models: list[nn.Module] = [build_model(name, (16,), 10, **kwargs) for _ in range(4)]
    forward = chain_forward(models[0])
    assert forward is not None
    params = {k: v.requires_grad_() for k, v in _stacked(models).items()}  # as in training
    x = torch.randn(37, 16)
    with torch.no_grad():
        out = forward.logits(params, x, at_most=7)
        own = torch.stack([m(x) for m in models])
    assert forward.chunk_rows(4, 7) == 7
    assert out.shape == (4, 37, 10)
    torch.testing.assert_close(out, own, atol=ATOL, rtol=0)


def test_a_linear_without_bias_is_run_without_one() -> None:
    torch.manual_seed(1)
    models: list[nn.Module] = []
    for _ in range(3):
        model = build_model("mlp", (6,), 4)
        model.head = nn.Linear(128, 4, bias=False)
        models.append(model)
    forward = chain_forward(models[0])
    assert forward is not None
    x = torch.randn(9, 6)
    with torch.no_grad():
        own = torch.stack([m(x) for m in models])
        torch.testing.assert_close(forward(_stacked(models), x), own, atol=ATOL, rtol=0)
        torch.testing.assert_close(forward.logits(_stacked(models), x, 4), own, atol=ATOL, rtol=0)


class _Scaled(Classifier):
    def forward(self, x: Tensor) -> Tensor:
        return 2 * super().forward(x)


class _Tanh(nn.ReLU):
    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(x)


def _custom_forward() -> nn.Module:
    return _Scaled(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU()), 8, 3)


def _layer_subclass() -> nn.Module:
    return Classifier(nn.Sequential(nn.Flatten(), nn.Linear(4, 8), _Tanh()), 8, 3)


def _hooked() -> nn.Module:
    model = build_model("mlp", (4,), 3)
    model.head.register_forward_hook(lambda _m, _i, out: out * 0)
    return model


def _partial_flatten() -> nn.Module:
    return Classifier(nn.Sequential(nn.Flatten(2), nn.Flatten(), nn.Linear(4, 8)), 8, 3)


@pytest.mark.parametrize(
    "make",
    [
        lambda: build_model("cnn", (1, 8, 8), 10),
        _custom_forward,
        _layer_subclass,
        _hooked,
        _partial_flatten,
        lambda: nn.Sequential(nn.Linear(4, 3)),  # not a Classifier
    ],
    ids=["cnn", "custom-forward", "layer-subclass", "forward-hook", "partial-flatten", "bare"],
)
def test_anything_but_a_plain_chain_is_declined(make: object) -> None:
    assert chain_forward(make()) is None  # type: ignore[operator]
