"""Where the support-aware teacher is still wrong, and which rule fixes it: the same replies,
every support rule.

    python -m benchmarks.fd_teacher_probe                  # α = 0.1, seeds 0-2, 30 rounds
    python -m benchmarks.fd_teacher_probe --docs docs/recipes.md

Runs Selective-FD (``aggregation=selective``, joint co-distillation) on digits with 10 clients in
process and keeps every round's validated replies (soft labels, support scores, class counts).
Then, on exactly those replies, it re-aggregates the teacher with each support rule and scores
it against the public set's labels (the simulator knows them; the server never uses them).
Holding the replies fixed isolates the rule from the dynamics it would cause.

It also breaks the teachers' wrong rows down: how many of the selective teacher's have a
supporter that holds *no* example of the row's true class (a "non-owner" whose private data
merely sit near the sample: where a confident wrong vote gets in), and how many would pass the
co-distillation gate (certainty ≥ 0.25) if the gate read each teacher's own certainty. Class
shares silence dissent, so ``selective_class``'s own certainty cannot tell its wrong rows from
its right ones; its gate reads the selective mean (``SHARPENED_BASE``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import markdown_table, update_docs

RULES = ("selective", "certainty", "class_weighted", "selective_class")
SHOW_ROUNDS = (1, 2, 3, 5, 10, 20, 30)
GATE = 0.25  # FDConfig.codistill_min_certainty's default


def capture(
    alpha: float, seed: int, rounds: int, aggregation: str = "selective"
) -> dict[int, dict[str, np.ndarray]]:
    """Run FD with ``aggregation`` (Selective-FD by default) and return, per round, the stacked
    replies and the public labels."""
    from fedkd.config import FDConfig
    from simulations.local_grid import run_fd_local
    from strategies import fed_distill

    captured: dict[int, dict[str, np.ndarray]] = {}
    original = fed_distill.FedDistill.explain_teacher

    def keep(self: Any, server_round: int, valid: list[Any], indices: Any) -> None:
        assert indices is None and self.public.oracle_labels is not None
        captured[server_round] = {
            "probs": np.stack([v.probs for v in valid]),  # (clients, public, classes)
            "support": np.stack([v.support for v in valid]),  # (clients, public)
            "counts": np.stack([v.class_counts for v in valid]),  # (clients, classes)
            "labels": self.public.oracle_labels.numpy(),
        }

    # explain_teacher=True makes the strategy keep every reply (no streaming) and hands them to
    # explain_teacher(), which the probe replaces for the run; no run-dir, so nothing is written.
    cfg = FDConfig(
        aggregation=aggregation,
        alpha=alpha,
        seed=seed,
        num_rounds=rounds,
        checkpoint=False,
        client_checkpoints=False,
        explain_teacher=True,
    )
    fed_distill.FedDistill.explain_teacher = keep  # type: ignore[assignment,method-assign]
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            run_fd_local(cfg)
    finally:
        fed_distill.FedDistill.explain_teacher = original  # type: ignore[method-assign]
    return captured


def rule_accuracies(replies: dict[str, np.ndarray]) -> dict[str, float]:
    """Each rule's teacher on the same replies, scored on the public labels."""
    from strategies.aggregation import AggregationContext, aggregate

    ctx = AggregationContext(
        num_examples=replies["counts"].sum(axis=1),
        class_counts=replies["counts"],
        support=replies["support"],
    )
    labels = replies["labels"]
    return {
        rule: float(np.mean(aggregate(rule, replies["probs"], ctx).argmax(axis=1) == labels))
        for rule in RULES
    }


def wrong_row_breakdown(replies: dict[str, np.ndarray]) -> dict[str, float]:
    """Of each teacher's wrong rows: the share with a supporting non-owner of the true class
    (selective), and the share that would pass the co-distillation gate (certainty ≥ 0.25) if
    the gate read that teacher's own certainty."""
    from fedkd.support import in_support
    from strategies.aggregation import AggregationContext, aggregate, normalised_certainty

    ctx = AggregationContext(
        replies["counts"].sum(axis=1), replies["counts"], support=replies["support"]
    )
    labels = replies["labels"]
    supports = in_support(replies["support"])  # (clients, public)
    owns = replies["counts"][:, labels] > 0  # (clients, public): holds the row's true class
    non_owner = np.asarray((supports & ~owns).any(axis=0), dtype=bool)
    out: dict[str, float] = {}
    for rule in ("selective", "selective_class"):
        teacher = aggregate(rule, replies["probs"], ctx)
        wrong = np.asarray(teacher.argmax(axis=1) != labels, dtype=bool)
        passes = np.asarray(normalised_certainty(teacher) >= GATE, dtype=bool)
        out[f"{rule}_gate"] = float(passes[wrong].mean()) if wrong.any() else 0.0
        if rule == "selective":
            out["with_non_owner"] = float(non_owner[wrong].mean()) if wrong.any() else 0.0
    return out


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--docs", type=Path, help="rewrite the marked table in this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    runs = []
    for seed in range(args.seeds):
        runs.append(capture(args.alpha, seed, args.rounds))
        print(f"seed {seed} captured", flush=True)
    rows = []
    for r in [r for r in SHOW_ROUNDS if r <= args.rounds]:
        accs = [rule_accuracies(run[r]) for run in runs]
        breakdown = [wrong_row_breakdown(run[r]) for run in runs]
        rows.append(
            [
                r,
                *(f"{np.mean([a[rule] for a in accs]):.3f}" for rule in RULES),
                f"{np.mean([b['with_non_owner'] for b in breakdown]):.2f}",
                f"{np.mean([b['selective_gate'] for b in breakdown]):.2f}",
                f"{np.mean([b['selective_class_gate'] for b in breakdown]):.2f}",
            ]
        )
    headers = [
        "round",
        *RULES,
        "selective's wrong rows with a non-owner supporter",
        "wrong rows through the gate: selective",
        "… selective_class, own certainty",
    ]
    table = (
        f"Teacher accuracy on the public set, same replies re-aggregated by each rule; α = "
        f"{args.alpha}, digits, 10 clients, Selective-FD run, means over {args.seeds} seeds\n\n"
        + markdown_table(headers, rows)
    )
    print(f"\n{table}")
    if args.docs:
        command = (
            f"python -m benchmarks.fd_teacher_probe --alpha {args.alpha} --seeds {args.seeds} "
            f"--rounds {args.rounds}"
        )
        update_docs(args.docs, "fd_teacher_probe", table, command)
    return table


if __name__ == "__main__":
    main()
