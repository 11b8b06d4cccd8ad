"""Time per epoch of LwF relative to fine-tuning, with a cached and a per-batch teacher.

    python -m benchmarks.bench_lwf                              # three scenarios on digits
    python -m benchmarks.bench_lwf --scenarios task_il --epochs 5 --repeats 9 --out /tmp/l.json
    python -m benchmarks.bench_lwf --model cnn                  # a model with real work per step
    python -m benchmarks.bench_lwf --quick                      # task-IL only, 3 repeats
    python -m benchmarks.bench_lwf --core-only                  # the KD core call alone

Every timing is taken on two clocks: the CPU time of the benchmark's thread (``threads=1``, so
the thread does all of torch's work) and wall time. On a shared 2-core machine other jobs take
turns on the cores and move wall time by tens of percent between repeats; the thread's CPU
time counts only its own work, so the CPU ratios are the ones to quote there (the wall ratios
are reported beside them).

The ``core`` table times one LwF-shaped call of ``fedkd.kd.distillation_loss`` (forward and
backward) with the value checks on (``validate=True``: every call, as LwF did before issue 15)
and off (``validate=False``: what LwF passes after its first batch of a task), interleaved.

For each scenario the last task of the sequence is trained (LwF then distils the most old
outputs: T-1 heads in task-IL, 8 old classes in class-IL) from the same starting weights by
fine-tuning, LwF with teacher outputs cached once per task, and LwF with the teacher run on
every batch. The three are timed side by side, in rotating order, ``--repeats`` times; the
ratios are medians of the per-repeat ratios to fine-tuning measured in this one invocation.
LwF's per-task set-up (copying the teacher and, when cached, one teacher pass over the task's
data) is inside the first timing, spread over ``--epochs`` epochs; the "steady" columns leave it
out (the cost of an epoch once the task has started: what longer tasks converge to).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import add_common_args, update_docs, write_json
from fedkd.continual import (
    MultiHeadNet,
    SequenceConfig,
    TaskSequence,
    build_learner,
    build_net,
    build_sequence,
)
from fedkd.training import TrainConfig

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "finetune": ("finetune", {}),
    "lwf (cached teacher)": ("lwf", {"teacher_outputs": "cached"}),
    "lwf (per-batch teacher)": ("lwf", {"teacher_outputs": "per_batch"}),
}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "continual.md"
KIND: dict[str, Any] = {"task_il": "split", "class_il": "split", "domain_il": "permuted"}


CLOCKS = ("cpu", "wall")


def _clocks() -> dict[str, float]:
    return {"cpu": time.thread_time(), "wall": time.perf_counter()}


def _time_epoch(
    variant: str, base: MultiHeadNet, seq: TaskSequence, train: TrainConfig
) -> dict[str, tuple[float, float]]:
    """``variant`` trains the last task of ``seq`` from ``base``; per clock (``cpu``: this
    thread's CPU time, ``wall``), ``(seconds per epoch with the per-task set-up spread over the
    epochs, steady seconds per epoch without it)``.

    The set-up is the learner's ``before_task`` (LwF: teacher copy and, cached, one teacher
    pass), timed inside the same call, so "steady" is one measurement minus a small one rather
    than the difference of two whole runs, whose noise adds up.
    """
    name, options = VARIANTS[variant]
    learner = build_learner(name, seq.scenario, train, options)
    setup = dict.fromkeys(CLOCKS, 0.0)
    before_task = learner.before_task

    def timed_before_task(*args: Any, **kwargs: Any) -> None:
        start = _clocks()
        before_task(*args, **kwargs)
        setup.update({c: t - start[c] for c, t in _clocks().items()})

    learner.before_task = timed_before_task  # type: ignore[method-assign]
    net = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(0)
    start = _clocks()
    learner.train_task(net, seq, seq.num_tasks - 1, generator)
    total = {c: t - start[c] for c, t in _clocks().items()}
    return {c: (total[c] / train.epochs, (total[c] - setup[c]) / train.epochs) for c in CLOCKS}


def bench_scenario(
    scenario: str, *, model: str, hidden: int, train: TrainConfig, repeats: int
) -> dict[str, Any]:
    """Side-by-side timings of every variant on one scenario. The top-level figures are on the
    thread's CPU clock; ``wall`` holds the same figures on wall time."""
    seq = build_sequence(SequenceConfig(kind=KIND[scenario], scenario=scenario), seed=0)  # type: ignore[arg-type]
    options = {"hidden_sizes": (hidden,)} if model == "mlp" else {}
    base = build_net(model, seq, seed=0, **options)
    names = list(VARIANTS)
    _time_epoch(names[0], base, seq, train)  # warm-up: first-call allocations, lazy imports
    seconds: dict[str, dict[str, list[float]]] = {
        c: {v: [] for v in names} for c in CLOCKS
    }  # clock -> variant -> per repeat
    steady: dict[str, dict[str, list[float]]] = {c: {v: [] for v in names} for c in CLOCKS}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate to cancel drift
        for variant in order:
            for clock, (per_epoch, slope) in _time_epoch(variant, base, seq, train).items():
                seconds[clock][variant].append(per_epoch)
                steady[clock][variant].append(slope)
    figures = {c: _figures(seconds[c], steady[c]) for c in CLOCKS}
    return {
        "scenario": scenario,
        "sequence": seq.name,
        "task_rows": len(seq.tasks[-1].train_y),
        **figures["cpu"],
        "wall": figures["wall"],
    }


