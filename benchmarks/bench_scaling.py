"""Scaling: wall time and peak memory versus clients and versus the public-set size.

    python -m benchmarks.bench_scaling                     # every part, ~10 minutes
    python -m benchmarks.bench_scaling --parts aggregation --clients 10,100,1000,10000
    python -m benchmarks.bench_scaling --parts server,student --docs  # docs/benchmarks.md §2
    python -m benchmarks.bench_scaling --quick

Five parts, each its own table:

1. ``aggregation``: the server's reduction of client soft labels into the teacher, on
   synthetic replies (Dirichlet-distributed rows, 10 classes). Replies arrive one at a time;
   ``stacked`` keeps them all and calls :func:`strategies.aggregation.aggregate` on the
   ``(clients, samples, classes)`` stack (what ``FedDistill`` does today), ``streaming`` folds
   each into a :class:`strategies.aggregation.StreamingAggregator` and drops it. Memory is the
   ``tracemalloc`` peak (NumPy buffers) of the whole fold, replies included. Swept over clients
   at a fixed public size and over public sizes at a fixed client count, then every rule at the
   largest point: ``median`` and ``trimmed_mean`` are order statistics and need every reply.
2. ``clients``: one whole FD round (synthetic data, MLP, 5 local epochs) in the plain loop and
   through Flower's in-process ``LocalGrid`` for 10/100/1000 clients, and on Ray where that is
   feasible on the machine (``--ray-clients``, 10 and 100 by default). Each run is a fresh
   process; memory is its peak RSS (interpreter, torch and Flower included; the RSS after
   imports is reported beside it).
3. ``public``: the same round through ``LocalGrid`` and the plain loop, 10 clients, versus the
   number of public rows queried per round (``public-subset``).
4. ``server``: the server's peak over one real ``FedDistill.run_round`` (exchange → validate and
   fold → teacher → student) against :class:`simulations.synthetic_grid.SyntheticGrid`, whose
   replies are real encoded Flower messages, ``--per-pull`` of them per poll. ``held``: Flower's
   ``send_and_receive``, the phase's replies held together (``FedDistill.stream_replies =
   False``); ``streamed``: each pull's replies validated, folded and dropped
   (``strategies.receive``). Swept over clients × classes × rule (``mean``: streamable;
   ``median``: needs every reply). Each point is a fresh process: ``tracemalloc`` peak of the
   round (NumPy and Python objects; torch's buffers are not traced) and the RSS high-water
   mark (``VmHWM``, reset just before the round) minus the RSS then (everything, tracing
   overhead included).
5. ``student``: the server student's distillation (``FedDistill.distil_student``, the default
   student, dataset, epochs and batch size of ``FDConfig``, one torch thread) versus the public
   rows it distils on: seconds per round and RSS growth, each size in a fresh process.

Ratios are between runs of this invocation only.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    add_common_args,
    fmt_ratio,
    markdown_table,
    median,
    run_isolated,
    traced_peak,
    update_docs,
    write_json,
)

NUM_CLASSES = 10
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
_BOTH = ("stacked", "streaming")


# ----------------------------------------------------------------------------- 1. aggregation
Reply = tuple[np.ndarray, int, np.ndarray]  # (probs (samples, classes), examples, class counts)


def reply_pool(num_samples: int, size: int = 8, seed: int = 0) -> list[Reply]:
    """A few distinct synthetic replies: Dirichlet(0.3) rows (peaked, like softened
    predictions) as float32, with random sample and class counts."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(size):
        probs = rng.dirichlet(np.full(NUM_CLASSES, 0.3), size=num_samples).astype(np.float32)
        counts = rng.integers(0, 20, size=NUM_CLASSES).astype(np.float64)
        pool.append((probs, int(counts.sum()), counts))
    return pool


def arriving(pool: list[Reply], num_clients: int) -> Iterator[Reply]:
    """Replies one at a time, each a fresh buffer (a copy, as if just decoded off the wire)."""
    for i in range(num_clients):
        probs, n, counts = pool[i % len(pool)]
        yield probs.copy(), n, counts


