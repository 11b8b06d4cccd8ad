"""Explain FD's teacher and student on digits, with Byzantine clients: JSON and plots per round.

    python -m benchmarks.bench_explain                   # 10 clients, 2 label flippers, 3 rounds
    python -m benchmarks.bench_explain --attack targeted --rule filtered_mean

Clients train locally on Dirichlet(0.5) partitions (the FD setting of the other benchmarks,
without Flower: the server-side explanation only needs the replies), upload softened
predictions on the public inputs, attackers replace theirs (:mod:`fedkd.faults`). Each round
:func:`strategies.explain.explain_round` explains the teacher — provenance, agreement,
per-class reliability, leave-one-out and sampled-Shapley contributions, judged against the
public oracle labels (a simulator's privilege) — and writes ``round_<r>.json`` and
``round_<r>.png``; ``reliability.json`` pools per-class reliability over rounds (judged against
the consensus, what a real server can do). It also records which clients the robust
``filtered_mean`` rule would drop, so a down-weighted client shows why. Finally a student
(``cnn``) is distilled from the last teacher and its input-gradient saliency is compared with
each client model's (:func:`fedkd.explain.saliency_agreement`): ``saliency.json``/``.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import markdown_table, write_json
from fedkd import faults
from fedkd.client import client_partitions, load_splits_for
from fedkd.config import FDConfig
from fedkd.explain import plot_saliency_agreement, saliency_agreement
from fedkd.kd import KDSpec
from fedkd.models import build_model
from fedkd.training import TrainConfig, distill, evaluate, predict_probs, train_supervised
from strategies.aggregation import AggregationContext, aggregate, outlier_mask
from strategies.explain import ReliabilityHistory, explain_round, plot_explanation

__all__ = ["main", "run"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the rounds, write the per-round explanations, return the summary payload."""
    torch.set_num_threads(1)
    n = args.clients
    cfg = FDConfig(
        dataset="digits",
        num_clients=n,
        min_train_nodes=n,
        alpha=0.5,
        byzantine_fraction=args.byzantine,
        byzantine_attack=args.attack,
        seed=args.seed,
    )
    splits = load_splits_for(cfg)
    parts = client_partitions(cfg, n)
    bad = faults.attackers(cfg)
    ids = [f"c{pid}{'*' if pid in bad else ''}" for pid in range(n)]
    oracle = splits.oracle_public_labels().numpy()
    models = []
    for pid in range(n):
        torch.manual_seed(args.seed + pid)
        models.append(build_model(cfg.model_for_partition(pid), splits.input_shape, 10))
    counts = np.stack([np.bincount(splits.train_y[p].numpy(), minlength=10) for p in parts])
    ctx = AggregationContext(num_examples=counts.sum(axis=1), class_counts=counts)
    history = ReliabilityHistory(num_classes=10)
    out_dir = Path(args.out_dir)
    rounds: list[dict[str, Any]] = []
    teacher = np.empty(0)
    for r in range(1, args.rounds + 1):
        uploads = []
        for pid, (model, idx) in enumerate(zip(models, parts, strict=True)):
            train_supervised(
                model,
                splits.train_x[idx],
                splits.train_y[idx],
                TrainConfig(epochs=args.local_epochs, lr=cfg.lr),
                generator=torch.Generator().manual_seed(args.seed * 1000 + r * 100 + pid),
            )
            probs = predict_probs(model, splits.public_x, temperature=cfg.temperature).numpy()
            uploads.append(faults.maybe_attack(cfg, pid, r, probs))
        probs = np.stack(uploads)  # (clients, samples, classes)
        teacher = aggregate(args.rule, probs, ctx)
        report = explain_round(
            probs, ctx, args.rule, ids, reference=oracle, shapley_permutations=args.shapley
        )
        report["round"] = r
        report["filtered_mean_drops"] = [
            ids[i] for i in np.flatnonzero(~outlier_mask(probs, ctx.outlier_threshold))
        ]
        history = history.update(ids, probs, teacher.argmax(axis=1))
        write_json(out_dir / f"round_{r}.json", report)
        plot_explanation(report, out_dir / f"round_{r}.png")
        rounds.append(report)

    student = build_model("cnn", splits.input_shape, 10)
    distill(
        student,
        splits.public_x,
        torch.from_numpy(teacher),
        KDSpec(temperature=cfg.temperature),
        TrainConfig(epochs=args.student_epochs, lr=0.05),
        generator=torch.Generator().manual_seed(args.seed),
    )
    student_acc = evaluate(student, splits.test_x, splits.test_y, num_classes=10).accuracy
    sal = saliency_agreement(student, models, splits.public_x[: args.saliency_samples])
    plot_saliency_agreement(sal, out_dir / "saliency.png", names=ids)
    write_json(
        out_dir / "saliency.json",
        {
            "clients": ids,
            "mean_cosine": sal["mean_cosine"],
            "mean_topk_overlap": sal["mean_topk_overlap"],
            "teacher_teacher_cosine": sal["teacher_teacher_cosine"],
        },
    )
    write_json(out_dir / "reliability.json", {"rounds": history.rounds, **history.reliability()})
    last = rounds[-1]
    return {
        "benchmark": "bench_explain",
        "setting": {
            "clients": n,
            "attackers": [ids[i] for i in sorted(bad)],
            "attack": args.attack,
            "rule": args.rule,
            "rounds": args.rounds,
        },
        "student_accuracy": student_acc,
        "teacher_accuracy": [rep["teacher_accuracy"] for rep in rounds],
        "last_round": {
            k: last[k]
            for k in (
                "clients",
                "agreement",
                "loo_accuracy_effect",
                "shapley",
                "filtered_mean_drops",
                "mean_vote_agreement",
            )
            if k in last
        },
        "saliency_mean_cosine": sal["mean_cosine"],
        "out_dir": str(out_dir),
    }


