"""GPU: an FD round on Flower + Ray with fractional-GPU clients and the student on CUDA, vs CPU.

    PYTHONPATH=. python -m benchmarks.bench_gpu                        # 100 and 1,000 clients
    PYTHONPATH=. python -m benchmarks.bench_gpu --docs --out benchmarks/results/bench_gpu/h200.json
    PYTHONPATH=. python -m benchmarks.bench_gpu --quick --device cpu   # the CPU half only
    bash benchmarks/gpu_check.sh                                       # a bare GPU machine

Issue 17's GPU measurement, prepared as one command that fits a short lease on a GPU machine
(``--budget-s``, default 240 s, Ray start-up included). The setting is
:mod:`benchmarks.bench_scale`'s tiny clients (synthetic 32-d data, the MLP, one local and one
server epoch, 200 public rows, mean rule), so the framework's cost per message dominates.

Variants, each a fresh process on Flower's Ray simulation engine:

* ``cpu``: clients and student on the CPU, no GPU reserved (``simulation=ray_cpu``);
* ``gpu``: ``simulation=ray_gpu``: each ClientApp worker reserves ``--gpu-share`` of a GPU
  (0.25: four workers per GPU), ``fd.client_device=auto`` (the worker's reserved GPU), and the
  student on ``cuda``; ``gpu<N>`` reserves ``1/N`` of a GPU instead (``gpu16``: sixteen
  workers per GPU, as many as a 16-core machine runs CPU workers);
* a suffix ``-k<K>`` serves K virtual clients per message (``clients-per-message``), and
  ``-k<K>-vec`` also trains a cohort's members in one batched call (``vectorize-cohort``).

Reported per run: rounds per second of the warm rounds (median of rounds 2..R) and round 1's
seconds (Ray worker start-up, imports and CUDA contexts), process-tree CPU-seconds and peak
tree RSS (:mod:`benchmarks.proctree`), and GPU memory two ways: the driver's
``torch.cuda.max_memory_allocated`` (the student) and the whole device's peak ``memory.used``
from ``nvidia-smi`` sampled by the parent every 0.5 s (every worker's CUDA context and client
tensors included; the machine is assumed to run nothing else), with the most processes seen
on the GPU at once (proof that the clients used it). Each GPU variant's rounds per second are
divided by those of the CPU variant with the same cohort suffix and client count (same
invocation). The hardware is named in the results: GPU, driver, CUDA, CPU model and count.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.bench_scale import scale_config
from benchmarks.common import (
    _call_isolated,
    add_common_args,
    fmt_ratio,
    markdown_table,
    median,
    update_docs,
    write_json,
)
from benchmarks.proctree import TreePeak, descendants, tree_cpu_seconds

DOCS = Path("docs/benchmarks.md")
TABLE = "bench_gpu"
VARIANTS = ("cpu", "gpu", "cpu-k50-vec", "gpu-k50-vec")
CLIENTS = "100,1000"
DEFAULT_GPU_SHARE = 0.25  # conf/simulation/ray_gpu.yaml: four clients per GPU
_VARIANT = re.compile(r"(?P<dev>cpu|gpu)(?P<per_gpu>\d+)?(?:-k(?P<k>\d+)(?P<vec>-vec)?)?")


# ----------------------------------------------------------------------------- variants
@dataclasses.dataclass(frozen=True)
class Variant:
    """What a variant name means: where clients and student run, and the cohort size."""

    name: str
    gpu: bool
    gpu_share: float  # GPU share per ClientApp worker (0 on the CPU)
    per_message: int  # virtual clients per message (clients-per-message)
    vectorize: bool  # vectorize-cohort

    @property
    def cohort(self) -> str:
        """The part of the name after the device (``"-k50-vec"``; ``""`` for one client per
        message): a GPU variant is compared with the CPU variant of the same cohort."""
        return self.name[self.name.index("-") :] if "-" in self.name else ""


def parse_variant(name: str, gpu_share: float = DEFAULT_GPU_SHARE) -> Variant:
    """``"gpu16-k50-vec"`` → a GPU variant, 1/16 GPU per worker, cohorts of 50, batched.

    Raises ``ValueError`` for a name outside ``cpu|gpu[N][-kK[-vec]]`` (``-vec`` needs K > 1,
    ``gpuN`` needs N ≥ 1)."""
    m = _VARIANT.fullmatch(name)
    if m is None:
        raise ValueError(f"unknown variant {name!r}: expected cpu|gpu[N][-kK[-vec]]")
    gpu = m["dev"] == "gpu"
    if m["per_gpu"] is not None and (not gpu or int(m["per_gpu"]) < 1):
        raise ValueError(f"unknown variant {name!r}: gpuN needs N >= 1 workers per GPU")
    k = int(m["k"] or 1)
    if m["vec"] and k < 2:
        raise ValueError(f"variant {name!r}: -vec needs a cohort of K >= 2 clients")
    share = (1.0 / int(m["per_gpu"]) if m["per_gpu"] else gpu_share) if gpu else 0.0
    return Variant(name, gpu, share, k, bool(m["vec"]))


def gpu_configs(
    variant: Variant, clients: int, rounds: int, gpus: int, backend: str = "ray"
) -> tuple[Any, Any]:
    """``(FDConfig, SimulationConfig)`` of one run: :func:`benchmarks.bench_scale.scale_config`
    plus the devices and GPU shares of ``simulation=ray_gpu`` (or ``ray_cpu``).

    A GPU variant sets ``ray_num_gpus`` to the ``gpus`` torch counts, so Ray never waits for
    GPUs it failed to detect, and puts the student on ``cuda`` (an error without CUDA, never a
    silent CPU run); the clients use ``auto`` as ``ray_gpu`` does, so a worker Ray gave no GPU
    would train on its CPU: the GPU process count in the results shows whether they did."""
    from simulations.engine import SimulationConfig

    cfg = scale_config(
        clients, rounds, per_message=variant.per_message, vectorize=variant.vectorize
    )
    if variant.gpu:
        cfg = dataclasses.replace(cfg, device="cuda", client_device="auto")
        sim = SimulationConfig(backend=backend, client_gpus=variant.gpu_share, ray_num_gpus=gpus)
    else:
        cfg = dataclasses.replace(cfg, device="cpu", client_device="cpu")
        sim = SimulationConfig(backend=backend, client_gpus=0.0, ray_num_gpus=0)
    return cfg, sim


# ----------------------------------------------------------------------------- one run (child)
def run_variant(
    name: str, clients: int, rounds: int, gpu_share: float, gpus: int, backend: str = "ray"
) -> dict:
    """One measured run (meant for a fresh process): per-round wall, tree CPU, student and
    client accuracy, replies, peak tree RSS, and the driver's CUDA peak."""
    import logging

    import fedkd.client_app  # noqa: F401  (imports first: not part of round 1)
    from benchmarks.bench_scale import _run_flower

    logging.getLogger("flwr").setLevel(logging.WARNING)
    variant = parse_variant(name, gpu_share)
    cfg, sim = gpu_configs(variant, clients, rounds, gpus, backend)
    marks = [(time.perf_counter(), tree_cpu_seconds())]
    records: list[dict[str, Any]] = []

    def on_round(record: Any) -> None:
        marks.append((time.perf_counter(), tree_cpu_seconds()))
        records.append(
            {
                "wall": record.wall_seconds,
                "student_accuracy": record.student_accuracy,
                "client_accuracy": record.client_accuracy,
                "valid_replies": record.valid_replies,
                "rejected": record.rejected,
                "missing": record.missing,
            }
        )

    with TreePeak() as peak:
        _run_flower(cfg, f"flower-{backend}", on_round, sim)
    return {
        "variant": name,
        "clients": clients,
        "gpu_share": variant.gpu_share,
        "clients_per_message": variant.per_message,
        "vectorize_cohort": variant.vectorize,
        "round_seconds": [r["wall"] for r in records],
        "round_cpu_seconds": [b[1] - a[1] for a, b in itertools.pairwise(marks)],
        "first_round_total_seconds": marks[1][0] - marks[0][0] if len(marks) > 1 else None,
        "rounds": records,
        "peak_tree_rss_mib": peak.peak,
        **driver_cuda_memory(),
    }