def aggregate_stacked(rule: str, replies: Iterator[Reply]) -> Any:
    """Keep every reply, stack, aggregate: memory grows with clients × samples × classes."""
    from strategies.aggregation import AggregationContext, aggregate

    kept = list(replies)
    probs = np.stack([p for p, _, _ in kept])  # (clients, samples, classes)
    ctx = AggregationContext(
        num_examples=np.array([n for _, n, _ in kept], dtype=np.float64),
        class_counts=np.stack([c for _, _, c in kept]),
    )
    return aggregate(rule, probs, ctx)


def aggregate_streaming(rule: str, replies: Iterator[Reply]) -> Any:
    """Fold each reply in as it arrives and drop it: memory is a few (samples, classes) sums."""
    from strategies.aggregation import StreamingAggregator

    agg: Any = None
    for probs, n, counts in replies:
        if agg is None:
            agg = StreamingAggregator(rule, probs.shape[0], probs.shape[1])
        agg.add(probs, num_examples=n, class_counts=counts)
    return agg.result()


def measure_aggregation(rule: str, mode: str, clients: int, samples: int) -> dict[str, Any]:
    """Seconds (untraced) and tracemalloc peak MiB (a second, traced pass) of one fold."""
    fold = aggregate_stacked if mode == "stacked" else aggregate_streaming
    pool = reply_pool(samples)  # made before timing and tracing: not part of the fold
    started = time.perf_counter()
    teacher = fold(rule, arriving(pool, clients))
    seconds = time.perf_counter() - started
    _, _, peak = traced_peak(lambda: fold(rule, arriving(pool, clients)))
    return {
        "rule": rule,
        "mode": mode,
        "clients": clients,
        "samples": samples,
        "seconds": seconds,
        "traced_peak_mib": peak,
        "stack_mib": clients * samples * NUM_CLASSES * 4 / 2**20,
        "teacher_checksum": float(np.asarray(teacher, dtype=np.float64).sum()),
    }


def aggregation_part(clients: list[int], sizes: list[int], fixed: tuple[int, int]) -> dict:
    """Client sweep (public size ``fixed[1]``), size sweep (``fixed[0]`` clients), all rules."""
    from strategies.aggregation import STREAMABLE_RULES, available_rules

    sweep = [(c, fixed[1]) for c in clients] + [(fixed[0], s) for s in sizes if s != fixed[1]]
    points = [measure_aggregation("mean", m, c, s) for c, s in sweep for m in _BOTH]
    c_max, s_max = max(clients), fixed[1]
    rules = []
    for rule in available_rules():
        modes = _BOTH if rule in STREAMABLE_RULES else ("stacked",)
        rules += [measure_aggregation(rule, mode, c_max, s_max) for mode in modes]
    return {"sweep": points, "rules": rules, "streamable": sorted(STREAMABLE_RULES)}


def aggregation_markdown(part: dict) -> str:
    """Sweep table (mean rule) then the per-rule table."""
    by_point: dict[tuple[int, int], dict[str, dict]] = {}
    for p in part["sweep"]:
        by_point.setdefault((p["clients"], p["samples"]), {})[p["mode"]] = p
    rows = [
        [
            c,
            s,
            f"{m['stacked']['stack_mib']:.1f}",
            f"{m['stacked']['traced_peak_mib']:.1f}",
            f"{m['streaming']['traced_peak_mib']:.2f}",
            fmt_ratio(m["stacked"]["traced_peak_mib"], m["streaming"]["traced_peak_mib"], 0),
            f"{1000 * m['stacked']['seconds']:.0f}",
            f"{1000 * m['streaming']['seconds']:.0f}",
        ]
        for (c, s), m in sorted(by_point.items())
    ]
    sweep = markdown_table(
        [
            "clients",
            "public rows",
            "reply stack MiB",
            "stacked peak MiB",
            "streaming peak MiB",
            "memory stacked/streaming",
            "stacked ms",
            "streaming ms",
        ],
        rows,
    )
    return sweep + "\n\n" + _rules_markdown(part)


