"""Byzantine clients against robust aggregation rules: student accuracy side by side.

    python -m benchmarks.bench_byzantine                        # ~10 min on a 2-core CPU
    python -m benchmarks.bench_byzantine --attacks uniform,peaked --partitions iid --seeds 0
    python -m benchmarks.bench_byzantine --quick                # seconds: smoke test

For every partition (IID, Dirichlet α), attack (by default the label-space attacks
``targeted`` and ``label_flip``, the distillation attacks LMA and CPA of Roux et al., ICLR 2025,
and FedTGD's top-k attack), share of attackers (0/10/20/30 %) and aggregation rule (mean,
median, trimmed_mean, filtered_mean, and ExpGuard over ``--expguard-base``) the real ServerApp
runs against
real ClientApps in process (``simulations.local_grid``), so replies go through the same encode,
validation and aggregation path as in a deployment. Attackers are chosen by
:func:`fedkd.faults.attackers` from the seed; they train like everyone else and then upload the
attack instead of their soft labels. Every number in the tables comes from runs of this
invocation, averaged over ``--seeds`` (each seed changes the data split, partitions, attackers
and models).

Why two partitions: the robust rules look for replies that disagree with the majority. Under
IID data honest clients agree and an attacker stands out; under label skew (Dirichlet α = 0.5)
honest clients disagree among themselves, so the filter has less to go on and the median
discards honest information too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import add_common_args, digits_fd_config, markdown_table, write_json
from fedkd.config import ATTACKS, FDConfig
from simulations.local_grid import run_fd_local
from strategies.fed_distill import RoundRecord

RULES = ("mean", "median", "trimmed_mean", "filtered_mean", "expguard")
DEFAULT_ATTACKS = ("targeted", "label_flip", "lma", "cpa", "topk")
NO_ATTACK = "none"  # the label of the attacker-free runs every attack's table shares


def run_records(cfg: FDConfig) -> list[RoundRecord]:
    """Run ``cfg`` in process (real ServerApp and ClientApps) and return its round records.

    The server's per-round progress lines and warnings (every attacker's rejected reply, every
    injected crash) are swallowed: they are counted in the records, and a grid of runs prints
    its own progress.
    """
    with contextlib.redirect_stdout(io.StringIO()), _quiet_logs():
        records = run_fd_local(cfg)
    if len(records) != cfg.num_rounds:
        raise RuntimeError(f"expected {cfg.num_rounds} round records, got {len(records)}")
    return records


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


@dataclass(frozen=True)
class Outcome:
    """What the tables need from one run (one seed of one setting)."""

    final: float  # student test accuracy after the last round
    last2: float  # mean student test accuracy of the last two rounds (less round-to-round noise)
    teacher: float | None  # teacher argmax accuracy on the public rows, last round
    rejected: int  # replies rejected by validation over the whole run
    seconds: float

    @classmethod
    def of(cls, records: Sequence[RoundRecord], seconds: float) -> Outcome:
        tail = [r.student_accuracy for r in records[-2:]]
        return cls(
            final=records[-1].student_accuracy,
            last2=sum(tail) / len(tail),
            teacher=records[-1].teacher_accuracy,
            rejected=sum(r.rejected for r in records),
            seconds=seconds,
        )


@dataclass(frozen=True)
class Setting:
    """One cell of the grid, before seeds."""

    partition: str  # "iid" or "dirichlet"
    attack: str  # an attack of fedkd.faults, or NO_ATTACK when fraction == 0
    fraction: float  # share of attackers
    rule: str


@dataclass
class Summary:
    """A setting's outcomes over seeds, and their means (what the tables print)."""

    setting: Setting
    outcomes: list[Outcome] = field(default_factory=list)

    def mean(self, name: str) -> float | None:
        values = [getattr(o, name) for o in self.outcomes if getattr(o, name) is not None]
        return statistics.fmean(values) if values else None

    def std(self, name: str) -> float:
        values = [getattr(o, name) for o in self.outcomes]
        return statistics.pstdev(values) if len(values) > 1 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **vars(self.setting),
            "final": self.mean("final"),
            "final_std": self.std("final"),
            "last2": self.mean("last2"),
            "teacher": self.mean("teacher"),
            "rejected": self.mean("rejected"),
            "per_seed": [vars(o) for o in self.outcomes],
        }