def driver_cuda_memory() -> dict[str, float | None]:
    """This process's CUDA peaks in MiB (the student lives here): ``None`` when it never
    initialised CUDA, so a CPU run reports no GPU memory instead of a zero that looks
    measured."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return {"driver_cuda_max_allocated_mib": None, "driver_cuda_max_reserved_mib": None}
    return {
        "driver_cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "driver_cuda_max_reserved_mib": torch.cuda.max_memory_reserved() / 2**20,
    }


# ----------------------------------------------------------------------------- GPU, hardware
def nvidia_smi(*query: str) -> str | None:
    """``nvidia-smi`` with these arguments (CSV, no header, no units): its output, or ``None``
    where there is no nvidia-smi or it fails (no driver, no GPU)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, *query, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse_csv_numbers(text: str | None) -> list[list[float]]:
    """Rows of ``nvidia-smi``'s CSV as numbers; a row with a field that is not a number
    (``[N/A]``, ``[Not Supported]``) is dropped."""
    rows = []
    for line in (text or "").splitlines():
        try:
            rows.append([float(f) for f in line.split(",")])
        except ValueError:
            continue
    return rows


class GpuPeak:
    """Samples the whole device's ``memory.used`` and the processes on it from ``nvidia-smi``
    in a thread of *this* process (so its cost is outside the measured process tree).

    Without nvidia-smi every figure stays ``None``: "no GPU", not a measured zero."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.baseline_mib: float | None = None  # memory.used before the run
        self.peak_mib: float | None = None  # highest memory.used (every GPU summed)
        self.max_processes: int | None = None  # most compute processes seen at once
        self.max_process_mib: float | None = None  # the largest one process used
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        """One reading of memory and processes."""
        used = parse_csv_numbers(nvidia_smi("--query-gpu=memory.used"))
        if not used:
            return
        total = sum(row[0] for row in used)
        self.samples += 1
        if self.baseline_mib is None:
            self.baseline_mib = total
        self.peak_mib = max(self.peak_mib or 0.0, total)
        listed = nvidia_smi("--query-compute-apps=pid,used_memory") or ""
        # every listed process counts, also one whose memory reads [N/A] (some VMs)
        processes = len([line for line in listed.splitlines() if line.strip()])
        self.max_processes = max(self.max_processes or 0, processes)
        apps = parse_csv_numbers(listed)
        if apps:
            self.max_process_mib = max(self.max_process_mib or 0.0, *(a[-1] for a in apps))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuPeak:
        self.sample()  # the baseline, before the run starts
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self) -> dict[str, Any]:
        """The figures for the results file."""
        return {
            "gpu_baseline_mib": self.baseline_mib,
            "gpu_peak_used_mib": self.peak_mib,
            "gpu_peak_over_baseline_mib": None
            if self.peak_mib is None or self.baseline_mib is None
            else self.peak_mib - self.baseline_mib,
            "gpu_max_processes": self.max_processes,
            "gpu_max_process_mib": self.max_process_mib,
            "gpu_samples": self.samples,
        }


def torch_cuda_info() -> dict[str, Any]:
    """What torch sees (meant for a fresh process: it may create a CUDA context, which the
    parent must not hold while it samples the device)."""
    import torch

    info: dict[str, Any] = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": torch.cuda.device_count() if torch.cuda.is_available() else 0,
        "gpus": [],
    }
    for i in range(info["cuda_devices"]):
        p = torch.cuda.get_device_properties(i)
        info["gpus"].append(
            {
                "name": torch.cuda.get_device_name(i),
                "capability": f"{p.major}.{p.minor}",
                "memory_gib": round(p.total_memory / 2**30, 1),
                "multiprocessors": p.multi_processor_count,
            }
        )
    return info


def describe_hardware(torch_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The machine, named for the results and the docs: CPU model and count, memory, the
    GPUs with driver and CUDA versions (``nvidia-smi``), and what torch, Ray and Flower are.
    On a machine without a GPU, ``gpus`` is empty and ``driver`` ``None``."""
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = Path("/proc/meminfo").read_text().split("MemTotal:", 1)[1].split()[0]
        mem_gib = round(int(kib) / 2**20, 1)
    smi = nvidia_smi("--query-gpu=name,driver_version,memory.total")
    smi_gpus = [[f.strip() for f in line.split(",")] for line in (smi or "").splitlines() if line]
    header = subprocess_text(["nvidia-smi"]) if smi is not None else ""
    cuda_driver = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": mem_gib,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": [
            {"name": g[0], "driver": g[1], "memory_mib": g[2]} for g in smi_gpus if len(g) == 3
        ],
        "driver": smi_gpus[0][1] if smi_gpus and len(smi_gpus[0]) == 3 else None,
        "driver_cuda": cuda_driver.group(1) if cuda_driver else None,
        "torch_info": torch_info,
        "packages": {name: _version(name) for name in ("torch", "ray", "flwr", "numpy")},
    }


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def subprocess_text(command: list[str]) -> str:
    """A command's standard output, ``""`` if it cannot run."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def hardware_line(hw: dict[str, Any]) -> str:
    """One sentence naming the machine, for the docs."""
    gpus = hw.get("gpus") or []
    names = ", ".join(f"{g['name']} ({g['memory_mib']} MiB)" for g in gpus) or "no GPU"
    torch_info = hw.get("torch_info") or {}
    cuda = (
        f", driver {hw['driver']} (CUDA {hw['driver_cuda'] or '?'}), "
        f"torch {torch_info.get('torch', '?')} built for CUDA {torch_info.get('torch_cuda')}"
        if gpus
        else f", torch {torch_info.get('torch') or hw['packages'].get('torch')}"
    )
    cpu = f"{hw['cpu_count']} × {hw['cpu_model'] or 'unknown CPU'}"
    return f"{names}{cuda}; {cpu}, {hw['memory_gib']} GiB RAM; Ray {hw['packages'].get('ray')}"


# ----------------------------------------------------------------------------- isolation
def _child(target: str, kwargs: dict[str, Any], out: Any) -> None:
    """Child side of :func:`run_bounded`: the result, or the error as text."""
    try:
        out.put(_call_isolated(target, kwargs))
    except BaseException as err:  # reported, not raised: one broken variant ends no lease
        out.put({"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})


def run_bounded(target: str, timeout_s: float, **kwargs: Any) -> dict[str, Any]:
    """:func:`benchmarks.common.run_isolated` with a time limit: ``module:function(**kwargs)``
    in a fresh spawned process; past ``timeout_s`` (a Ray that waits for GPUs it will never
    get, a hung worker) the child's whole process tree is killed and the result says so.
    An exception in the child comes back as ``{"error": ...}``, never raised."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, kwargs, out))
    proc.start()
    deadline = time.monotonic() + timeout_s
    result: dict[str, Any] | None = None
    while result is None:
        exited = proc.exitcode is not None  # read before the get: a result may still be queued
        try:
            result = out.get(timeout=max(0.01, min(1.0, deadline - time.monotonic())))
        except queue.Empty:
            if exited:  # died without a word: a crash in native code, the OOM killer
                result = {"error": f"exited with code {proc.exitcode} and no result"}
            elif time.monotonic() >= deadline:
                result = {"error": f"timed out after {timeout_s:.0f} s"}
    if "error" not in result:
        proc.join(timeout=30)  # it returned: give it time to shut Ray down and exit
    if proc.is_alive():  # not yet reaped, so its pid (and its children's) are still its own
        _kill_tree(proc.pid)
    proc.join(timeout=10)
    return result


