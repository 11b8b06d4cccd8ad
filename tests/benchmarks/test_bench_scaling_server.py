"""bench_scaling's server and student parts at tiny size: they run, agree, and tabulate."""

from __future__ import annotations

import pytest
import torch

from benchmarks import bench_scaling


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> object:
    threads = torch.get_num_threads()  # the points pin one thread, as in their own process
    yield None
    torch.set_num_threads(threads)


def test_server_points_agree_and_tabulate() -> None:
    points = [
        bench_scaling.server_round_point("mean", receive, 12, 10, 100, per_pull=3)
        for receive in ("held", "streamed")
    ]
    held, streamed = points
    assert held["valid_replies"] == streamed["valid_replies"] == 12
    assert held["teacher_checksum"] == streamed["teacher_checksum"]
    assert streamed["pulls"] >= 4  # 12 replies, 3 per poll
    table = bench_scaling.server_markdown(points)
    assert "| mean | 10 | 12 |" in table and table.rstrip().endswith("| yes |")


def test_student_point_reports_time_and_memory() -> None:
    point = bench_scaling.student_point(64)
    assert point["rows"] == 64 and point["seconds"] > 0 and point["rss_growth_mib"] >= 0
    assert "| 64 |" in bench_scaling.student_markdown([point])