def _rules_markdown(part: dict) -> str:
    by_rule: dict[str, dict[str, dict]] = {}
    for p in part["rules"]:
        by_rule.setdefault(p["rule"], {})[p["mode"]] = p
    rows = []
    for rule, m in by_rule.items():
        st, sm = m["stacked"], m.get("streaming")
        rows.append(
            [
                rule,
                "yes" if sm else "no: needs every reply",
                f"{st['traced_peak_mib']:.1f}",
                f"{sm['traced_peak_mib']:.2f}" if sm else "—",
                f"{1000 * st['seconds']:.0f}",
                f"{1000 * sm['seconds']:.0f}" if sm else "—",
            ]
        )
    first = part["rules"][0]
    title = f"Every rule at {first['clients']} clients × {first['samples']} public rows:\n\n"
    return title + markdown_table(
        [
            "rule",
            "streamable",
            "stacked peak MiB",
            "streaming peak MiB",
            "stacked ms",
            "streaming ms",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- 4. server round
def _rss_mib() -> float:
    """This process's resident set now (Linux ``/proc/self/statm``), MiB."""
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_rss_peak() -> float:
    """Reset this process's RSS high-water mark to its RSS now (Linux ≥ 4.0: ``5`` into
    ``/proc/self/clear_refs``) and return that RSS in MiB.

    Why not ``ru_maxrss``: a spawned child inherits its parent's high-water mark at fork (the
    kernel keeps the larger of the old and new address space's across exec), so after a heavy
    parent part the child's own growth would read as zero.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss_mib()


def _rss_peak_mib() -> float:
    """This address space's RSS high-water mark (``VmHWM``), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def server_round_point(
    rule: str, receive: str, clients: int, classes: int, rows: int, per_pull: int
) -> dict[str, Any]:
    """One ``FedDistill.run_round`` against a :class:`SyntheticGrid` (meant for a fresh process).

    The strategy, the student (MLP, one epoch) and the grid's soft-label pool exist before the
    round, so the peaks are the round's: replies, decoding, folding, teacher, distillation.
    """
    import tracemalloc

    import torch
    from flwr.supercore.task_identity import TaskIdentity

    from fedkd.config import FDConfig
    from fedkd.models import build_model
    from simulations.synthetic_grid import SyntheticGrid
    from strategies.fed_distill import FedDistill, PublicSet, TestSet

    torch.set_num_threads(1)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    cfg = FDConfig(
        aggregation=rule,
        num_clients=clients,
        min_train_nodes=clients,
        client_models="mlp",
        student_model="mlp",
        server_epochs=1,
        co_distillation=False,
        checkpoint=False,
    )
    shape = (1, 8, 8)
    gen = torch.Generator().manual_seed(0)
    public = PublicSet(torch.rand(rows, *shape, generator=gen))
    test = TestSet(torch.rand(64, *shape, generator=gen), torch.arange(64) % classes, classes)
    strategy = FedDistill(cfg, build_model("mlp", shape, classes), public, test)
    strategy.stream_replies = receive == "streamed"
    grid = SyntheticGrid(clients, classes, per_pull=per_pull)
    grid.soft_labels(rows, 0)  # the pool: made before measuring
    rss_before = _reset_rss_peak()
    tracemalloc.start()
    started = time.perf_counter()
    record = strategy.run_round(grid, 1, timeout=3600.0)
    seconds = time.perf_counter() - started
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert strategy.teacher is not None, record.status
    return {
        "rule": rule,
        "receive": receive,
        "clients": clients,
        "classes": classes,
        "rows": rows,
        "per_pull": per_pull,
        "traced_peak_mib": traced / 2**20,
        "rss_growth_mib": _rss_peak_mib() - rss_before,
        "rss_before_mib": rss_before,
        "round_seconds_traced": seconds,
        "reply_mib": clients * rows * classes * 4 / 2**20,
        "valid_replies": record.valid_replies,
        "bytes_up": record.bytes_up,
        "teacher_checksum": float(np.asarray(strategy.teacher[0], dtype=np.float64).sum()),
        "pulls": grid.pulls,
    }


def server_part(
    clients: list[int], classes: list[int], rows: int, per_pull: int, rules: list[str]
) -> list[dict[str, Any]]:
    """Every (rule, classes, clients, receive) point in a fresh process."""
    points = []
    for rule in rules:
        for c in classes:
            for n in clients:
                for receive in ("held", "streamed"):
                    print(f"--- server round, {rule}, {c} classes, {n} clients, {receive}")
                    points.append(
                        run_isolated(
                            "benchmarks.bench_scaling:server_round_point",
                            rule=rule,
                            receive=receive,
                            clients=n,
                            classes=c,
                            rows=rows,
                            per_pull=per_pull,
                        )
                    )
    return points


def server_markdown(points: list[dict[str, Any]]) -> str:
    """One row per (rule, classes, clients): held vs streamed peaks, and whether they agree."""
    by: dict[tuple[str, int, int], dict[str, dict]] = {}
    for p in points:
        by.setdefault((p["rule"], p["classes"], p["clients"]), {})[p["receive"]] = p
    rows = []
    for (rule, classes, clients), m in by.items():
        h, s = m["held"], m["streamed"]
        same = (h["teacher_checksum"], h["bytes_up"], h["valid_replies"]) == (
            s["teacher_checksum"],
            s["bytes_up"],
            s["valid_replies"],
        )
        rows.append(
            [
                rule,
                classes,
                clients,
                f"{h['reply_mib']:.0f}",
                f"{h['traced_peak_mib']:.1f}",
                f"{s['traced_peak_mib']:.1f}",
                fmt_ratio(h["traced_peak_mib"], s["traced_peak_mib"], 1),
                f"{h['rss_growth_mib']:.0f}",
                f"{s['rss_growth_mib']:.0f}",
                "yes" if same else "NO",
            ]
        )
    first = points[0]
    title = (
        f"One `FedDistill.run_round`, {first['rows']} public rows, codec `none`, "
        f"{first['per_pull']} replies per poll:\n\n"
    )
    return title + markdown_table(
        [
            "rule",
            "classes",
            "clients",
            "replies MiB",
            "held traced peak MiB",
            "streamed traced peak MiB",
            "held/streamed",
            "held RSS growth MiB",
            "streamed RSS growth MiB",
            "same teacher, bytes, replies",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- 5. student
def student_point(rows: int) -> dict[str, Any]:
    """``FedDistill.distil_student`` on ``rows`` public rows, defaults of ``FDConfig``."""
    import torch

    from fedkd.config import FDConfig
    from fedkd.data import load_splits
    from fedkd.models import build_model
    from strategies.fed_distill import FedDistill, PublicSet, TestSet

    torch.set_num_threads(1)
    cfg = FDConfig()
    data = load_splits(cfg.dataset, seed=cfg.seed)
    shape, classes = tuple(data.input_shape), data.num_classes
    gen = torch.Generator().manual_seed(0)
    public = PublicSet(torch.rand(rows, *shape, generator=gen))
    test = TestSet(torch.rand(8, *shape, generator=gen), torch.arange(8) % classes, classes)
    strategy = FedDistill(cfg, build_model(cfg.student_model, shape, classes), public, test)
    teacher = np.random.default_rng(0).dirichlet(np.full(classes, 0.3), size=rows)
    teacher = teacher.astype(np.float32)
    rss_before = _reset_rss_peak()
    started = time.perf_counter()
    strategy.distil_student(teacher, None)
    seconds = time.perf_counter() - started
    return {
        "rows": rows,
        "student": cfg.student_model,
        "dataset": cfg.dataset,
        "epochs": cfg.server_epochs,
        "batch_size": cfg.batch_size,
        "seconds": seconds,
        "ms_per_row_epoch": 1000 * seconds / (rows * cfg.server_epochs),
        "rss_growth_mib": _rss_peak_mib() - rss_before,
        "rss_before_mib": rss_before,
    }


def student_part(sizes: list[int]) -> list[dict[str, Any]]:
    """Each public size in a fresh process."""
    out = []
    for rows in sizes:
        print(f"--- student distillation, {rows} public rows", flush=True)
        out.append(run_isolated("benchmarks.bench_scaling:student_point", rows=rows))
    return out


def student_markdown(points: list[dict[str, Any]]) -> str:
    """Seconds per round, per row-epoch, and RSS growth versus public rows."""
    first = points[0]
    title = (
        f"Student distillation per round: `{first['student']}` on `{first['dataset']}`-shaped "
        f"inputs, {first['epochs']} epochs, batch {first['batch_size']}, one torch thread:\n\n"
    )
    rows = [
        [
            p["rows"],
            f"{p['seconds']:.2f}",
            f"{1000 * p['ms_per_row_epoch']:.1f}",
            f"{p['rss_growth_mib']:.1f}",
        ]
        for p in points
    ]
    return title + markdown_table(
        ["public rows", "seconds per round", "µs per row-epoch", "RSS growth MiB"], rows
    )


# ----------------------------------------------------------------------------- 2./3. rounds
def round_config(clients: int, public_subset: int = 0, rounds: int = 3) -> Any:
    """Synthetic data (6000 samples: 3000 private, 1800 public, 1200 test), MLP everywhere."""
    from fedkd.config import FDConfig

    return FDConfig(
        dataset="synthetic",
        partition="iid",
        num_clients=clients,
        min_train_nodes=clients,
        num_rounds=rounds,
        client_models="mlp",
        student_model="mlp",
        public_subset=public_subset,
        checkpoint=False,
        seed=0,
        aggregation="mean",  # the one-way mean protocol: what the plain loop mirrors
        co_distillation=False,
    )


def run_round_variant(
    variant: str, clients: int, public_subset: int = 0, rounds: int = 3
) -> dict[str, Any]:
    """One run of ``plain``, ``flower-local`` or ``flower-ray`` (meant for a fresh process)."""
    from benchmarks.bench_overhead import _import_stack, _run_flower
    from benchmarks.plain_loop import run_plain_fd

    cfg = round_config(clients, public_subset, rounds)
    rss_imports = _import_stack()
    started = time.perf_counter()
    if variant == "plain":
        rows = [(r.seconds, r.student_accuracy) for r in run_plain_fd(cfg)]
    else:
        rows = _run_flower(cfg, "local" if variant == "flower-local" else "ray")
    return {
        "variant": variant,
        "clients": clients,
        "public_subset": public_subset,
        "round_seconds": [s for s, _ in rows],
        "accuracy": [a for _, a in rows],
        "warm_round_seconds": median([s for s, _ in rows][1:] or [s for s, _ in rows]),
        "total_seconds": time.perf_counter() - started,
        "rss_after_imports_mib": rss_imports,
    }


def clients_part(clients: list[int], ray_clients: list[int], rounds: int) -> list[dict[str, Any]]:
    """Every (clients, variant) in a fresh process."""
    runs = []
    for c in clients:
        variants = ["plain", "flower-local"] + (["flower-ray"] if c in ray_clients else [])
        for v in variants:
            print(f"--- round, {v}, {c} clients", flush=True)
            runs.append(
                run_isolated(
                    "benchmarks.bench_scaling:run_round_variant",
                    variant=v,
                    clients=c,
                    rounds=rounds,
                )
            )
    return runs


def public_part(subsets: list[int], clients: int, rounds: int) -> list[dict[str, Any]]:
    """Plain loop and LocalGrid versus queried public rows, in fresh processes."""
    runs = []
    for k in subsets:
        for v in ("plain", "flower-local"):
            print(f"--- round, {v}, public subset {k}", flush=True)
            runs.append(
                run_isolated(
                    "benchmarks.bench_scaling:run_round_variant",
                    variant=v,
                    clients=clients,
                    public_subset=k,
                    rounds=rounds,
                )
            )
    return runs


def rounds_markdown(runs: list[dict[str, Any]], key: str, label: str) -> str:
    """One row per ``key`` value: warm round seconds and peak RSS per variant, and ratios."""
    by: dict[int, dict[str, dict]] = {}
    for r in runs:
        by.setdefault(r[key], {})[r["variant"]] = r
    rows = []
    for value, m in sorted(by.items()):
        p, loc, ray = m["plain"], m["flower-local"], m.get("flower-ray")
        rows.append(
            [
                value,
                f"{p['warm_round_seconds']:.2f}",
                f"{loc['warm_round_seconds']:.2f}",
                f"{ray['warm_round_seconds']:.2f}" if ray else "not run",
                fmt_ratio(loc["warm_round_seconds"], p["warm_round_seconds"]),
                fmt_ratio(ray["warm_round_seconds"], p["warm_round_seconds"]) if ray else "—",
                f"{p['peak_rss_mib']:.0f} / {p['rss_after_imports_mib']:.0f}",
                f"{loc['peak_rss_mib']:.0f} / {loc['rss_after_imports_mib']:.0f}",
                f"{ray['peak_rss_mib']:.0f}" if ray else "—",
            ]
        )
    return markdown_table(
        [
            label,
            "plain s/round",
            "local s/round",
            "ray s/round",
            "local/plain",
            "ray/plain",
            "plain peak/after-imports RSS MiB",
            "local peak/after-imports RSS MiB",
            "ray driver peak RSS MiB",
        ],
        rows,
    )


# ----------------------------------------------------------------------------- main
def _command(part: str, args: argparse.Namespace) -> str:
    """The command that regenerates ``part``'s docs table (with the options that shaped it)."""
    if part == "server":
        opts = (
            f"--server-clients {args.server_clients} --server-classes {args.server_classes} "
            f"--server-rules {args.server_rules} --server-rows {args.server_rows} "
            f"--per-pull {args.per_pull}"
        )
    elif part == "aggregation":
        opts = (
            f"--clients {args.clients} --public-sizes {args.public_sizes} "
            f"--agg-fixed {args.agg_fixed}"
        )
    else:
        opts = f"--student-rows {args.student_rows}"
    return f"python -m benchmarks.bench_scaling --parts {part} {opts} --docs"


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="aggregation,clients,public,server,student")
    parser.add_argument("--clients", default="10,100,1000", help="client counts (parts 1, 2)")
    parser.add_argument("--ray-clients", default="10,100", help="client counts also run on Ray")
    parser.add_argument(
        "--public-sizes", default="500,2000,8000,32000", help="public rows (aggregation part)"
    )
    parser.add_argument(
        "--public-subsets", default="200,600,1800", help="queried public rows (public part)"
    )
    parser.add_argument("--agg-fixed", default="100,2000", help="clients,rows held fixed")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (parts 2, 3)")
    parser.add_argument("--server-clients", default="100,1000", help="clients (server part)")
    parser.add_argument("--server-classes", default="10,100", help="classes (server part)")
    parser.add_argument("--server-rules", default="mean,median", help="rules (server part)")
    parser.add_argument("--server-rows", type=int, default=2000, help="public rows (server)")
    parser.add_argument("--per-pull", type=int, default=10, help="replies per poll (server)")
    parser.add_argument(
        "--student-rows", default="500,2000,8000,32000", help="public rows (student part)"
    )
    parser.add_argument(
        "--docs",
        action="store_true",
        help=f"write the aggregation/server/student tables into {DOCS}",
    )
    add_common_args(parser, "bench_scaling")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the requested parts, print their tables, write the JSON."""
    args = parse_args(argv)
    if args.quick:
        args.clients, args.ray_clients, args.public_sizes = "10,100", "", "500,2000"
        args.public_subsets, args.agg_fixed, args.rounds = "200,1800", "10,500", 2
        args.server_clients, args.server_classes, args.server_rows = "10,40", "10", 200
        args.server_rules, args.student_rows = "mean", "200,800"
    parts = args.parts.split(",")
    payload: dict[str, Any] = {"setting": vars(args)}
    tables = []
    if "aggregation" in parts:
        fixed = tuple(_ints(args.agg_fixed))
        agg = aggregation_part(_ints(args.clients), _ints(args.public_sizes), fixed)  # type: ignore[arg-type]
        payload["aggregation"] = agg
        table = aggregation_markdown(agg)
        tables.append("Aggregation (mean rule), tracemalloc peak:\n\n" + table)
        if args.docs:
            update_docs(DOCS, "bench_scaling_aggregation", table, _command("aggregation", args))
    if "clients" in parts:
        runs = clients_part(_ints(args.clients), _ints(args.ray_clients), args.rounds)
        payload["clients"] = runs
        tables.append(
            "Whole FD round vs clients:\n\n" + rounds_markdown(runs, "clients", "clients")
        )
    if "public" in parts:
        runs = public_part(_ints(args.public_subsets), clients=10, rounds=args.rounds)
        payload["public"] = runs
        tables.append(
            "Whole FD round vs public rows, 10 clients:\n\n"
            + rounds_markdown(runs, "public_subset", "public rows")
        )
    if "server" in parts:
        points = server_part(
            _ints(args.server_clients),
            _ints(args.server_classes),
            args.server_rows,
            args.per_pull,
            args.server_rules.split(","),
        )
        payload["server"] = points
        table = server_markdown(points)
        tables.append(table)
        if args.docs:
            update_docs(DOCS, "bench_scaling_server", table, _command("server", args))
    if "student" in parts:
        points = student_part(_ints(args.student_rows))
        payload["student"] = points
        table = student_markdown(points)
        tables.append(table)
        if args.docs:
            update_docs(DOCS, "bench_scaling_student", table, _command("student", args))
    payload["tables"] = tables
    print("\n\n".join(["", *tables]))
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
