"""FD recipes × Dirichlet α × seeds, against FedAvg and the references: the table to quote.

    python -m benchmarks.fd_recipes                      # 5 seeds, α 0.1 and 0.5, 30 rounds
    python -m benchmarks.fd_recipes --quick              # 2 seeds, 5 rounds: a smoke run
    python -m benchmarks.fd_recipes --from-json outputs/benchmarks/fd_recipes/results.json \\
        --docs docs/benchmarks.md                        # re-render table, plots and docs only

Every recipe is composed from its Hydra preset (``conf/recipe/<name>.yaml``, the same files
``fedkd-sim recipe=<name>`` uses) on digits with 10 clients, and run in process (real ServerApp
and ClientApps, no Ray: accuracies and bytes do not depend on the backend). FedAvg is
``strategy=fedavg`` on the same partitions, student architecture and local training.

Reported per recipe and α, as mean ± std over seeds:

* **final** student test accuracy (last round) and the **validation-selected** round's test
  accuracy (the round with the best accuracy on the server's labelled validation split; nothing
  is ever selected on the test set);
* the clients' mean test accuracy at the end (recipes that send the teacher back lift it);
* bytes (up + down) and rounds until the student's test accuracy first reaches the target
  (0.85), with how many seeds got there;
* ``collapsed``: seeds whose final student sits at chance (≤ 1.5 / classes).

The references come from :func:`fedkd.references.compute_references` once per (α, seed):
local-only clients, the centralized model and the student trained on the public inputs with
their true labels (what any teacher could at best give the student), each selected on
validation. Results, the markdown table and the overlay plots (seed bands, FedAvg and the
references drawn in) go to ``--out-dir``; ``--docs FILE`` rewrites the table between the
``<!-- fd_recipes:begin -->`` / ``<!-- fd_recipes:end -->`` markers of FILE.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import multiprocessing
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import DEFAULT_OUT_DIR, markdown_table, update_docs, write_json

ORDER = (
    "fedavg",
    "feddf",
    "fd_mean",
    "fedmd",
    "fedmd_pretrained",
    "dsfl",
    "fedaux",
    "selective_fd",
    "selective_class_sent_back",
    "fedkd",
)
"""Rows of the table and plots, in order. ``fedavg`` is ``strategy=fedavg``; ``fedkd`` is
``fedkd-sim``'s defaults (no recipe); the others are ``conf/recipe/<name>.yaml``, except the
:data:`RECORDED` ones."""
RECORDED = ("selective_class_sent_back",)
"""Experiments kept as committed results only (rendered with ``--from-json``, not runnable):
``selective_class`` with its own rows sent back to clients, measured before
:data:`strategies.aggregation.STUDENT_ONLY_RULES`."""
RECIPES = tuple(r for r in ORDER if r not in RECORDED)
"""What ``--recipes`` can run (all by default)."""

LABELS = {
    "fedavg": "FedAvg (weights)",
    "feddf": "FedDF (hybrid: weights + ensemble distillation)",
    "fd_mean": "FD, mean teacher, one-way (v0.1 default)",
    "fedmd": "FedMD (mean, digest → revisit)",
    "fedmd_pretrained": "FedMD + pretraining on the labelled public set (another setting)",
    "dsfl": "DS-FL (ERA T=0.1 over the support-aware mean)",
    "fedaux": "FedAUX-style certainty weights",
    "selective_fd": "Selective-FD",
    "selective_class_sent_back": "Selective-FD × class share, sent back to clients (rejected)",
    "fedkd": "fedkd default (student: Selective-FD × class share; clients: Selective-FD)",
}
TARGET = 0.85
COLLAPSED = 1.5 / 10
"""A final student at or below 1.5 × chance (digits: 10 classes) counts as collapsed."""


# ----------------------------------------------------------------------------- configs
def recipe_overrides(recipe: str, alpha: float, seed: int, rounds: int) -> list[str]:
    """Hydra overrides for one run: the recipe's preset plus the grid point."""
    if recipe in RECORDED:
        raise ValueError(f"{recipe} is a recorded experiment: render it with --from-json")
    chosen = {"fedavg": ["strategy=fedavg"], "fedkd": []}.get(recipe, [f"recipe={recipe}"])
    return [
        *chosen,
        f"partition.alpha={alpha}",
        f"fd.seed={seed}",
        f"fd.num_rounds={rounds}",
        "fd.checkpoint=false",
        "fd.client_checkpoints=false",
        "simulation=local",
        "logging=disabled",
    ]


