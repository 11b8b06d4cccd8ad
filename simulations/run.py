"""``fedkd-sim``: the Hydra entry point for federated-distillation simulations.

    fedkd-sim                                   # FD on digits, 10 clients, Ray, ~1 minute
    fedkd-sim strategy=fedavg                   # Flower's FedAvg on the same setting
    fedkd-sim -m aggregation=mean,median fd.seed=0,1,2     # a sweep (Hydra multirun)

Each run writes into its Hydra run directory: ``metrics.json`` (one record per round),
``summary.json`` (final and reference accuracies), ``config.yaml`` (resolved config),
``run_config.json`` (the flat Flower run-config, reusable with ``flwr run``), plots, and the
offline W&B run. A bad config value stops the run before any work with one line naming the
key (``fedkd-sim: error: invalid config key 'temperature': ... (Hydra key: fd.temperature)``)
and exit status 2.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from fedkd.client import client_partitions, load_splits_for
from fedkd.client_app import make_client_app
from fedkd.config import ConfigError, FDConfig, to_run_config
from fedkd.data import label_histogram, plot_label_histogram
from fedkd.data.hub import DatasetUnavailableError
from simulations.engine import run_apps, scratch_client_state
from simulations.hydra_config import (
    RunSpec,
    build_run_spec,
    exit_on_config_error,
    flatten_fd_groups,
)
from simulations.paths import CONF_DIR
from simulations.resume import prepare_argv, record_resume, resume_config, resume_dir
from simulations.tracking import Tracker, names_from_overrides
from strategies.fed_distill import NotEnoughNodes, RoundRecord
from strategies.reporting import accuracy_summary, write_json_atomic
from strategies.server_app import NoRoundCompleted, make_server_app

log = logging.getLogger(__name__)
RUN_FIGURES = ("accuracy_vs_round", "accuracy_vs_bytes", "partition")  # logged to W&B as images


def run_experiment(
    spec: RunSpec,
    resolved_config: dict[str, Any] | None = None,
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Run one simulation described by ``spec``; write its outputs; return the summary.

    ``overrides`` (the command line's) name the W&B run and its group: what the run varies.
    """
    cfg = spec.fd
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "run_config.json", to_run_config(cfg))
    if resolved_config is not None:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(resolved_config)))
    save_partition_plot(spec)
    name, group = names_from_overrides(overrides)
    tracker = Tracker(
        mode=spec.logging.mode,
        project=spec.logging.project,
        group=spec.logging.group or group,
        name=name,
        run_dir=run_dir,
        config=to_run_config(cfg),
    )
    records: list[RoundRecord] = []

    def on_round(record: RoundRecord) -> None:
        records.append(record)
        tracker.log(record.as_dict(), step=record.round)

    started = time.perf_counter()
    cfg, scratch = scratch_client_state(cfg, run_dir)
    run_config = to_run_config(cfg)
    try:
        run_apps(
            make_server_app(run_config, [on_round]),
            make_client_app(run_config),
            cfg.num_nodes,
            spec.simulation,
        )
        summary = summarize(spec, full_history(run_dir, records), time.perf_counter() - started)
        tracker.summary({k: v for k, v in summary.items() if isinstance(v, int | float)})
        tracker.images({stem: run_dir / f"{stem}.png" for stem in RUN_FIGURES})
    finally:
        tracker.finish()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if spec.export_student != "none":
        summary["export"] = export_student(run_dir, spec.export_student)
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def preflight(spec: RunSpec, paths: dict[str, str] | None = None) -> None:
    """Config that could only fail later (or hang), refused before any work.

    Raises :class:`ConfigError` naming the key: a CUDA device on a machine without CUDA, GPU
    shares or CPUs per client that the local Ray cannot provide (Ray would wait forever for
    them), a top-k or Byzantine target outside the dataset's classes. Loads the dataset's
    splits (cached; the run needs them next) and so also raises
    :class:`~fedkd.data.hub.DatasetUnavailableError` for a hub dataset that cannot be found.
    """
    import torch

    cfg, sim = spec.fd, spec.simulation
    paths = paths or {}

    def refuse(key: str, message: str) -> None:
        where = f" (Hydra key: {paths[key]})" if key in paths else ""
        raise ConfigError(f"invalid config key '{key.replace('_', '-')}': {message}{where}")

    cuda = torch.cuda.is_available()
    on_this_machine = sim.backend == "local" or not (sim.address or os.environ.get("RAY_ADDRESS"))
    if cfg.device == "cuda" and not cuda:
        refuse("device", "'cuda' but torch sees no CUDA device here; use auto or cpu")
    if cfg.client_device == "cuda" and not cuda and on_this_machine:
        refuse("client_device", "'cuda' but torch sees no CUDA device here; use auto or cpu")
    if sim.backend == "ray" and on_this_machine:
        gpus = sim.ray_num_gpus if sim.ray_num_gpus is not None else torch.cuda.device_count()
        if sim.client_gpus > 0 and gpus == 0:
            raise ConfigError(
                f"invalid config key 'simulation.client_gpus': each client reserves "
                f"{sim.client_gpus} GPU but this machine has no GPU for Ray, so no client could "
                "start; use simulation=ray_cpu (or simulation=local)"
            )
        cpus = sim.ray_num_cpus if sim.ray_num_cpus is not None else (os.cpu_count() or 1)
        if sim.client_cpus > cpus:
            raise ConfigError(
                f"invalid config key 'simulation.client_cpus': each client reserves "
                f"{sim.client_cpus} CPUs but Ray has {cpus}, so no client could start"
            )
    num_classes = load_splits_for(cfg).num_classes
    if cfg.topk > num_classes:
        refuse("topk", f"{cfg.topk} exceeds the {num_classes} classes of dataset {cfg.dataset!r}")
    if cfg.byzantine_target >= num_classes:
        refuse(
            "byzantine_target",
            f"{cfg.byzantine_target} is not a class of dataset {cfg.dataset!r} "
            f"(classes 0..{num_classes - 1})",
        )


