"""Smoke tests of the Byzantine and DP benchmarks at tiny size (seconds, not minutes).

They run each benchmark's real entry point with ``--quick`` (a few clients, 2 rounds) and check
the structure of what it reports and that values are sane; the measured tables themselves live
in docs/reliability.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks import bench_byzantine, bench_dp
from fedkd.privacy import epsilon


def _in_unit_interval(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.fixture(scope="module")
def byzantine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "byzantine.json"
    payload = bench_byzantine.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["student_table"] == payload["student_table"]
    return payload


def test_byzantine_grid_covers_every_rule_and_fraction(byzantine: dict[str, Any]) -> None:
    results = byzantine["results"]
    cells = {(r["attack"], r["fraction"], r["rule"]) for r in results}
    expected_clean = {("none", 0.0, rule) for rule in bench_byzantine.RULES}
    expected_attacked = {("lma", 0.3, rule) for rule in bench_byzantine.RULES}
    assert cells == expected_clean | expected_attacked
    for r in results:
        assert _in_unit_interval(r["final"]) and _in_unit_interval(r["last2"])
        assert _in_unit_interval(r["teacher"])
        assert r["rejected"] == 0  # LMA rows are distributions: validation lets them in
    for rule in bench_byzantine.RULES:
        assert rule in byzantine["student_table"] and rule in byzantine["teacher_table"]
    assert byzantine["student_table"].count("\n") == 3  # header, separator, 0/4 and 1/4 attackers
    assert "expguard" in byzantine["worst_drop_table"] and "(lma)" in byzantine["worst_drop_table"]


def test_attacker_free_runs_are_shared_by_every_attack() -> None:
    grid = bench_byzantine.settings(["iid"], ["targeted", "label_flip"], [0.0, 0.2], ["mean"])
    assert [(s.attack, s.fraction) for s in grid] == [
        ("none", 0.0),
        ("targeted", 0.2),
        ("label_flip", 0.2),
    ]


def test_scaled_attackers_show_up_as_rejections() -> None:
    args = bench_byzantine.parse_args(["--quick"])
    [setting] = bench_byzantine.settings(["iid"], ["scaled"], [0.5], ["mean"])
    [summary] = bench_byzantine.run_grid([setting], [0], args)
    # 2 of 4 clients attack in each of the 2 rounds; validation rejects every scaled reply
    assert summary.as_dict()["rejected"] == 2 * args.rounds


@pytest.mark.parametrize("mechanism", ["central", "pate"])
def test_dp_benchmark_calibrates_each_mechanism_to_its_budget(mechanism: str) -> None:
    # What bench_dp runs stays within the ε it promises, and spends most of it (no runs here:
    # the ε each run prints is checked against the analytic Gaussian in tests/strategies).
    args = bench_dp.parse_args(["--quick"])
    setting = bench_dp.Setting("digits", mechanism, mechanism, 4.0, {"dp_labels_per_round": 5})
    cfg = bench_dp.configure(setting, args, 0)
    spent = epsilon(bench_dp.run_events(cfg, cfg.dp_noise_multiplier), 1e-5)
    assert cfg.dp_mechanism == mechanism and 3.8 <= spent <= 4.0


def test_dp_table_reports_the_gap_to_the_run_without_dp() -> None:
    row = dict(part="digits", target=None, noise_multiplier=0.0, teacher=None, epsilon=None)
    rows = [
        {**row, "label": "no DP", "mechanism": "none", "final": 0.9, "final_std": 0.0},
        {**row, "label": "central", "mechanism": "central", "final": 0.85, "final_std": 0.01,
         "target": 8.0, "noise_multiplier": 1.3, "epsilon": 7.99},
    ]  # fmt: skip
    table = bench_dp.table(rows, "digits")
    assert "-5.0 pts" in table and "7.99" in table and "0.850 ±0.010" in table
