"""Why class-incremental fine-tuning ends below 1/T: its hidden units die.

    python -m benchmarks.cil_plasticity_probe                       # seeds 0-2, ~2 minutes
    python -m benchmarks.cil_plasticity_probe --docs docs/continual.md

Fine-tunes the continual module's MLP through class-IL split digits (5 tasks of 2 classes, 5
epochs per task, SGD with momentum 0.9: fedkd-fcl's client settings) and after each task
measures, on every task's test inputs together, the share of hidden ReLU units that are zero
for *every* input (dead: they pass no gradient and no signal, so the network cannot use them
again) and the accuracy on the task just learnt. A model that merely forgot would still learn
each new task; one whose hidden layer has died cannot, and predicts one class: ACC 0.1, below
the 0.2 of a model that keeps only the last task (docs/continual.md §5 and §7).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import markdown_table, update_docs

SETTINGS = ((0.1, (32,)), (0.1, (64,)), (0.01, (32,)), (0.01, (64,)))


def probe(lr: float, hidden: tuple[int, ...], seed: int) -> dict[str, list[float]]:
    """Per task: dead-unit share and accuracy on the task just learnt (one seed)."""
    from fedkd.continual import FineTune, SequenceConfig, build_net, build_sequence, evaluate_tasks
    from fedkd.training import TrainConfig

    seq = build_sequence(SequenceConfig(scenario="class_il", num_tasks=5), seed=seed)
    net = build_net("mlp", seq, seed=seed, hidden_sizes=hidden)
    learner = FineTune("class_il", TrainConfig(epochs=5, batch_size=32, lr=lr, momentum=0.9))
    generator = torch.Generator().manual_seed(seed)
    x = torch.cat([task.test_x for task in seq.tasks])
    dead, new_task = [], []
    for t in range(seq.num_tasks):
        learner.train_task(net, seq, t, generator)
        with torch.no_grad():
            features = net.features(x)  # (n, hidden): post-ReLU
        dead.append(float((features <= 0).all(dim=0).double().mean()))
        new_task.append(float(evaluate_tasks(net, seq)[t]))
    return {"dead": dead, "new_task": new_task}


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--docs", type=Path, help="rewrite the marked table in this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for lr, hidden in SETTINGS:
        runs = [probe(lr, hidden, seed) for seed in range(args.seeds)]
        dead = np.array([r["dead"] for r in runs])  # (seeds, tasks)
        new = np.array([r["new_task"] for r in runs])
        rows.append(
            [
                f"lr {lr:g}, MLP-{hidden[0]}",
                " → ".join(f"{v:.2f}" for v in dead.mean(axis=0)),
                " → ".join(f"{v:.2f}" for v in new.mean(axis=0)),
            ]
        )
        print(f"lr={lr} hidden={hidden} done", flush=True)
    table = markdown_table(
        [
            "fine-tuning, class-IL split digits",
            "dead hidden units after tasks 1 → 5",
            "accuracy on the task just learnt, tasks 1 → 5",
        ],
        rows,
    )
    note = f"(mean over seeds 0–{args.seeds - 1})"
    print(table, note)
    if args.docs:
        update_docs(
            args.docs,
            "cil_dead_units",
            f"{table}\n\n{note}",
            "python -m benchmarks.cil_plasticity_probe",
        )
    return table


if __name__ == "__main__":
    main()