def _figures(seconds: dict[str, list[float]], steady: dict[str, list[float]]) -> dict[str, Any]:
    """Medians and paired ratios of one clock's per-repeat seconds."""
    return {
        "ms_per_epoch_median": {v: 1000 * statistics.median(s) for v, s in seconds.items()},
        "ratio_to_finetune": _paired(seconds),
        "steady_ms_per_epoch_median": {v: 1000 * statistics.median(s) for v, s in steady.items()},
        "steady_ratio_to_finetune": _paired(steady),
        "seconds": seconds,
        "steady_seconds": steady,
    }


def _paired(seconds: dict[str, list[float]]) -> dict[str, float]:
    """Median over repeats of each variant's time over fine-tuning's in the same repeat."""
    base = seconds["finetune"]
    return {
        v: statistics.median(a / b for a, b in zip(s, base, strict=True) if b > 0)
        for v, s in seconds.items()
    }


CORE_CASES: dict[str, tuple[int, int, list[int] | None]] = {
    # name: (rows, classes, class mask): task-IL stacks 4 old heads of 2 units (4 x 32 rows);
    # class-IL distils the 8 old classes of a 10-unit head on a 32-row batch.
    "task_il (4 heads stacked)": (128, 2, None),
    "class_il (8 of 10 units)": (32, 10, list(range(8))),
}


def bench_core(repeats: int, calls: int = 200) -> list[dict[str, Any]]:
    """Microseconds per KD core call (forward + backward), value checks on vs off."""
    from fedkd import kd

    spec = kd.KDSpec(temperature=2.0, t2_scaling=False)
    rows_out = []
    for name, (rows, classes, mask) in CORE_CASES.items():
        gen = torch.Generator().manual_seed(0)
        student = torch.randn(rows, classes, generator=gen, requires_grad=True)
        teacher = torch.randn(rows, classes, generator=gen)
        cols = None if mask is None else torch.tensor(mask)
        times: dict[bool, list[float]] = {True: [], False: []}
        for r in range(repeats + 1):  # repeat 0 warms up
            for validate in (True, False) if r % 2 else (False, True):
                start = time.thread_time()  # this thread's CPU time (threads=1)
                for _ in range(calls):
                    kd.distillation_loss(
                        student, teacher, spec, class_mask=cols, validate=validate
                    ).backward()
                if r:
                    times[validate].append((time.thread_time() - start) / calls * 1e6)
        rows_out.append(
            {
                "case": name,
                "us_validate": statistics.median(times[True]),
                "us_no_validate": statistics.median(times[False]),
                "ratio": statistics.median(
                    a / b for a, b in zip(times[False], times[True], strict=True)
                ),
            }
        )
    return rows_out


def core_markdown(rows: list[dict[str, Any]]) -> str:
    """The KD-core table: µs per call with and without the per-call value checks."""
    lines = [
        "| KD core call | validate=True µs | validate=False µs | ratio (median, paired) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['case']} | {row['us_validate']:.1f} | {row['us_no_validate']:.1f} "
            f"| {row['ratio']:.2f} |"
        )
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]]) -> str:
    """The table printed at the end (and written into docs/continual.md with ``--docs``):
    CPU figures first, the wall ratios beside them."""
    lines = [
        "| scenario | learner | CPU ms / epoch | × fine-tuning | steady CPU ms / epoch "
        "| steady × fine-tuning | wall: × fine-tuning / steady |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        wall = res["wall"]
        for variant, ratio in res["ratio_to_finetune"].items():
            ms = res["ms_per_epoch_median"][variant]
            steady = res["steady_ms_per_epoch_median"][variant]
            steady_ratio = res["steady_ratio_to_finetune"][variant]
            lines.append(
                f"| {res['scenario']} | {variant} | {ms:.1f} | {ratio:.2f} "
                f"| {steady:.1f} | {steady_ratio:.2f} "
                f"| {wall['ratio_to_finetune'][variant]:.2f} / "
                f"{wall['steady_ratio_to_finetune'][variant]:.2f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark, print the markdown table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=list(KIND), choices=list(KIND))
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--hidden", type=int, default=16, help="MLP hidden width")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--core-only", action="store_true", help="only the KD core table")
    parser.add_argument(
        "--docs", action="store_true", help=f"write the tables into {DOCS} (block bench_lwf_MODEL)"
    )
    add_common_args(parser, "bench_lwf")
    args = parser.parse_args(argv)
    if args.quick:
        args.scenarios, args.repeats = ["task_il"], 3
    torch.set_num_threads(args.threads)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    results = (
        []
        if args.core_only
        else [
            bench_scenario(
                s, model=args.model, hidden=args.hidden, train=train, repeats=args.repeats
            )
            for s in args.scenarios
        ]
    )
    core = bench_core(args.repeats)
    tables = ([markdown(results)] if results else []) + [core_markdown(core)]
    print("\n\n".join(tables))
    if args.docs:
        given = argv if argv is not None else sys.argv[1:]
        command = " ".join(["python -m benchmarks.bench_lwf", *(a for a in given if a != "--docs")])
        update_docs(DOCS, f"bench_lwf_{args.model}", "\n\n".join(tables), command)
    payload = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": results,
        "core": core,
    }
    print(f"wrote {write_json(args.out, payload)}")
    return results


if __name__ == "__main__":
    main()