def export_student(run_dir: Path, method: str) -> dict[str, Any]:
    """Compress the run's student with ``method`` and write ``<run dir>/student.onnx``."""
    from fedkd.compress.cli import compress_run  # the optional compress extra, only when asked

    result = compress_run(run_dir, run_dir / "student.onnx", method=method)
    log.info(
        "student exported (%s): %d bytes, %.2fx smaller than fp32, test accuracy %.4f -> %s",
        method,
        result["bytes"],
        result["fp32_bytes"] / result["bytes"],
        result["accuracy"],
        result["out"],
    )
    return result


def full_history(run_dir: Path, records: list[RoundRecord]) -> list[RoundRecord]:
    """Every round of the run, also those before a resume: ``metrics.json`` holds them all
    (the server replays the checkpoint's history into it), ``records`` only this process's."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return records
    return [RoundRecord(**row) for row in json.loads(path.read_text())]


def save_partition_plot(spec: RunSpec) -> Path:
    """Per-client label histogram of this run's partition (data and picture)."""
    cfg = spec.fd
    splits = load_splits_for(cfg)
    hist = label_histogram(
        splits.train_y.numpy(), client_partitions(cfg, cfg.num_clients), splits.num_classes
    )
    write_json_atomic(Path(cfg.run_dir) / "partition.json", hist.tolist())
    return plot_label_histogram(
        hist, Path(cfg.run_dir) / "partition.png", title=partition_title(cfg)
    )


def partition_title(cfg: FDConfig) -> str:
    """The partition plot's title, with the partition's own parameter (α for Dirichlet)."""
    detail = {
        "dirichlet": f" (α={cfg.alpha:g})",
        "pathological": f" ({cfg.classes_per_partition} classes per client)",
        "shard": f" ({cfg.shards_per_partition} shards per client)",
    }.get(cfg.partition, "")
    return f"{cfg.dataset}: {cfg.partition} partition{detail} over {cfg.num_clients} clients"


def summarize(spec: RunSpec, records: list[RoundRecord], seconds: float) -> dict[str, Any]:
    """Final numbers of a run (never a max over test rounds), with the references when asked."""
    if not records:
        raise RuntimeError("the run produced no rounds; see the log above for the cause")
    summary: dict[str, Any] = {
        "strategy": spec.fd.strategy,
        "aggregation": spec.fd.aggregation,
        **accuracy_summary(records),
        "wall_seconds": seconds,
    }
    if spec.references:
        from fedkd.references import compute_references

        log.info(
            "training the references (%d local-only clients, centralized, public labels) ...",
            spec.fd.num_clients,
        )
        started = time.perf_counter()
        refs = compute_references(spec.fd)
        log.info("references done in %.0fs", time.perf_counter() - started)
        summary.update(
            local_only_accuracy=refs.local_only_mean,
            local_only_per_client=refs.local_only,
            centralized_accuracy=refs.centralized,
            public_labels_accuracy=refs.public_labels,
            references=refs.as_dict(),
        )
    return summary


