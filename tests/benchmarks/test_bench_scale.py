"""bench_scale's bookkeeping: variant names, paired ratios, the goals and CPU-split tables."""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks import bench_scale as B


def test_variant_names_carry_clients_per_message() -> None:
    assert B.split_variant("flower-ray-k50") == ("flower-ray", 50)
    assert B.split_variant("flower-local-k10") == ("flower-local", 10)
    assert B.split_variant("flower-ray") == ("flower-ray", 1)
    assert B.split_variant("plain-p2") == ("plain-p2", 1)
    assert B.scale_config(100, 2, per_message=10).num_nodes == 10


def _run(variant: str, wall: float, cpu: float, workers: float = 0.0) -> dict[str, Any]:
    worker = "python" if variant.startswith("plain") else "ray::ClientAppA"
    return {
        "round_seconds": [9.0, wall, wall],
        "round_cpu_seconds": [9.0, cpu, cpu],
        "first_round_total_seconds": 10.0,
        "peak_tree_rss_mib": 1.0,
        "last_round_cpu_by_process": {"python:1": cpu - workers, worker: workers, "raylet": 0.0},
    }


def test_goals_need_cpu_and_same_core_wall_within_the_target() -> None:
    runs = {
        "plain": [_run("plain", 2.0, 1.0), _run("plain", 2.0, 1.0)],
        "plain-p2": [_run("plain-p2", 1.0, 1.2, 1.1)] * 2,
        "flower-ray": [_run("flower-ray", 2.0, 4.0, 3.0)] * 2,
        "flower-ray-k50": [_run("flower-ray-k50", 1.1, 1.4, 1.0)] * 2,
    }
    summary = B.summarize(runs)
    assert summary["flower-ray-k50"]["cpu_over_plain"] == pytest.approx(1.4)
    assert summary["flower-ray-k50"]["wall_over_plain_p2"] == pytest.approx(1.1)
    result = [{"label": "x", "clients": 1000, "runs": runs, "summary": summary}]
    goals = B.goals_markdown(result)
    assert "| x | 1000 | flower-ray-k50 | 50 | ≤ 1.5× | 1.40× | 1.10× | yes |" in goals
    assert "| x | 1000 | flower-ray | 1 | ≤ 1.5× | 4.00× | 2.00× | no |" in goals
    split = B.cpu_split_markdown(result)
    assert "| x | 1000 | flower-ray-k50 | 0.40 | 1.00 | 0.00 | 0.4 | 1.0 |" in split
    assert "| x | 1000 | plain-p2 | 0.10 | 1.10 | 0.00 | 0.1 | 1.1 |" in split