def _kill_tree(pid: int | None) -> None:
    """SIGKILL ``pid`` and the live processes under it (the child we started and what it
    started: Ray's GCS, raylet and workers), leaves first."""
    if pid is None:
        return
    for p in reversed(descendants(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


# ----------------------------------------------------------------------------- plan and summary
def plan(clients: list[int], variants: list[str]) -> list[tuple[int, str]]:
    """Run order: variants grouped by cohort suffix (``cpu`` and ``gpu`` together, then
    ``cpu-k50-vec`` and ``gpu-k50-vec``, ...), each group at every client count, so a budget
    cut drops whole later groups and keeps each GPU run next to its CPU pair."""
    groups: dict[str, list[str]] = {}
    for v in variants:
        groups.setdefault(parse_variant(v).cohort, []).append(v)
    return [(c, v) for group in groups.values() for c in clients for v in group]


def concurrent_workers(variant: Variant, cpus: int, gpus: int, client_cpus: int = 1) -> int:
    """ClientApp workers Ray runs at once on one machine: ``min(CPUs / client_cpus, GPUs /
    share)`` (``ray_gpu`` on one GPU: 4, however many cores), at least one."""
    by_cpu = cpus // client_cpus
    if not variant.gpu:
        return max(1, by_cpu)
    return max(1, min(by_cpu, int(gpus / variant.gpu_share + 1e-9)))


def _warm(values: list[float]) -> float:
    return median(values[1:] or values)


def summarize(runs: list[dict[str, Any]], gpu_share: float = DEFAULT_GPU_SHARE) -> list[dict]:
    """One row per run: rounds/s (warm), round 1, CPU, memory; GPU ÷ CPU rounds/s for the
    CPU run of the same cohort suffix and client count."""
    done = {(r["clients"], r["variant"]): r for r in runs if "round_seconds" in r}
    rows = []
    for r in runs:
        row: dict[str, Any] = {
            "clients": r["clients"],
            "variant": r["variant"],
            "status": r.get("status", "ok"),
            "workers": r.get("workers"),
        }
        if r.get("round_seconds"):
            warm = _warm(r["round_seconds"])
            row |= {
                "warm_s": warm,
                "rounds_per_s": 1.0 / warm if warm > 0 else None,
                "first_s": r["round_seconds"][0],
                "first_total_s": r.get("first_round_total_seconds"),
                "warm_cpu_s": _warm(r["round_cpu_seconds"]),
                "peak_tree_rss_mib": r.get("peak_tree_rss_mib"),
                "driver_cuda_mib": r.get("driver_cuda_max_allocated_mib"),
                "gpu_peak_mib": r.get("gpu_peak_over_baseline_mib"),
                "gpu_processes": r.get("gpu_max_processes"),
                "student_accuracy": r["rounds"][-1]["student_accuracy"] if r["rounds"] else None,
                "replies": [x["valid_replies"] for x in r["rounds"]],
            }
            variant = parse_variant(r["variant"], gpu_share)
            base = done.get((r["clients"], "cpu" + variant.cohort))
            if variant.gpu and base and base["round_seconds"]:
                row["speedup_vs_cpu"] = _warm(base["round_seconds"]) / warm if warm > 0 else None
        rows.append(row)
    return rows


def _num(value: float | None, fmt: str = "{:.2f}") -> str:
    return "—" if value is None else fmt.format(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    """The docs table: one row per (clients, variant)."""
    lines = []
    for s in rows:
        ok = s["status"] == "ok" and "warm_s" in s
        lines.append(
            [
                s["clients"],
                s["variant"],
                _num(s.get("workers"), "{:.0f}"),
                s["status"] if not ok else "ok",
                _num(s.get("rounds_per_s"), "{:.3f}") if ok else "—",
                _num(s.get("warm_s")) if ok else "—",
                _num(s.get("first_s"), "{:.1f}") if ok else "—",
                _num(s.get("warm_cpu_s")) if ok else "—",
                fmt_ratio(s.get("speedup_vs_cpu"), 1.0) if s.get("speedup_vs_cpu") else "—",
                _num(s.get("driver_cuda_mib"), "{:.0f}"),
                _num(s.get("gpu_peak_mib"), "{:.0f}"),
                _num(s.get("gpu_processes"), "{:.0f}"),
                _num(s.get("peak_tree_rss_mib"), "{:.0f}") if ok else "—",
                _num(s.get("student_accuracy"), "{:.3f}") if ok else "—",
            ]
        )
    return markdown_table(
        [
            "clients/round",
            "variant",
            "workers",
            "status",
            "rounds/s (warm)",
            "warm s/round",
            "round 1 s",
            "warm CPU s",
            "rounds/s ÷ CPU",
            "student CUDA peak MiB",
            "GPU used peak MiB",
            "GPU processes",
            "peak tree RSS MiB",
            "student acc.",
        ],
        lines,
    )


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default=CLIENTS, help="clients per round")
    parser.add_argument(
        "--backend",
        choices=("ray", "local"),
        default="ray",
        help="ray: Flower's Ray simulation engine (what is measured); local: the in-process "
        "grid, no Ray (smoke tests; every client in the driver, on its GPU too)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds per run (1 + warm ones)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: GPU variants only where CUDA is; cpu: CPU variants only; cuda: refuse "
        "to run without CUDA",
    )
    parser.add_argument(
        "--gpu-share",
        type=float,
        default=DEFAULT_GPU_SHARE,
        help="GPU share per client worker of the plain `gpu` variants (ray_gpu: 0.25)",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=240.0,
        help="stop starting runs once this many seconds have passed or the next one would "
        "overrun (estimated from the longest run so far)",
    )
    parser.add_argument("--run-timeout-s", type=float, default=150.0, help="limit per run")
    parser.add_argument("--docs", action="store_true", help="regenerate docs/benchmarks.md")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="print the table (with --docs: write the docs block) from a saved results file, "
        "e.g. one a GPU machine wrote, instead of running",
    )
    add_common_args(parser, "bench_gpu")
    return parser.parse_args(argv)


def _run_all(
    args: argparse.Namespace, variants: list[str], gpus: int, save: Any = None
) -> list[dict[str, Any]]:
    """Every planned run in order, within the budget; ``save(runs)`` after each one."""
    runs: list[dict[str, Any]] = []
    started = time.perf_counter()
    longest = 0.0
    for clients, name in plan([int(c) for c in args.clients.split(",") if c], variants):
        elapsed = time.perf_counter() - started
        base = {"clients": clients, "variant": name}
        if elapsed + longest > args.budget_s:
            runs.append({**base, "status": "skipped: budget"})
            print(f"--- {name}, {clients} clients: skipped (budget)", flush=True)
            continue
        print(f"--- {name}, {clients} clients", flush=True)
        t0 = time.perf_counter()
        with GpuPeak() as gpu:
            run = run_bounded(
                "benchmarks.bench_gpu:run_variant",
                args.run_timeout_s,
                name=name,
                clients=clients,
                rounds=args.rounds,
                gpu_share=args.gpu_share,
                gpus=gpus,
                backend=args.backend,
            )
        seconds = time.perf_counter() - t0
        longest = max(longest, seconds)
        workers = concurrent_workers(parse_variant(name, args.gpu_share), os.cpu_count() or 1, gpus)
        run = {**base, **run, **gpu.result(), "workers": workers, "run_seconds": seconds}
        if "error" in run:
            run["status"] = "error: " + run["error"].splitlines()[0][:80]
            print(run.get("traceback", run["error"]), flush=True)
        else:
            walls = " / ".join(f"{w:.2f}" for w in run["round_seconds"])
            print(f"    rounds {walls} s; run {seconds:.0f} s", flush=True)
        runs.append(run)
        if save is not None:  # a lease that ends mid-plan still leaves the runs made so far
            save(runs)
    return runs


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Name the hardware, run the plan, print the table, write JSON (and docs with --docs)."""
    args = parse_args(argv)
    if args.from_json:
        import json

        payload = json.loads(args.from_json.read_text())
        print(markdown(payload["summary"]))
        if args.docs:
            render_docs(payload, ["--from-json", str(args.from_json)])
        return payload
    if args.quick:
        args.rounds = 2
        args.clients = "20" if args.clients == CLIENTS else args.clients
        args.variants = "cpu,gpu" if args.variants == ",".join(VARIANTS) else args.variants
    if args.device == "cpu":  # no CUDA wanted: torch's version is enough, no child needed
        torch_info = {"torch": _version("torch"), "cuda_available": False, "cuda_devices": 0}
    else:
        torch_info = run_bounded("benchmarks.bench_gpu:torch_cuda_info", 120)
    cuda = bool(torch_info.get("cuda_available"))
    if args.device == "cuda" and not cuda:
        raise SystemExit(
            "bench_gpu: --device cuda but torch sees no CUDA device here "
            f"({torch_info.get('error') or 'torch ' + str(torch_info.get('torch'))}); "
            "use --device auto or cpu"
        )
    variants = [v for v in args.variants.split(",") if v]
    parsed = [parse_variant(v, args.gpu_share) for v in variants]  # names checked up front
    skipped: list[str] = []
    if args.device == "cpu" or not cuda:
        skipped = [v.name for v in parsed if v.gpu]
        variants = [v.name for v in parsed if not v.gpu]
    hardware = describe_hardware(torch_info)
    print(f"hardware: {hardware_line(hardware)}", flush=True)
    if skipped:
        why = "--device cpu" if args.device == "cpu" else "no CUDA device"
        print(f"GPU variants skipped ({why}): {', '.join(skipped)}", flush=True)

    def results(runs: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        return {
            "setting": vars(args),
            "complete": complete,
            "hardware": hardware,
            "skipped_gpu_variants": skipped,
            "runs": runs,
            "summary": summarize(runs, args.gpu_share),
        }

    runs = _run_all(
        args,
        variants,
        int(torch_info.get("cuda_devices") or 0),
        lambda so_far: write_json(args.out, results(so_far, complete=False)),
    )
    payload = results(runs, complete=True)
    print("\n" + markdown(payload["summary"]))
    print(f"\nresults written to {write_json(args.out, payload)}")
    if args.docs:
        render_docs(payload, argv if argv is not None else sys.argv[1:])
    return payload


def render_docs(payload: dict[str, Any], argv: list[str], path: Path = DOCS) -> None:
    """The generated block of docs/benchmarks.md: the machine in one line, then the table."""
    command = "python -m benchmarks.bench_gpu " + " ".join(a for a in argv if a != "--docs")
    text = f"Machine: {hardware_line(payload['hardware'])}.\n\n" + markdown(payload["summary"])
    if payload.get("complete") is False:
        text += "\n\nIncomplete: the command was stopped before its last planned run."
    update_docs(path, TABLE, text, command.strip())


def _sleep_for_tests(seconds: float) -> dict[str, Any]:
    """An isolated target that overruns, so the tests can check :func:`run_bounded`'s kill."""
    time.sleep(seconds)
    return {}


if __name__ == "__main__":
    main()
