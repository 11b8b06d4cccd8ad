"""Scale: an FD round on Flower + Ray versus the plain loop, wall and CPU, by clients per round.

    python -m benchmarks.bench_scale                          # 100 and 1000 clients, paired
    python -m benchmarks.bench_scale --clients 100,300 --repeats 2 --variants plain,flower-ray
    python -m benchmarks.bench_scale --parts population       # 1,000 vs 100,000 nodes
    python -m benchmarks.bench_scale --profile --clients 300 --variants flower-ray
    python -m benchmarks.bench_scale --clients 1000 --variants plain,plain-p2,flower-ray-k50
    python -m benchmarks.bench_scale --clients 100 --variants plain,plain-p2,flower-ray-k50-vec

Variants: ``plain`` (:mod:`benchmarks.plain_loop`, one process), ``plain-p2`` (the same loop
with its clients in two worker processes: the plain loop given Ray's two cores here),
``flower-local`` (the real apps through the in-process grid) and ``flower-ray`` (Flower's Ray
simulation engine); a suffix ``-k<K>`` runs it with ``clients-per-message=K`` (cohorts: K
virtual clients per node and message, ``strategies.cohorts``), and ``-k<K>-vec`` also with
``vectorize-cohort`` (a cohort's members trained and queried in one batched torch.func call,
``fedkd.vectorized``).

Tiny clients on purpose (synthetic 32-d Gaussian mixture, the MLP, one local epoch), so the
framework's cost per message dominates what is measured. Every run is a fresh process;
variants of one repeat run back to back in rotating order, and each ratio is the median over
repeats of the ratio within a repeat (paired). Reported per run:

* wall seconds of the warm round (median of rounds 2..R) and of round 1 (start-up included);
* CPU-seconds of the whole process tree (driver, GCS, raylet, workers) over the same rounds:
  the plain loop uses one core, Ray as many as it has, so CPU-seconds are the like-for-like
  figure; wall ratios are reported against the one-process loop and against ``plain-p2``
  (the same cores as Ray);
* peak RSS of the process tree (sampled every 0.5 s).

``population``: 100 clients sampled per round from a 1,000-node and from a 100,000-node
federation through the real CLI (``python -m simulations.run``), wall and peak tree RSS.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_common_args,
    fmt_ratio,
    markdown_table,
    median,
    run_isolated,
    update_docs,
    write_json,
)
from benchmarks.proctree import (
    StackSampler,
    TreePeak,
    thread_cpu_seconds,
    tree_cpu_by_process,
    tree_cpu_seconds,
)

VARIANTS = (
    "plain",
    "plain-p2",
    "flower-local",
    "flower-ray",
    "flower-ray-k10",
    "flower-ray-k50",
    "flower-ray-k50-vec",
)
DOCS = Path("docs/benchmarks.md")
VEC = "-vec"  # suffix of a cohort variant run with vectorize-cohort (flower-ray-k50-vec)


def vectorized(variant: str) -> bool:
    """Whether ``variant`` runs its cohorts through the batched path (``vectorize-cohort``)."""
    return variant.endswith(VEC) and split_variant(variant)[1] > 1


def split_variant(variant: str) -> tuple[str, int]:
    """``"flower-ray-k10"`` → ``("flower-ray", 10)``: the backend variant and the virtual
    clients per message (``clients-per-message``; 1 when the name has no ``-k<K>``). A
    ``-vec`` suffix (:func:`vectorized`) is not part of either."""
    base, sep, k = variant.removesuffix(VEC).rpartition("-k")
    if sep and k.isdigit() and base in VARIANTS:
        return base, int(k)
    return variant, 1


def scale_config(
    clients: int,
    rounds: int,
    population: int = 0,
    samples: int = 0,
    per_message: int = 1,
    vectorize: bool = False,
) -> Any:
    """Tiny FD: synthetic data, MLP everywhere, 1 local and 1 server epoch, mean rule."""
    from fedkd.config import FDConfig

    population = population or clients
    sized: dict[str, Any] = {
        "synthetic_train": samples or _pool_for(population),
        "client_state": "disk",  # what the CLI does on one machine (conf/config.yaml)
    }
    if per_message > 1:
        sized["clients_per_message"] = per_message
    if vectorize:
        sized["vectorize_cohort"] = True
    if "synthetic_train" not in FDConfig.__dataclass_fields__:  # measuring an older fedkd
        sized = {}
    return FDConfig(
        dataset="synthetic",
        **sized,
        partition="iid",
        num_clients=population,
        min_train_nodes=clients,
        fraction_train=clients / population,
        num_rounds=rounds,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        public_subset=200,
        checkpoint=False,
        client_checkpoints=False,
        seed=0,
        aggregation="mean",
        co_distillation=False,
        val_fraction=0.0,
    )


def _pool_for(population: int) -> int:
    """Private pool: the default 3,000 samples while they give every client one (the same data
    as earlier fedkd versions, so before/after runs do the same work), else 4 per client."""
    return 0 if population <= 3000 else 4 * population


def run_variant(variant: str, clients: int, rounds: int, profile: bool = False) -> dict[str, Any]:
    """One run (meant for a fresh process): per-round wall and process-tree CPU-seconds."""
    import logging

    import fedkd.client_app  # noqa: F401  (imports first: not part of round 1)

    logging.getLogger("flwr").setLevel(logging.WARNING)
    backend, per_message = split_variant(variant)
    cfg = scale_config(clients, rounds, per_message=per_message, vectorize=vectorized(variant))
    peak = TreePeak()
    spent = [0.0]  # CPU of this function's own bookkeeping (the /proc scans below)

    def measuring() -> float:
        """CPU the measurement itself has cost so far, kept out of the round's figures."""
        return peak.cpu_seconds + spent[0]

    marks: list[tuple[float, float]] = [(time.perf_counter(), tree_cpu_seconds())]
    walls: list[float] = []

    by_process: list[dict[str, float]] = []
    by_thread: list[dict[str, float]] = []

    def on_round(wall: float) -> None:
        start = time.thread_time()
        walls.append(wall)
        marks.append((time.perf_counter(), tree_cpu_seconds() - measuring()))
        processes = tree_cpu_by_process()
        driver = next(k for k in processes if k.endswith(f":{os.getpid()}"))
        processes[driver] -= measuring()  # the driver's figure without the measurement's
        by_process.append(processes)
        by_thread.append(thread_cpu_seconds())
        spent[0] += time.thread_time() - start

    sampler = StackSampler() if profile else None
    with peak:
        if sampler:
            sampler.__enter__()
        try:
            if backend.startswith("plain"):
                from benchmarks.plain_loop import run_plain_fd

                processes = 2 if backend == "plain-p2" else 1
                run_plain_fd(cfg, on_round=lambda r: on_round(r.seconds), processes=processes)
            else:
                _run_flower(cfg, backend, lambda r: on_round(r.wall_seconds))
        finally:
            if sampler:
                sampler.__exit__()
    cpu = [b[1] - a[1] for a, b in itertools.pairwise(marks)]
    return {
        "variant": variant,
        "clients": clients,
        "clients_per_message": per_message,
        "round_seconds": walls,
        "round_cpu_seconds": cpu,
        # from before the backend starts to the end of round 1 (Ray start, worker imports)
        "first_round_total_seconds": marks[1][0] - marks[0][0] if len(marks) > 1 else None,
        "peak_tree_rss_mib": peak.peak,
        # CPU-seconds of the last round per process kind (driver, raylet, gcs, workers, ...)
        "last_round_cpu_by_process": _diff(by_process[-2], by_process[-1])
        if len(by_process) > 1
        else {},
        # the driver's threads over the last round (Flower's poller, workers, the ServerApp)
        "last_round_driver_cpu_by_thread": _diff(by_thread[-2], by_thread[-1])
        if len(by_thread) > 1
        else {},
        "profile": {
            "inclusive": sampler.top(25),
            "leaf": sampler.top(15, leaf=True),
        }
        if sampler
        else None,
    }