def recipe_config(recipe: str, alpha: float, seed: int, rounds: int) -> Any:
    """The :class:`fedkd.config.FDConfig` ``fedkd-sim`` would build for these overrides."""
    from hydra import compose, initialize_config_dir

    from simulations.hydra_config import build_run_spec
    from simulations.run import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=recipe_overrides(recipe, alpha, seed, rounds))
    return build_run_spec(cfg).fd


# ----------------------------------------------------------------------------- runs
def run_recipe(recipe: str, alpha: float, seed: int, rounds: int) -> dict[str, Any]:
    """One run in process; returns its per-round records (as dicts) and wall seconds."""
    import torch

    from simulations.local_grid import run_fd_local

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    cfg = recipe_config(recipe, alpha, seed, rounds)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the per-round progress lines
        records = run_fd_local(cfg)
    return {
        "recipe": recipe,
        "alpha": alpha,
        "seed": seed,
        "seconds": time.perf_counter() - started,
        "records": [r.as_dict() for r in records],
    }


def run_references(alpha: float, seed: int, rounds: int) -> dict[str, Any]:
    """Local-only, centralized and public-labels references for one (α, seed)."""
    import torch

    from fedkd.references import compute_references

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    refs = compute_references(recipe_config("selective_fd", alpha, seed, rounds))
    return {"alpha": alpha, "seed": seed, **refs.as_dict()}


