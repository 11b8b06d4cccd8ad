"""Smoke tests of the Byzantine and DP benchmarks at tiny size (seconds, not minutes).

They run each benchmark's real entry point with ``--quick`` (a few clients, 2 rounds) and check
the structure of what it reports and that values are sane; the measured tables themselves live
in docs/reliability.md.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from benchmarks import bench_byzantine, bench_privacy
from fedkd.privacy import epsilon_spent


def _in_unit_interval(value: Any) -> bool:
    return isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.fixture(scope="module")
def byzantine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "byzantine.json"
    payload = bench_byzantine.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["student_table"] == payload["student_table"]
    return payload


@pytest.fixture(scope="module")
def privacy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "privacy.json"
    payload = bench_privacy.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["table"] == payload["table"]
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


def test_privacy_reports_epsilon_and_noise_per_setting(privacy: dict[str, Any]) -> None:
    by_noise = {r["noise"]: r for r in privacy["results"]}
    assert sorted(by_noise) == [0.0, 1.0, 4.0]
    assert by_noise[0.0]["epsilon"] is None  # DP off: no ε, not infinity
    rounds = privacy["setting"]["rounds"]
    for z in (1.0, 4.0):
        r = by_noise[z]
        assert math.isfinite(r["epsilon"])
        assert r["epsilon"] == pytest.approx(epsilon_spent(z, rounds, 1e-5))
        assert r["noise_std"] == pytest.approx(z * 1.0 * math.sqrt(2 * 50))  # z·clip·√(2·rows)
    assert by_noise[4.0]["epsilon"] < by_noise[1.0]["epsilon"]
    for r in privacy["results"]:
        assert r["rows"] == 50
        assert _in_unit_interval(r["final"]) and _in_unit_interval(r["teacher"])


def test_privacy_grid_runs_no_noise_once_per_subset() -> None:
    grid = bench_privacy.settings([50, 0], [1.0, 0.3], [0.0, 2.0])
    assert [(s.subset, s.clip, s.noise) for s in grid] == [
        (50, 1.0, 0.0),
        (50, 1.0, 2.0),
        (50, 0.3, 2.0),
        (0, 1.0, 0.0),
        (0, 1.0, 2.0),
        (0, 0.3, 2.0),
    ]