def _diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per-process CPU between two samples, largest first (processes that ran in both)."""
    delta = {k: round(after[k] - before.get(k, 0.0), 2) for k in after}
    return dict(sorted(delta.items(), key=lambda kv: -kv[1]))


def _run_flower(cfg: Any, variant: str, callback: Any, sim: Any = None) -> None:
    """The real apps on the backend ``variant`` names; ``sim`` (a ``SimulationConfig``)
    overrides the default one, e.g. with GPU shares (:mod:`benchmarks.bench_gpu`)."""
    from fedkd.client_app import make_client_app
    from fedkd.config import to_run_config
    from simulations.engine import SimulationConfig, run_apps
    from strategies.server_app import make_server_app

    run_config = to_run_config(cfg)
    backend = "local" if variant == "flower-local" else "ray"
    run_apps(
        make_server_app(run_config, [callback]),
        make_client_app(run_config),
        getattr(cfg, "num_nodes", cfg.num_clients),  # an older fedkd has no cohorts
        sim or SimulationConfig(backend=backend),
    )


# ----------------------------------------------------------------------------- summary
def _warm(values: list[float]) -> float:
    return median(values[1:] or values)


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Medians over repeats, and paired ratios against the plain loop."""

    def paired(variant: str, key: str, base: str = "plain") -> float | None:
        if variant not in runs or base not in runs:
            return None
        pairs = zip(runs[variant], runs[base], strict=False)
        return median([_warm(a[key]) / _warm(b[key]) for a, b in pairs if _warm(b[key]) > 0])

    out: dict[str, Any] = {}
    for v, rs in runs.items():
        out[v] = {
            "warm_wall": median([_warm(r["round_seconds"]) for r in rs]),
            "warm_cpu": median([_warm(r["round_cpu_seconds"]) for r in rs]),
            "first_wall": median([r["round_seconds"][0] for r in rs]),
            "first_total": median([r["first_round_total_seconds"] for r in rs]),
            "peak_tree_rss_mib": median([r["peak_tree_rss_mib"] for r in rs]),
            "wall_over_plain": paired(v, "round_seconds"),
            "cpu_over_plain": paired(v, "round_cpu_seconds"),
            "wall_over_plain_p2": paired(v, "round_seconds", "plain-p2"),
        }
    return out