def print_summary(summary: dict[str, Any], run_dir: str) -> None:
    """The last lines a user reads."""
    print(
        f"\nfinal student test accuracy {summary['final_student_accuracy']:.3f} "
        f"after {summary['rounds']} rounds (validation picks round {summary['selected_round']}: "
        f"{summary['selected_student_accuracy']:.3f}), "
        f"{summary['cum_bytes'] / 2**20:.2f} MiB exchanged, {summary['wall_seconds']:.0f}s"
    )
    if summary.get("final_client_accuracy") is not None:
        print(f"clients' mean test accuracy {summary['final_client_accuracy']:.3f}")
    if "local_only_accuracy" in summary:
        print(
            f"references (test, selected on validation): local-only mean "
            f"{summary['local_only_accuracy']:.3f}, centralized "
            f"{summary['centralized_accuracy']:.3f}, student on public labels "
            f"{summary['public_labels_accuracy']:.3f}"
        )
        collapsed = summary["references"]["collapsed"]
        if collapsed:
            print(f"warning: reference training collapsed to one class: {', '.join(collapsed)}")
    print(f"outputs in {run_dir}")


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the final student accuracy (handy for sweepers).

    Exits with status 2 and one line on stderr for an invalid config value, before any work.
    A resume (``hydra.run.dir=<run dir> fd.resume=true``) runs the run's own saved config
    (:mod:`simulations.resume`).
    """
    run_dir = HydraConfig.get().runtime.output_dir
    resumed_from = resume_dir([f"hydra.run.dir={run_dir}", *HydraConfig.get().overrides.task])
    try:
        if resumed_from is not None:
            resolved = resume_config(resumed_from, HydraConfig.get().overrides.task, _compose)
        else:
            container = OmegaConf.to_container(cfg, resolve=True)
            assert isinstance(container, dict)  # a DictConfig always converts to a dict
            resolved = {str(k): v for k, v in container.items()}
        spec = build_run_spec(resolved, run_dir=run_dir)
        preflight(spec, flatten_fd_groups(resolved)[1])
    except ConfigError as error:
        exit_on_config_error("fedkd-sim", error)
    except DatasetUnavailableError as error:
        print(f"fedkd-sim: error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    if not spec.simulation.verbose:
        # Flower's logger passes DEBUG records on to Hydra's root handler (its own handler
        # stops at INFO); Flower's state database logs its migrations at INFO. During the
        # simulation itself, simulations.noise prints each Flower line once.
        logging.getLogger("flwr").setLevel(logging.INFO)
        logging.getLogger("alembic").setLevel(logging.WARNING)
    if resumed_from is not None:
        written = record_resume(resumed_from, list(HydraConfig.get().overrides.task), resolved)
        log.info("resuming %s with its saved config.yaml; this invocation: %s", run_dir, written)
    try:
        # a resume never overwrites the run's config.yaml
        summary = run_experiment(
            spec,
            None if resumed_from is not None else resolved,
            list(HydraConfig.get().overrides.task),
        )
    except (NoRoundCompleted, NotEnoughNodes) as error:
        print(f"fedkd-sim: error: {error} (outputs in {run_dir})", file=sys.stderr)
        raise SystemExit(1) from None
    print_summary(summary, run_dir)
    failure = no_round_succeeded(full_history(Path(run_dir), []))
    if failure is not None:
        print(f"fedkd-sim: error: {failure}", file=sys.stderr)
        raise SystemExit(1)
    return float(summary["final_student_accuracy"])


def no_round_succeeded(records: list[RoundRecord]) -> str | None:
    """The one-line cause when no round of the run succeeded (the student never learnt), else
    ``None``: such a run exits non-zero instead of reporting an untrained student's accuracy."""
    if any(record.status == "ok" for record in records):
        return None
    if not records:
        return "the run produced no rounds; see the log above for the cause"
    return f"no round succeeded; round {records[-1].round} {records[-1].status}"


def _compose(overrides: list[str]) -> dict[str, Any]:
    """The resolved primary config for ``overrides`` (without ``hydra``), inside a Hydra app."""
    from hydra import compose

    composed = OmegaConf.to_container(
        compose(config_name="config", overrides=overrides), resolve=True
    )
    assert isinstance(composed, dict)
    return {str(k): v for k, v in composed.items() if k != "hydra"}


def main() -> None:
    """``fedkd-sim``: Hydra's entry point; a resume keeps the run's ``.hydra/`` files intact."""
    sys.argv[1:] = prepare_argv(sys.argv[1:])
    hydra_main()


if __name__ == "__main__":
    main()
