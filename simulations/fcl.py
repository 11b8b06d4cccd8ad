"""Federated continual learning tool: FedAvg or FD, with a local continual learner per client.

    fedkd-fcl                                  # conf_continual/fcl.yaml: 4 variants x 3 seeds
    python -m simulations.fcl continual/sequence=split_digits_class_il
    python -m simulations.fcl seeds=[0] rounds_per_task=2 '~fcl/variant@variants.fedavg_lwf'

Each variant federates one local learner (``fcl/variant``: FedAvg or FD, fine-tuning, LwF or
joint) over the same clients and task sequence, per seed. After every task the global model
(FedAvg's average, FD's student) and every client's model are tested on every task: their
accuracy matrices give ACC, BWT and forgetting. Bytes are counted per task.

**The federation runs in process, without Flower**: clients are Python objects, FedAvg
averages their weights with :func:`fedkd.continual.federated.average_state_dicts`, FD
aggregates their soft predictions with :func:`strategies.aggregation.aggregate` — the same
rules the Flower strategy uses — and distils the student with
:class:`fedkd.continual.federated.StudentDistiller`. Byte counts are the payload sizes the
messages would carry (weights both ways for FedAvg; float32 predictions up for FD).

Writes into the Hydra run directory: ``metrics.json``, ``config.yaml``, ``summary.md`` (the
table), ``heatmap_<variant>_student.png``, ``heatmap_<variant>_clients.png`` and
``forgetting_across_clients.png``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd.config import ConfigError
from fedkd.continual import SequenceConfig, mean_std, plot_accuracy_matrix
from fedkd.continual.federated import build_client_learner
from fedkd.training import TrainConfig
from simulations.continual_study import ConfigKeyError, _build, _plain
from simulations.hydra_config import exit_on_config_error
from simulations.paths import CONTINUAL_CONF_DIR
from strategies.fcl import (
    FCLConfig,
    VariantSpec,
    client_spec,
    in_process,
    run_scores,
    run_variant,
)

__all__ = ["FCLConfig", "VariantSpec", "main", "run", "run_fcl", "summary_table", "to_fcl_config"]

ENGINES = ("inprocess", "local", "ray")


def run_fcl(
    cfg: FCLConfig,
    *,
    on_run: Callable[[str, int, dict], None] | None = None,
    engine: str = "inprocess",
) -> dict[str, Any]:
    """Every variant for every seed; JSON-ready results.

    ``engine``: ``inprocess`` calls client objects directly; ``local`` and ``ray`` run the
    fedkd ServerApp/ClientApp pair (one Flower run for every variant and seed) on the
    in-process grid or on Flower's Ray simulation engine. All three give the same numbers.

    Returns
    -------
    dict
        ``runs[label]``: one dict per seed (``student`` T×T, ``clients`` clients×T×T,
        ``bytes_per_task``, ``orders``, ``learned_at``, ``seconds``, ``student_scores``,
        ``client_scores`` per client); ``summary[label]``: mean ± std over seeds of the
        student's ACC/BWT/forgetting, of the clients' (their mean per seed), and of the bytes
        per task.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    runs: dict[str, list[dict]] = {v.label: [] for v in cfg.variants}

    def record(label: str, seed: int, run: dict[str, Any]) -> None:
        run["student_scores"], run["client_scores"] = run_scores(run)
        runs[label].append(run)
        if on_run is not None:
            on_run(label, seed, run)

    if engine == "inprocess":
        for seed in cfg.seeds:
            for spec in cfg.variants:
                tasks, federation = in_process(spec, cfg, seed)
                record(spec.label, seed, run_variant(spec, tasks, cfg, seed, federation))
    else:
        run_on_flower(cfg, record, backend=engine)
    missing = [
        (v.label, len(runs[v.label])) for v in cfg.variants if len(runs[v.label]) != len(cfg.seeds)
    ]
    if missing:
        raise RuntimeError(f"the {engine} run did not finish every seed of {missing}")
    descriptions = [
        client_spec(cfg.variants[0], cfg, seed).tasks().sequence.describe() for seed in cfg.seeds
    ]
    return {
        "variants": [v.label for v in cfg.variants],
        "seeds": list(cfg.seeds),
        "scenario": cfg.sequence.scenario,
        "num_tasks": cfg.sequence.task_count,
        "schedule_shift": cfg.schedule_shift,
        "engine": engine,
        "task_descriptions": descriptions,
        "runs": runs,
        "summary": {label: _summary(per_seed) for label, per_seed in runs.items()},
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=list)),
    }


