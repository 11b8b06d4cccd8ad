"""Where a cohort's client-side CPU goes, per member, with and without ``vectorize-cohort``.

    PYTHONPATH=. python -m benchmarks.vectorized_phases --clients 100         # all three modes
    PYTHONPATH=. python -m benchmarks.vectorized_phases --modes batched --docs  # one; write docs

bench_scale's tiny setting (``scale_config``, K = 50) through the real apps on the in-process
grid: one warm-up round, then ``--rounds`` measured rounds. Each phase is the thread CPU time
spent inside the named function (wrappers installed here, nothing changed in fedkd), divided
by the members served; phases nest (``run_group`` holds the ``vec`` ones). The modes run one
after another in this one process: batched (``vectorize-cohort``), batched with Python's
cyclic garbage collector off during the measured rounds (what its collections cost and where
they land), and one by one (docs/benchmarks.md §2b, *Vectorized cohorts*).
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.common import markdown_table, update_docs, write_json

MODES: dict[str, tuple[bool, bool]] = {  # column: (vectorize-cohort, cyclic GC on)
    "batched": (True, True),
    "batched, GC off": (True, False),
    "one by one": (False, True),
}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


@contextmanager
def _phase_timers(spent: dict[str, float]) -> Iterator[None]:
    """Wrap the client side's phases with thread-CPU timers; put the originals back after."""
    import fedkd.client_app as CA
    import fedkd.vectorized as V
    from fedkd.client import FDClient

    originals: list[tuple[Any, str, Any]] = []

    def timed(owner: Any, name: str, label: str) -> None:
        real: Callable[..., Any] = getattr(owner, name)
        originals.append((owner, name, real))

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                spent[label] += time.thread_time() - start

        setattr(owner, name, wrapper)

    timed(CA, "_serve_vectorized", "client side, total")
    timed(CA, "_serve", "client side, total")
    timed(CA, "_restore", "restore")
    timed(CA, "_save", "state save")
    timed(CA, "_save_group", "state save")  # a batched group's one stacked save
    timed(CA, "_prune_groups", "state save")
    timed(CA.P, "reply_content", "reply records")
    timed(V, "run_group", "run_group (batched)")
    timed(V._Stacked, "train", "vec: training")
    timed(V._Stacked, "logits", "vec: forward, test + public")
    timed(V._Stacked, "write_back", "vec: hand back to members")
    timed(V, "_test_scores", "vec: local test scores")
    timed(FDClient, "run_round", "one by one: run_round")
    try:
        yield
    finally:
        for owner, name, real in reversed(originals):
            setattr(owner, name, real)


def measure(
    clients: int, rounds: int, vectorize: bool, gc_on: bool = True
) -> tuple[float, dict[str, float]]:
    """(whole process, {phase: ms}) thread CPU per member over ``rounds`` warm rounds."""
    from benchmarks.bench_scale import scale_config
    from simulations.local_grid import run_fd_local

    spent: dict[str, float] = defaultdict(float)
    was_on = gc.isenabled()
    with _phase_timers(spent):
        run_fd_local(scale_config(clients, 1, per_message=50, vectorize=vectorize))  # warm-up
        spent.clear()
        _set_gc(gc_on)
        try:
            start = time.thread_time()
            run_fd_local(scale_config(clients, rounds, per_message=50, vectorize=vectorize))
            elapsed = time.thread_time() - start
        finally:
            _set_gc(was_on)
    members = clients * rounds
    return 1000 * elapsed / members, {k: 1000 * v / members for k, v in spent.items()}


def _set_gc(on: bool) -> None:
    if on:
        gc.enable()
    else:
        gc.disable()


def markdown(results: dict[str, tuple[float, dict[str, float]]]) -> str:
    """One row per phase (largest first in the first column), one column per mode."""
    modes = list(results)
    phases = sorted(
        {name for _, p in results.values() for name in p},
        key=lambda n: -max(p.get(n, 0.0) for _, p in results.values()),
    )
    rows = [["whole process (server included)", *(f"{results[m][0]:.2f}" for m in modes)]]
    rows += [
        [name, *(f"{results[m][1][name]:.2f}" if name in results[m][1] else "—" for m in modes)]
        for name in phases
    ]
    return markdown_table(["phase, ms per member", *modes], rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Measure every mode in this one process, print the table (and write it with --docs)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--out", type=Path, default=Path("outputs/benchmarks/vectorized_phases.json")
    )
    parser.add_argument("--docs", action="store_true", help=f"write the table into {DOCS}")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    results = {m: measure(args.clients, args.rounds, *MODES[m]) for m in args.modes}
    table = markdown(results)
    print(f"{args.clients} clients, K=50, {args.rounds} warm rounds\n\n{table}")
    write_json(
        args.out, {"settings": {k: str(v) for k, v in vars(args).items()}, "results": results}
    )
    if args.docs:
        given = argv if argv is not None else sys.argv[1:]
        command = " ".join(
            ["python -m benchmarks.vectorized_phases", *(a for a in given if a != "--docs")]
        )
        update_docs(DOCS, "vectorized_phases", table, command)
    return results


if __name__ == "__main__":
    main()