def settings(
    partitions: Sequence[str],
    attacks: Sequence[str],
    fractions: Sequence[float],
    rules: Sequence[str],
) -> list[Setting]:
    """The grid; attacker-free runs are made once per partition and rule, not once per attack."""
    out = []
    for partition in partitions:
        for fraction in fractions:
            for attack in attacks if fraction > 0 else [NO_ATTACK]:
                out += [Setting(partition, attack, fraction, rule) for rule in rules]
    return out


def make_config(setting: Setting, seed: int, args: argparse.Namespace) -> FDConfig:
    """The shared FD setting; only the partition, the attack and the rule vary."""
    return digits_fd_config(
        args,
        partition=setting.partition,
        aggregation=setting.rule,
        trim_ratio=args.trim_ratio,
        outlier_threshold=args.outlier_threshold,
        expguard_base=args.expguard_base,
        expguard_eta=args.expguard_eta,
        byzantine_fraction=setting.fraction,
        byzantine_attack=setting.attack if setting.attack != NO_ATTACK else "label_flip",
        byzantine_target=args.target,
        seed=seed,
    )


def run_grid(
    grid: Sequence[Setting], seeds: Sequence[int], args: argparse.Namespace
) -> list[Summary]:
    """Run every setting for every seed, printing one progress line per run."""
    summaries = []
    for i, setting in enumerate(grid, 1):
        summary = Summary(setting)
        for seed in seeds:
            started = time.perf_counter()
            records = run_records(make_config(setting, seed, args))
            summary.outcomes.append(Outcome.of(records, time.perf_counter() - started))
        print(
            f"[{i}/{len(grid)}] {setting.partition} {setting.attack} {setting.fraction:.0%} "
            f"{setting.rule}: student {summary.mean('final'):.3f}",
            flush=True,
        )
        summaries.append(summary)
    return summaries


# ----------------------------------------------------------------------------- report
def _partition_label(partition: str, alpha: float) -> str:
    return f"dirichlet α={alpha:g}" if partition == "dirichlet" else partition


def _student_cell(summary: Summary) -> str:
    """``final ±std over seeds (mean of the last 2 rounds)``: the spread says what a gap means."""
    final, last2 = summary.mean("final"), summary.mean("last2")
    return f"{final:.3f} ±{summary.std('final'):.3f} ({last2:.3f})"


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def tables(
    summaries: Sequence[Summary], args: argparse.Namespace, attacks: Sequence[str]
) -> tuple[str, str]:
    """Student table (final, and mean of the last 2 rounds) and teacher table, rules as columns.

    Each attack's block starts with the attacker-free row, so a column reads as "what this
    rule loses to the attack".
    """
    by_key = {
        (s.setting.partition, s.setting.attack, s.setting.fraction, s.setting.rule): s
        for s in summaries
    }
    rules = sorted({s.setting.rule for s in summaries}, key=_rule_order)
    partitions = list(dict.fromkeys(s.setting.partition for s in summaries))
    fractions = sorted({s.setting.fraction for s in summaries})
    headers = ["partition", "attack", "attackers", *rules]
    student_rows, teacher_rows = [], []
    for partition in partitions:
        for attack in attacks:
            for fraction in fractions:
                label = attack if fraction > 0 else NO_ATTACK
                found = [by_key.get((partition, label, fraction, r)) for r in rules]
                row_cells = [s for s in found if s is not None]
                if len(row_cells) < len(rules):  # e.g. a fraction run for another attack only
                    continue
                head = [
                    _partition_label(partition, args.alpha),
                    attack,
                    f"{round(fraction * args.clients)}/{args.clients}",
                ]
                student_rows.append(head + [_student_cell(s) for s in row_cells])
                teacher_rows.append(head + [_cell(s.mean("teacher")) for s in row_cells])
    return markdown_table(headers, student_rows), markdown_table(headers, teacher_rows)


