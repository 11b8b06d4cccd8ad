"""Shared plumbing of the benchmarks: isolated runs, peak memory, tables and JSON.

Every benchmark prints a markdown table and writes a JSON file (default under
``outputs/benchmarks/``, which git ignores). Ratios are only ever computed between runs made in
the same invocation: the machines we measure on are shared and noisy, so an absolute time is
worth little and a time carried over from another run is worth nothing.

Peak memory comes in two kinds, named wherever it is reported:

* ``peak_rss_mib``: the operating system's high-water mark of a *fresh* child process that ran
  one measurement (``resource.getrusage(...).ru_maxrss``). It includes the interpreter, torch
  and Flower (a few hundred MiB), so ``rss_after_imports_mib`` is reported next to it.
* ``traced_peak_mib``: Python's ``tracemalloc`` peak over one call. NumPy registers its buffers
  with tracemalloc, torch does not, so this is used for the NumPy aggregation path only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import multiprocessing
import resource
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from fedkd.config import FDConfig

DEFAULT_OUT_DIR = Path("outputs/benchmarks")

__all__ = [
    "DEFAULT_OUT_DIR",
    "add_common_args",
    "fmt_ratio",
    "markdown_table",
    "median",
    "peak_rss_mib",
    "run_isolated",
    "traced_peak",
    "update_docs",
    "write_json",
]


def add_common_args(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out`` (JSON path) and ``--quick`` (the smallest meaningful run), for every bench."""
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT_DIR / f"{name}.json", help="JSON results file"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smallest meaningful run (smoke test, CI)"
    )


def digits_fd_config(args: argparse.Namespace, **changes: Any) -> FDConfig:
    """The FD setting the accuracy benchmarks share (digits, every client every round), read
    from their common flags; each benchmark passes what it varies as ``changes``."""
    return FDConfig(
        **{
            "dataset": "digits",
            "alpha": args.alpha,
            "num_clients": args.clients,
            "min_train_nodes": args.clients,
            "num_rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "server_epochs": args.server_epochs,
            "client_models": args.model,
            "student_model": args.model,
            # The one-way mean protocol these benchmarks measured; each passes its own rule.
            "aggregation": "mean",
            "co_distillation": False,
            **changes,
        }
    )


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _call_isolated(target: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Child side of :func:`run_isolated`: import ``module:function``, call it, add memory."""
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    result = dict(func(**kwargs))
    result["peak_rss_mib"] = peak_rss_mib()
    return result


def run_isolated(target: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``module:function(**kwargs)`` in a fresh spawned process and return its dict.

    Why a fresh process: peak RSS is a per-process high-water mark that never goes down, torch
    keeps a process-wide thread setting, and Ray and Flower keep global state. A new process
    per measurement makes each one independent of the order in which they run.
    """
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(_call_isolated, target, kwargs).result()


def traced_peak(func: Callable[[], Any]) -> tuple[Any, float, float]:
    """``(result, seconds, peak MiB)`` of ``func()``, the peak as seen by ``tracemalloc``.

    Only allocations Python knows about are traced (NumPy's yes, torch's no); tracing slows
    the call, so the seconds here are not comparable with untraced timings.
    """
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        result = func()
        seconds = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, seconds, peak / 2**20


def median(values: Sequence[float]) -> float:
    """Median, or NaN for no values (a variant that produced no timing)."""
    return statistics.median(values) if values else float("nan")


def fmt_ratio(num: float | None, den: float | None, digits: int = 2) -> str:
    """``num / den`` as ``1.23×``; ``n/a`` when either side is missing or zero."""
    if num is None or den is None or den == 0:
        return "n/a"
    return f"{num / den:.{digits}f}×"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; cells are formatted with ``str``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (indented) to ``path``, creating its directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=True, default=str))
    return path


def update_docs(path: Path, name: str, table: str, command: str) -> None:
    """Replace what lies between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path``
    with ``table`` and the command that made it: docs numbers are regenerated, never typed."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = Path(path).read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path} lacks the markers {begin} ... {end}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    body = f"{begin}\n<!-- generated by `{command}`; do not edit by hand -->\n\n{table}\n\n{end}"
    Path(path).write_text(head + body + tail)


def _echo_for_tests(value: int) -> dict[str, Any]:
    """A trivial isolated target, so the tests can check :func:`run_isolated` cheaply."""
    return {"value": value}