def run_on_flower(
    cfg: FCLConfig, record: Callable[[str, int, dict[str, Any]], None], *, backend: str
) -> None:
    """Every variant and seed in one Flower run: the fedkd ServerApp for FCL
    (:func:`strategies.fcl_app.make_fcl_server_app`) against the fedkd ClientApp, one
    SuperNode per client, on the in-process grid (``local``) or Ray (``ray``)."""
    from fedkd.client_app import make_client_app
    from simulations.engine import SimulationConfig, run_apps
    from strategies.fcl_app import make_fcl_server_app

    server_app = make_fcl_server_app(cfg, record)
    run_apps(server_app, make_client_app({}), cfg.num_clients, SimulationConfig(backend=backend))


def _scored(run: Mapping[str, Any]) -> list[dict[str, float]]:
    """The run's client scores, leaving out clients with a missing row (a rejected reply)."""
    return [s for s in run["client_scores"] if s is not None]


def _complete(matrices: list[list[list[float] | None]]) -> list[list[list[float]]]:
    """The client matrices with every row present."""
    return [m for m in matrices if all(row is not None for row in m)]  # type: ignore[misc]


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over seeds; the clients' entry of a seed is the mean of those that reported
    every stage (``None`` when no client did in any seed)."""
    entry: dict[str, Any] = {}
    for metric in ("acc", "bwt", "forgetting"):
        entry[f"student_{metric}"] = mean_std([r["student_scores"][metric] for r in per_seed])
        means = [np.mean([s[metric] for s in _scored(r)]) for r in per_seed if _scored(r)]
        entry[f"clients_{metric}"] = mean_std(means) if means else None
    entry["bytes_per_task"] = mean_std([np.mean(r["bytes_per_task"]) for r in per_seed])
    return entry


def summary_table(results: Mapping[str, Any]) -> str:
    """Markdown table: student and client ACC / BWT / forgetting (mean ± std), bytes per task."""
    cols = [
        ("student_acc", "student ACC"),
        ("student_bwt", "student BWT"),
        ("student_forgetting", "student forgetting"),
        ("clients_acc", "clients ACC"),
        ("clients_forgetting", "clients forgetting"),
    ]
    lines = [
        f"{results['scenario']}, {results['num_tasks']} tasks, seeds {results['seeds']}",
        "",
        "| variant | " + " | ".join(name for _, name in cols) + " | KiB per task |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for label in results["variants"]:
        s = results["summary"][label]
        cells = [
            "—" if s[k] is None else f"{s[k]['mean']:+.3f} ± {s[k]['std']:.3f}" for k, _ in cols
        ]
        kib = s["bytes_per_task"]["mean"] / 1024
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {kib:,.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots


def write_plots(results: Mapping[str, Any], run_dir: Path) -> list[Path]:
    """Heatmaps with ± std (student over seeds; clients over clients × seeds) per variant,
    and forgetting across clients."""
    paths = []
    scenario = results["scenario"]
    for label in results["variants"]:
        per_seed = results["runs"][label]
        student = [r["student"] for r in per_seed]
        clients = _complete([m for r in per_seed for m in r["clients"]])
        paths.append(
            plot_accuracy_matrix(
                student,
                run_dir / f"heatmap_{label}_student.png",
                title=f"{label} student",
                spread=True,
            )
        )
        if clients:
            paths.append(
                plot_accuracy_matrix(
                    clients,
                    run_dir / f"heatmap_{label}_clients.png",
                    title=f"{label} clients ({scenario})",
                    spread=True,
                )
            )
    paths.append(plot_client_forgetting(results, run_dir / "forgetting_across_clients.png"))
    return paths


def plot_client_forgetting(results: Mapping[str, Any], path: Path) -> Path:
    """One box per variant over every client and seed, the student's forgetting as dots."""
    from fedkd.plots import _pyplot, _save

    plt = _pyplot()
    labels = list(results["variants"])
    fig, ax = plt.subplots(figsize=(1.5 + 1.3 * len(labels), 4))
    per_client = [
        [s["forgetting"] for r in results["runs"][label] for s in _scored(r)] for label in labels
    ]
    ax.boxplot(per_client, tick_labels=labels)
    for i, label in enumerate(labels, start=1):
        student = [r["student_scores"]["forgetting"] for r in results["runs"][label]]
        ax.scatter([i] * len(student), student, color="red", zorder=3, label=None)
    ax.scatter([], [], color="red", label="student (one dot per seed)")
    ax.set(ylabel="forgetting", title=f"Forgetting across clients ({results['scenario']})")
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- Hydra


