"""bench_gpu on a machine without a GPU: variant names, the configs a GPU run would use (kept
equal to conf/simulation/ray_gpu.yaml), "no GPU" hardware and memory figures, the time-bounded
isolation, the summary and docs block, and the whole command on the CPU (GPU variants
skipped, or refused with --device cuda). Nothing here pretends to be a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from benchmarks import bench_gpu as G

ROOT = Path(__file__).resolve().parents[2]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA answers")


def test_variant_names() -> None:
    cpu, gpu = G.parse_variant("cpu"), G.parse_variant("gpu")
    assert (cpu.gpu, cpu.gpu_share, cpu.per_message, cpu.cohort) == (False, 0.0, 1, "")
    assert (gpu.gpu, gpu.gpu_share, gpu.per_message) == (True, 0.25, 1)
    vec = G.parse_variant("gpu16-k50-vec")
    assert (vec.gpu_share, vec.per_message, vec.vectorize, vec.cohort) == (
        1 / 16,
        50,
        True,
        "-k50-vec",
    )
    assert G.parse_variant("gpu", gpu_share=0.5).gpu_share == 0.5
    assert G.parse_variant("cpu-k10").cohort == G.parse_variant("gpu4-k10").cohort == "-k10"
    for bad in ("tpu", "cpu4", "gpu0", "gpu-vec", "gpu-k1-vec", "gpu-k50-vec-x"):
        with pytest.raises(ValueError):
            G.parse_variant(bad)


def test_plan_keeps_each_gpu_run_next_to_its_cpu_pair() -> None:
    assert G.plan([100, 1000], ["cpu", "gpu", "cpu-k50-vec", "gpu-k50-vec"]) == [
        (100, "cpu"),
        (100, "gpu"),
        (1000, "cpu"),
        (1000, "gpu"),
        (100, "cpu-k50-vec"),
        (100, "gpu-k50-vec"),
        (1000, "cpu-k50-vec"),
        (1000, "gpu-k50-vec"),
    ]


def test_gpu_run_uses_the_ray_gpu_config() -> None:
    """The GPU variant is `simulation=ray_gpu` plus a student on cuda; the CPU one reserves no
    GPU and keeps everything on the CPU."""
    conf = yaml.safe_load((ROOT / "conf/simulation/ray_gpu.yaml").read_text())
    cfg, sim = G.gpu_configs(G.parse_variant("gpu"), 100, 3, gpus=1)
    assert sim.backend == conf["simulation"]["backend"] == "ray"
    assert sim.client_gpus == conf["simulation"]["client_gpus"] == G.DEFAULT_GPU_SHARE
    assert cfg.client_device == conf["fd"]["client_device"] == "auto"
    assert (cfg.device, sim.ray_num_gpus, cfg.num_clients, cfg.min_train_nodes) == (
        "cuda",
        1,
        100,
        100,
    )
    cfg, sim = G.gpu_configs(G.parse_variant("cpu"), 100, 3, gpus=1)
    assert (cfg.device, cfg.client_device, sim.client_gpus, sim.ray_num_gpus) == (
        "cpu",
        "cpu",
        0,
        0,
    )
    cfg, sim = G.gpu_configs(G.parse_variant("gpu16-k50-vec"), 1000, 3, gpus=2, backend="local")
    assert (cfg.num_nodes, cfg.vectorize_cohort, sim.client_gpus, sim.backend) == (
        20,
        True,
        1 / 16,
        "local",
    )


def test_concurrent_workers_follow_ray_resources() -> None:
    gpu, gpu16, cpu = (G.parse_variant(v) for v in ("gpu", "gpu16-k50-vec", "cpu"))
    assert [G.concurrent_workers(v, 16, 1) for v in (gpu, gpu16, cpu)] == [4, 16, 16]
    assert G.concurrent_workers(gpu, 2, 1) == 2 and G.concurrent_workers(gpu, 16, 2) == 8
    assert G.concurrent_workers(gpu, 16, 0) == 1 and G.concurrent_workers(cpu, 16, 0) == 16


def test_nvidia_smi_csv_numbers() -> None:
    text = "81234, 143771\n[N/A], 12\n\n 7 ,8\n"
    assert G.parse_csv_numbers(text) == [[81234.0, 143771.0], [7.0, 8.0]]
    assert G.parse_csv_numbers(None) == []


def test_no_gpu_gives_no_gpu_figures() -> None:
    """Without nvidia-smi every GPU figure is None, not a measured-looking zero; with one
    (a GPU machine) they are numbers."""
    with G.GpuPeak(interval=0.05) as peak:
        pass
    result = peak.result()
    hw = G.describe_hardware({"torch": torch.__version__})
    assert hw["cpu_count"] and hw["cpu_count"] >= 1 and hw["python"]
    assert hw["packages"]["torch"] and hw["packages"]["ray"]
    if shutil.which("nvidia-smi") is None:
        assert all(v is None for k, v in result.items() if k != "gpu_samples")
        assert result["gpu_samples"] == 0
        assert hw["gpus"] == [] and hw["driver"] is None
        assert G.hardware_line(hw).startswith("no GPU, torch ")
    else:
        assert result["gpu_samples"] >= 1 and result["gpu_peak_used_mib"] is not None
        assert hw["gpus"] and hw["driver"]


@NO_CUDA
def test_driver_cuda_memory_is_none_without_cuda() -> None:
    assert G.driver_cuda_memory() == {
        "driver_cuda_max_allocated_mib": None,
        "driver_cuda_max_reserved_mib": None,
    }
    info = G.torch_cuda_info()
    assert (info["cuda_available"], info["cuda_devices"], info["gpus"]) == (False, 0, [])


def test_run_bounded_reports_errors_and_kills_overruns() -> None:
    """An exception comes back as text; an overrun is killed with what it started."""
    failed = G.run_bounded("benchmarks.common:_echo_for_tests", 60, wrong=3)
    assert failed["error"].startswith("TypeError")
    started = time.monotonic()
    died = G.run_bounded("os:_exit", 60, status=3)
    assert died == {"error": "exited with code 3 and no result"}
    assert time.monotonic() - started < 50
    started = time.monotonic()
    # an argument nothing else on the machine uses: `ps` sees every process, not just ours
    slow = G.run_bounded("subprocess:run", 2, args=["sleep", "300.4217"])
    assert slow == {"error": "timed out after 2 s"}
    assert time.monotonic() - started < 60
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "sleep 300.4217" not in ps.splitlines()


def _run(variant: str, clients: int, walls: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "variant": variant,
        "clients": clients,
        "round_seconds": walls,
        "round_cpu_seconds": [w / 2 for w in walls],
        "first_round_total_seconds": walls[0] + 5,
        "rounds": [{"student_accuracy": 0.5, "valid_replies": clients} for _ in walls],
        "peak_tree_rss_mib": 2000.0,
        **extra,
    }


def test_summary_pairs_each_gpu_run_with_its_cpu_run(tmp_path: Path) -> None:
    runs = [
        _run("cpu", 100, [20.0, 2.0, 2.0], workers=16),
        _run(
            "gpu",
            100,
            [30.0, 1.0, 1.0],
            driver_cuda_max_allocated_mib=40.0,
            gpu_peak_over_baseline_mib=3000.0,
            gpu_max_processes=5,
            workers=4,
        ),
        _run("gpu-k50-vec", 100, [30.0, 0.5, 0.5]),  # no CPU pair ran
        {"variant": "cpu", "clients": 1000, "status": "skipped: budget"},
        {"variant": "gpu", "clients": 1000, "status": "error: timed out after 150 s"},
    ]
    rows = G.summarize(runs)
    assert rows[0]["rounds_per_s"] == pytest.approx(0.5) and "speedup_vs_cpu" not in rows[0]
    assert rows[1]["speedup_vs_cpu"] == pytest.approx(2.0)
    assert "speedup_vs_cpu" not in rows[2]
    table = G.markdown(rows)
    assert (
        "| 100 | gpu | 4 | ok | 1.000 | 1.00 | 30.0 | 0.50 | 2.00× | 40 | 3000 | 5 | 2000 | 0.500 |"
        in table
    )
    assert "| 1000 | cpu | — | skipped: budget | — |" in table
    assert "| 1000 | gpu | — | error: timed out after 150 s | — |" in table
    # the docs block: machine line and table between the markers of docs/benchmarks.md
    docs = tmp_path / "benchmarks.md"
    docs.write_text((ROOT / "docs/benchmarks.md").read_text())
    hw = G.describe_hardware({"torch": "2.x"})
    G.render_docs({"hardware": hw, "summary": rows}, ["--from-json", "x.json", "--docs"], docs)
    block = docs.read_text().split("<!-- bench_gpu:begin -->")[1].split("<!-- bench_gpu:end -->")[0]
    assert "`python -m benchmarks.bench_gpu --from-json x.json`" in block
    assert f"Machine: {G.hardware_line(hw)}." in block and "| 100 | gpu | 4 | ok |" in block


@NO_CUDA
def test_device_cuda_without_cuda_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="--device cuda but torch sees no CUDA"):
        G.main(["--device", "cuda", "--quick", "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def test_whole_command_in_process_grid_on_the_cpu(tmp_path: Path) -> None:
    """The command end to end at its smallest (the in-process grid, no Ray): hardware, the
    GPU variant skipped (--device cpu), the CPU run measured, JSON written and re-rendered
    from the file."""
    out = tmp_path / "r.json"
    payload = G.main(
        [
            "--quick",
            "--backend",
            "local",
            "--clients",
            "4",
            "--variants",
            "cpu,gpu",
            "--out",
            str(out),
        ]
    )
    assert payload["skipped_gpu_variants"] == ["gpu"]
    (row,) = payload["summary"]
    assert (row["variant"], row["status"], row["replies"]) == ("cpu", "ok", [4, 4])
    assert row["rounds_per_s"] > 0 and row["driver_cuda_mib"] is None
    saved = json.loads(out.read_text())
    assert saved["complete"] and saved["hardware"]["cpu_count"] >= 1
    assert saved["runs"][0]["round_seconds"]
    assert G.main(["--from-json", str(out)])["summary"] == saved["summary"]


@pytest.mark.slow
def test_whole_command_on_ray_cpu(tmp_path: Path) -> None:
    """The measured path (Flower's Ray engine) with --device cpu: what the CPU half of a GPU
    machine's run does, at 4 clients."""
    payload = G.main(
        ["--quick", "--device", "cpu", "--clients", "4", "--out", str(tmp_path / "r.json")]
    )
    (row,) = payload["summary"]
    assert (row["variant"], row["status"], row["replies"]) == ("cpu", "ok", [4, 4])
    assert payload["runs"][0]["peak_tree_rss_mib"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_figures_on_a_cuda_machine() -> None:
    """On a GPU machine (benchmarks/gpu_check.sh runs the `gpu` tests): torch and nvidia-smi
    name the GPU, and the device-wide sampler sees a CUDA allocation made while it runs."""
    info = G.run_bounded("benchmarks.bench_gpu:torch_cuda_info", 120)
    assert info["cuda_available"] and info["gpus"][0]["name"]
    hw = G.describe_hardware(info)
    assert hw["gpus"] and hw["driver"] and "no GPU" not in G.hardware_line(hw)
    with G.GpuPeak(interval=0.1) as peak:
        block = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB
        time.sleep(1.0)
        del block
    result = peak.result()
    assert result["gpu_samples"] >= 2
    assert result["gpu_peak_over_baseline_mib"] >= 1000
    assert (G.driver_cuda_memory()["driver_cuda_max_allocated_mib"] or 0) >= 1024
