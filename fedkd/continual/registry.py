"""Continual learners by name: :func:`register_learner`, :func:`build_learner`.

The built-in methods are registered here, explicitly and in one place (bottom of this module),
so the list of names is visible without importing every method module for its side effects.
A new method subclasses :class:`~fedkd.continual.base.Learner` in its own module and is added
to that list (or registered by the caller with :func:`register_learner`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from fedkd.continual.base import Learner
from fedkd.continual.finetune import FineTune
from fedkd.continual.joint import Joint
from fedkd.continual.lwf import LwF
from fedkd.continual.tasks import SCENARIOS, Scenario
from fedkd.training import TrainConfig

__all__ = ["available_learners", "build_learner", "register_learner"]

_LEARNERS: dict[str, type[Learner]] = {}


def register_learner(name: str) -> Callable[[type[Learner]], type[Learner]]:
    """Class decorator: register a :class:`Learner` subclass under ``name``.

    Raises ``ValueError`` for a taken name or a class that declares no compatible scenario.
    """

    def decorator(cls: type[Learner]) -> type[Learner]:
        if name in _LEARNERS:
            raise ValueError(f"learner {name!r} is already registered")
        if not cls.compatibility or not set(cls.compatibility) <= set(SCENARIOS):
            raise ValueError(f"{cls.__name__}.compatibility must be a subset of {SCENARIOS}")
        cls.name = name
        _LEARNERS[name] = cls
        return cls

    return decorator


def available_learners() -> list[str]:
    """Names accepted by :func:`build_learner`, sorted."""
    return sorted(_LEARNERS)


def build_learner(
    name: str,
    scenario: Scenario,
    train: TrainConfig | None = None,
    options: Mapping[str, Any] | None = None,
) -> Learner:
    """Build the learner registered as ``name`` with its options (a mapping of config fields).

    Raises
    ------
    ValueError
        For an unknown name, an unsupported scenario, or an option the method does not have.
    """
    if name not in _LEARNERS:
        raise ValueError(f"unknown learner {name!r}; available learners: {available_learners()}")
    cls = _LEARNERS[name]
    options = dict(options or {})
    if cls.config_class is None:
        if options:
            raise ValueError(f"learner {name!r} takes no options, got {sorted(options)}")
        return cls(scenario, train)
    allowed = {f.name for f in dataclasses.fields(cls.config_class)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"learner {name!r} has no option(s) {unknown}; allowed: {sorted(allowed)}")
    # Methods with a config_class take it as a third argument (Joint, LwF); Learner does not.
    return cls(scenario, train, cls.config_class(**options))  # type: ignore[call-arg]


# The built-in methods.
register_learner("finetune")(FineTune)
register_learner("joint")(Joint)
register_learner("lwf")(LwF)