_TOP_KEYS = {
    "sequence",
    "variants",
    "seeds",
    "clients",
    "rounds_per_task",
    "local",
    "server",
    "temperature",
    "aggregation_rule",
    "query",
    "model",
    "device",
    "threads",
    "plots",
    "engine",
}


def to_fcl_config(cfg: DictConfig) -> tuple[FCLConfig, dict[str, Any]]:
    """The composed Hydra config (``conf_continual/fcl.yaml``) as an :class:`FCLConfig` plus the
    tool's own settings (``threads``, ``plots``). Unknown keys and bad values raise
    :class:`ConfigKeyError` naming their path, before any work."""
    top = {str(k) for k in cfg} - {"hydra"}
    unknown = sorted(top - _TOP_KEYS)
    if unknown:
        raise ConfigKeyError(f"invalid config key '{unknown[0]}'; allowed: {sorted(_TOP_KEYS)}")
    variants = []
    for label, node in _plain(cfg.variants, "variants").items():
        values = _plain(node, f"variants.{label}")
        values["learner_options"] = _plain(values.get("learner_options"), f"variants.{label}")
        variant = _build(VariantSpec, {"label": str(label), **values}, f"variants.{label}")
        try:
            build_client_learner(
                variant.learner, cfg.sequence.scenario, TrainConfig(), variant.learner_options
            )
        except (TypeError, ValueError) as err:
            raise ConfigKeyError(f"invalid config under 'variants.{label}': {err}") from err
        variants.append(variant)
    clients = _plain(cfg.clients, "clients")
    model = _plain(cfg.model, "model")
    fcl = _build(
        FCLConfig,
        {
            "sequence": _build(SequenceConfig, _plain(cfg.sequence, "sequence"), "sequence"),
            "variants": tuple(variants),
            "seeds": tuple(int(s) for s in cfg.seeds),
            "num_clients": clients.get("num", 5),
            "partition": clients.get("partition", "dirichlet"),
            "alpha": clients.get("alpha", 0.5),
            "min_rows": clients.get("min_rows", 8),
            "public_fraction": clients.get("public_fraction", 0.3),
            "schedule_shift": clients.get("schedule_shift", 0),
            "rounds_per_task": int(cfg.rounds_per_task),
            "local": _build(TrainConfig, _plain(cfg.local, "local"), "local"),
            "server": _build(TrainConfig, _plain(cfg.server, "server"), "server"),
            "temperature": float(cfg.temperature),
            "aggregation": str(cfg.aggregation_rule),
            "query": str(cfg.query),
            "model": model.get("name", "mlp"),
            "model_options": _plain(model.get("options"), "model.options"),
            "device": str(cfg.device),
        },
        "fcl",
    )
    threads = cfg.get("threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigKeyError(f"invalid config key 'threads': {threads!r}; an int >= 1 or null")
    engine = cfg.get("engine", "inprocess")
    if engine not in ENGINES:
        raise ConfigKeyError(f"invalid config key 'engine': {engine!r}; allowed: {list(ENGINES)}")
    return fcl, {"threads": threads, "plots": bool(cfg.get("plots", True)), "engine": engine}


def run(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Run the comparison ``cfg`` describes; write metrics.json, summary.md, config.yaml, plots."""
    fcl, tool = to_fcl_config(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if tool["threads"] is not None:
        torch.set_num_threads(tool["threads"])

    def progress(label: str, seed: int, result: dict) -> None:
        s = result["student_scores"]
        print(
            f"{label} seed={seed}: student ACC {s['acc']:.3f} forgetting {s['forgetting']:.3f} "
            f"({result['seconds']:.1f} s)",
            flush=True,
        )

    results = run_fcl(fcl, on_run=progress, engine=tool["engine"])
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=1, allow_nan=False))
    table = summary_table(results)
    (run_dir / "summary.md").write_text(table + "\n")
    if tool["plots"]:
        write_plots(results, run_dir)
    print(table)
    print(f"run directory: {run_dir.resolve()}")
    return results


@hydra.main(config_path=CONTINUAL_CONF_DIR, config_name="fcl", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        to_fcl_config(cfg)
    except ConfigError as error:
        exit_on_config_error("fcl", error)
    run(cfg, HydraConfig.get().runtime.output_dir)


def main() -> None:
    """Console script ``fedkd-fcl`` and ``python -m simulations.fcl``: Hydra overrides as
    arguments; a bad value exits with status 2 and one line naming its key."""
    _hydra_main()


if __name__ == "__main__":
    main()
