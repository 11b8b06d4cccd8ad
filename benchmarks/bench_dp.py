"""Differential privacy that leaves a useful student: every mechanism at a fixed ε, side by side.

    python -m benchmarks.bench_dp --part digits             # ~4 min on a shared 2-core CPU
    python -m benchmarks.bench_dp --part scale --clients 1000 --rounds 3 --local-epochs 10
                                                            # ~40 min there
    python -m benchmarks.bench_dp --quick                   # smoke test, under a minute
    python -m benchmarks.bench_dp --from-json A.json B.json --docs docs/privacy.md  # docs only

Each mechanism (``fedkd.privacy``) is calibrated *before* it runs: the noise multiplier is the
smallest whose whole run stays within ε ≤ target at δ = 1e-5 (:func:`fedkd.privacy.
noise_for_epsilon`, the same accountant the run reports with); the ε in the table is the one the
run printed after its last round. Two parts:

* ``digits``: 10 clients, IID, MLPs, the one-way mean protocol; every mechanism at ε ≤ 8.
* ``scale``: the synthetic dataset with many clients (``--clients``, ~25 private examples each),
  client-level central DP at ε ≤ 8 and ε ≤ 2 against the same run without DP.

Accuracies are the student's test accuracy after the last round, mean ± std over seeds (the DP
noise itself comes from OS entropy, so reruns differ within that spread).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bench_byzantine import run_records
from benchmarks.common import DEFAULT_OUT_DIR, markdown_table, update_docs, write_json
from fedkd.client import client_partitions
from fedkd.config import FDConfig
from fedkd.privacy import GaussianEvent, noise_for_epsilon
from fedkd.privacy.dpsgd import round_event as dpsgd_round

DELTA = 1e-5


@dataclass(frozen=True)
class Setting:
    """One row: a mechanism, its budget, and what it changes in the shared config."""

    part: str
    label: str
    mechanism: str
    target: float | None  # ε budget for the whole run; None = no DP
    changes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- configs
def base_config(part: str, args: argparse.Namespace, seed: int) -> FDConfig:
    """The shared protocol: mean of soft labels at T = 1, no co-distillation, MLPs."""
    common: dict[str, Any] = dict(
        seed=seed,
        num_rounds=args.rounds,
        client_models="mlp",
        student_model="mlp",
        aggregation="mean",
        co_distillation=False,
        temperature=1.0,
        partition="iid",
        local_epochs=args.local_epochs,
        server_epochs=args.server_epochs,
        dp_delta=DELTA,
    )
    if part == "digits":
        return FDConfig(dataset="digits", num_clients=10, min_train_nodes=10, **common)
    n = args.clients
    return FDConfig(
        dataset="synthetic",
        synthetic_samples=60 * n,  # ~25 private examples per client after the splits
        num_clients=n,
        min_train_nodes=n,
        public_subset=args.scale_rows,
        **common,
    )


def digits_settings(target: float) -> list[Setting]:
    """Every mechanism at ε ≤ ``target`` on digits (PATE at three label budgets)."""
    return [
        Setting("digits", "no DP", "none", None),
        Setting("digits", "central (client-level), 50 rows, clip 0.6", "central", target,
                {"public_subset": 50, "dp_clip": 0.6}),
        *[
            Setting("digits", f"PATE GNMax, {k} labels/round", "pate", target,
                    {"dp_labels_per_round": k})
            for k in (4, 10, 20)
        ],
        Setting("digits", "DP-SGD (example-level), all rows", "dpsgd", target, {"lr": 0.5}),
    ]  # fmt: skip


def scale_settings(targets: list[float]) -> list[Setting]:
    """Central DP against no DP with many clients."""
    return [
        Setting("scale", "no DP", "none", None),
        *[
            Setting("scale", f"central (client-level), clip 0.6, ε ≤ {t:g}", "central", t,
                    {"dp_clip": 0.6})
            for t in targets
        ],
    ]  # fmt: skip


def run_events(cfg: FDConfig, z: float) -> list[GaussianEvent]:
    """What the whole run releases at noise ``z`` (the worst-off client for dpsgd)."""
    rounds = cfg.num_rounds
    if cfg.dp_mechanism == "central":
        return [GaussianEvent(z, min(1.0, cfg.fraction_train), rounds)]
    if cfg.dp_mechanism == "pate":
        return [GaussianEvent(z / math.sqrt(2), 1.0, rounds * cfg.dp_labels_per_round)]
    if cfg.dp_mechanism == "dpsgd":
        smallest = min(len(p) for p in client_partitions(cfg, cfg.num_clients))
        return [dpsgd_round(smallest, cfg.batch_size, cfg.local_epochs, z)] * rounds
    return [GaussianEvent(z, 1.0, rounds)]  # output: one upload per round


def configure(setting: Setting, args: argparse.Namespace, seed: int) -> FDConfig:
    """The setting's config, with its noise calibrated to its ε budget."""
    cfg = base_config(setting.part, args, seed)
    cfg = FDConfig(**{**_fields(cfg), **setting.changes})
    if setting.target is None:
        return cfg
    probe = FDConfig(
        **{**_fields(cfg), "dp_mechanism": setting.mechanism, "dp_noise_multiplier": 1.0}
    )
    z = noise_for_epsilon(
        setting.target, DELTA, lambda z: run_events(probe, z), low=0.1, high=200.0
    )
    return FDConfig(**{**_fields(probe), "dp_noise_multiplier": z})  # fmt: skip


