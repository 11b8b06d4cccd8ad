"""The fedkd Flower ServerApp: federated distillation, or the FedAvg / FedDF baselines by config.

``flwr run .`` loads :data:`app`; the simulation driver builds its own with
:func:`make_server_app`, binding the run-config and extra round callbacks (W&B, sweeps).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedkd.client import load_splits_for
from fedkd.config import FDConfig, from_run_config
from fedkd.models import build_model
from fedkd.training import resolve_device, resolve_threads
from strategies.fed_distill import FedDistill, PublicSet, RoundCallback, TestSet
from strategies.fedavg_baseline import run_fedavg
from strategies.feddf import build_groups, run_feddf
from strategies.reporting import RunRecorder

log = logging.getLogger(__name__)


def make_server_app(
    run_config: Mapping[str, Any] | None = None, callbacks: Sequence[RoundCallback] = ()
) -> ServerApp:
    """Build the ServerApp; ``run_config`` overrides ``Context.run_config`` (simulation driver)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = from_run_config(run_config if run_config is not None else context.run_config)
        if run_config is None:  # `flwr run .`; fedkd-sim starts exactly num-clients nodes
            check_federation_size(grid, cfg)
        run_server(grid, cfg, list(callbacks))

    return app


def check_federation_size(grid: Grid, cfg: FDConfig) -> str | None:
    """Warn when the SuperNodes connected at start are not ``num-clients``; return the warning.

    ``flwr run .`` on Flower's local simulation federation starts ``num-supernodes`` virtual
    SuperNodes (2 unless set) and each splits the data into that many partitions, whatever
    ``num-clients`` says: a different experiment. On real devices a smaller count is expected
    while they connect; the warning says both.
    """
    connected = len(list(grid.get_node_ids()))
    if connected == cfg.num_nodes:
        return None
    cohorts = f" / clients-per-message={cfg.clients_per_message}" * (cfg.clients_per_message > 1)
    message = (
        f"{connected} SuperNodes are connected but num-clients={cfg.num_clients}{cohorts}: in a "
        f'simulation, run `flwr run . --federation-config "num-supernodes={cfg.num_nodes}"` '
        "(simulated clients split the data into one partition per SuperNode, so the run "
        "differs from fedkd-sim's); on devices, this is expected while they connect"
    )
    log.warning(message)
    return message


def build_student(cfg: FDConfig, input_shape: tuple[int, ...], num_classes: int) -> torch.nn.Module:
    """The central model (FD's student, FedAvg's global model), seeded for reproducibility."""
    torch.manual_seed(cfg.seed)
    return build_model(cfg.student_model, input_shape, num_classes)


def run_server(grid: Grid, cfg: FDConfig, callbacks: list[RoundCallback]) -> RunRecorder:
    """Run the configured strategy to completion; returns the recorder with every round."""
    torch.set_num_threads(resolve_threads(cfg.torch_threads))
    splits = load_splits_for(cfg)
    recorder = RunRecorder(cfg.run_dir or None, cfg.num_rounds)
    all_callbacks: list[RoundCallback] = [recorder, *callbacks]
    student = build_student(cfg, splits.input_shape, splits.num_classes)
    test = TestSet(splits.test_x, splits.test_y, splits.num_classes)
    val = TestSet(splits.val_x, splits.val_y, splits.num_classes)
    if cfg.strategy == "fedavg":
        run_fedavg(grid, cfg, student, test, all_callbacks, val=val)
    elif cfg.strategy == "feddf":
        groups = build_groups(cfg, splits.input_shape, splits.num_classes)
        public = PublicSet(splits.public_x, oracle_labels=splits.oracle_public_labels())
        run_feddf(grid, cfg, groups, public, test, all_callbacks, val=val)
    else:
        strategy = FedDistill(
            cfg,
            student,
            PublicSet(splits.public_x, oracle_labels=splits.oracle_public_labels()),
            test,
            device=resolve_device(cfg.device),
            val=val,
        )
        strategy.callbacks.extend(all_callbacks)
        strategy.start(grid, first_round=_prepare_checkpoint(strategy, cfg, recorder) + 1)
        _require_a_completed_round(strategy)
    recorder.save_plots(cfg.strategy)
    return recorder


class NoRoundCompleted(RuntimeError):
    """Every round was skipped: the run produced no teacher and must not look successful."""


def _require_a_completed_round(strategy: FedDistill) -> None:
    """Raise (the ServerApp, and ``fedkd-sim``, then exit non-zero) when no round was ok;
    metrics.json already holds every skipped round and its status."""
    if strategy.history and not any(r.status == "ok" for r in strategy.history):
        statuses = sorted({r.status for r in strategy.history})
        raise NoRoundCompleted(f"no round completed in {len(strategy.history)}: {statuses}")


def _prepare_checkpoint(strategy: FedDistill, cfg: FDConfig, recorder: RunRecorder) -> int:
    """Point the strategy at ``<run-dir>/checkpoint.pt``; on resume, load it and replay the
    recorded rounds into the recorder. Returns the last completed round (0 for a fresh run)."""
    if not cfg.run_dir or not cfg.checkpoint:
        return 0
    path = Path(cfg.run_dir) / "checkpoint.pt"
    strategy.checkpoint_path = path
    if not (cfg.resume and path.exists()):
        return 0
    last = strategy.load_checkpoint(path)
    recorder.records = [r.as_dict() for r in strategy.history]
    log.warning("resumed from %s after round %d", path, last)
    print(f"resuming after round {last} from {path}", flush=True)
    return last


# `flwr run .` loads this object (pyproject: [tool.flwr.app.components] serverapp).
app = make_server_app()
