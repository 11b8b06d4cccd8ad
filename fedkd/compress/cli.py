"""``python -m fedkd.compress RUN_DIR``: compress a run's distilled student and export it to ONNX.

Reads ``RUN_DIR/checkpoint.pt`` (the server's student and last teacher) and
``RUN_DIR/run_config.json`` (dataset, student architecture, seed; written by ``fedkd-sim``),
then:

* ``--method fp32``  — export the student as is;
* ``--method ptq``   — int8 post-training quantization calibrated on the public inputs;
* ``--method qat``   — int8 quantization-aware distillation against the run's last teacher;
* ``--method prune`` — channel pruning (``--amount``), distillation to recover, shrink, then
  int8 QAT (the smallest student; docs/compression.md).

The recovery steps distil against the last round's teacher on the public samples it covered
(what the server holds; no private data). A checkpoint without a teacher (no round completed)
falls back to the fp32 student's own predictions. Prints the size and test accuracy of the
fp32 and compressed students (both through onnxruntime) and writes ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import torch

from fedkd.compress.export import artifact_nbytes, export_onnx, onnx_predict
from fedkd.config import FDConfig, from_run_config
from fedkd.data.registry import load_splits
from fedkd.models import build_model
from fedkd.training import TrainConfig, predict_probs

__all__ = ["compress_run", "main"]

METHODS = ("fp32", "ptq", "qat", "prune")


def _load(run_dir: Path, run_config: Path | None) -> tuple[FDConfig, dict[str, Any]]:
    cfg_path = run_config if run_config is not None else run_dir / "run_config.json"
    cfg = from_run_config(json.loads(cfg_path.read_text())) if cfg_path.exists() else FDConfig()
    state = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
    return cfg, state


def compress_run(
    run_dir: str | Path,
    out: str | Path,
    *,
    method: str = "ptq",
    amount: float = 0.5,
    epochs: int = 3,
    run_config: str | Path | None = None,
) -> dict[str, Any]:
    """Compress the student of ``run_dir`` with ``method``, write ONNX to ``out``; return a
    summary (bytes and onnxruntime test accuracy of the fp32 and the compressed student)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    cfg, state = _load(Path(run_dir), None if run_config is None else Path(run_config))
    splits = load_splits(cfg.dataset, seed=cfg.seed, public_fraction=cfg.public_fraction)
    student = build_model(cfg.student_model, splits.input_shape, splits.num_classes)
    student.load_state_dict(state["student"])
    student.eval()
    if state.get("teacher") is not None:
        probs, indices = state["teacher"]
        inputs, teacher = splits.public_x[torch.as_tensor(indices).long()], probs.float()
    else:
        inputs = splits.public_x
        teacher = predict_probs(student, inputs, temperature=cfg.temperature)
    spec, recover = cfg.kd_spec(), TrainConfig(epochs=epochs, batch_size=32, lr=0.01)
    gen = torch.Generator().manual_seed(cfg.seed)
    model: torch.nn.Module = student
    if method in ("ptq", "qat", "prune"):
        from fedkd.compress.prune import prune_and_distill
        from fedkd.compress.quantize import quantize_ptq, quantize_qat_distill

        if method == "ptq":
            model = quantize_ptq(student, splits.public_x)
        else:
            base: torch.nn.Module = student
            if method == "prune":
                base = prune_and_distill(
                    student, inputs, teacher, spec, recover, amount=amount, kind="structured",
                    generator=gen,
                )  # fmt: skip
            model = quantize_qat_distill(base, inputs, teacher, spec, recover, generator=gen)
    out_path = export_onnx(model, splits.test_x[:2], out)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_onnx(student, splits.test_x[:2], Path(tmp) / "fp32.onnx")
        fp32_bytes = artifact_nbytes(fp32_path)
        fp32_logits = onnx_predict(fp32_path, splits.test_x)
    logits = onnx_predict(out_path, splits.test_x)
    y = splits.test_y
    return {
        "method": method,
        "out": str(out_path),
        "fp32_bytes": fp32_bytes,
        "bytes": artifact_nbytes(out_path),
        "fp32_accuracy": float((fp32_logits.argmax(1) == y).double().mean()),
        "accuracy": float((logits.argmax(1) == y).double().mean()),
        "round": int(state.get("round", 0)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m fedkd.compress", description=__doc__.splitlines()[0]
    )
    parser.add_argument("run_dir", type=Path, help="run directory with checkpoint.pt")
    parser.add_argument("--method", choices=METHODS, default="ptq")
    parser.add_argument("--out", type=Path, default=None, help="default RUN_DIR/student.onnx")
    parser.add_argument("--amount", type=float, default=0.5, help="channels pruned (prune)")
    parser.add_argument("--epochs", type=int, default=3, help="recovery distillation epochs")
    parser.add_argument("--run-config", type=Path, default=None, help="flat run-config JSON")
    args = parser.parse_args(argv)
    summary = compress_run(
        args.run_dir,
        args.out if args.out is not None else args.run_dir / "student.onnx",
        method=args.method,
        amount=args.amount,
        epochs=args.epochs,
        run_config=args.run_config,
    )
    ratio = summary["fp32_bytes"] / summary["bytes"]
    print(
        f"{summary['method']}: {summary['bytes']} bytes ({ratio:.2f}x smaller than fp32 "
        f"{summary['fp32_bytes']}), test accuracy {summary['accuracy']:.4f} "
        f"(fp32 {summary['fp32_accuracy']:.4f}), round {summary['round']} -> {summary['out']}"
    )
    return summary
