"""``fedkd-compare``: overlay runs and sweeps — accuracy vs round and vs traffic, seed bands,
FedAvg and reference lines.

    fedkd-compare outputs/2026-12-02/10-00-00 outputs/2026-12-02/10-05-00   # two runs
    fedkd-compare multirun/2026-12-02/11-00-00                              # a sweep (-m)
    fedkd-compare RUN_OR_SWEEP ... --out compare/fd-vs-fedavg --wandb offline

Why a separate command: each run plots itself alone, but the question a user asks is
comparative (FD against FedAvg at equal traffic, one rule against another over seeds). A path
is a run directory (it holds ``metrics.json``) or any directory above runs (a Hydra sweep);
every run found is read from its own files — ``metrics.json``, ``summary.json`` (the
references) and ``config.yaml`` — so runs from different days and sweeps compare alike.

Runs whose configs differ only in ``fd.seed`` form one group, drawn as the mean with a ± one
standard deviation band. Legend labels name what differs between the groups' configs (not run
times). The local-only, centralized and public-labels references come from each run's
``summary.json``: one grey line each when every group shares them (same data and partitions),
else one per group in its colour. Writes ``accuracy_vs_round.png``, ``accuracy_vs_bytes.png``
and ``compare.json`` into ``--out`` and prints one line per group.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedkd.plots import Band

SEED_KEY = "fd.seed"
STRATEGY_KEY = "strategy.strategy"
AGGREGATION_KEY = "aggregation.aggregation"
STRATEGY_NAMES = {"fd": "FD", "fedavg": "FedAvg"}
# keys that never make two runs different experiments: where the run writes and logs, where
# and how fast it ran, and what it wrote besides the federation (references, exports)
IGNORED_PREFIXES: tuple[str, ...] = (
    "logging.",
    "hydra.",
    "fd.resume",
    "fd.run_dir",
    "fd.checkpoint",
    "simulation.",
    "fd.torch_threads",
    "fd.device",
    "fd.client_device",
    "references",
    "export_student",
    "fd.explain_teacher",
    "fd.client_checkpoints",
)
REFERENCES = {
    "local_only_accuracy": "local-only mean",
    "centralized_accuracy": "centralized",
    "public_labels_accuracy": "student on public labels",
}


@dataclass
class Run:
    """One run directory's records, summary and flattened config."""

    path: Path
    records: list[dict[str, Any]]
    summary: dict[str, Any]
    config: dict[str, Any]

    @property
    def seed(self) -> Any:
        return self.config.get(SEED_KEY)


