"""Federated distillation vs FedAvg on digits, one seed: accuracy and the bytes it costs.

A quick single-seed check (``bench_comm`` builds on it). The numbers to quote, over seeds,
recipes and references, come from ``python -m benchmarks.fd_recipes``.

    python -m benchmarks.bench_fd_vs_fedavg                 # α ∈ {0.1, 0.5}, 10 rounds
    python -m benchmarks.bench_fd_vs_fedavg --rounds 5 --alphas 0.5 --out /tmp/fd.json

Both strategies run in the same process on the same partitions (Dirichlet α, 10 clients), the
same architecture on every client and for the central model, and the same local training; only
what crosses the wire differs: FD's clients upload soft labels on the public set, FedAvg's
upload and download model weights. Bytes are the serialized message sizes counted by the
strategies (``fedkd.protocol.wire_nbytes``). Every ratio in the table comes from runs made in
this invocation; no number is carried over from elsewhere.

The in-process backend (``SimulationConfig(backend="local")``) keeps the run short and leaves
Ray's start-up out of the picture: bytes and accuracies do not depend on the backend.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import add_common_args
from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, to_run_config
from simulations.engine import SimulationConfig, run_apps
from strategies.fed_distill import RoundRecord
from strategies.reporting import selected_round
from strategies.server_app import make_server_app

STRATEGIES = ("fd", "fedavg")


@dataclass(frozen=True)
class RunResult:
    """One strategy at one α: the per-round records and what the table needs from them."""

    strategy: str
    alpha: float
    records: list[RoundRecord]
    seconds: float

    @property
    def final_accuracy(self) -> float:
        return self.records[-1].student_accuracy

    @property
    def selected_accuracy(self) -> float:
        """Test accuracy of the round the validation split picks (never a max over test)."""
        return selected_round(self.records).student_accuracy

    @property
    def total_bytes(self) -> int:
        return self.records[-1].cum_bytes

    @property
    def bytes_per_round(self) -> float:
        return self.total_bytes / len(self.records)

    def to_target(self, target: float) -> tuple[int, int] | None:
        """(round, cumulative bytes) when the central model first reaches ``target``."""
        for r in self.records:
            if r.student_accuracy >= target:
                return r.round, r.cum_bytes
        return None

    def as_dict(self, target: float) -> dict[str, Any]:
        reached = self.to_target(target)
        return {
            "strategy": self.strategy,
            "alpha": self.alpha,
            "final_accuracy": self.final_accuracy,
            "selected_accuracy": self.selected_accuracy,
            "total_bytes": self.total_bytes,
            "bytes_per_round": self.bytes_per_round,
            "round_to_target": None if reached is None else reached[0],
            "bytes_to_target": None if reached is None else reached[1],
            "seconds": self.seconds,
            "records": [r.as_dict() for r in self.records],
        }


def make_config(strategy: str, alpha: float, args: argparse.Namespace) -> FDConfig:
    """The shared setting; FD and FedAvg differ only in ``strategy``."""
    return FDConfig(
        strategy=strategy,
        dataset="digits",
        partition="dirichlet",
        alpha=alpha,
        num_clients=args.clients,
        min_train_nodes=args.clients,
        num_rounds=args.rounds,
        client_models=args.model,
        student_model=args.model,
        seed=args.seed,
    )


def run_one(cfg: FDConfig) -> RunResult:
    """Run one strategy in process and collect its round records."""
    run_config = to_run_config(cfg)
    records: list[RoundRecord] = []
    started = time.perf_counter()
    run_apps(
        make_server_app(run_config, [records.append]),
        make_client_app(run_config),
        cfg.num_nodes,
        SimulationConfig(backend="local"),
    )
    return RunResult(cfg.strategy, cfg.alpha, records, time.perf_counter() - started)


# ----------------------------------------------------------------------------- report
def _mib(n: float) -> str:
    return f"{n / 2**20:.3f} MiB"


def _to_target_cell(result: RunResult, target: float) -> str:
    reached = result.to_target(target)
    return "not reached" if reached is None else f"{_mib(reached[1])} (round {reached[0]})"


def _ratio(num: float | None, den: float | None) -> str:
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.1f}×"


def markdown_table(results: dict[tuple[float, str], RunResult], target: float) -> str:
    """One row per α: both strategies side by side, then the FedAvg / FD byte ratios."""
    lines = [
        f"| α | FD final acc | FedAvg final acc | FD bytes/round | FedAvg bytes/round "
        f"| FedAvg/FD bytes per round | FD bytes to {target:.2f} | FedAvg bytes to {target:.2f} "
        f"| FedAvg/FD bytes to target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for alpha in sorted({a for a, _ in results}):
        fd, avg = results[(alpha, "fd")], results[(alpha, "fedavg")]
        fd_t, avg_t = fd.to_target(target), avg.to_target(target)
        lines.append(
            f"| {alpha:g} | {fd.final_accuracy:.3f} | {avg.final_accuracy:.3f} "
            f"| {_mib(fd.bytes_per_round)} | {_mib(avg.bytes_per_round)} "
            f"| {_ratio(avg.bytes_per_round, fd.bytes_per_round)} "
            f"| {_to_target_cell(fd, target)} | {_to_target_cell(avg, target)} "
            f"| {_ratio(avg_t and avg_t[1], fd_t and fd_t[1])} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (defaults: 10 rounds, α ∈ {0.1, 0.5}, target 0.85)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="server rounds per run")
    parser.add_argument("--alphas", default="0.1,0.5", help="comma-separated Dirichlet α values")
    parser.add_argument(
        "--target", type=float, default=0.85, help="accuracy whose cost in bytes is reported"
    )
    parser.add_argument(
        "--clients", type=int, default=10, help="clients (all take part every round)"
    )
    parser.add_argument(
        "--model", default="cnn", help="architecture of every client and the central model"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_common_args(parser, "bench_fd_vs_fedavg")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.alphas = 3, "0.5"
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every (α, strategy) pair, print the markdown table, write the JSON."""
    args = parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.ERROR)  # FedAvg's "no federated evaluation" note
    alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    results: dict[tuple[float, str], RunResult] = {}
    for alpha in alphas:
        for strategy in STRATEGIES:
            print(f"--- {strategy} α={alpha:g}", flush=True)
            results[(alpha, strategy)] = run_one(make_config(strategy, alpha, args))
    table = markdown_table(results, args.target)
    print(
        f"\nFD vs FedAvg on digits, {args.clients} clients, {args.rounds} rounds, "
        f"model {args.model}, seed {args.seed}\n"
    )
    print(table)
    payload = {
        "setting": {k: v for k, v in vars(args).items() if k != "out"},  # a Path: not JSON
        "table": table,
        "runs": [r.as_dict(args.target) for r in results.values()],
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, allow_nan=True))
    print(f"\nresults written to {out}")
    if any(math.isnan(r.final_accuracy) for r in results.values()):
        raise SystemExit("a run produced no accuracy")
    return payload


if __name__ == "__main__":
    main()
