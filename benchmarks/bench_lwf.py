"""Time per epoch of LwF relative to fine-tuning, with a cached and a per-batch teacher.

    python -m benchmarks.bench_lwf                              # three scenarios on digits
    python -m benchmarks.bench_lwf --scenarios task_il --epochs 5 --repeats 9 --out /tmp/l.json

For each scenario the last task of the sequence is trained (LwF then distils the most old
outputs: T-1 heads in task-IL, 8 old classes in class-IL) from the same starting weights by
fine-tuning, LwF with teacher outputs cached once per task, and LwF with the teacher run on
every batch. The three are timed side by side, in rotating order, ``--repeats`` times; the
ratios are medians of the per-repeat ratios to fine-tuning measured in this one invocation.
LwF's per-task set-up (copying the teacher and, when cached, one teacher pass over the task's
data) is inside the timing, spread over ``--epochs`` epochs.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

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
KIND: dict[str, Any] = {"task_il": "split", "class_il": "split", "domain_il": "permuted"}


def _time_epoch(variant: str, base: MultiHeadNet, seq: TaskSequence, train: TrainConfig) -> float:
    """Seconds per epoch of ``variant`` training the last task of ``seq`` from ``base``."""
    name, options = VARIANTS[variant]
    learner = build_learner(name, seq.scenario, train, options)
    net = copy.deepcopy(base)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    learner.train_task(net, seq, seq.num_tasks - 1, generator)
    return (time.perf_counter() - start) / train.epochs


def bench_scenario(
    scenario: str, *, model: str, hidden: int, train: TrainConfig, repeats: int
) -> dict[str, Any]:
    """Side-by-side timings of every variant on one scenario."""
    seq = build_sequence(SequenceConfig(kind=KIND[scenario], scenario=scenario), seed=0)  # type: ignore[arg-type]
    options = {"hidden_sizes": (hidden,)} if model == "mlp" else {}
    base = build_net(model, seq, seed=0, **options)
    names = list(VARIANTS)
    _time_epoch(names[0], base, seq, train)  # warm-up: first-call allocations, lazy imports
    seconds: dict[str, list[float]] = {v: [] for v in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate to cancel drift
        for variant in order:
            seconds[variant].append(_time_epoch(variant, base, seq, train))
    ratios = {
        v: statistics.median(a / b for a, b in zip(seconds[v], seconds["finetune"], strict=True))
        for v in names
    }
    return {
        "scenario": scenario,
        "sequence": seq.name,
        "task_rows": len(seq.tasks[-1].train_y),
        "ms_per_epoch_median": {v: 1000 * statistics.median(s) for v, s in seconds.items()},
        "ratio_to_finetune": ratios,
        "seconds": seconds,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """The table printed at the end (and pasted into docs/continual.md)."""
    lines = [
        "| scenario | learner | ms / epoch (median) | × fine-tuning (median of paired ratios) |",
        "|---|---|---|---|",
    ]
    for res in results:
        for variant, ratio in res["ratio_to_finetune"].items():
            ms = res["ms_per_epoch_median"][variant]
            lines.append(f"| {res['scenario']} | {variant} | {ms:.1f} | {ratio:.2f} |")
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
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=0.05)
    results = [
        bench_scenario(s, model=args.model, hidden=args.hidden, train=train, repeats=args.repeats)
        for s in args.scenarios
    ]
    print(markdown(results))
    payload = {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
