"""Forgetting-study tool: Hydra entry point over :func:`fedkd.continual.run_study`.

    python -m simulations.continual_study                          # conf_continual/continual.yaml
    python -m simulations.continual_study continual/sequence=rotated_digits train.epochs=5
    python -m simulations.continual_study learners.lwf.lam=3 seeds=[0,1,2,3,4]

Writes into the Hydra run directory: ``metrics.json`` (accuracy matrices per learner and seed,
ACC/BWT/FWT/forgetting/intransigence per seed and their mean ± std), ``config.yaml`` (the
resolved config), ``heatmap_<learner>.png`` and ``accuracy_over_tasks_<learner>.png``; logs to
W&B (offline by default) and prints the summary table and the run directory at the end.

The Hydra tree becomes typed dataclasses in one tested function, :func:`to_tool_config`; a bad
value stops the tool before any work with one line naming its key and exit status 2.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd.config import ConfigError
from fedkd.continual import (
    LearnerSpec,
    SequenceConfig,
    StudyConfig,
    TaskEvent,
    plot_accuracy_matrix,
    plot_accuracy_over_tasks,
    run_study,
    study_steps,
)
from fedkd.continual.study import summary_table
from fedkd.training import TrainConfig
from simulations.hydra_config import exit_on_config_error
from simulations.paths import CONTINUAL_CONF_DIR
from simulations.tracking import MODES, Tracker

__all__ = ["ToolConfig", "WandbConfig", "main", "run", "to_tool_config"]

_TOP_KEYS = {
    "seeds",
    "model",
    "train",
    "device",
    "threads",
    "plots",
    "progress",
    "logging",
    "sequence",
    "learners",
    "forgetting_since",
}
_TUPLE_FIELDS = {"class_order", "angles", "lam_schedule", "hidden_sizes", "channels"}


class ConfigKeyError(ConfigError):
    """A config key is unknown or its value invalid; the message names the Hydra path."""


@dataclass(frozen=True)
class WandbConfig:
    """W&B settings: offline by default, never prompts for a login."""

    mode: str = "offline"
    """``offline`` (sync later with ``wandb sync``), ``online`` (needs WANDB_API_KEY) or
    ``disabled``."""
    project: str = "fedkd-continual"
    """W&B project."""
    name: str | None = None
    """Run name; None lets W&B choose."""
    group: str | None = None
    """Run group, e.g. to collect a sweep."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigKeyError(
                f"invalid config key 'logging.wandb.mode': {self.mode!r}; allowed: {MODES}"
            )


@dataclass(frozen=True)
class ToolConfig:
    """The study plus what only the tool needs (logging, plots, progress, threads)."""

    study: StudyConfig
    """Sequence, learners, seeds, model and training settings."""
    wandb: WandbConfig = dataclasses.field(default_factory=WandbConfig)
    """W&B logging."""
    plots: bool = True
    """Save a heatmap and an accuracy-over-tasks plot per learner."""
    progress: bool = True
    """Show a tqdm progress bar (one step per task per run)."""
    threads: int | None = None
    """``torch.set_num_threads`` before the study (1 is fastest for tiny models)."""


def _plain(node: Any, path: str) -> dict[str, Any]:
    """A DictConfig (or mapping) as a plain dict with tuples for list-valued option fields."""
    value = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigKeyError(f"invalid config key '{path}': expected a mapping, got {value!r}")
    return {
        str(k): tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v
        for k, v in value.items()
    }


