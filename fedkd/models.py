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
    "STUDENT_LADDER",
    "Classifier",
    "available_models",
    "build_model",
    "count_parameters",
    "model_nbytes",
    "register_model",
    "student_within",
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


# ----------------------------------------------------------------------------- scaled students
# Width/depth-scaled students for compression by distillation: a family per architecture, so a
# user can ask for "the largest student of at most N parameters" (:func:`student_within`) and
# read the accuracy-size curve off one ladder (:data:`STUDENT_LADDER`).


@register_model("scaled_cnn")
def _build_scaled_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    width: int = 16,
    depth: int = 2,
    hidden: int = 0,
) -> Classifier:
    """``depth`` conv blocks of ``width · 2^i`` channels + adaptive pooling (+ an optional
    hidden layer): the ``"cnn"`` layout with its width and depth as knobs.

    Each block is conv3x3 -> ReLU -> maxpool2 (ceil mode, so 8x8 inputs survive three pools);
    adaptive average pooling to 2x2 keeps the head's input independent of H and W.
    ``hidden=0`` feeds the pooled features straight to the head (fewest parameters).
    """
    in_ch = _require_image("scaled_cnn", input_shape)[0]
    if not 1 <= depth <= 4 or width < 1 or hidden < 0:
        raise ValueError(
            f"need 1 <= depth <= 4, width >= 1, hidden >= 0; got {depth}, {width}, {hidden}"
        )
    layers: list[nn.Module] = []
    ch = in_ch
    for i in range(depth):
        out = width * 2**i
        layers += [nn.Conv2d(ch, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
        ch = out
    layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]  # (N, ch * 4)
    feature_dim = ch * 4
    if hidden:
        layers += [nn.Linear(feature_dim, hidden), nn.ReLU()]
        feature_dim = hidden
    return Classifier(nn.Sequential(*layers), feature_dim, num_classes)


@register_model("scaled_mlp")
def _build_scaled_mlp(
    input_shape: tuple[int, ...], num_classes: int, width: int = 64, depth: int = 1
) -> Classifier:
    """``depth`` hidden layers of ``width`` units: the ``"mlp"`` layout with two knobs."""
    if depth < 0 or width < 1:
        raise ValueError(f"need depth >= 0 and width >= 1, got depth={depth}, width={width}")
    return _build_mlp(input_shape, num_classes, hidden_sizes=(width,) * depth)


STUDENT_LADDER: tuple[tuple[str, dict[str, int]], ...] = tuple(
    [("scaled_mlp", {"width": w, "depth": 1}) for w in (8, 16, 32, 64, 128)]
    + [
        ("scaled_cnn", {"width": w, "depth": d, "hidden": h})
        for w in (4, 8, 16, 32)
        for d in (1, 2, 3)
        for h in (0, 64)
    ]
)
"""Candidate students, ``(registry name, kwargs)``, from a few hundred to ~100k parameters
on 8x8 digits; :func:`student_within` picks from it."""


def student_within(
    max_params: int,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    families: tuple[str, ...] = ("scaled_cnn", "scaled_mlp"),
    ladder: tuple[tuple[str, dict[str, int]], ...] = STUDENT_LADDER,
) -> tuple[str, dict[str, int], int]:
    """The largest ladder student with at most ``max_params`` parameters for these inputs.

    "Largest" is by parameter count, the usual proxy for capacity when distilling into a small
    student; ties keep the ladder's order. Image-only families are skipped for vector inputs.

    Returns
    -------
    tuple
        ``(name, kwargs, num_parameters)``: ``build_model(name, input_shape, num_classes,
        **kwargs)`` builds it.

    Raises
    ------
    ValueError
        If no candidate fits (the message gives the smallest size available).
    """
    input_shape = _check_input_shape(input_shape)
    sized: list[tuple[int, str, dict[str, int]]] = []
    for name, kwargs in ladder:
        if name not in families or (name == "scaled_cnn" and len(input_shape) != 3):
            continue
        n = count_parameters(build_model(name, input_shape, num_classes, **kwargs))
        sized.append((n, name, kwargs))
    if not sized:
        raise ValueError(f"no candidate student of families {families} fits {input_shape}")
    fitting = [s for s in sized if s[0] <= max_params]
    if not fitting:
        smallest = min(s[0] for s in sized)
        raise ValueError(f"no student has <= {max_params} parameters; the smallest has {smallest}")
    n, name, kwargs = max(fitting, key=lambda s: s[0])
    return name, dict(kwargs), n
