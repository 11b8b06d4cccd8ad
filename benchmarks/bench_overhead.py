"""Framework overhead: one FD round through Flower + Ray versus a plain PyTorch loop.

    python -m benchmarks.bench_overhead                      # 10 and 100 clients, 3 rounds
    python -m benchmarks.bench_overhead --clients 100 --rounds 5
    python -m benchmarks.bench_overhead --quick              # 10 clients, 2 rounds

For each client count, four runs of the same digits-sized setting (IID partition, the CNN on
every client and as the student, 5 local and 5 server epochs per round, all clients every
round), each in a fresh process, one after the other:

* ``plain``: :mod:`benchmarks.plain_loop`, the identical computation in one process (the floor);
* ``flower-local``: the real ServerApp and ClientApp through the in-process ``LocalGrid``
  (Flower's messages and per-message client restore, no Ray);
* ``flower-ray``: the same apps on Flower's Ray simulation engine (what ``fedkd-sim`` runs);
* ``fedavg-ray``: Flower's FedAvg on Ray with the same model and the same local training.

The figure compared is the *warm* round: the median wall time of rounds 2..R (round 1 pays for
worker start-up and imports, reported separately together with the whole run). With
``--repeats N`` every variant runs N times in rotating order and each ratio is the median of
the N ratios within a repeat (paired), which tames this machine's drift. Every process
uses ``torch_threads`` threads (auto: 1 here, as a 1-CPU Ray worker gets); the plain loop
therefore runs on one core while Ray spreads clients over every core. The FD runs must end each
round with the same student accuracy as the plain loop (same seeds); the table says whether
they do.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from benchmarks.common import (
    add_common_args,
    markdown_table,
    median,
    peak_rss_mib,
    run_isolated,
    write_json,
)

VARIANTS = ("plain", "flower-local", "flower-ray", "fedavg-ray")


def overhead_config(strategy: str, clients: int, rounds: int, model: str) -> Any:
    """The shared setting (an ``FDConfig``); FD and FedAvg differ only in ``strategy``."""
    from fedkd.config import FDConfig

    return FDConfig(
        strategy=strategy,
        dataset="digits",
        partition="iid",  # Dirichlet cannot give 100 clients a minimum share of 899 samples
        num_clients=clients,
        min_train_nodes=clients,
        num_rounds=rounds,
        client_models=model,
        student_model=model,
        checkpoint=False,
        seed=0,
        aggregation="mean",  # the one-way mean protocol: what the plain loop mirrors
        co_distillation=False,
    )


def run_variant(variant: str, clients: int, rounds: int, model: str) -> dict[str, Any]:
    """Run one variant to completion in this process; per-round seconds and accuracies.

    Meant for a fresh process (see :func:`benchmarks.common.run_isolated`).
    """
    import logging

    started = time.perf_counter()
    strategy = "fedavg" if variant == "fedavg-ray" else "fd"
    cfg = overhead_config(strategy, clients, rounds, model)
    rss_imports = _import_stack()
    if variant == "plain":
        from benchmarks.plain_loop import run_plain_fd

        rows = [(r.seconds, r.student_accuracy) for r in run_plain_fd(cfg)]
    else:
        logging.getLogger("flwr").setLevel(logging.ERROR)  # FedAvg's per-round notes
        rows = _run_flower(cfg, "local" if variant == "flower-local" else "ray")
    return {
        "variant": variant,
        "clients": clients,
        "round_seconds": [s for s, _ in rows],
        "accuracy": [a for _, a in rows],
        "total_seconds": time.perf_counter() - started,
        # CPU of this (driver) process, all its threads: Flower's polling shows up here.
        "driver_cpu_seconds": time.process_time(),
        "rss_after_imports_mib": rss_imports,
    }


def _import_stack() -> float:
    """Import what every variant needs, so the RSS baseline is comparable; return it."""
    import flwr.simulation  # noqa: F401  (Ray's Flower adapter; heavy)
    import torch  # noqa: F401

    import fedkd.client_app  # noqa: F401

    return peak_rss_mib()


def _run_flower(cfg: Any, backend: str) -> list[tuple[float, float]]:
    """The real apps through ``simulations.engine.run_apps``; (seconds, accuracy) per round."""
    from fedkd.client_app import make_client_app
    from fedkd.config import to_run_config
    from simulations.engine import SimulationConfig, run_apps
    from strategies.fed_distill import RoundRecord
    from strategies.server_app import make_server_app

    records: list[RoundRecord] = []
    run_config = to_run_config(cfg)
    run_apps(
        make_server_app(run_config, [records.append]),
        make_client_app(run_config),
        cfg.num_nodes,
        SimulationConfig(backend=backend),
    )
    return [(r.wall_seconds, r.student_accuracy) for r in records]


# ----------------------------------------------------------------------------- summary
def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over repeats of the warm round, ratios, start-up; and the identity check.

    ``runs`` maps a variant to its runs, one per repeat. A ratio is the median over repeats of
    the ratio within a repeat (paired: the runs of one repeat ran back to back).
    """
    warm = {
        v: [median(r["round_seconds"][1:] or r["round_seconds"]) for r in rs]
        for v, rs in runs.items()
    }
    plain = runs["plain"][0]["accuracy"] if "plain" in runs else None
    same = {
        v: all(r["accuracy"] == plain for r in runs[v])
        for v in ("flower-local", "flower-ray")
        if v in runs
    }

    def med(key: str) -> dict[str, float]:
        return {v: median([r[key] for r in rs]) for v, rs in runs.items()}

    return {
        "warm_round_seconds": {v: median(w) for v, w in warm.items()},
        "first_round_seconds": {
            v: median([r["round_seconds"][0] for r in rs]) for v, rs in runs.items()
        },
        "total_seconds": med("total_seconds"),
        "peak_rss_mib": med("peak_rss_mib"),
        "driver_cpu_seconds": med("driver_cpu_seconds"),
        "ray_fd_over_plain": _paired(warm, "flower-ray", "plain"),
        "local_fd_over_plain": _paired(warm, "flower-local", "plain"),
        "ray_fd_over_ray_fedavg": _paired(warm, "flower-ray", "fedavg-ray"),
        "repeats": max(len(rs) for rs in runs.values()),
        "same_accuracy_as_plain": same,
    }