def _fields(cfg: FDConfig) -> dict[str, Any]:
    return dict(vars(cfg))


# ----------------------------------------------------------------------------- runs
def run_setting(setting: Setting, args: argparse.Namespace) -> dict[str, Any]:
    """Every seed of one setting; returns its row of the JSON."""
    per_seed: list[dict[str, Any]] = []
    cfg = configure(setting, args, 0)
    for seed in range(args.seeds):
        cfg = (
            configure(setting, args, seed)
            if setting.mechanism == "dpsgd"
            else FDConfig(**{**_fields(cfg), "seed": seed})
        )
        started = time.perf_counter()
        records = run_records(cfg)
        per_seed.append(
            {
                "seed": seed,
                "final": records[-1].student_accuracy,
                "teacher": records[-1].teacher_accuracy,
                "client": records[-1].client_accuracy,
                "epsilon": records[-1].dp_epsilon,
                "epsilon_per_round": [r.dp_epsilon for r in records],
                "seconds": time.perf_counter() - started,
            }
        )  # fmt: skip
        done = per_seed[-1]
        print(
            f"  {setting.label} seed {seed}: student {done['final']:.3f} ε {_eps(done['epsilon'])}"
        )
    finals = [s["final"] for s in per_seed]
    return {
        "part": setting.part,
        "label": setting.label,
        "mechanism": setting.mechanism,
        "target": setting.target,
        "noise_multiplier": cfg.dp_noise_multiplier,
        "clients": cfg.num_clients,
        "rounds": cfg.num_rounds,
        "rows": cfg.dp_labels_per_round if setting.mechanism == "pate" else cfg.public_subset,
        "final": statistics.fmean(finals),
        "final_std": statistics.pstdev(finals) if len(finals) > 1 else 0.0,
        "teacher": _mean([s["teacher"] for s in per_seed]),
        "epsilon": max((s["epsilon"] or 0.0) for s in per_seed) if setting.target else None,
        "per_seed": per_seed,
    }


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.fmean(kept) if kept else None


def _eps(eps: float | None) -> str:
    return "—" if eps is None else ("∞" if math.isinf(eps) else f"{eps:.2f}")


