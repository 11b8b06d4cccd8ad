"""benchmarks.bench_explain: one command writes per-round explanations, reliability, saliency."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import bench_explain


@pytest.mark.slow
def test_tiny_run_writes_every_artifact(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "explain"
    payload = bench_explain.main(
        [
            "--clients", "4", "--rounds", "2", "--byzantine", "0.25", "--local-epochs", "1",
            "--student-epochs", "1", "--shapley", "2", "--saliency-samples", "16",
            "--out-dir", str(out),
        ]
    )  # fmt: skip
    for name in ("round_1.json", "round_2.json", "round_1.png", "round_2.png", "saliency.png"):
        assert (out / name).stat().st_size > 0, name
    round2 = json.loads((out / "round_2.json").read_text())
    assert round2["round"] == 2 and len(round2["clients"]) == 4
    assert len(round2["samples"]["label"]) == len(round2["samples"]["driver"]) > 0
    assert payload["setting"]["attackers"] == [c for c in round2["clients"] if c.endswith("*")]
    assert len(payload["setting"]["attackers"]) == 1
    reliability = json.loads((out / "reliability.json").read_text())
    assert reliability["rounds"] == 2 and len(reliability) == 5  # rounds + 4 clients
    assert "| client |" in capsys.readouterr().out