def _build(cls: type, values: Mapping[str, Any], path: str) -> Any:
    """``cls(**values)``; unknown keys and invalid values name their Hydra path."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigKeyError(
            f"invalid config key '{path}.{unknown[0]}'; allowed keys: {sorted(allowed)}"
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigKeyError(f"invalid config under '{path}': {err}") from err


def _learners(node: Any) -> tuple[LearnerSpec, ...]:
    specs = []
    for label, options in _plain(node, "learners").items():
        opts = _plain(options, f"learners.{label}")
        specs.append(LearnerSpec(label=str(label), name=str(opts.pop("name", label)), options=opts))
    return tuple(specs)


def to_tool_config(cfg: DictConfig) -> ToolConfig:
    """Convert the composed Hydra config (``conf_continual/continual.yaml``) into a
    :class:`ToolConfig`.

    Every value is validated here, before any training: an unknown key, a bad value, or a
    learner option its method does not have raises :class:`ConfigKeyError` with its path.
    """
    top = {str(k) for k in cfg} - {"hydra"}
    unknown = sorted(top - _TOP_KEYS)
    if unknown:
        raise ConfigKeyError(f"invalid config key '{unknown[0]}'; allowed: {sorted(_TOP_KEYS)}")
    model = _plain(cfg.model, "model")
    sequence = _build(SequenceConfig, _plain(cfg.sequence, "sequence"), "sequence")
    train = _build(TrainConfig, _plain(cfg.train, "train"), "train")
    study = _build(
        StudyConfig,
        {
            "sequence": sequence,
            "learners": _learners(cfg.learners),
            "seeds": tuple(int(s) for s in cfg.seeds),
            "model": model.get("name", "mlp"),
            "model_options": _plain(model.get("options"), "model.options"),
            "train": train,
            "device": str(cfg.device),
            "forgetting_since": str(cfg.get("forgetting_since", "start")),
        },
        "study",
    )
    _check_learner_options(study)
    wandb = _build(WandbConfig, _plain(cfg.logging.wandb, "logging.wandb"), "logging.wandb")
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigKeyError(f"invalid config key 'threads': {threads!r}; an int >= 1 or null")
    return ToolConfig(
        study=study,
        wandb=wandb,
        plots=bool(cfg.plots),
        progress=bool(cfg.progress),
        threads=threads,
    )


def _check_learner_options(study: StudyConfig) -> None:
    """Build every learner once, so a bad option fails now rather than after other runs."""
    from fedkd.continual import build_learner

    for spec in study.learners:
        try:
            build_learner(spec.name, study.sequence.scenario, study.train, spec.options)
        except (TypeError, ValueError) as err:
            raise ConfigKeyError(f"invalid config under 'learners.{spec.label}': {err}") from err


# --------------------------------------------------------------------------- running


def _write_plots(results: dict[str, Any], run_dir: Path) -> list[Path]:
    paths = []
    descriptions = results["task_descriptions"]  # one list per seed
    same = all(d == descriptions[0] for d in descriptions)  # else "task j" differs across seeds
    labels = [f"{j}: {d}" for j, d in enumerate(descriptions[0])] if same else None
    for label in results["learners"]:
        matrices = results["acc_matrix"][label]
        title = f"{label} on {results['sequence_name']} ({results['scenario']})"
        paths.append(
            plot_accuracy_matrix(
                matrices, run_dir / f"heatmap_{label}.png", title=title, task_labels=labels
            )
        )
        paths.append(
            plot_accuracy_over_tasks(
                matrices, run_dir / f"accuracy_over_tasks_{label}.png", title=title
            )
        )
    return paths


def _event_logger(tracker: Tracker, bar: Any) -> Any:
    axes: set[str] = set()

    def on_task(event: TaskEvent) -> None:
        seen = event.accuracies[: event.task + 1]
        avg = sum(seen) / len(seen)
        bar.set_postfix_str(f"{event.label} seed={event.seed} task={event.task} acc={avg:.3f}")
        bar.update(1)
        prefix = f"{event.label}/seed{event.seed}"
        if prefix not in axes:  # each learner x seed on its own task axis in W&B
            tracker.step_axis(f"{prefix}/*", f"{prefix}/task")
            axes.add(prefix)
        tracker.log(
            {
                f"{prefix}/task": event.task,
                f"{prefix}/avg_acc_seen": avg,
                f"{prefix}/train_loss": event.train_loss,
            }
        )

    return on_task


def run(cfg: DictConfig, run_dir: str | Path, tool: ToolConfig | None = None) -> dict[str, Any]:
    """Run the study ``cfg`` describes and write its files into ``run_dir``.

    ``tool`` is ``to_tool_config(cfg)`` when the caller has already validated ``cfg``.
    Returns the results dict that was written to ``run_dir/metrics.json``.
    """
    from tqdm.auto import tqdm

    started = time.perf_counter()
    tool = tool if tool is not None else to_tool_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if tool.threads is not None:
        import torch

        torch.set_num_threads(tool.threads)
    tracker = Tracker(
        mode=tool.wandb.mode,
        project=tool.wandb.project,
        name=tool.wandb.name,
        group=tool.wandb.group,
        run_dir=run_dir,
        config=_plain(cfg, "config"),
    )
    try:
        with tqdm(total=study_steps(tool.study), disable=not tool.progress, desc="study") as bar:
            results = run_study(tool.study, on_task=_event_logger(tracker, bar))
        (run_dir / "metrics.json").write_text(json.dumps(results, indent=2, allow_nan=False))
        if tool.plots:
            figures = _write_plots(results, run_dir)
            tracker.images({Path(path).stem: path for path in figures})
        tracker.summary(
            {
                f"{label}/{metric}_{stat}": results["summary"][label][metric][stat]
                for label in results["learners"]
                for metric in results["summary"][label]
                for stat in ("mean", "std")
            }
        )
    finally:
        tracker.finish()
    print(summary_table(results))
    print(f"study took {time.perf_counter() - started:.0f}s")  # what the docs' timing quotes
    print(f"run directory: {run_dir.resolve()}")
    return results


@hydra.main(config_path=CONTINUAL_CONF_DIR, config_name="continual", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: ``python -m simulations.continual_study [overrides]``.

    Exits with status 2 and one line on stderr for an invalid config value, before any work.
    """
    try:
        tool = to_tool_config(cfg)
    except ConfigError as error:
        exit_on_config_error("continual_study", error)
    run(cfg, HydraConfig.get().runtime.output_dir, tool)


if __name__ == "__main__":
    main()
