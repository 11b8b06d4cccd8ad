"""Model registry: every client picks its architecture by name.

Federated distillation (FD) exchanges *predictions* on shared public inputs, not weights, so
clients may run different architectures (Li & Wang 2019, FedMD; Lin et al. 2020, FedDF) as long
as they agree on ``num_classes``. Every model here is a :class:`Classifier`: a backbone that maps
an input batch to ``(N, feature_dim)`` features, followed by one linear head. The split lets
feature-level methods (e.g. feature distillation, linear probing) reach the features without
knowing the architecture.

The registry is filled explicitly in this module with :func:`register_model`; importing it
has no other side effects. Tests are parametrized over :func:`available_models`, so a new entry
is covered by the forward/backward contract tests as soon as it is registered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "Classifier",
    "available_models",
    "build_model",
    "count_parameters",
    "model_nbytes",
    "register_model",
]

ModelBuilder = Callable[..., "Classifier"]
"""``builder(input_shape, num_classes, **kwargs) -> Classifier``."""

_REGISTRY: dict[str, ModelBuilder] = {}


class Classifier(nn.Module):
    """Backbone + linear head: the one shape every registered model takes.

    Parameters
    ----------
    backbone : nn.Module
        Maps an input batch ``(N, *input_shape)`` to features ``(N, feature_dim)``.
    feature_dim : int
        Width of the backbone output (the head's input).
    num_classes : int
        Number of logits. All clients of one federation share it, whatever their backbone.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(N, feature_dim)``."""
        return self.backbone(x)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(N, num_classes)``."""
        return self.head(self.backbone(x))


# ----------------------------------------------------------------------------- registry


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a builder ``(input_shape, num_classes, **kwargs) -> Classifier`` under ``name``.

    Used as a decorator. Registering a taken name raises, so a plug-in cannot silently
    replace a built-in that other clients of the same federation rely on.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_REGISTRY)


def build_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: object
) -> Classifier:
    """Build the registered model ``name`` for inputs ``(N, *input_shape)``.

    Parameters
    ----------
    name : str
        A name from :func:`available_models`.
    input_shape : tuple of int
        One sample's shape without the batch dimension: ``(C, H, W)`` for images,
        ``(D,)`` for vectors.
    num_classes : int
        Number of output logits.
    **kwargs
        Architecture options forwarded to the builder (e.g. ``hidden_sizes`` for ``"mlp"``).

    Raises
    ------
    ValueError
        If ``name`` is unknown, or ``input_shape`` / ``num_classes`` are not positive.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available models: {available_models()}")
    input_shape = _check_input_shape(input_shape)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name](input_shape, num_classes, **kwargs)


def _check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
        raise ValueError(f"input_shape must be a non-empty tuple of positive ints, got {shape}")
    return shape


def _require_image(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model {name!r} needs image inputs (C, H, W), got input_shape={input_shape}; "
            "use 'mlp' for vector data"
        )
    return input_shape  # type: ignore[return-value]


# ----------------------------------------------------------------------------- counters


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_nbytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers: what a weight-sharing method would upload.

    FD papers compare this against the size of the soft predictions clients send instead.
    """
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


# ----------------------------------------------------------------------------- built-ins


@register_model("mlp")
def _build_mlp(
    input_shape: tuple[int, ...], num_classes: int, hidden_sizes: tuple[int, ...] = (128,)
) -> Classifier:
    """Flatten -> [Linear -> ReLU] per hidden size. Works on any input shape."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    return Classifier(nn.Sequential(*layers), width, num_classes)


@register_model("cnn")
def _build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    channels: tuple[int, int] = (32, 64),
    hidden: int = 128,
) -> Classifier:
    """Two conv blocks + adaptive pooling + one hidden layer (FedAvg-style small CNN).

    Each block is conv3x3 -> ReLU -> maxpool2 (ceil mode, so 8x8 digits survive two pools);
    adaptive average pooling to 2x2 makes the flattened width independent of H and W, so the
    same model fits 8x8, 28x28 and 32x32 inputs. No BatchNorm: running statistics are a
    known source of trouble when clients see non-IID data (Hsieh et al. 2020).
    """
    in_ch = _require_image("cnn", input_shape)[0]
    c1, c2 = channels
    backbone = nn.Sequential(
        nn.Conv2d(in_ch, c1, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.AdaptiveAvgPool2d(2),  # (N, c2, 2, 2)
        nn.Flatten(),
        nn.Linear(c2 * 4, hidden),
        nn.ReLU(),
    )
    return Classifier(backbone, hidden, num_classes)


Norm = Literal["batch", "group", "none"]


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'batch', 'group' or 'none', got {kind!r}")


class BasicBlock(nn.Module):
    """ResNet basic block (He et al. 2016): two 3x3 convs with an identity/1x1 shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(norm, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.norm2 = _norm(norm, out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), _norm(norm, out_ch)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


@register_model("resnet8")
def _build_resnet8(
    input_shape: tuple[int, ...], num_classes: int, norm: Norm = "batch"
) -> Classifier:
    """CIFAR-style ResNet-8 as used by FedDF (Lin et al. 2020).

    conv3x3(16) -> three stages of one BasicBlock (16, 32, 64; strides 1, 2, 2) -> global
    average pooling -> linear head; 6n+2 layers with n=1. On 8x8 inputs the last stage is 2x2.
    ``norm="group"`` swaps BatchNorm for GroupNorm, the usual fix for non-IID clients
    (Hsieh et al. 2020).
    """
    in_ch = _require_image("resnet8", input_shape)[0]
    backbone = nn.Sequential(
        nn.Conv2d(in_ch, 16, 3, padding=1, bias=False),
        _norm(norm, 16),
        nn.ReLU(),
        BasicBlock(16, 16, 1, norm),
        BasicBlock(16, 32, 2, norm),
        BasicBlock(32, 64, 2, norm),
        nn.AdaptiveAvgPool2d(1),  # (N, 64, 1, 1)
        nn.Flatten(),
    )
    return Classifier(backbone, 64, num_classes)
