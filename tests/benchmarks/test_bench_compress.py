"""benchmarks.bench_compress: the quick run builds every variant and meets the size goal."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torchao")
pytest.importorskip("onnxruntime")

from benchmarks import bench_compress


@pytest.mark.slow
def test_quick_run_table_and_goal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench_compress.json"
    payload = bench_compress.main(["--quick", "--out", str(out)])
    assert out.exists()
    rows = {r["variant"].split(" (")[0]: r for r in payload["rows"]}
    fp32 = rows["fp32"]
    assert fp32["accuracy_onnxruntime"] > 0.85  # a real, distilled student
    for name, row in rows.items():
        # the deployed artifact computes what the torch model computes
        assert row["accuracy_onnxruntime"] == pytest.approx(row["accuracy_torch"], abs=0.01), name
    assert fp32["onnx_bytes"] / rows["int8 PTQ"]["onnx_bytes"] > 3.3
    both = rows["pruned 50% channels + int8 QAT"]
    assert fp32["onnx_bytes"] / both["onnx_bytes"] >= 4.0
    assert both["accuracy_onnxruntime"] >= fp32["accuracy_onnxruntime"] - 0.03
    assert len(payload["curve"]) == 2
    assert payload["curve"][0]["parameters"] < payload["curve"][1]["parameters"]
    assert "| fp32 |" in capsys.readouterr().out
