"""Communication: cumulative bytes to reach a target student accuracy, FD codecs vs FedAvg.

    python -m benchmarks.bench_comm                          # 4 codecs + FedAvg, 10 rounds
    python -m benchmarks.bench_comm --targets 0.8,0.9 --rounds 15 --alpha 0.1
    python -m benchmarks.bench_comm --quick

Digits, Dirichlet α = 0.5 over 10 clients (all take part every round), the CNN on every client
and as the central model, 5 local epochs, seed 0: the setting of ``bench_fd_vs_fedavg``. FD runs
once per uplink codec (``none``, ``fp16``, ``int8``, ``topk``); FedAvg once. Bytes are the
serialized message sizes both strategies count (``fedkd.protocol.wire_nbytes``), down and up,
framing included, so a codec's saving is what actually crosses the wire, not its payload alone.
Runs are in process (``LocalGrid``): bytes and accuracies do not depend on the backend.

"Bytes to target" is the cumulative traffic at the end of the first round whose central-model
test accuracy reaches the target; FedAvg / FD is the saving. Targets no run reaches say so.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from benchmarks.bench_fd_vs_fedavg import RunResult, run_one
from benchmarks.common import add_common_args, fmt_ratio, markdown_table, write_json

CODECS = ("none", "fp16", "int8", "topk")


def comm_config(strategy: str, codec: str, args: argparse.Namespace) -> Any:
    """The shared setting; runs differ only in strategy and codec."""
    from fedkd.config import FDConfig

    return FDConfig(
        strategy=strategy,
        dataset="digits",
        partition="dirichlet",
        alpha=args.alpha,
        num_clients=args.clients,
        min_train_nodes=args.clients,
        num_rounds=args.rounds,
        client_models=args.model,
        student_model=args.model,
        codec=codec,
        topk=args.topk,
        checkpoint=False,
        seed=args.seed,
        aggregation="mean",  # one-way FD: the uplink is what the codecs change
        co_distillation=False,
    )


def run_all_codecs(args: argparse.Namespace) -> dict[str, RunResult]:
    """FD once per codec, then FedAvg; keyed ``fd-<codec>`` and ``fedavg``."""
    logging.getLogger("flwr").setLevel(logging.ERROR)  # FedAvg's "no federated evaluation" note
    results: dict[str, RunResult] = {}
    for codec in args.codecs.split(","):
        print(f"--- fd, codec {codec}", flush=True)
        results[f"fd-{codec}"] = run_one(comm_config("fd", codec, args))
    print("--- fedavg", flush=True)
    results["fedavg"] = run_one(comm_config("fedavg", "none", args))
    return results


def _mib(n: float) -> str:
    return f"{n / 2**20:.3f}"


def bytes_table(results: dict[str, RunResult]) -> str:
    """Per run: bytes per round, the saving per round against FedAvg, accuracy reached."""
    avg = results["fedavg"]
    rows = [
        [
            name,
            _mib(r.bytes_per_round),
            fmt_ratio(avg.bytes_per_round, r.bytes_per_round, 1),
            f"{r.final_accuracy:.3f}",
            f"{r.selected_accuracy:.3f}",
        ]
        for name, r in results.items()
    ]
    headers = ["run", "MiB/round", "FedAvg/run bytes per round", "final acc", "val-selected acc"]
    return markdown_table(headers, rows)


def target_table(results: dict[str, RunResult], targets: list[float]) -> str:
    """Per target: cumulative MiB (round) each run needs, and FedAvg's bytes over FD's."""
    avg = results["fedavg"]
    rows = []
    for target in targets:
        avg_hit = avg.to_target(target)
        for name, r in results.items():
            if name == "fedavg":
                continue
            hit = r.to_target(target)
            rows.append(
                [
                    f"{target:.2f}",
                    name,
                    "not reached" if hit is None else f"{_mib(hit[1])} (round {hit[0]})",
                    "not reached"
                    if avg_hit is None
                    else f"{_mib(avg_hit[1])} (round {avg_hit[0]})",
                    fmt_ratio(avg_hit and avg_hit[1], hit and hit[1], 1),
                ]
            )
    headers = ["target", "FD run", "FD MiB to target", "FedAvg MiB to target", "FedAvg/FD bytes"]
    return markdown_table(headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--targets", default="0.8,0.85,0.9", help="student accuracies")
    parser.add_argument("--codecs", default=",".join(CODECS))
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--topk", type=int, default=3, help="k of the topk codec")
    parser.add_argument("--seed", type=int, default=0)
    add_common_args(parser, "bench_comm")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run FD per codec and FedAvg, print both tables, write the JSON."""
    args = parse_args(argv)
    if args.quick:
        args.rounds, args.targets = 3, "0.3,0.5"
    targets = [float(t) for t in args.targets.split(",") if t.strip()]
    results = run_all_codecs(args)
    tables = [bytes_table(results), target_table(results, targets)]
    print(f"\ndigits, α={args.alpha:g}, {args.clients} clients, {args.rounds} rounds\n")
    print("\n\n".join(tables))
    payload = {
        "setting": vars(args),
        "tables": tables,
        "runs": {name: r.as_dict(targets[0]) for name, r in results.items()},
        "to_target": {
            name: {f"{t:.2f}": r.to_target(t) for t in targets} for name, r in results.items()
        },
    }
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