# ----------------------------------------------------------------------------- report
def table(rows: list[dict[str, Any]], part: str) -> str:
    """Markdown table of one part, with the gap to the no-DP row."""
    rows = [r for r in rows if r["part"] == part]
    base = next((r["final"] for r in rows if r["mechanism"] == "none"), None)
    headers = [
        "mechanism",
        "noise z (σ for PATE)",
        "ε at δ=1e-5",
        "student ±std",
        "vs no DP",
        "teacher",
    ]
    out = []
    for r in rows:
        gap = (
            "—"
            if base is None or r["mechanism"] == "none"
            else f"{100 * (r['final'] - base):+.1f} pts"
        )
        teacher = "n/a" if r["teacher"] is None else f"{r['teacher']:.3f}"
        z = "—" if r["target"] is None else f"{r['noise_multiplier']:.3g}"
        out.append(
            [
                r["label"],
                z,
                _eps(r["epsilon"]),
                f"{r['final']:.3f} ±{r['final_std']:.3f}",
                gap,
                teacher,
            ]
        )
    return markdown_table(headers, out)  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Accuracy against ε, one panel per part; no-DP runs as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for p in ("digits", "scale") if any(r["part"] == p for r in rows)]
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        for r in (r for r in rows if r["part"] == part):
            if r["mechanism"] == "none":
                ax.axhline(r["final"], linestyle="--", color="gray", label="no DP")
                continue
            ax.errorbar(
                r["epsilon"],
                r["final"],
                yerr=r["final_std"],
                marker="o",
                capsize=3,
                label=r["label"],
            )
        clients = next(r["clients"] for r in rows if r["part"] == part)
        ax.set(xlabel="ε after the last round (δ = 1e-5)", ylabel="student test accuracy",
               title=f"{part}: {clients} clients", ylim=(0, 1))  # fmt: skip
        eps = [r["epsilon"] for r in rows if r["part"] == part and r["epsilon"] is not None]
        ax.set_xlim(0, 1.1 * max(eps, default=1.0))  # ε from 0: what a budget of 2 or 8 means
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- entry point
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks everything to a smoke test."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("digits", "scale"), action="append")
    parser.add_argument("--target", type=float, default=8.0, help="ε budget (digits)")
    parser.add_argument("--scale-targets", default="8,2", help="ε budgets (scale)")
    parser.add_argument("--clients", type=int, default=1000, help="scale part: clients")
    parser.add_argument("--scale-rows", type=int, default=1000, help="scale: public rows/round")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument("--server-epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR / "bench_dp.json")
    parser.add_argument("--from-json", type=Path, nargs="+", help="merge these results; no runs")
    parser.add_argument("--docs", type=Path, help="rewrite the marked tables in this file")
    parser.add_argument("--plot", type=Path, default=Path("docs/img/dp_accuracy_vs_epsilon.png"))
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny and one seed")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.local_epochs, args.server_epochs = 1, 2, 1, 1
        args.clients, args.scale_rows = 20, 50
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the parts (or merge ``--from-json``), print the tables, optionally rewrite docs."""
    args = parse_args(argv)
    if args.from_json:
        rows = [r for path in args.from_json for r in json.loads(path.read_text())["results"]]
        payload: dict[str, Any] = {"results": rows}
    else:
        parts = args.part or ["digits", "scale"]
        settings = []
        if "digits" in parts:
            settings += digits_settings(args.target)
        if "scale" in parts:
            settings += scale_settings([float(t) for t in args.scale_targets.split(",")])
        started = time.perf_counter()
        rows = [run_setting(s, args) for s in settings]
        payload = {
            "setting": {k: str(v) for k, v in vars(args).items()},
            "seconds": time.perf_counter() - started,
            "results": rows,
        }
        print(f"results written to {write_json(args.out, payload)}")
    for part in ("digits", "scale"):
        if any(r["part"] == part for r in rows):
            print(f"\n{part}\n{table(rows, part)}")
    if args.docs:
        for part in ("digits", "scale"):
            if any(r["part"] == part for r in rows):
                sources = " ".join(str(p) for p in args.from_json or [args.out])
                command = f"python -m benchmarks.bench_dp --from-json {sources} --docs {args.docs}"
                update_docs(args.docs, f"bench_dp_{part}", table(rows, part), command)
        print(f"plot: {plot(rows, args.plot)}; updated {args.docs}")
    return payload


if __name__ == "__main__":
    main()
