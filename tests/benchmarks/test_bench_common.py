"""The shared benchmark plumbing: tables, ratios, JSON, isolated runs and traced memory."""

from __future__ import annotations

import json
import math

import numpy as np

from benchmarks.common import (
    fmt_ratio,
    markdown_table,
    median,
    run_isolated,
    traced_peak,
    write_json,
)


def test_markdown_table_has_header_rule_and_rows() -> None:
    table = markdown_table(["a", "b"], [[1, "x"], [2, "y"]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x |", "| 2 | y |"]


def test_fmt_ratio_and_median_handle_missing_values() -> None:
    assert fmt_ratio(3.0, 2.0) == "1.50×"
    assert fmt_ratio(None, 2.0) == fmt_ratio(1.0, 0.0) == "n/a"
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert math.isnan(median([]))


def test_write_json_creates_the_directory(tmp_path) -> None:
    path = write_json(tmp_path / "deep" / "r.json", {"x": float("nan"), "y": [1, 2]})
    assert json.loads(path.read_text().replace("NaN", "null")) == {"x": None, "y": [1, 2]}


def test_traced_peak_sees_numpy_buffers() -> None:
    result, seconds, peak = traced_peak(lambda: np.ones(2**20).sum())  # 8 MiB of float64
    assert result == 2**20 and seconds >= 0 and peak >= 7.9


def test_run_isolated_returns_the_child_result_with_its_peak_rss() -> None:
    out = run_isolated("benchmarks.common:_echo_for_tests", value=3)
    assert out["value"] == 3 and out["peak_rss_mib"] > 10