def worst_drops(
    summaries: Sequence[Summary], args: argparse.Namespace, fraction: float = 0.2
) -> str:
    """Per partition and rule: the largest loss of final student accuracy (points) against the
    same rule without attackers, over every attack at ``fraction``, and which attack caused it.
    A rule "holds" an attack when that loss is at most 2 points."""
    clean: dict[tuple[str, str], float] = {}
    for s in summaries:
        final = s.mean("final")
        if s.setting.fraction == 0 and final is not None:
            clean[(s.setting.partition, s.setting.rule)] = final
    rules = sorted({s.setting.rule for s in summaries}, key=_rule_order)
    partitions = list(dict.fromkeys(s.setting.partition for s in summaries))
    rows = []
    for partition in partitions:
        cells = []
        for rule in rules:
            drops = [
                (100 * (clean[(partition, rule)] - final), s.setting.attack)
                for s in summaries
                if (s.setting.partition, s.setting.rule) == (partition, rule)
                and abs(s.setting.fraction - fraction) < 1e-9
                and (partition, rule) in clean
                and (final := s.mean("final")) is not None
            ]
            if not drops:
                cells.append("n/a")
                continue
            worst, attack = max(drops)
            cells.append(f"{worst:+.1f} ({attack})")
        rows.append([_partition_label(partition, args.alpha), *cells])
    return markdown_table(["partition", *rules], rows)


def _rule_order(rule: str) -> int:
    return RULES.index(rule) if rule in RULES else len(RULES)


# ----------------------------------------------------------------------------- entry point
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything to a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--attacks", default=",".join(DEFAULT_ATTACKS), help=f"of {', '.join(ATTACKS)}"
    )
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3", help="shares of attackers")
    parser.add_argument("--rules", default=",".join(RULES), help="aggregation rules")
    parser.add_argument("--partitions", default="iid,dirichlet", help="iid and/or dirichlet")
    parser.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration")
    parser.add_argument("--seeds", default="0,1,2", help="seeds to average over")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=10, help="all take part every round")
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--server-epochs", type=int, default=5)
    parser.add_argument("--model", default="mlp", help="client and student architecture")
    parser.add_argument(
        "--trim-ratio", type=float, default=0.3, help="trimmed_mean: share cut at each end"
    )
    parser.add_argument(
        "--outlier-threshold", type=float, default=3.0, help="filtered_mean: robust z-score cut"
    )
    parser.add_argument("--target", type=int, default=0, help="class of the targeted attack")
    parser.add_argument("--expguard-base", default="median", help="ExpGuard's robust base rule")
    parser.add_argument(
        "--expguard-eta", type=float, default=10.0, help="ExpGuard's exponential-weights rate"
    )
    add_common_args(parser, "bench_byzantine")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.clients, args.local_epochs, args.server_epochs = 2, 4, 1, 1
        args.seeds, args.partitions, args.attacks, args.fractions = "0", "iid", "lma", "0,0.3"
    return args


def _split(text: str, kind: type = str) -> list[Any]:
    return [kind(x.strip()) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the grid, print both tables, write the JSON; returns the JSON payload."""
    args = parse_args(argv)
    attacks = _split(args.attacks)
    grid = settings(
        _split(args.partitions), attacks, _split(args.fractions, float), _split(args.rules)
    )
    seeds = _split(args.seeds, int)
    started = time.perf_counter()
    summaries = run_grid(grid, seeds, args)
    seconds = time.perf_counter() - started
    student, teacher = tables(summaries, args, attacks)
    print(
        f"\nByzantine attackers on digits: {args.clients} clients, {args.rounds} rounds, model "
        f"{args.model}, trim-ratio {args.trim_ratio}, outlier-threshold "
        f"{args.outlier_threshold}, mean over seeds {args.seeds} "
        f"({len(grid) * len(seeds)} runs, {seconds:.0f} s)\n"
    )
    print("Student test accuracy, final ±std over seeds (mean of the last 2 rounds):\n")
    print(student)
    print("\nTeacher accuracy on the public rows (argmax vs true label), last round:\n")
    print(teacher)
    fraction = 0.2 if 0.2 in _split(args.fractions, float) else max(_split(args.fractions, float))
    drops = worst_drops(summaries, args, fraction)
    print(
        f"\nWorst loss of final student accuracy (points) at {fraction:.0%} attackers against the "
        "same rule without attackers, over every attack (the attack in brackets):\n"
    )
    print(drops)
    payload = {
        "setting": {k: str(v) if k == "out" else v for k, v in vars(args).items()},
        "seconds": seconds,
        "student_table": student,
        "teacher_table": teacher,
        "worst_drop_table": drops,
        "results": [s.as_dict() for s in summaries],
    }
    print(f"\nresults written to {write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
