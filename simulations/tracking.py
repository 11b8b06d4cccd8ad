"""Weights & Biases logging that never asks for an account.

W&B is *offline* by default: runs are written under the run directory and can be synced later
with ``wandb sync <run_dir>/wandb/offline-run-*``. ``mode=online`` needs ``WANDB_API_KEY`` in
the environment (checked up front, so no interactive login prompt can ever appear);
``mode=disabled`` turns it off. Every entry point logs through :class:`Tracker`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, cast, get_args

WandbMode = Literal["offline", "online", "disabled"]
MODES: tuple[str, ...] = get_args(WandbMode)


# overrides that do not change what a run computes: where it writes, logging, resuming
_NOT_A_VARIATION = ("hydra.", "logging", "fd.resume", "simulation")
SEED_OVERRIDE = "fd.seed="


def names_from_overrides(overrides: Sequence[str]) -> tuple[str, str]:
    """W&B run name and group from what a run varies (its command-line overrides), not the time.

    ``["aggregation=median", "fd.seed=1", "hydra.run.dir=x"]`` → name
    ``"aggregation=median,fd.seed=1"``, group ``"aggregation=median"``: the seeds of one setting
    share a group, so W&B draws them as one line with a band. No overrides → ``"defaults"``.
    """
    kept = sorted(
        o.lstrip("+~") for o in overrides if not o.lstrip("+~").startswith(_NOT_A_VARIATION)
    )
    name = ",".join(kept) or "defaults"
    group = ",".join(o for o in kept if not o.startswith(SEED_OVERRIDE)) or "defaults"
    return name[:128], group[:128]


class Tracker:
    """A thin, optional W&B run: ``log`` per step, ``summary`` at the end, ``finish`` once."""

    def __init__(
        self,
        *,
        mode: str = "offline",
        project: str = "fedkd",
        name: str | None = None,
        group: str | None = None,
        run_dir: str | Path = ".",
        config: Mapping[str, Any] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(
                f"invalid config key 'logging.wandb.mode': {mode!r}; allowed: {', '.join(MODES)}"
            )
        if mode == "online" and not os.environ.get("WANDB_API_KEY"):
            raise ValueError(
                "invalid config key 'logging.wandb.mode': 'online' needs WANDB_API_KEY in the "
                "environment (fedkd never prompts for a login); use 'offline' and "
                "`wandb sync` later"
            )
        self.mode = mode
        self._run: Any = None
        if mode == "disabled":
            return
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ.setdefault("WANDB_CONSOLE", "off")
        import wandb

        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=project,
            name=name,
            group=group,
            dir=str(run_dir),
            mode=cast(WandbMode, mode),  # checked against MODES above
            config=dict(config or {}),
            reinit="finish_previous",
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True),
        )

    @property
    def active(self) -> bool:
        """True when a W&B run is open."""
        return self._run is not None

    @property
    def run_path(self) -> str | None:
        """Local directory of the W&B run files (offline), for the user to sync."""
        return None if self._run is None else str(self._run.dir)

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (non-numeric values are skipped: W&B tables are not needed)."""
        if self._run is None:
            return
        numeric = {
            k: v
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._run.log(numeric, step=step)

    def step_axis(self, pattern: str, step_metric: str) -> None:
        """Plot the metrics matching ``pattern`` (e.g. ``"lwf/seed0/*"``) against
        ``step_metric`` instead of W&B's global step: runs that log several series (learners x
        seeds) get one axis each, not one shared counter."""
        if self._run is not None:
            self._run.define_metric(step_metric, hidden=True)
            self._run.define_metric(pattern, step_metric=step_metric)

    def images(self, figures: Mapping[str, str | Path], step: int | None = None) -> None:
        """Log saved figures (PNG paths) as W&B images, so the run page carries the plots."""
        if self._run is None:
            return
        import wandb

        existing = {k: Path(p) for k, p in figures.items() if Path(p).exists()}
        if existing:
            self._run.log({k: wandb.Image(str(p)) for k, p in existing.items()}, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values shown on the run page."""
        if self._run is not None:
            for key, value in values.items():
                self._run.summary[key] = value

    def finish(self) -> None:
        """Close the run (idempotent)."""
        if self._run is not None:
            self._run.finish()
            self._run = None
