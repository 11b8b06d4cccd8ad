"""Where a cohort's client-side CPU goes, per member, with and without ``vectorize-cohort``.

    PYTHONPATH=. python -m benchmarks.vectorized_phases --clients 100            # batched
    PYTHONPATH=. python -m benchmarks.vectorized_phases --clients 100 --one-by-one
    PYTHONPATH=. python -m benchmarks.vectorized_phases --clients 100 --no-gc    # GC off

bench_scale's tiny setting (``scale_config``, K = 50) through the real apps on the in-process
grid: one warm-up round, then ``--rounds`` measured rounds. Each phase is the thread CPU time
spent inside the named function (wrappers installed here, nothing changed in fedkd), divided
by the members served; phases nest (``run_group`` holds the ``vec`` ones). ``--no-gc``
disables Python's cyclic garbage collector to show what its collections cost and where they
land (docs/benchmarks.md §2b, *Vectorized cohorts*).
"""

from __future__ import annotations

import argparse
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any


def measure(clients: int, rounds: int, vectorize: bool) -> tuple[float, dict[str, float]]:
    """(whole process, {phase: ms}) thread CPU per member over ``rounds`` warm rounds."""
    import fedkd.client_app as CA
    import fedkd.vectorized as V
    from benchmarks.bench_scale import scale_config
    from fedkd.client import FDClient
    from simulations.local_grid import run_fd_local

    spent: dict[str, float] = defaultdict(float)

    def timed(owner: Any, name: str, label: str | None = None) -> None:
        real: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return real(*args, **kwargs)
            finally:
                spent[label or name] += time.thread_time() - start

        setattr(owner, name, wrapper)

    timed(CA, "_serve_vectorized" if vectorize else "_serve", "client side, total")
    timed(CA, "_restore", "restore")
    timed(CA, "_save", "state save")
    timed(CA.P, "reply_content", "reply records")
    timed(V, "run_group", "run_group (batched)")
    timed(V._Stacked, "train", "vec: training")
    timed(V._Stacked, "logits", "vec: forward, test + public")
    timed(V._Stacked, "write_back", "vec: hand back to members")
    timed(V, "evaluate_logits", "vec: per-member test metrics")
    timed(FDClient, "run_round", "one by one: run_round")
    run_fd_local(scale_config(clients, 1, per_message=50, vectorize=vectorize))  # warm-up
    spent.clear()
    start = time.thread_time()
    run_fd_local(scale_config(clients, rounds, per_message=50, vectorize=vectorize))
    members = clients * rounds
    whole = 1000 * (time.thread_time() - start) / members
    return whole, {k: 1000 * v / members for k, v in spent.items()}


def main(argv: list[str] | None = None) -> None:
    """Print the phases, largest first."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one-by-one", action="store_true", help="vectorize-cohort off")
    parser.add_argument("--no-gc", action="store_true", help="disable the cyclic GC")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    if args.no_gc:
        gc.disable()
    whole, phases = measure(args.clients, args.rounds, not args.one_by_one)
    mode = "one by one" if args.one_by_one else "batched"
    print(f"{args.clients} clients, K=50, {mode}, gc {'off' if args.no_gc else 'on'}")
    print(f"  {'whole process (server included)':34s} {whole:6.2f} ms/member")
    for name, ms in sorted(phases.items(), key=lambda kv: -kv[1]):
        print(f"  {name:34s} {ms:6.2f} ms/member")


if __name__ == "__main__":
    main()
