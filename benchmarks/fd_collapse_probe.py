"""Why co-distillation collapsed, and what stops it: a probe, round by round.

    python -m benchmarks.fd_collapse_probe                 # α = 0.1, seeds 0-2, 10 rounds

Runs three settings of co-distillation on digits (10 clients, in process) and prints, per
round, the teacher's mean certainty ``1 - H/log C`` (0 = uniform), its accuracy on the public
set, and the clients' and student's test accuracy:

* ``mean + digest``: FedMD's order toward the plain mean — the v0.1 ``strategy=codistill``;
* ``mean + digest + gate``: the same, sending back only teacher rows with certainty ≥ 0.25;
* ``selective + joint``: fedkd's default (support-aware teacher, KD in every local step).

The mechanism it shows: under label skew the mean of clients that each know one or two classes
is nearly uniform; digesting it flattens every client, the next mean is flatter still, and
within a few rounds teacher, clients and student sit at chance.
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

SETTINGS: dict[str, dict[str, Any]] = {
    "mean + digest": {
        "aggregation": "mean",
        "codistill_mode": "digest",
        "codistill_min_certainty": 0.0,
    },
    "mean + digest + gate": {
        "aggregation": "mean",
        "codistill_mode": "digest",
        "codistill_min_certainty": 0.25,
    },
    "selective + joint": {},
}


def run(setting: str, alpha: float, seed: int, rounds: int) -> list[Any]:
    from fedkd.config import FDConfig
    from simulations.local_grid import run_fd_local

    cfg = FDConfig(alpha=alpha, seed=seed, num_rounds=rounds, checkpoint=False, **SETTINGS[setting])
    with contextlib.redirect_stdout(io.StringIO()):
        return run_fd_local(cfg)


def main(argv: Sequence[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--docs", type=Path, help="rewrite the marked table in this file")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    show = sorted({1, 2, 3, 5, args.rounds})
    rows = []
    for setting in SETTINGS:
        runs = [run(setting, args.alpha, s, args.rounds) for s in range(args.seeds)]
        for r in show:
            at = [records[r - 1] for records in runs]

            def mean(key: str, at: list[Any] = at) -> str:
                return f"{np.mean([getattr(x, key) for x in at]):.3f}"

            rows.append(
                [
                    setting,
                    r,
                    mean("teacher_certainty"),
                    mean("teacher_accuracy"),
                    mean("client_accuracy"),
                    mean("student_accuracy"),
                ]
            )
        print(f"done: {setting}", flush=True)
    headers = [
        "setting",
        "round",
        "teacher certainty",
        "teacher acc (public)",
        "clients",
        "student",
    ]
    table = markdown_table(headers, rows)
    table = f"α = {args.alpha}, digits, 10 clients, means over {args.seeds} seeds\n\n{table}"
    print(f"\n{table}")
    if args.docs:
        command = (
            f"python -m benchmarks.fd_collapse_probe --alpha {args.alpha} --seeds {args.seeds} "
            f"--rounds {args.rounds}"
        )
        update_docs(args.docs, "fd_collapse_probe", table, command)
    return table


if __name__ == "__main__":
    main()
