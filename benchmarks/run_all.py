"""Run every benchmark, one after the other, each writing its JSON and printing its tables.

    python -m benchmarks.run_all                 # every benchmark at its defaults
    python -m benchmarks.run_all --quick         # the smallest meaningful run of each
    python -m benchmarks.run_all --only overhead,comm --out-dir /tmp/bench

Each benchmark runs through its own ``main`` with ``--out <out-dir>/<name>.json`` (plus
``--quick`` when given), so what this prints is exactly what the single commands print. The
benchmarks run sequentially: concurrent runs on the same cores would distort each other's
timings. A summary JSON (``run_all.json``) lists which ran, where their results are, how long
each took and whether it failed (a failure does not stop the others; the exit status is 1).
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_OUT_DIR, write_json

BENCHMARKS: tuple[str, ...] = (
    "overhead",  # framework overhead: Flower + Ray vs the plain loop vs FedAvg
    "scaling",  # time and memory vs clients and public-set size; streaming aggregation
    "scale",  # FD round on Ray vs the plain loop (wall and process-tree CPU); 100k population
    "comm",  # bytes to a target accuracy: FD codecs vs FedAvg
    "lwf",  # LwF time per epoch vs fine-tuning
    "hotpaths",  # before/after of each performance change
    "byzantine",  # robust rules under attack (docs/reliability.md)
    "dp",  # DP mechanisms at a fixed ε: digits and many clients (docs/privacy.md)
    "compress",  # student size, accuracy, latency: int8 PTQ/QAT, pruning (docs/compression.md)
)
"""Every benchmark, in run order; ``benchmarks.bench_<name>.main(argv)`` runs one. Each takes
``--out`` and ``--quick`` (see :func:`benchmarks.common.add_common_args`)."""


def run_one(name: str, out_dir: Path, quick: bool) -> dict[str, Any]:
    """Run benchmark ``name``; never raises (a failure is recorded and reported)."""
    out = out_dir / f"bench_{name}.json"
    argv = ["--out", str(out)] + (["--quick"] if quick else [])
    print(f"\n===== {name}: python -m benchmarks.bench_{name} {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    try:
        importlib.import_module(f"benchmarks.bench_{name}").main(argv)
        ok, error = True, None
    except Exception:  # one broken benchmark must not hide the others' results
        ok, error = False, traceback.format_exc()
        print(error, flush=True)
    seconds = time.perf_counter() - started
    return {"name": name, "ok": ok, "out": str(out), "seconds": seconds, "error": error}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the selected benchmarks; write ``run_all.json``; exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each benchmark's --quick run")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated subset")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n]
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)}")
    results = [run_one(name, args.out_dir, args.quick) for name in names]
    summary = write_json(args.out_dir / "run_all.json", {"quick": args.quick, "runs": results})
    print(f"\n===== done: {sum(r['ok'] for r in results)}/{len(results)} ok; summary {summary}")
    for r in results:
        print(f"  {r['name']:<9} {'ok' if r['ok'] else 'FAILED'}  {r['seconds']:.0f}s  {r['out']}")
    if not all(r["ok"] for r in results):
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
