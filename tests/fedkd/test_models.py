"""Contract tests for the model registry: every registered model, every supported input shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd import models
from fedkd.models import (
    Classifier,
    available_models,
    build_model,
    count_parameters,
    model_nbytes,
    register_model,
)

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
NUM_CLASSES = 7  # deliberately not 10, so a hard-coded 10 somewhere would show


def test_builtins_are_registered() -> None:
    assert {"mlp", "cnn", "resnet8"} <= set(available_models())
    assert available_models() == sorted(available_models())


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", available_models())
def test_forward_backward_contract(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_model(name, shape, NUM_CLASSES)
    assert isinstance(model, Classifier)
    assert isinstance(model.head, nn.Linear)
    assert model.head.in_features == model.feature_dim
    assert model.head.out_features == NUM_CLASSES

    x = torch.rand(4, *shape)  # (batch, C, H, W)
    feats = model.features(x)
    assert feats.shape == (4, model.feature_dim)
    logits = model(x)
    assert logits.shape == (4, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, model.head(feats))

    loss = nn.functional.cross_entropy(logits, torch.arange(4) % NUM_CLASSES)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", available_models())
def test_eval_mode_single_sample(name: str) -> None:
    model = build_model(name, (1, 8, 8), NUM_CLASSES).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 8, 8)).shape == (1, NUM_CLASSES)


def test_heterogeneous_clients_share_output_space() -> None:
    x = torch.rand(3, 3, 32, 32)
    outs = [build_model(n, (3, 32, 32), NUM_CLASSES)(x) for n in available_models()]
    assert {tuple(o.shape) for o in outs} == {(3, NUM_CLASSES)}
    sizes = {count_parameters(build_model(n, (3, 32, 32), NUM_CLASSES)) for n in ["mlp", "cnn"]}
    assert len(sizes) == 2  # really different architectures


def test_mlp_runs_on_vectors_and_image_models_reject_them() -> None:
    model = build_model("mlp", (32,), 5, hidden_sizes=(16, 8))
    assert model(torch.rand(2, 32)).shape == (2, 5)
    assert model.feature_dim == 8
    for name in ["cnn", "resnet8"]:
        with pytest.raises(ValueError, match="mlp"):
            build_model(name, (32,), 5)


def test_unknown_model_names_it_and_lists_available() -> None:
    with pytest.raises(ValueError) as info:
        build_model("vgg99", (1, 8, 8), 10)
    msg = str(info.value)
    assert "vgg99" in msg
    assert all(name in msg for name in available_models())


@pytest.mark.parametrize("shape", [(), (0, 8, 8), (1, -8, 8)])
def test_invalid_input_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="input_shape"):
        build_model("mlp", shape, 10)


def test_invalid_num_classes() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_model("mlp", (4,), 0)


def test_parameter_count_matches_hand_count() -> None:
    model = build_model("mlp", (1, 8, 8), 10, hidden_sizes=(20, 15))
    # 64*20+20, 20*15+15, head 15*10+10
    expected = (64 * 20 + 20) + (20 * 15 + 15) + (15 * 10 + 10)
    assert count_parameters(model) == expected
    model.head.weight.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == expected - 15 * 10
    assert model_nbytes(model) == expected * 4  # float32, no buffers


def test_nbytes_counts_buffers() -> None:
    bn = build_model("resnet8", (1, 8, 8), 10)
    gn = build_model("resnet8", (1, 8, 8), 10, norm="group")
    buffers = sum(b.numel() * b.element_size() for b in bn.buffers())
    assert buffers > 0
    assert model_nbytes(bn) == count_parameters(bn) * 4 + buffers
    assert not list(gn.buffers())


def test_register_custom_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))

    @register_model("linear")
    def _linear(input_shape: tuple[int, ...], num_classes: int) -> Classifier:
        return Classifier(nn.Flatten(), int(torch.tensor(input_shape).prod()), num_classes)

    assert "linear" in available_models()
    assert build_model("linear", (2, 3), 4)(torch.rand(5, 2, 3)).shape == (5, 4)
    with pytest.raises(ValueError, match="already registered"):
        register_model("linear")(_linear)
