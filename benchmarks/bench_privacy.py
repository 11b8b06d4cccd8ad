"""Differential privacy of uploaded soft labels: student accuracy against ε, side by side.

    python -m benchmarks.bench_privacy                          # ~1 min on a 2-core CPU
    python -m benchmarks.bench_privacy --noise 0,1 --subsets 50 --clips 1 --seeds 0
    python -m benchmarks.bench_privacy --quick                  # seconds: smoke test

Every client clips each soft-label row to L2 norm ``dp-clip`` and adds Gaussian noise of
standard deviation ``z · clip · √(2 · rows)`` per coordinate (:mod:`fedkd.privacy`), so the
price of privacy grows with the number of public rows queried per round: the grid varies the
noise multiplier ``z``, the public rows per round (``public-subset``; 0 = all) and the clip.
ε is what the server reports (``RoundRecord.dp_epsilon``, Opacus's PRV accountant at
``dp-delta``) after the last round; it does not depend on the seed. The noise comes from OS
entropy, so reruns differ: accuracies are means over ``--seeds`` runs of this invocation.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.bench_byzantine import Outcome, run_records
from benchmarks.common import add_common_args, digits_fd_config, markdown_table, write_json
from fedkd.client import load_splits_for
from fedkd.config import FDConfig
from fedkd.privacy import DPSpec


@dataclass(frozen=True)
class Setting:
    """One row of the table, before seeds."""

    subset: int  # public rows queried per round; 0 = all
    clip: float
    noise: float  # noise multiplier z; 0 = DP off


@dataclass
class Summary:
    """A setting's outcomes over seeds, ε, and the noise each coordinate received."""

    setting: Setting
    rows: int  # public rows actually queried per round
    epsilon: float | None = None  # after the last round; None when DP is off
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def noise_std(self) -> float:
        spec = DPSpec(self.setting.noise, clip=self.setting.clip)
        return spec.noise_std(self.rows)

    def mean(self, name: str) -> float | None:
        values = [getattr(o, name) for o in self.outcomes if getattr(o, name) is not None]
        return statistics.fmean(values) if values else None

    def std(self, name: str) -> float:
        values = [getattr(o, name) for o in self.outcomes]
        return statistics.pstdev(values) if len(values) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **vars(self.setting),
            "rows": self.rows,
            "noise_std": self.noise_std,
            "epsilon": self.epsilon,
            "final": self.mean("final"),
            "final_std": self.std("final"),
            "last2": self.mean("last2"),
            "teacher": self.mean("teacher"),
            "per_seed": [vars(o) for o in self.outcomes],
        }


def settings(
    subsets: Sequence[int], clips: Sequence[float], noises: Sequence[float]
) -> list[Setting]:
    """The grid; without noise the clip changes nothing, so z = 0 runs once per subset."""
    out = []
    for subset in subsets:
        for noise in noises:
            out += [Setting(subset, clip, noise) for clip in (clips if noise > 0 else clips[:1])]
    return out


def make_config(setting: Setting, seed: int, args: argparse.Namespace) -> FDConfig:
    """The shared FD setting; only the public subset and the DP parameters vary."""
    return digits_fd_config(
        args,
        partition=args.partition,
        public_subset=setting.subset,
        dp_noise_multiplier=setting.noise,
        dp_clip=setting.clip,
        dp_delta=args.delta,
        seed=seed,
    )


def public_rows(cfg: FDConfig) -> int:
    """Rows each client uploads per round: the subset, or the whole public set."""
    size = len(load_splits_for(cfg).public_x)
    return size if cfg.public_subset == 0 else min(cfg.public_subset, size)


def run_grid(
    grid: Sequence[Setting], seeds: Sequence[int], args: argparse.Namespace
) -> list[Summary]:
    """Run every setting for every seed; ε is read from the last round record."""
    summaries = []
    for i, setting in enumerate(grid, 1):
        summary = Summary(setting, rows=public_rows(make_config(setting, seeds[0], args)))
        for seed in seeds:
            started = time.perf_counter()
            records = run_records(make_config(setting, seed, args))
            summary.outcomes.append(Outcome.of(records, time.perf_counter() - started))
            summary.epsilon = records[-1].dp_epsilon
        print(
            f"[{i}/{len(grid)}] rows {summary.rows} clip {setting.clip:g} z {setting.noise:g}: "
            f"ε {_eps(summary.epsilon)} student {summary.mean('final'):.3f}",
            flush=True,
        )
        summaries.append(summary)
    return summaries


# ----------------------------------------------------------------------------- report
def _eps(epsilon: float | None) -> str:
    if epsilon is None:
        return "— (no DP)"
    return "∞" if math.isinf(epsilon) else f"{epsilon:.3g}"


def _partition_label(args: argparse.Namespace) -> str:
    return f"dirichlet α={args.alpha:g}" if args.partition == "dirichlet" else args.partition


def table(summaries: Sequence[Summary]) -> str:
    """One row per setting, in grid order."""
    headers = [
        "public rows/round",
        "clip",
        "z",
        "noise std/coord",
        "ε after last round",
        "student final ±std",
        "student last 2",
        "teacher",
    ]
    rows = []
    for s in summaries:
        teacher = s.mean("teacher")
        rows.append(
            [
                s.rows,
                f"{s.setting.clip:g}" if s.setting.noise > 0 else "—",
                f"{s.setting.noise:g}",
                f"{s.noise_std:.2f}",
                _eps(s.epsilon),
                f"{s.mean('final'):.3f} ±{s.std('final'):.3f}",
                f"{s.mean('last2'):.3f}",
                "n/a" if teacher is None else f"{teacher:.3f}",
            ]
        )
    return markdown_table(headers, rows)


# ----------------------------------------------------------------------------- entry point
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything to a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--noise", default="0,0.1,0.2,0.5,1,2,4", help="noise multipliers z")
    parser.add_argument("--subsets", default="50,0", help="public rows per round; 0 = all")
    parser.add_argument("--clips", default="1,0.3", help="L2 clip of each soft-label row")
    parser.add_argument("--delta", type=float, default=1e-5, help="δ of the reported ε")
    parser.add_argument("--partition", default="dirichlet", help="iid | dirichlet | ...")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--seeds", default="0,1,2", help="seeds to average over")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10, help="all take part every round")
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--server-epochs", type=int, default=5)
    parser.add_argument("--model", default="mlp", help="client and student architecture")
    add_common_args(parser, "bench_privacy")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.clients, args.local_epochs, args.server_epochs = 2, 3, 1, 1
        args.seeds, args.noise, args.subsets, args.clips = "0", "0,1,4", "50", "1"
    return args


def _split(text: str, kind: type) -> list[Any]:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the grid, print the table, write the JSON; returns the JSON payload."""
    args = parse_args(argv)
    grid = settings(_split(args.subsets, int), _split(args.clips, float), _split(args.noise, float))
    seeds = _split(args.seeds, int)
    started = time.perf_counter()
    summaries = run_grid(grid, seeds, args)
    seconds = time.perf_counter() - started
    text = table(summaries)
    print(
        f"\nDP soft labels on digits: {args.clients} clients, {args.rounds} rounds, model "
        f"{args.model}, {_partition_label(args)} partition, δ = {args.delta:g}, mean over seeds "
        f"{args.seeds} ({len(grid) * len(seeds)} runs, {seconds:.0f} s)\n"
    )
    print(text)
    payload = {
        "setting": {k: str(v) if k == "out" else v for k, v in vars(args).items()},
        "seconds": seconds,
        "table": text,
        "results": [s.as_dict() for s in summaries],
    }
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
