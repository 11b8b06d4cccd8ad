"""Hydra's nested config → fedkd's typed configs, in one tested function.

The FD groups (``dataset``, ``partition``, ``models``, ``strategy``, ``aggregation`` and the
``fd`` block) hold :class:`fedkd.config.FDConfig` fields by name; they are flattened here. A key
that is not a field, or one set in two groups, fails before any work, with its Hydra path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from omegaconf import DictConfig, OmegaConf

from fedkd.config import ConfigError, FDConfig
from simulations.engine import SimulationConfig
from simulations.tracking import MODES

FD_GROUPS = ("dataset", "partition", "models", "strategy", "aggregation", "fd")


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


@dataclass(frozen=True)
class RunSpec:
    """Everything one simulation run needs, typed and validated."""

    fd: FDConfig
    simulation: SimulationConfig
    logging: LoggingConfig
    references: bool = True


def flatten_fd_groups(cfg: DictConfig | dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge the FD groups into one flat dict; also return each field's Hydra path."""
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    known = {f.name for f in fields(FDConfig)}
    flat: dict[str, Any] = {}
    paths: dict[str, str] = {}
    for group in FD_GROUPS:
        for key, value in (tree.get(group) or {}).items():  # type: ignore[union-attr]
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
    tree = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    sim = SimulationConfig(**_section(tree, "simulation"))
    log_cfg = LoggingConfig(**_section(_section(tree, "logging"), "wandb"))
    return RunSpec(
        fd=fd, simulation=sim, logging=log_cfg, references=bool(tree.get("references", True))
    )


def _section(tree: Any, key: str) -> dict[str, Any]:
    value = tree.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
    return value


def _with_hydra_path(message: str, paths: dict[str, str]) -> str:
    """Add the Hydra path (``partition.alpha``) to a message naming the run-config key."""
    for name, path in paths.items():
        if f"'{name.replace('_', '-')}'" in message:
            return f"{message} (Hydra key: {path})"
    return message