@dataclass
class Group:
    """Runs that differ only in their seed."""

    key: tuple[tuple[str, str], ...]  # the config without the seed, as sorted (key, repr) pairs
    runs: list[Run] = field(default_factory=list)
    label: str = ""

    def curve(self, name: str) -> tuple[list[int], list[float], list[float]]:
        """Rounds every run reached, with the mean and standard deviation of ``name``."""
        rounds = min(len(run.records) for run in self.runs)
        means, stds = [], []
        for i in range(rounds):
            values = [float(run.records[i][name]) for run in self.runs]
            means.append(statistics.fmean(values))
            stds.append(statistics.pstdev(values) if len(values) > 1 else 0.0)
        return [int(self.runs[0].records[i]["round"]) for i in range(rounds)], means, stds

    def reference(self, name: str) -> float | None:
        values = [float(r.summary[name]) for r in self.runs if r.summary.get(name) is not None]
        return statistics.fmean(values) if values else None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"fd": {"lr": 0.1}}`` → ``{"fd.lr": 0.1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run directories at or below ``paths`` (a run holds ``metrics.json``), in sorted order."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise FileNotFoundError(f"not a directory: {path}")
        here = [path] if (path / "metrics.json").exists() else []
        below = sorted(p.parent for p in path.rglob("metrics.json") if p.parent != path)
        if not here and not below:
            raise FileNotFoundError(f"no run (metrics.json) at or below {path}")
        found += [p for p in here + below if p not in found]
    return found


def load_run(path: Path) -> Run:
    """A run from its own files; ``config.yaml`` and ``summary.json`` may be missing (a run
    started with ``flwr run .`` has neither): its config is then ``run_config.json``'s."""
    records = json.loads((path / "metrics.json").read_text())
    if not records:
        raise ValueError(f"{path}/metrics.json holds no rounds")
    summary_path = path / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    if (path / "config.yaml").exists():
        config = flatten(yaml.safe_load((path / "config.yaml").read_text()) or {})
    elif (path / "run_config.json").exists():
        flat = json.loads((path / "run_config.json").read_text())
        config = {f"fd.{k.replace('-', '_')}": v for k, v in flat.items()}
    else:
        config = {}
    return Run(path, records, summary, config)


def _relevant(config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith(IGNORED_PREFIXES)}


def group_runs(runs: Sequence[Run]) -> list[Group]:
    """Runs grouped by their config without the seed, labelled by what differs between groups."""
    groups: dict[tuple[tuple[str, str], ...], Group] = {}
    for run in runs:
        config = _relevant(run.config)
        config.pop(SEED_KEY, None)
        key = tuple(sorted((k, repr(v)) for k, v in config.items()))
        groups.setdefault(key, Group(key)).runs.append(run)
    ordered = list(groups.values())
    labels = differing_labels([dict(g.key) for g in ordered])
    for group, label in zip(ordered, labels, strict=True):
        seeds = len({run.seed for run in group.runs})
        count = len(group.runs)
        group.label = label + (
            f" ({seeds} seeds)" if seeds == count > 1 else f" ({count} runs)" if count > 1 else ""
        )
    return ordered


def differing_labels(configs: Sequence[Mapping[str, str]], most: int = 3) -> list[str]:
    """One legend label per config: its strategy, then the keys whose values differ among the
    configs of that strategy (at most ``most``; the aggregation rule when none differs).

    Keys are shown by their last component (``partition.alpha`` → ``alpha``). Computing the
    difference within a strategy keeps FedAvg's own preset values (no co-distillation, …) out of
    FD's labels: "FD aggregation=median" vs "FedAvg", not a list of strategy-group keys.
    """
    strategies = [_plain(c.get(STRATEGY_KEY, "'fd'")) for c in configs]
    labels = []
    for config, strategy in zip(configs, strategies, strict=True):
        family = [c for c, s in zip(configs, strategies, strict=True) if s == strategy]
        keys = sorted({k for c in family for k in c})
        shown = [k for k in keys if len({c.get(k, "∅") for c in family}) > 1]
        if not shown and strategy != "fedavg":
            shown = [AGGREGATION_KEY]
        parts = [f"{k.rsplit('.', 1)[-1]}={_plain(config.get(k, '∅'))}" for k in shown[:most]]
        more = ", …" if len(shown) > most else ""
        labels.append(
            " ".join([STRATEGY_NAMES.get(strategy, strategy), ", ".join(parts)]).strip() + more
        )
    return labels


def _plain(value: str) -> str:
    """A repr'd config value without quotes, for a legend."""
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == "'" else value


def band(group: Group) -> Band:
    """The plotted form of a group: mean ± std accuracy, mean traffic, mean references."""
    rounds, mean, std = group.curve("student_accuracy")
    _, traffic, _ = group.curve("cum_bytes")
    refs = {name: group.reference(key) for key, name in REFERENCES.items()}
    return Band(group.label, rounds, traffic, mean, std, refs)


def summarise(groups: Sequence[Group]) -> list[dict[str, Any]]:
    """``compare.json``'s rows: per group, its runs and final accuracy mean ± std."""
    rows = []
    for group in groups:
        rounds, means, stds = group.curve("student_accuracy")
        _, traffic, _ = group.curve("cum_bytes")
        rows.append(
            {
                "label": group.label,
                "runs": [str(run.path) for run in group.runs],
                "seeds": [run.seed for run in group.runs],
                "rounds": rounds[-1],
                "final_accuracy_mean": means[-1],
                "final_accuracy_std": stds[-1],
                "cum_mib": traffic[-1] / 2**20,
                **{k: group.reference(k) for k in REFERENCES},
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """``fedkd-compare``: exit 0 with the figures written, 2 with one line naming the problem."""
    parser = argparse.ArgumentParser(prog="fedkd-compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run directories or sweep directories")
    parser.add_argument("--out", type=Path, default=Path("compare"), help="output directory")
    parser.add_argument(
        "--wandb",
        choices=("disabled", "offline", "online"),
        default="disabled",
        help="also log the figures and the table to W&B (offline: sync later)",
    )
    parser.add_argument("--project", default="fedkd", help="W&B project")
    args = parser.parse_args(argv)
    try:
        runs = [load_run(path) for path in find_runs(args.paths)]
    except (FileNotFoundError, ValueError) as error:
        print(f"fedkd-compare: error: {error}", file=sys.stderr)
        return 2
    groups = group_runs(runs)
    from fedkd.plots import plot_compare  # matplotlib, only once there is something to draw

    bands = [band(group) for group in groups]
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {
        x: plot_compare(bands, args.out / f"accuracy_vs_{x}.png", x=x) for x in ("round", "bytes")
    }
    rows = summarise(groups)
    (args.out / "compare.json").write_text(json.dumps(rows, indent=2) + "\n")
    for row in rows:
        spread = f" ± {row['final_accuracy_std']:.3f}" if len(row["runs"]) > 1 else ""
        print(
            f"{row['label']:<40} final test acc {row['final_accuracy_mean']:.3f}{spread} "
            f"after {row['rounds']} rounds, {row['cum_mib']:.2f} MiB"
        )
    if args.wandb != "disabled":
        log_to_wandb(args, groups, rows, figures)
    print(f"figures in {args.out}")
    return 0


def log_to_wandb(
    args: argparse.Namespace,
    groups: Sequence[Group],
    rows: list[dict[str, Any]],
    figures: dict[str, Path],
) -> None:
    """One W&B run named by what the groups vary, carrying the figures as images."""
    from simulations.tracking import Tracker

    name = "compare: " + " vs ".join(g.label for g in groups)
    tracker = Tracker(
        mode=args.wandb, project=args.project, name=name[:120], group="compare", run_dir=args.out
    )
    try:
        tracker.images({f"compare/accuracy_vs_{x}": path for x, path in figures.items()})
        tracker.summary(
            {f"{row['label']}/final_accuracy": row["final_accuracy_mean"] for row in rows}
        )
    finally:
        tracker.finish()


if __name__ == "__main__":
    raise SystemExit(main())
