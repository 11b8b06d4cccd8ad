"""Hydra's nested config → fedkd's typed configs, in one tested function.

The FD groups (``dataset``, ``partition``, ``models``, ``strategy``, ``aggregation`` and the
``fd`` block) hold :class:`fedkd.config.FDConfig` fields by name; they are flattened here. A key
that is not a field, or one set in two groups, fails before any work, with its Hydra path.
The entry points turn such a :class:`~fedkd.config.ConfigError` into one line on stderr and
exit status 2 with :func:`exit_on_config_error`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from omegaconf import DictConfig, OmegaConf

from fedkd.config import ConfigError, FDConfig
from simulations.engine import SimulationConfig
from simulations.tracking import MODES

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

FD_GROUPS = ("dataset", "partition", "models", "strategy", "aggregation", "fd")

T = TypeVar("T", bound="DataclassInstance")


@dataclass(frozen=True)
class LoggingConfig:
    """W&B settings (offline by default; never prompts)."""

    mode: str = "offline"
    project: str = "fedkd"
    group: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"invalid config key 'logging.wandb.mode': {self.mode!r}; "
                f"allowed: {', '.join(MODES)}"
            )


EXPORT_CHOICES: tuple[str, ...] = ("none", "fp32", "ptq", "qat", "prune")
"""Values of the top-level ``export_student`` key (``none`` or a ``fedkd.compress`` method)."""


@dataclass(frozen=True)
class RunSpec:
    """Everything one simulation run needs, typed and validated."""

    fd: FDConfig
    simulation: SimulationConfig
    logging: LoggingConfig
    references: bool = True
    export_student: str = "none"
    """After the run, compress the student and write ``<run dir>/student.onnx``: ``none``,
    ``fp32``, ``ptq``, ``qat`` or ``prune`` (``python -m fedkd.compress``; docs/compression.md)."""


def flatten_fd_groups(cfg: DictConfig | dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the FD groups into one flat dict; also return each field's Hydra path."""
    tree = _tree(cfg)
    known = {f.name for f in fields(FDConfig)}
    flat: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for group in FD_GROUPS:
        for key, value in _section(tree, group).items():
            path = f"{group}.{key}"
            if key not in known:
                raise ConfigError(
                    f"unknown config key '{path}'; FD keys are: {', '.join(sorted(known))}"
                )
            if key in flat:
                raise ConfigError(f"config key '{key}' is set twice: '{paths[key]}' and '{path}'")
            flat[key], paths[key] = value, path
    return flat, paths


def build_run_spec(cfg: DictConfig | dict[str, Any], *, run_dir: str = "") -> RunSpec:
    """Validate the whole composed config; errors name the Hydra key and the allowed values."""
    flat, paths = flatten_fd_groups(cfg)
    try:
        fd = FDConfig(**{**flat, "run_dir": run_dir})
    except ConfigError as exc:
        raise ConfigError(_with_hydra_path(str(exc), paths)) from None
    tree = _tree(cfg)
    sim = _typed(SimulationConfig, _section(tree, "simulation"), "simulation")
    log_cfg = _typed(LoggingConfig, _section(_section(tree, "logging"), "wandb"), "logging.wandb")
    export = str(tree.get("export_student", "none"))
    if export not in EXPORT_CHOICES:
        raise ConfigError(
            f"invalid config key 'export_student': got {export!r}; allowed: "
            f"{', '.join(EXPORT_CHOICES)}"
        )
    return RunSpec(
        fd=fd,
        simulation=sim,
        logging=log_cfg,
        references=bool(tree.get("references", True)),
        export_student=export,
    )


def exit_on_config_error(prog: str, error: ConfigError) -> NoReturn:
    """Report a bad config value as one line on stderr and exit with status 2, no traceback.

    A bad value is the user's to fix, not a crash: the message already names the key (with its
    Hydra path) and the allowed values. Call it from inside a ``@hydra.main`` function: Hydra
    catches exceptions (and prints their traceback) but lets ``SystemExit`` through. With
    ``HYDRA_FULL_ERROR=1`` the error is re-raised, for Hydra's full trace.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"{prog}: error: {error}", file=sys.stderr)
    raise SystemExit(2)


def _tree(cfg: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The composed config as a plain dict (interpolations resolved)."""
    if not isinstance(cfg, DictConfig):
        return cfg
    tree = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(tree, dict):  # a DictConfig always converts to a dict; narrows the type
        raise ConfigError(f"the config must be a mapping, got {tree!r}")
    return {str(k): v for k, v in tree.items()}


def _section(tree: dict[str, Any], key: str) -> dict[str, Any]:
    value = tree.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
    return value


def _typed(cls: type[T], values: dict[str, Any], path: str) -> T:
    """``cls(**values)`` where every error is a :class:`ConfigError` naming a key under ``path``."""
    allowed = sorted(f.name for f in fields(cls))
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(
            f"unknown config key '{path}.{unknown[0]}'; allowed keys: {', '.join(allowed)}"
        )
    try:
        return cls(**values)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. SimulationConfig raises plain ValueError
        message = str(exc)  # keep a message that already names its key
        if f"'{path}." not in message:
            message = f"invalid config under '{path}': {message}"
        raise ConfigError(message) from None


def _with_hydra_path(message: str, paths: dict[str, str]) -> str:
    """Add the Hydra path (``partition.alpha``) to a message naming the run-config key."""
    for name, path in paths.items():
        if f"'{name.replace('_', '-')}'" in message:
            return f"{message} (Hydra key: {path})"
    return message
