"""Compressing a distilled student on digits: size, accuracy and CPU latency per variant.

    python -m benchmarks.bench_compress            # the table in docs/compression.md (~2 min)
    python -m benchmarks.bench_compress --quick    # smoke run (fewer epochs, fewer timings)

Setting (all in this one run, side by side):

1. A **teacher** (a wide ``cnn``: 64/128 channels, 256 hidden) is trained **centrally** on the
   digits private pool with labels. This stands in for FD's aggregated teacher so that the table
   measures compression, not federation noise.
2. The **student** (``cnn``, 53k parameters) is distilled from it with the KD core (T = 2,
   forward KL) on unlabelled inputs: the public pool plus the private pool's inputs.
3. Each variant is built from that fp32 student and exported to ONNX; accuracy is on the test
   set with onnxruntime (the deployed artifact) and size is the ONNX file a device loads:

   * ``int8 PTQ`` — PT2E post-training quantization calibrated on the public inputs;
   * ``int8 QAT`` — quantization-aware distillation from the fp32 student (KD loss);
   * ``pruned 70% (magnitude)`` — global L1, distilled to recover; dense file, so only the
     DEFLATE size shrinks;
   * ``pruned 50% channels`` — structured, distilled to recover, shrunk to a dense smaller net;
   * ``pruned 50% channels + int8 QAT`` — both.

A second table is the accuracy-size curve of ladder students (:func:`fedkd.models.
student_within`) distilled the same way (SGD at lr 0.02, where 3-block students train).
Latency is the fastest of repeated single-sample calls (batch 1, one thread) in onnxruntime
and in eager PyTorch, plus a 256-row batch per sample in onnxruntime; ratios against the fp32
row of the same run.
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks.common import add_common_args, fmt_ratio, markdown_table, write_json
from fedkd.compress.export import (
    artifact_nbytes,
    deflate_nbytes,
    export_onnx,
    onnx_predict,
    onnx_session,
)
from fedkd.compress.prune import prune_and_distill, sparsity
from fedkd.compress.quantize import quantize_ptq, quantize_qat_distill
from fedkd.data.digits import load_digits_splits
from fedkd.kd import KDSpec
from fedkd.models import build_model, count_parameters, student_within
from fedkd.training import TrainConfig, distill, evaluate, predict_logits, train_supervised

__all__ = ["main", "run"]

BUDGETS = (1_000, 3_000, 10_000, 30_000, 60_000)
"""Parameter budgets of the accuracy-size curve."""


def _interleaved_best(calls: dict[str, Callable[[], Any]], reps: int) -> dict[str, float]:
    """Fastest seconds per call over ``reps``, timing every call once per repetition in turn.

    Interleaving makes the variants share whatever load the (shared, noisy) machine has at
    each moment; the minimum (not the median) is reported because on a box shared with other
    jobs the slower samples measure the neighbours' work, not the model's.
    """
    for fn in calls.values():
        fn()  # warm-up (sessions and kernels initialised)
    times: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(reps):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {key: min(values) for key, values in times.items()}


def _latencies(
    variants: dict[str, tuple[nn.Module, Path]], x: Tensor, reps: int
) -> dict[str, dict[str, float]]:
    """Per variant, per-sample seconds: onnxruntime batch 1, onnxruntime 256-row batch, and
    eager torch batch 1 (one thread each)."""
    one, batch = x[:1], x[:256]
    sessions = {name: onnx_session(path, threads=1) for name, (_, path) in variants.items()}
    calls: dict[str, Callable[[], Any]] = {}
    for name, (model, _) in variants.items():
        calls[f"{name}|ort1"] = functools.partial(onnx_predict, sessions[name], one)
        calls[f"{name}|torch1"] = functools.partial(model, one)
    with torch.inference_mode():
        single = _interleaved_best(calls, reps)
        batched = _interleaved_best(
            {name: functools.partial(onnx_predict, s, batch) for name, s in sessions.items()},
            max(5, reps // 10),
        )
    return {
        name: {
            "ort_batch1_s": single[f"{name}|ort1"],
            "ort_batch256_per_sample_s": batched[name] / batch.shape[0],
            "torch_batch1_s": single[f"{name}|torch1"],
        }
        for name in variants
    }


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean())


def _measure(
    name: str, model: nn.Module, params: int, x_test: Tensor, y_test: Tensor, work: Path
) -> dict[str, Any]:
    path = export_onnx(model, x_test[:2], work / f"{name.replace(' ', '_')}.onnx")
    ort_logits = onnx_predict(path, x_test)
    with torch.inference_mode():
        torch_logits = model(x_test)
    return {
        "variant": name,
        "parameters": params,
        "onnx_bytes": artifact_nbytes(path),
        "deflate_bytes": deflate_nbytes(path),
        "accuracy_onnxruntime": _accuracy(ort_logits, y_test),
        "accuracy_torch": _accuracy(torch_logits, y_test),
        "max_abs_logit_diff_ort_vs_torch": float((ort_logits - torch_logits).abs().max()),
        "onnx_path": path,
    }


def _distil_student(
    student: nn.Module,
    inputs: Tensor,
    teacher_logits: Tensor,
    epochs: int,
    seed: int,
    lr: float = 0.05,
) -> nn.Module:
    distill(
        student,
        inputs,
        teacher_logits,
        KDSpec(temperature=2.0),
        TrainConfig(epochs=epochs, batch_size=32, lr=lr),
        generator=torch.Generator().manual_seed(seed),
        teacher_is_probs=False,
        teacher_temperature=None,
    )
    return student.eval()


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build every variant, measure it, return the JSON payload."""
    torch.set_num_threads(1)
    quick = args.quick
    reps = 50 if quick else args.latency_reps
    splits = load_digits_splits(seed=args.seed)
    shape, classes = splits.input_shape, splits.num_classes
    x_test, y_test = splits.test_x, splits.test_y

    torch.manual_seed(args.seed)
    teacher = build_model("cnn", shape, classes, channels=(64, 128), hidden=256)
    train_supervised(
        teacher,
        splits.train_x,
        splits.train_y,
        TrainConfig(epochs=5 if quick else args.teacher_epochs, lr=0.05),
        generator=torch.Generator().manual_seed(args.seed),
    )
    teacher_acc = evaluate(teacher, x_test, y_test, num_classes=classes).accuracy
    transfer = torch.cat([splits.public_x, splits.train_x])  # unlabelled inputs
    teacher_logits = predict_logits(teacher, transfer)
    teacher_probs = torch.softmax(teacher_logits / 2.0, dim=1)
    spec = KDSpec(temperature=2.0)
    s_epochs = 5 if quick else args.student_epochs
    r_epochs = 2 if quick else args.recover_epochs
    gen = torch.Generator().manual_seed(args.seed)
    recover = TrainConfig(epochs=r_epochs, batch_size=32, lr=0.01)

    torch.manual_seed(args.seed)
    student = _distil_student(
        build_model("cnn", shape, classes), transfer, teacher_logits, s_epochs, args.seed
    )
    n_student = count_parameters(student)
    ptq = quantize_ptq(student, splits.public_x)
    qat = quantize_qat_distill(student, transfer, teacher_probs, spec, recover, generator=gen)
    magnitude = prune_and_distill(
        student, transfer, teacher_probs, spec, recover, amount=0.7, generator=gen
    )
    channels = prune_and_distill(
        student,
        transfer,
        teacher_probs,
        spec,
        TrainConfig(epochs=2 * r_epochs, batch_size=32, lr=0.02),
        amount=0.5,
        kind="structured",
        generator=gen,
    )
    channels_qat = quantize_qat_distill(
        channels, transfer, teacher_probs, spec, recover, generator=gen
    )
    n_channels = count_parameters(channels)
    variants: list[tuple[str, nn.Module, int]] = [
        ("fp32", student, n_student),
        ("int8 PTQ", ptq, n_student),
        ("int8 QAT", qat, n_student),
        (f"pruned 70% magnitude ({sparsity(magnitude):.0%} zeros)", magnitude, n_student),
        ("pruned 50% channels", channels, n_channels),
        ("pruned 50% channels + int8 QAT", channels_qat, n_channels),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [_measure(n, m, p, x_test, y_test, work) for n, m, p in variants]
        timed = _latencies(
            {
                r["variant"]: (m, r["onnx_path"])
                for r, (_, m, _) in zip(rows, variants, strict=True)
            },
            x_test,
            reps,
        )
        for r in rows:
            r.update(timed[r["variant"]])
            r["onnx_path"] = Path(r["onnx_path"]).name
        curve = []
        for budget in (BUDGETS[1], BUDGETS[3]) if quick else BUDGETS:
            name, kwargs, n = student_within(budget, shape, classes)
            torch.manual_seed(args.seed)
            small = _distil_student(
                build_model(name, shape, classes, **kwargs),
                transfer,
                teacher_logits,
                s_epochs,
                args.seed,
                lr=0.02,  # 3-block students without normalisation die at 0.05 (all-chance)
            )
            small_q = quantize_ptq(small, splits.public_x)
            path = export_onnx(small_q, x_test[:2], work / f"curve_{budget}.onnx")
            curve.append(
                {
                    "budget": budget,
                    "model": name,
                    "kwargs": kwargs,
                    "parameters": n,
                    "accuracy_fp32": evaluate(small, x_test, y_test, num_classes=classes).accuracy,
                    "accuracy_int8_ptq": _accuracy(onnx_predict(path, x_test), y_test),
                    "int8_onnx_bytes": artifact_nbytes(path),
                }
            )
    return {
        "benchmark": "bench_compress",
        "quick": quick,
        "torch": torch.__version__,
        "setting": {
            "dataset": "digits",
            "teacher": "cnn channels=(64,128) hidden=256, trained centrally with labels",
            "teacher_test_accuracy": teacher_acc,
            "student": "cnn (default)",
            "transfer_inputs": int(transfer.shape[0]),
            "test_samples": int(x_test.shape[0]),
            "student_epochs": s_epochs,
            "recover_epochs": r_epochs,
            "threads": 1,
            "latency_reps": reps,
        },
        "rows": rows,
        "curve": curve,
    }


def _tables(payload: dict[str, Any]) -> str:
    rows = payload["rows"]
    base = rows[0]
    table = markdown_table(
        [
            "variant",
            "params",
            "ONNX bytes",
            "smaller",
            "DEFLATE bytes",
            "smaller (DEFLATE)",
            "test acc (ORT)",
            "Δ pts",
            "µs/sample ORT b=1",
            "µs/sample ORT b=256",
            "µs/sample torch b=1",
        ],
        [
            [
                r["variant"],
                r["parameters"],
                r["onnx_bytes"],
                fmt_ratio(base["onnx_bytes"], r["onnx_bytes"]),
                r["deflate_bytes"],
                fmt_ratio(base["onnx_bytes"], r["deflate_bytes"]),
                f"{r['accuracy_onnxruntime']:.4f}",
                f"{100 * (r['accuracy_onnxruntime'] - base['accuracy_onnxruntime']):+.1f}",
                f"{1e6 * r['ort_batch1_s']:.1f}",
                f"{1e6 * r['ort_batch256_per_sample_s']:.2f}",
                f"{1e6 * r['torch_batch1_s']:.1f}",
            ]
            for r in rows
        ],
    )
    curve = markdown_table(
        ["budget", "student", "params", "fp32 acc", "int8 PTQ acc (ORT)", "int8 ONNX bytes"],
        [
            [
                c["budget"],
                f"{c['model']} {c['kwargs']}",
                c["parameters"],
                f"{c['accuracy_fp32']:.4f}",
                f"{c['accuracy_int8_ptq']:.4f}",
                c["int8_onnx_bytes"],
            ]
            for c in payload["curve"]
        ],
    )
    s = payload["setting"]
    head = (
        f"teacher test accuracy {s['teacher_test_accuracy']:.4f} ({s['teacher']}); "
        f"{s['test_samples']} test samples (1 sample = {100 / s['test_samples']:.2f} pts)"
    )
    return f"{head}\n\n{table}\n\naccuracy-size curve (student_within):\n\n{curve}"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, "bench_compress")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-epochs", type=int, default=40)
    parser.add_argument("--student-epochs", type=int, default=40)
    parser.add_argument("--recover-epochs", type=int, default=3)
    parser.add_argument("--latency-reps", type=int, default=300)
    args = parser.parse_args(argv)
    payload = run(args)
    write_json(args.out, payload)
    print(_tables(payload))
    print(f"\nwrote {args.out}")
    return payload


if __name__ == "__main__":
    main()