def _paired(warm: dict[str, list[float]], num: str, den: str) -> float | None:
    """Median over repeats of ``warm[num][i] / warm[den][i]``; None if either is missing."""
    if num not in warm or den not in warm:
        return None
    return median([a / b for a, b in zip(warm[num], warm[den], strict=False) if b > 0])


def _x(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}×"


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per client count: warm-round seconds of each variant, then the ratios."""
    rows = []
    for res in results:
        s, w = res["summary"], res["summary"]["warm_round_seconds"]
        rows.append(
            [
                res["clients"],
                *(f"{w[v]:.2f}" if v in w else "—" for v in VARIANTS),
                _x(s["local_fd_over_plain"]),
                _x(s["ray_fd_over_plain"]),
                _x(s["ray_fd_over_ray_fedavg"]),
                "yes" if all(s["same_accuracy_as_plain"].values()) else "NO",
            ]
        )
    headers = [
        "clients",
        *(f"{v} s/round" for v in VARIANTS),
        "local/plain",
        "ray/plain",
        "ray FD/ray FedAvg",
        "same student acc",
    ]
    return markdown_table(headers, rows)


def startup_markdown(results: list[dict[str, Any]]) -> str:
    """Round 1 (start-up, imports) and the whole run per variant, with peak RSS."""
    rows = []
    for res in results:
        s = res["summary"]
        for v in VARIANTS:
            if v in s["total_seconds"]:
                rows.append(
                    [
                        res["clients"],
                        v,
                        f"{s['first_round_seconds'][v]:.2f}",
                        f"{s['total_seconds'][v]:.1f}",
                        f"{s['driver_cpu_seconds'][v]:.1f}",
                        f"{s['peak_rss_mib'][v]:.0f}",
                    ]
                )
    return markdown_table(
        ["clients", "variant", "round 1 s", "whole run s", "driver CPU s", "driver peak RSS MiB"],
        rows,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="10,100", help="comma-separated client counts")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (>= 2)")
    parser.add_argument("--model", default="cnn", help="every client's and the student's model")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs per variant, in rotating order (paired)"
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"subset of {', '.join(VARIANTS)}"
    )
    add_common_args(parser, "bench_overhead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run every (client count, variant) in a fresh process; print tables; write JSON."""
    args = parse_args(argv)
    if args.quick:
        args.clients, args.rounds = "10", 2
    variants = [v for v in args.variants.split(",") if v]
    results = []
    for clients in [int(c) for c in args.clients.split(",") if c]:
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for repeat in range(args.repeats):
            k = repeat % len(variants)
            for variant in variants[k:] + variants[:k]:  # rotate: drift hits every variant
                print(f"--- {variant}, {clients} clients, repeat {repeat + 1}", flush=True)
                runs[variant].append(
                    run_isolated(
                        "benchmarks.bench_overhead:run_variant",
                        variant=variant,
                        clients=clients,
                        rounds=args.rounds,
                        model=args.model,
                    )
                )
        results.append({"clients": clients, "runs": runs, "summary": summarize(runs)})
    table, startup = markdown(results), startup_markdown(results)
    print(
        f"\nWarm FD round (median of rounds 2..{args.rounds}; median of {args.repeats} paired "
        f"repeat(s)), digits, model {args.model}\n"
    )
    print(table + "\n\n" + startup)
    payload = {"setting": vars(args), "table": table, "startup": startup, "results": results}
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