def _times(ratio: float | None) -> str:
    return "n/a" if ratio is None else f"{ratio:.2f}×"


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per (fedkd version, clients, variant); ratios within the run that made them."""
    rows = []
    for res in results:
        c = res["clients"]
        for v, s in res["summary"].items():
            rows.append(
                [
                    res.get("label", ""),
                    c,
                    v,
                    f"{s['warm_wall']:.2f} ({s['warm_cpu']:.2f})",
                    f"{1000 * s['warm_cpu'] / c:.1f}",
                    f"{s['first_wall']:.2f}",
                    fmt_ratio(s["first_wall"], s["warm_wall"], 1),
                    "—" if s["first_total"] is None else f"{s['first_total']:.1f}",
                    "—" if v == "plain" else _times(s["wall_over_plain"]),
                    "—" if v.startswith("plain") else _times(s.get("wall_over_plain_p2")),
                    "—" if v == "plain" else _times(s["cpu_over_plain"]),
                    f"{s['peak_tree_rss_mib']:.0f}",
                ]
            )
    return markdown_table(
        [
            "fedkd",
            "clients/round",
            "variant",
            "warm s/round (CPU s)",
            "CPU ms/client",
            "round 1 s",
            "round 1/warm",
            "start to end of round 1 s",
            "wall ÷ plain",
            "wall ÷ plain-p2",
            "CPU ÷ plain",
            "peak tree RSS MiB",
        ],
        rows,
    )


GOALS = {100: 1.2, 1000: 1.5}  # issue 17: a Ray round ≤ this × the plain loop


def goals_markdown(results: list[dict[str, Any]]) -> str:
    """Each Flower + Ray variant against the issue's goal at its client count: CPU ÷ plain
    (same work, any cores) and wall ÷ plain-p2 (the plain loop on the same cores)."""
    rows = []
    for res in results:
        target = GOALS.get(res["clients"])
        if target is None:
            continue
        for v, s in res["summary"].items():
            if not v.startswith("flower-ray"):
                continue
            cpu, wall = s["cpu_over_plain"], s.get("wall_over_plain_p2")
            met = [r is not None and r <= target for r in (cpu, wall)]
            rows.append(
                [
                    res.get("label", ""),
                    res["clients"],
                    v,
                    split_variant(v)[1],
                    f"≤ {target}×",
                    _times(cpu),
                    _times(wall),
                    "yes"
                    if all(met)
                    else ("CPU only" if met[0] else ("wall only" if met[1] else "no")),
                ]
            )
    return markdown_table(
        [
            "fedkd",
            "clients/round",
            "variant",
            "clients/message",
            "goal",
            "CPU ÷ plain",
            "wall ÷ plain-p2",
            "met?",
        ],
        rows,
    )


def _cpu_split(variant: str, by_process: dict[str, float]) -> tuple[float, float, float]:
    """(driver, client workers, the rest) CPU-seconds of one round's process tree: the driver
    is the measured process (``python:<pid>``), workers Ray's ClientApp actors or the plain
    loop's client processes, the rest Ray's daemons (raylet, GCS, log monitor, ...)."""
    driver = sum(v for k, v in by_process.items() if k.startswith("python:"))
    worker = "python" if variant.startswith("plain") else "ray::ClientAppA"
    workers = by_process.get(worker, 0.0)
    return driver, workers, sum(by_process.values()) - driver - workers


def cpu_split_markdown(results: list[dict[str, Any]]) -> str:
    """Where the last round's CPU went, per variant (median over repeats), per client."""
    rows = []
    for res in results:
        c = res["clients"]
        for v, rs in res["runs"].items():
            splits = [_cpu_split(v, r["last_round_cpu_by_process"]) for r in rs]
            driver, workers, rest = (median([x[i] for x in splits]) for i in range(3))
            rows.append(
                [
                    res.get("label", ""),
                    c,
                    v,
                    f"{driver:.2f}",
                    f"{workers:.2f}",
                    f"{rest:.2f}",
                    f"{1000 * driver / c:.1f}",
                    f"{1000 * workers / c:.1f}",
                ]
            )
    return markdown_table(
        [
            "fedkd",
            "clients/round",
            "variant",
            "driver CPU s",
            "client workers CPU s",
            "Ray daemons CPU s",
            "driver ms/client",
            "workers ms/client",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- population
def run_cli_population(population: int, sampled: int, rounds: int) -> dict[str, Any]:
    """``python -m simulations.run`` with ``population`` nodes, ``sampled`` per round."""
    overrides = [
        "dataset=synthetic",
        "partition=iid",
        "models=mlp",
        "strategy=fd",
        "aggregation=mean",
        "logging=disabled",
        f"fd.num_clients={population}",
        f"fd.min_train_nodes={sampled}",
        f"fd.fraction_train={sampled / population}",
        f"fd.num_rounds={rounds}",
        "fd.local_epochs=1",
        "fd.server_epochs=1",
        "dataset.public_subset=200",
        "fd.val_fraction=0.0",
        "fd.checkpoint=false",
        "fd.client_checkpoints=false",
        f"dataset.synthetic_train={_pool_for(population)}",
        "references=false",
        f"hydra.run.dir=outputs/bench_scale/population-{population}",
    ]
    command = [sys.executable, "-m", "simulations.run", *overrides]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_rss = 0.0
    from benchmarks.proctree import tree_rss_mib

    cpu = 0.0
    while proc.poll() is None:
        peak_rss = max(peak_rss, tree_rss_mib(proc.pid))
        cpu = max(cpu, tree_cpu_seconds(proc.pid))
        time.sleep(0.5)
    output = proc.stdout.read() if proc.stdout else ""
    rounds_s = [
        float(line.rsplit(None, 1)[-1].rstrip("s"))
        for line in output.splitlines()
        if line.startswith("round ") and line.rstrip().endswith("s")
    ]
    return {
        "round_seconds": rounds_s,
        "population": population,
        "sampled": sampled,
        "rounds": rounds,
        "returncode": proc.returncode,
        "wall_seconds": time.perf_counter() - started,
        "tree_cpu_seconds_last_sample": cpu,
        "peak_tree_rss_mib": peak_rss,
        "tail": output[-1500:],
    }


def population_markdown(runs: list[dict[str, Any]]) -> str:
    """One row per population; ratios against the smallest."""
    base = runs[0]
    rows = [
        [
            r["population"],
            r["sampled"],
            r["rounds"],
            "ok" if r["returncode"] == 0 else f"exit {r['returncode']}",
            f"{r['wall_seconds']:.1f}",
            " / ".join(f"{x:.1f}" for x in r["round_seconds"]) or "—",
            f"{r['tree_cpu_seconds_last_sample']:.1f}",
            f"{r['peak_tree_rss_mib']:.0f}",
            fmt_ratio(r["wall_seconds"], base["wall_seconds"]),
            fmt_ratio(r["peak_tree_rss_mib"], base["peak_tree_rss_mib"]),
        ]
        for r in runs
    ]
    return markdown_table(
        [
            "nodes",
            "sampled/round",
            "rounds",
            "status",
            "CLI wall s",
            "round s (1 / 2 / ...)",
            "tree CPU s",
            "peak tree RSS MiB",
            "wall ÷ first row",
            "RSS ÷ first row",
        ],
        rows,
    )


def render_saved(
    paths: list[Path], *, docs: bool, table: str = "bench_scale_rounds"
) -> dict[str, Any]:
    """Tables from saved JSON files (rows in file order); docs regenerated with ``docs``."""
    import json

    rounds: list[dict[str, Any]] = []
    population: list[dict[str, Any]] = []
    for entry in paths:
        label, _, name = str(entry).rpartition("=")  # LABEL=PATH names the fedkd version
        payload = json.loads(Path(name).read_text())
        label = label or payload.get("setting", {}).get("label", "")
        rounds += [{**r, "label": label} for r in payload.get("rounds", [])]
        population += payload.get("population", [])
    tables = []
    if rounds:
        tables.append((table, markdown(rounds)))
        if table != "bench_scale_rounds":  # a new measurement: its goals and CPU split too
            tables.append((f"{table}_goals", goals_markdown(rounds)))
            tables.append((f"{table}_cpu", cpu_split_markdown(rounds)))
    if population:
        tables.append(("bench_scale_population", population_markdown(population)))
    command = "python -m benchmarks.bench_scale --from-json " + " ".join(map(str, paths))
    if table != "bench_scale_rounds":
        command += f" --table {table}"
    for name, text in tables:
        print("\n" + text)
        if docs:
            update_docs(DOCS, name, text, command)
    return {"rounds": rounds, "population": population}


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="rounds,population")
    parser.add_argument("--clients", default="100,1000", help="clients per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--populations", default="1000,100000")
    parser.add_argument("--sampled", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="sample the driver's stacks")
    parser.add_argument("--docs", action="store_true", help="regenerate docs/benchmarks.md")
    parser.add_argument("--label", default="this", help="names this fedkd version in tables")
    parser.add_argument(
        "--table",
        default="bench_scale_rounds",
        help="docs marker of the rounds table (another name also writes <name>_goals)",
    )
    parser.add_argument(
        "--from-json",
        nargs="+",
        type=Path,
        help="render tables (with --docs: the docs) from saved results, in this order; "
        "LABEL=PATH names the fedkd version of a file",
    )
    add_common_args(parser, "bench_scale")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts, print the tables, write JSON (and the docs table with ``--docs``)."""
    args = parse_args(argv)
    if args.from_json:
        return render_saved(args.from_json, docs=args.docs, table=args.table)
    if args.quick:
        args.clients, args.rounds, args.repeats, args.populations = "50", 2, 1, "200,2000"
    variants = [v for v in args.variants.split(",") if v]
    payload: dict[str, Any] = {"setting": vars(args), "cpus": os.cpu_count()}
    tables = []
    if "rounds" in args.parts:
        results = []
        for clients in [int(c) for c in args.clients.split(",") if c]:
            runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
            for repeat in range(args.repeats):
                k = repeat % len(variants)
                for variant in variants[k:] + variants[:k]:
                    print(f"--- {variant}, {clients} clients, repeat {repeat + 1}", flush=True)
                    run = run_isolated(
                        "benchmarks.bench_scale:run_variant",
                        variant=variant,
                        clients=clients,
                        rounds=args.rounds,
                        profile=args.profile,
                    )
                    runs[variant].append(run)
                    if run.get("profile"):
                        for share, name in run["profile"]["inclusive"]:
                            print(f"   {100 * share:5.1f}%  {name}")
            summary = summarize(runs)
            results.append(
                {"label": args.label, "clients": clients, "runs": runs, "summary": summary}
            )
        payload["rounds"] = results
        tables.append((args.table, markdown(results)))
        if args.table != "bench_scale_rounds":  # a new measurement: its goals and CPU split too
            tables.append((f"{args.table}_goals", goals_markdown(results)))
            tables.append((f"{args.table}_cpu", cpu_split_markdown(results)))
    if "population" in args.parts:
        pops = [
            run_cli_population(int(p), args.sampled, args.rounds)
            for p in args.populations.split(",")
        ]
        payload["population"] = pops
        tables.append(("bench_scale_population", population_markdown(pops)))
    for _, table in tables:
        print("\n" + table)
    print(f"\nresults written to {write_json(args.out, payload)}")
    if args.docs:
        command = "python -m benchmarks.bench_scale " + " ".join(argv or sys.argv[1:])
        for name, table in tables:
            update_docs(DOCS, name, table, command.replace(" --docs", ""))
    return payload


if __name__ == "__main__":
    main()