def _table(payload: dict[str, Any]) -> str:
    last = payload["last_round"]
    shapley = last.get("shapley", [float("nan")] * len(last["clients"]))
    rows = [
        [
            cid,
            f"{last['agreement'][i]:.3f}",
            f"{100 * last['loo_accuracy_effect'][i]:+.1f}",
            f"{100 * shapley[i]:+.1f}",
            "dropped" if cid in last["filtered_mean_drops"] else "kept",
            f"{payload['saliency_mean_cosine'][i]:.3f}",
        ]
        for i, cid in enumerate(last["clients"])
    ]
    head = (
        f"rule {payload['setting']['rule']}, attack {payload['setting']['attack']} by "
        f"{payload['setting']['attackers']} (* = attacker); teacher accuracy per round "
        f"{[round(a, 4) for a in payload['teacher_accuracy']]}; student "
        f"{payload['student_accuracy']:.4f}"
    )
    table = markdown_table(
        [
            "client",
            "agreement",
            "LOO effect (pts)",
            "Shapley (pts)",
            "filtered_mean",
            "saliency cosine",
        ],
        rows,
    )
    return f"{head}\n\n{table}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--byzantine", type=float, default=0.2)
    parser.add_argument(
        "--attack", default="label_flip", choices=["uniform", "label_flip", "targeted", "peaked"]
    )
    parser.add_argument("--rule", default="mean")
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--student-epochs", type=int, default=20)
    parser.add_argument("--shapley", type=int, default=20, help="Shapley permutations (0 = off)")
    parser.add_argument("--saliency-samples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default="outputs/explain")
    args = parser.parse_args(argv)
    payload = run(args)
    write_json(Path(args.out_dir) / "summary.json", payload)
    print(_table(payload))
    print(f"\nwrote {args.out_dir}/round_*.json|png, reliability.json, saliency.json|png")
    return payload


if __name__ == "__main__":
    main()
