"""Smoke tests of the performance benchmarks at tiny size: structure and sane values.

The measured tables live in docs/benchmarks.md; these tests only check that each benchmark's
core function runs, reports what its table needs, and that the values make sense (ratios
positive, codecs shrinking bytes, streaming aggregation equal to stacking and smaller).
"""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from benchmarks import bench_comm, bench_hotpaths, bench_lwf, bench_overhead, bench_scaling
from benchmarks import run_all as run_all_mod
from benchmarks.plain_loop import run_plain_fd
from fedkd.config import FDConfig, replace
from fedkd.training import TrainConfig


def _tiny(**changes: object) -> FDConfig:
    base = FDConfig(
        partition="iid",
        num_clients=2,
        min_train_nodes=2,
        num_rounds=2,
        client_models="mlp",
        student_model="mlp",
        local_epochs=1,
        server_epochs=1,
        checkpoint=False,
        aggregation="mean",
        co_distillation=False,
    )
    return replace(base, **changes)


# ----------------------------------------------------------------------------- overhead
def test_plain_loop_computes_what_the_flower_path_computes() -> None:
    """Same seeds, same steps: the student's accuracy matches round by round."""
    cfg = _tiny()
    plain = [r.student_accuracy for r in run_plain_fd(cfg)]
    flower = [acc for _, acc in bench_overhead._run_flower(cfg, "local")]
    assert plain == flower
    subset = _tiny(public_subset=50, num_rounds=1)
    assert [r.student_accuracy for r in run_plain_fd(subset)] == [
        acc for _, acc in bench_overhead._run_flower(subset, "local")
    ]


def test_plain_loop_refuses_what_it_does_not_mirror() -> None:
    with pytest.raises(ValueError, match="plain FD only"):
        run_plain_fd(_tiny(co_distillation=True))


def test_overhead_summary_ratios_and_tables() -> None:
    def run(seconds: list[float], acc: list[float]) -> dict:
        return {
            "round_seconds": seconds,
            "accuracy": acc,
            "total_seconds": sum(seconds) + 1,
            "peak_rss_mib": 500.0,
            "driver_cpu_seconds": 2.0,
        }

    runs = {
        "plain": [run([2.0, 1.0, 1.0], [0.1, 0.5, 0.8]), run([2.0, 2.0, 2.0], [0.1, 0.5, 0.8])],
        "flower-local": [run([3.0, 1.1, 1.1], [0.1, 0.5, 0.8])] * 2,
        "flower-ray": [run([9.0, 1.2, 1.4], [0.1, 0.5, 0.8]), run([9, 2.6, 2.6], [0.1, 0.5, 0.8])],
        "fedavg-ray": [run([9.0, 0.6, 0.6], [0.2, 0.6, 0.9])] * 2,
    }
    summary = bench_overhead.summarize(runs)
    assert summary["repeats"] == 2
    assert summary["ray_fd_over_plain"] == pytest.approx(1.3)  # paired: 1.3 in both repeats
    assert summary["warm_round_seconds"]["flower-ray"] == pytest.approx(1.95)
    assert summary["ray_fd_over_ray_fedavg"] == pytest.approx((1.3 / 0.6 + 2.6 / 0.6) / 2)
    assert summary["same_accuracy_as_plain"] == {"flower-local": True, "flower-ray": True}
    results = [{"clients": 10, "runs": runs, "summary": summary}]
    assert "| 10 | 1.50 | 1.10 | 1.95 | 0.60 | 0.83× | 1.30× | 3.25× | yes |" in (
        bench_overhead.markdown(results)
    )
    assert bench_overhead.startup_markdown(results).count("\n") == 5  # header, rule, 4 rows


# ----------------------------------------------------------------------------- scaling
def test_streaming_aggregation_equals_stacking_with_far_less_memory() -> None:
    stacked = bench_scaling.measure_aggregation("mean", "stacked", 40, 300)
    streaming = bench_scaling.measure_aggregation("mean", "streaming", 40, 300)
    assert stacked["teacher_checksum"] == pytest.approx(streaming["teacher_checksum"], rel=1e-6)
    assert stacked["teacher_checksum"] == pytest.approx(300, rel=1e-4)  # rows sum to 1
    assert streaming["traced_peak_mib"] * 5 < stacked["traced_peak_mib"]
    assert stacked["traced_peak_mib"] >= stacked["stack_mib"]


def test_aggregation_part_marks_order_statistics_as_not_streamable() -> None:
    part = bench_scaling.aggregation_part([4, 8], [30, 60], (4, 60))
    modes = {(p["rule"], p["mode"]) for p in part["rules"]}
    assert ("median", "stacked") in modes and ("median", "streaming") not in modes
    assert ("mean", "streaming") in modes
    table = bench_scaling.aggregation_markdown(part)
    assert "no: needs every reply" in table and "| 8 | 60 |" in table


