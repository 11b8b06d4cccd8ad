"""The barrier that keeps Ray workers' start-up out of round 1 (simulations.ray_workers)."""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time

import pytest

from simulations import ray_workers


def test_the_barrier_waits_for_every_expected_worker() -> None:
    barrier = ray_workers.WorkerBarrier(timeout=30, poll=0.01)
    barrier.expected = 2
    try:

        def start_workers() -> None:  # two workers finishing their imports, one after the other
            for pid in (101, 102):
                time.sleep(0.2)
                (barrier.directory / str(pid)).touch()

        thread = threading.Thread(target=start_workers)
        thread.start()
        assert barrier.wait()
        thread.join()
        assert barrier.ready() == 2
        assert barrier.waited is not None and barrier.waited >= 0.3  # it did wait for both
    finally:
        barrier.close()
    assert not barrier.directory.exists()


def test_the_barrier_gives_up_after_its_timeout_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    barrier = ray_workers.WorkerBarrier(timeout=0.2, poll=0.01)
    barrier.expected = 3
    (barrier.directory / "7").touch()
    try:
        with caplog.at_level(logging.WARNING, logger=ray_workers.__name__):
            assert not barrier.wait()
    finally:
        barrier.close()
    assert "1 of 3 Ray workers ready" in caplog.text


def test_setup_worker_marks_its_process_ready_after_the_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    barrier = ray_workers.WorkerBarrier()
    try:
        monkeypatch.setenv(ray_workers.READY_DIR_ENV, str(barrier.directory))
        ray_workers.setup_worker()
        assert [p.name for p in barrier.directory.iterdir()] == [str(os.getpid())]
        assert gc.get_freeze_count() > 0  # the imports' objects are out of the collector's way
        assert {"sklearn.model_selection", "torch._dynamo"} <= set(sys.modules)
        monkeypatch.delenv(ray_workers.READY_DIR_ENV)
        ray_workers.setup_worker()  # outside a fedkd Ray run: no directory, nothing to mark
    finally:
        gc.unfreeze()  # this is pytest's process, not a worker's
        barrier.close()


def test_the_lifespan_waits_before_the_app_runs() -> None:
    barrier = ray_workers.WorkerBarrier(timeout=0.1, poll=0.01)
    barrier.expected = 1
    try:
        steps = barrier.lifespan(None)
        (barrier.directory / "1").touch()
        next(steps)  # returns once the worker is ready: the app's main runs after this
        assert barrier.waited is not None
        with pytest.raises(StopIteration):
            next(steps)
    finally:
        barrier.close()


def test_the_driver_freezes_its_objects_for_the_run_only() -> None:
    from simulations.engine import _imports_frozen

    assert gc.get_freeze_count() == 0
    with _imports_frozen():
        assert gc.get_freeze_count() > 1000  # the imports' objects, out of the collector's way
        assert gc.collect() >= 0  # collecting still works for what the run creates
    assert gc.get_freeze_count() == 0  # a notebook's next run starts as before
