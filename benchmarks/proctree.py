"""CPU-seconds and resident memory of a process *tree*, read from ``/proc`` (Linux, no psutil).

Why a tree: a Ray simulation does its work in processes the driver starts (GCS, raylet) and in
workers the raylet starts; the driver's own ``process_time`` misses all of it, and
``RUSAGE_CHILDREN`` only counts children that were reaped (Ray kills its workers at shutdown).
So we sum ``utime + stime`` of the driver and every live descendant, sampled while the run is
still going (e.g. at each round's end), and take differences between samples.

Also a tiny wall-clock sampling profiler (:class:`StackSampler`) for the driver: py-spy is not
available here and cProfile sees one thread only, while Flower's simulation runs in threads.
"""

from __future__ import annotations

import collections
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may contain spaces: split after its closing parenthesis
    return text[text.rindex(")") + 2 :].split()


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children[int(fields[1])].append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def tree_cpu_seconds(root: int | None = None) -> float:
    """User + system CPU-seconds of the live process tree under ``root`` (default: this one)."""
    total = 0
    for pid in descendants(root or os.getpid()):
        fields = _stat(pid)
        if fields is not None:  # fields[11], [12]: utime, stime (after pid and comm)
            total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def tree_cpu_by_process(root: int | None = None) -> dict[str, float]:
    """CPU-seconds of the live tree under ``root`` per process kind (its command name, with
    the pid for Python processes so the driver and each Ray worker stay apart)."""
    out: dict[str, float] = {}
    for pid in descendants(root or os.getpid()):
        try:
            text = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        key = f"{name}:{pid}" if pid == (root or os.getpid()) else name
        out[key] = out.get(key, 0.0) + (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def thread_cpu_seconds() -> dict[str, float]:
    """CPU-seconds of the live threads of this process by name: a plain thread by its target
    function, a pool's threads summed under the pool's name."""
    import threading

    out: dict[str, float] = {}
    for thread in threading.enumerate():
        fields = _stat_task(thread.native_id)
        if fields is not None:
            # "Thread-3 (add_messages_to_queue)" -> its target; "ThreadPoolExecutor-0_1" -> pool
            target = re.fullmatch(r"Thread-\d+ \((.*)\)", thread.name)
            name = target.group(1) if target else thread.name.split("_")[0]
            cpu = (int(fields[11]) + int(fields[12])) / _TICKS
            out[name] = out.get(name, 0.0) + cpu
    return out


def _stat_task(tid: int | None) -> list[str] | None:
    try:
        text = Path(f"/proc/self/task/{tid}/stat").read_text()
    except (OSError, TypeError):
        return None
    return text[text.rindex(")") + 2 :].split()


def tree_rss_mib(root: int | None = None) -> float:
    """Resident memory of the live tree under ``root`` now (MiB; shared pages counted per
    process, so an upper bound)."""
    total = 0
    for pid in descendants(root or os.getpid()):
        fields = _stat(pid)
        if fields is not None:  # fields[21]: rss in pages
            total += int(fields[21])
    return total * _PAGE / 2**20


class TreePeak:
    """Samples :func:`tree_rss_mib` in a background thread; ``peak`` is the high-water mark.

    ``cpu_seconds`` is the sampler thread's own CPU so far: each sample scans every process
    in ``/proc`` (~10 ms on a busy box), which a benchmark should not bill to the code it
    measures."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0.0
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss_mib())
            self.cpu_seconds = time.thread_time()  # this thread's CPU since it started
            self._stop.wait(self.interval)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_IDLE = {"wait", "get", "select", "poll", "sleep", "_wait_for_tstate_lock", "accept"}
_OURS = {"proctree.py"}


def _idle(frame: Any) -> bool:
    """A thread blocked in a wait (or one of our samplers): not where the CPU goes."""
    if frame.f_code.co_name in _IDLE:
        return True
    f = frame
    while f is not None:
        if Path(f.f_code.co_filename).name in _OURS:
            return True
        f = f.f_back
    return False


class StackSampler:
    """Every ``interval`` seconds, note the innermost frames of every other thread.

    ``top(n)`` gives the functions found most often anywhere in a sampled stack (inclusive)
    as ``(share of busy thread-samples, "file:function")``. Threads blocked in a wait
    (``wait``, ``get``, ``select``, ``sleep``) are skipped, so it reads as "where the driver's
    busy threads are"; a thread inside a C call without a Python frame change still counts.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.samples = 0
        self.inclusive: collections.Counter[str] = collections.Counter()
        self.leaf: collections.Counter[str] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.is_set():
            for ident, frame in sys._current_frames().items():
                if ident == me or _idle(frame):
                    continue
                self.samples += 1
                seen: set[str] = set()
                leaf = True
                f: Any = frame
                while f is not None:
                    code = f.f_code
                    name = f"{Path(code.co_filename).name}:{code.co_name}"
                    if leaf:
                        self.leaf[name] += 1
                        leaf = False
                    if name not in seen:
                        self.inclusive[name] += 1
                        seen.add(name)
                    f = f.f_back
            time.sleep(self.interval)

    def __enter__(self) -> StackSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 15, *, leaf: bool = False) -> list[tuple[float, str]]:
        """Most frequent functions, as (share of thread-samples, name)."""
        counter = self.leaf if leaf else self.inclusive
        total = max(self.samples, 1)
        return [(count / total, name) for name, count in counter.most_common(n)]