def test_rounds_table_has_one_row_per_client_count() -> None:
    def run(variant: str, clients: int, seconds: float) -> dict:
        return {
            "variant": variant,
            "clients": clients,
            "warm_round_seconds": seconds,
            "peak_rss_mib": 600.0,
            "rss_after_imports_mib": 300.0,
        }

    runs = [run("plain", 10, 1.0), run("flower-local", 10, 1.2), run("plain", 100, 5.0)]
    runs += [run("flower-local", 100, 5.5), run("flower-ray", 100, 6.0)]
    table = bench_scaling.rounds_markdown(runs, "clients", "clients")
    assert "| 10 | 1.00 | 1.20 | not run | 1.20× | — |" in table
    assert "| 100 | 5.00 | 5.50 | 6.00 | 1.10× | 1.20× |" in table


# ----------------------------------------------------------------------------- comm
def test_codecs_cut_bytes_and_fedavg_costs_more() -> None:
    args = argparse.Namespace(
        alpha=0.5, clients=2, rounds=1, model="mlp", topk=3, seed=0, codecs="none,fp16,int8,topk"
    )
    results = bench_comm.run_all_codecs(args)
    per_round = [results[f"fd-{c}"].bytes_per_round for c in ("none", "fp16", "int8", "topk")]
    assert per_round == sorted(per_round, reverse=True) and len(set(per_round)) == 4
    assert results["fedavg"].bytes_per_round > per_round[0]
    table = bench_comm.target_table(results, [0.0, 1.01])
    assert "not reached" in table and "(round 1)" in table
    assert bench_comm.bytes_table(results).count("\n") == 6


# ----------------------------------------------------------------------------- lwf
def test_lwf_bench_reports_positive_ratios() -> None:
    res = bench_lwf.bench_scenario(
        "task_il", model="mlp", hidden=8, train=TrainConfig(epochs=1), repeats=1
    )
    assert set(res["ratio_to_finetune"]) == set(bench_lwf.VARIANTS)
    assert res["ratio_to_finetune"]["finetune"] == 1.0
    assert all(r > 0 for r in res["ratio_to_finetune"].values())


def test_lwf_core_table_compares_validate_on_and_off() -> None:
    rows = bench_lwf.bench_core(repeats=1, calls=2)
    assert [r["case"] for r in rows] == list(bench_lwf.CORE_CASES)
    assert all(r["us_validate"] > 0 and r["us_no_validate"] > 0 for r in rows)
    assert "| class_il (8 of 10 units) |" in bench_lwf.core_markdown(rows)


# ----------------------------------------------------------------------------- hot paths
def test_hotpath_cases_report_before_and_after() -> None:
    rows = bench_hotpaths.case_aggregate(3, True) + bench_hotpaths.case_hash(3, True)
    assert {r["status"] for r in rows} >= {"naive", "before", "after", "proposed"}
    assert all(r["ms"] >= 0 and r["ratio_to_first"] >= 0 for r in rows)
    assert "| hash | buffer in place | after |" in bench_hotpaths.markdown(rows)


def test_per_sample_reference_matches_the_batched_predictions() -> None:
    import torch

    from fedkd.models import build_model
    from fedkd.training import predict_logits

    torch.manual_seed(0)
    model, x = build_model("cnn", (1, 8, 8), 10), torch.randn(20, 1, 8, 8)
    batched = predict_logits(model, x)
    assert torch.allclose(bench_hotpaths._per_sample(model, x), batched, atol=1e-5)
    assert torch.allclose(predict_logits(model, x, batch_size=3), batched, atol=1e-5)


# ----------------------------------------------------------------------------- run_all
def test_run_all_runs_the_selection_and_records_it(tmp_path) -> None:
    results = run_all_mod.main(["--only", "lwf", "--quick", "--out-dir", str(tmp_path)])
    assert [r["ok"] for r in results] == [True]
    summary = json.loads((tmp_path / "run_all.json").read_text())
    assert summary["runs"][0]["name"] == "lwf" and (tmp_path / "bench_lwf.json").exists()
    with pytest.raises(SystemExit):
        run_all_mod.main(["--only", "nope"])


# ----------------------------------------------------------------------------- engine
def test_run_simulation_deprecation_is_dropped_and_nothing_else() -> None:
    from simulations.noise import flower_logs_once

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    flwr_logger, collect = logging.getLogger("flwr"), Collect(logging.WARNING)
    level = flwr_logger.level  # the benchmarks quieten Flower to ERROR for their runs
    flwr_logger.setLevel(logging.WARNING)
    flwr_logger.addHandler(collect)
    try:
        with flower_logs_once():
            flwr_logger.warning(
                "DEPRECATED FEATURE: %s", "The `run_simulation` function is deprecated"
            )
            flwr_logger.warning("something else happened")
        flwr_logger.warning("DEPRECATED FEATURE: %s", "`run_simulation` is deprecated")
    finally:
        flwr_logger.removeHandler(collect)
        flwr_logger.setLevel(level)
    assert seen == [
        "something else happened",
        "DEPRECATED FEATURE: `run_simulation` is deprecated",  # outside the call: shown
    ]
    assert not flwr_logger.filters