def run_grid(
    recipes: Sequence[str],
    alphas: Sequence[float],
    seeds: Sequence[int],
    rounds: int,
    jobs: int,
    references: bool = True,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Every run (and reference) of the grid, ``jobs`` processes at a time, with progress.

    Each finished run is also written to ``partial`` (when given) as it completes, so a grid
    that dies part-way keeps what it measured (merge it later with ``--from-json``)."""
    tasks: list[tuple[Any, tuple[Any, ...]]] = [
        (run_references, (a, s, rounds)) for a in alphas for s in seeds if references
    ]
    tasks += [(run_recipe, (r, a, s, rounds)) for a in alphas for s in seeds for r in recipes]
    runs: list[dict[str, Any]] = []
    refs: list[dict[str, Any]] = []
    started = time.perf_counter()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(func, *args): (func, args) for func, args in tasks}
        for done, future in enumerate(as_completed(futures), start=1):
            result = future.result()
            (runs if "records" in result else refs).append(result)
            what = result.get("recipe", "references")
            print(
                f"[{done:3d}/{len(tasks)}] {what:<13} α={result['alpha']:<4} "
                f"seed={result['seed']}  {time.perf_counter() - started:6.0f}s elapsed",
                flush=True,
            )
            if partial is not None:
                write_json(partial, {"runs": runs, "references": refs, "setting": {}})
    return {"runs": runs, "references": refs}


def merge_results(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Results of several invocations as one: a later part's runs replace an earlier part's
    runs of the same (recipe, α, seed); references likewise per (α, seed)."""
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    refs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for part in parts:
        runs.update({(r["recipe"], r["alpha"], r["seed"]): r for r in part["runs"]})
        refs.update({(r["alpha"], r["seed"]): r for r in part["references"]})
    setting = {f"part {i}": part.get("setting", {}) for i, part in enumerate(parts)}
    return {"runs": list(runs.values()), "references": list(refs.values()), "setting": setting}


# ----------------------------------------------------------------------------- summary
@dataclass(frozen=True)
class Cell:
    """Mean ± std over seeds (``n`` values; NaN-free)."""

    values: tuple[float, ...]
    digits: int = 3

    def __str__(self) -> str:
        if not self.values:
            return "n/a"
        return f"{np.mean(self.values):.{self.digits}f} ± {np.std(self.values):.{self.digits}f}"

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else float("nan")


def _cell(values: Iterable[float | None], digits: int = 3) -> Cell:
    return Cell(tuple(float(v) for v in values if v is not None), digits)


def _selected_accuracy(records: list[dict[str, Any]]) -> float:
    """Test accuracy of the round the validation split picks (strategies.reporting)."""
    from strategies.fed_distill import RoundRecord
    from strategies.reporting import selected_round

    return selected_round([RoundRecord(**r) for r in records]).student_accuracy


def _to_target(records: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    return next((r for r in records if r["student_accuracy"] >= target), None)


def summarize(results: dict[str, Any], target: float = TARGET) -> list[dict[str, Any]]:
    """One row per (α, recipe): the cells of the table, from the raw runs."""
    rows = []
    runs = results["runs"]
    for alpha in sorted({r["alpha"] for r in runs}):
        for recipe in [r for r in ORDER if any(x["recipe"] == r for x in runs)]:
            group = [r for r in runs if r["recipe"] == recipe and r["alpha"] == alpha]
            recs = [g["records"] for g in group]
            hit = [_to_target(r, target) for r in recs]
            rows.append(
                {
                    "alpha": alpha,
                    "recipe": recipe,
                    "seeds": len(group),
                    "final": _cell(r[-1]["student_accuracy"] for r in recs),
                    "selected": _cell(_selected_accuracy(r) for r in recs),
                    "clients": _cell(r[-1]["client_accuracy"] for r in recs),
                    "bytes_to_target": _cell(h["cum_bytes"] for h in hit if h is not None),
                    "rounds_to_target": _cell((h["round"] for h in hit if h is not None), 1),
                    "reached": sum(h is not None for h in hit),
                    "collapsed": sum(r[-1]["student_accuracy"] <= COLLAPSED for r in recs),
                    "bytes_per_round": _cell(r[-1]["cum_bytes"] / len(r) for r in recs),
                }
            )
    return rows


def reference_rows(results: dict[str, Any]) -> dict[float, dict[str, Cell]]:
    """α → {local-only, centralized, public labels} cells over seeds."""
    out: dict[float, dict[str, Cell]] = {}
    for alpha in sorted({r["alpha"] for r in results["references"]}):
        refs = [r for r in results["references"] if r["alpha"] == alpha]
        out[alpha] = {
            "local-only (mean over clients)": _cell(r["local_only_mean"] for r in refs),
            "centralized (pooled private data)": _cell(r["centralized"] for r in refs),
            "student on public inputs, true labels": _cell(r["public_labels"] for r in refs),
        }
    return out


def _mib(cell: Cell) -> str:
    if not cell.values:
        return "never"
    return f"{np.mean(cell.values) / 2**20:.2f} ± {np.std(cell.values) / 2**20:.2f}"


def render_table(results: dict[str, Any], target: float = TARGET) -> str:
    """The markdown table (one block per α), with FedAvg's bytes ratio per recipe."""
    blocks = []
    rows = summarize(results, target)
    refs = reference_rows(results)
    headers = [
        "recipe",
        "final student",
        "val-selected round",
        "clients (final)",
        f"MiB to {target}",
        f"rounds to {target}",
        "fewer bytes than FedAvg",
        "collapsed",
    ]
    for alpha in sorted({r["alpha"] for r in rows}):
        block = [r for r in rows if r["alpha"] == alpha]
        fedavg = next((r for r in block if r["recipe"] == "fedavg"), None)
        table = []
        for r in block:
            ratio = "—"
            fedavg_bytes = fedavg["bytes_to_target"] if fedavg is not None else Cell(())
            if r["recipe"] != "fedavg" and r["bytes_to_target"].values:
                ratio = (
                    f"{fedavg_bytes.mean / r['bytes_to_target'].mean:.1f}×"
                    if fedavg_bytes.values
                    else "FedAvg never"
                )
            n = r["seeds"]
            table.append(
                [
                    LABELS.get(r["recipe"], r["recipe"]),
                    r["final"],
                    r["selected"],
                    r["clients"],
                    f"{_mib(r['bytes_to_target'])} ({r['reached']}/{n})",
                    f"{r['rounds_to_target']} ({r['reached']}/{n})",
                    ratio,
                    f"{r['collapsed']}/{n}",
                ]
            )
        for name, cell in refs.get(alpha, {}).items():
            table.append([f"*reference:* {name}", cell, "", "", "", "", "", ""])
        seeds = block[0]["seeds"] if block else 0
        rounds = len(results["runs"][0]["records"]) if results["runs"] else 0
        blocks.append(
            f"**Dirichlet α = {alpha}** — digits, 10 clients, {rounds} rounds, "
            f"{seeds} seeds, test accuracy (mean ± std)\n\n" + markdown_table(headers, table)
        )
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- plots
def plot(results: dict[str, Any], path: Path) -> Path:
    """Overlays per α: student accuracy vs round and vs cumulative MiB, clients vs round;
    mean lines with ±1 std seed bands; FedAvg and the references drawn in."""
    from fedkd.plots import _pyplot, _save

    plt = _pyplot()
    alphas = sorted({r["alpha"] for r in results["runs"]})
    fig, axes = plt.subplots(3, len(alphas), figsize=(6.5 * len(alphas), 13), squeeze=False)
    refs = reference_rows(results)
    colours = dict(zip(ORDER, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for col, alpha in enumerate(alphas):
        by_round, by_bytes, clients = axes[0][col], axes[1][col], axes[2][col]
        for recipe in ORDER:
            group = [
                r["records"]
                for r in results["runs"]
                if r["recipe"] == recipe and r["alpha"] == alpha
            ]
            if not group:
                continue
            style = {"color": colours[recipe], "label": LABELS[recipe]}
            if recipe == "fedavg":
                style["linestyle"] = "--"
            rounds = np.array([x["round"] for x in group[0]])
            acc = np.array([[x["student_accuracy"] for x in g] for g in group])
            _band(by_round, rounds, acc, style)
            mib = np.array([[x["cum_bytes"] for x in g] for g in group]).mean(axis=0) / 2**20
            _band(by_bytes, mib, acc, style)
            if recipe != "fedavg":
                cli = np.array(
                    [
                        [
                            np.nan if x["client_accuracy"] is None else x["client_accuracy"]
                            for x in g
                        ]
                        for g in group
                    ]
                )
                _band(clients, rounds, cli, style)
        for name, cell in refs.get(alpha, {}).items():
            for ax in (by_round, by_bytes, clients):
                ax.axhline(cell.mean, color="grey", linewidth=0.8, linestyle=":")
            by_round.annotate(name, (rounds[-1], cell.mean), fontsize=7, ha="right", va="bottom")
        by_round.set(title=f"student, α = {alpha}", xlabel="round", ylabel="test accuracy")
        by_bytes.set(
            title=f"student vs communication, α = {alpha}",
            xlabel="cumulative MiB (up + down, log)",
            ylabel="test accuracy",
            xscale="log",
        )
        clients.set(title=f"clients' mean, α = {alpha}", xlabel="round", ylabel="test accuracy")
        by_bytes.axhline(TARGET, color="black", linewidth=0.8, linestyle="-.", label="target")
        by_bytes.xaxis.set_minor_formatter(plt.NullFormatter())
        for ax in (by_round, by_bytes, clients):
            ax.set_ylim(0, 1)
            ax.grid(alpha=0.3)
        by_round.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _band(ax: Any, x: np.ndarray, ys: np.ndarray, style: dict[str, Any]) -> None:
    mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
    ax.plot(x, mean, **style)
    ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.15, linewidth=0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.1, 0.5])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--jobs", type=int, default=2, help="processes side by side")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR / "fd_recipes")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="re-render from results.json files (later files replace runs of earlier ones)",
    )
    parser.add_argument(
        "--no-references", action="store_true", help="skip the references (merge them later)"
    )
    parser.add_argument("--docs", type=Path, help="rewrite the marked table in this file")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 5 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds = 2, 5
    if args.from_json:
        results = merge_results([json.loads(path.read_text()) for path in args.from_json])
    else:
        results = run_grid(
            args.recipes,
            args.alphas,
            range(args.seeds),
            args.rounds,
            args.jobs,
            references=not args.no_references,
            partial=args.out_dir / "partial.json",
        )
        results["setting"] = {k: str(v) for k, v in vars(args).items()}
        write_json(args.out_dir / "results.json", results)
    table = render_table(results)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "table.md").write_text(table + "\n")
    figure = plot(results, args.out_dir / "recipes.png")
    print(table)
    print(f"\nresults, table.md and {figure.name} in {args.out_dir}")
    if args.docs:
        runs = results["runs"]
        command = (
            "python -m benchmarks.fd_recipes"
            + f" --seeds {len({r['seed'] for r in runs})}"
            + f" --rounds {len(runs[0]['records']) if runs else '?'}"
        )
        update_docs(args.docs, "fd_recipes", table, command)
        print(f"updated {args.docs}")


if __name__ == "__main__":
    main()
