"""fedkd.compress: int8 PT2E quantization, pruning (+ shrink), ONNX export with onnxruntime parity.

Sizes and accuracy margins are checked on small students trained here in a second; the
measured table on digits comes from ``python -m benchmarks.bench_compress``.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedkd.compress import _deps
from fedkd.compress._deps import CompressionUnavailable, require
from fedkd.compress.export import artifact_nbytes, deflate_nbytes, export_onnx, onnx_predict
from fedkd.compress.prune import (
    finalize,
    magnitude_prune,
    prune_and_distill,
    shrink,
    sparsity,
    structured_prune,
)
from fedkd.compress.quantize import quantize_ptq, quantize_qat_distill
from fedkd.kd import KDSpec
from fedkd.models import build_model, count_parameters
from fedkd.training import TrainConfig, train_supervised


def _installed(*names: str) -> bool:
    try:
        for name in names:
            require(name)
    except CompressionUnavailable:
        return False
    return True


# The optional `compress` extra (in `dev`); pruning needs only torch and runs regardless.
needs_torchao = pytest.mark.skipif(not _installed("torchao"), reason="needs fedkd[compress]")
needs_onnx = pytest.mark.skipif(
    not _installed("onnx", "onnxscript", "onnxruntime"), reason="needs fedkd[compress]"
)


@pytest.fixture(scope="module")
def task() -> tuple[torch.Tensor, torch.Tensor]:
    """Separable 10-class 8x8 'digits': each class lights its own pixel block, plus noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(400) % 10
    x = torch.rand(400, 1, 8, 8, generator=g) * 0.3
    for c in range(10):
        r, col = divmod(c, 4)
        x[y == c, 0, 2 * r : 2 * r + 2, 2 * col : 2 * col + 2] += 1.0
    return x, y


@pytest.fixture(scope="module")
def student(task) -> nn.Module:
    x, y = task
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    train_supervised(
        model, x, y, TrainConfig(epochs=5, lr=0.05), generator=torch.Generator().manual_seed(0)
    )
    return model.eval()


def _acc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --------------------------------------------------------------------------- dependencies


def test_require_names_the_fix_for_missing_or_old_packages(monkeypatch):
    with pytest.raises(CompressionUnavailable, match=r"pip install .*compress"):
        require("a_package_that_does_not_exist_fedkd")
    monkeypatch.setitem(_deps.MIN_VERSIONS, "torch", "99")
    with pytest.raises(CompressionUnavailable, match="older than 99"):
        require("torch")


# --------------------------------------------------------------------------- quantization


@needs_torchao
def test_ptq_keeps_accuracy_and_stores_int8_weights(task, student):
    x, y = task
    q = quantize_ptq(student, x[:200])
    int8 = [b for b in q.state_dict().values() if b.dtype == torch.int8]
    assert sum(b.numel() for b in int8) == sum(
        m.weight.numel() for m in student.modules() if isinstance(m, nn.Conv2d | nn.Linear)
    )
    assert _acc(student, x, y) > 0.95  # the task is learnable, so a drop would show
    assert _acc(q, x, y) >= _acc(student, x, y) - 0.02
    with torch.no_grad():
        ref = student(x)
        diff = (q(x) - ref).abs().max()
    assert 0 < diff < 0.1 * ref.abs().max()  # quantized (not identical) yet close


@needs_torchao
def test_qat_distillation_trains_the_fake_quantized_graph(task, student):
    x, _ = task
    with torch.no_grad():
        teacher = torch.softmax(student(x), dim=1)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    q = quantize_qat_distill(
        student,
        x,
        teacher,
        KDSpec(temperature=1.0),
        TrainConfig(epochs=1, lr=0.01),
        generator=torch.Generator().manual_seed(0),
    )
    for k, v in student.state_dict().items():  # the float student is untouched
        torch.testing.assert_close(v, before[k])
    with torch.no_grad():
        agree = (q(x).argmax(1) == student(x).argmax(1)).float().mean()
    assert agree > 0.97
    assert any(b.dtype == torch.int8 for b in q.state_dict().values())


@needs_torchao
def test_quantize_needs_a_batch_of_two(student):
    with pytest.raises(ValueError, match="at least 2"):
        quantize_ptq(student, torch.rand(1, 1, 8, 8))


# --------------------------------------------------------------------------- pruning


def test_magnitude_prune_hits_the_requested_sparsity_and_survives_distillation(task, student):
    x, y = task
    with torch.no_grad():
        teacher = torch.softmax(student(x), dim=1)
    pruned = prune_and_distill(
        student,
        x,
        teacher,
        KDSpec(temperature=1.0),
        TrainConfig(epochs=2, lr=0.02),
        amount=0.6,
        generator=torch.Generator().manual_seed(0),
    )
    assert sparsity(pruned) == pytest.approx(0.6, abs=1e-3)  # zeros kept through training
    assert not any(hasattr(m, "weight_mask") for m in pruned.modules())
    assert sparsity(student) == 0.0
    assert _acc(pruned, x, y) >= _acc(student, x, y) - 0.03


def test_structured_prune_then_shrink_removes_channels_exactly():
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10)
    structured_prune(model, 0.5)
    with pytest.raises(ValueError, match="finalize"):
        shrink(model)  # type: ignore[arg-type]
    finalize(model)
    small = shrink(model)  # type: ignore[arg-type]
    x = torch.rand(16, 1, 8, 8)
    torch.testing.assert_close(small(x), model(x), atol=1e-5, rtol=1e-5)
    convs = [m for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32]
    assert small.feature_dim == 64 and small.head.in_features == 64
    assert count_parameters(small) < count_parameters(model) / 3


def test_structured_pruning_of_an_mlp_and_unsupported_models():
    torch.manual_seed(0)
    mlp = build_model("scaled_mlp", (1, 8, 8), 10, width=32, depth=2)
    small = shrink(finalize(structured_prune(mlp, 0.25)))  # type: ignore[arg-type]
    x = torch.rand(8, 1, 8, 8)
    torch.testing.assert_close(small(x), mlp(x), atol=1e-5, rtol=1e-5)
    assert [m.out_features for m in small.modules() if isinstance(m, nn.Linear)] == [24, 24, 10]
    with pytest.raises(NotImplementedError):
        shrink(build_model("resnet8", (1, 8, 8), 10))


def test_prune_rejects_bad_amounts(student):
    with pytest.raises(ValueError, match="amount"):
        magnitude_prune(build_model("mlp", (4,), 2), 1.0)
    with pytest.raises(ValueError, match="kind"):
        prune_and_distill(
            student,
            torch.rand(4, 1, 8, 8),
            torch.full((4, 10), 0.1),
            KDSpec(),
            TrainConfig(),
            amount=0.5,
            kind="random",  # type: ignore[arg-type]
        )


# --------------------------------------------------------------------------- ONNX export


@needs_onnx
def test_onnx_float_student_matches_torch(tmp_path, task, student):
    x, _ = task
    path = export_onnx(student, x[:2], tmp_path / "student.onnx")
    out = onnx_predict(path, x[:37])  # a batch size never seen at export: dynamic batch
    with torch.no_grad():
        ref = student(x[:37])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    single = onnx_predict(path, x[:1])
    torch.testing.assert_close(single, ref[:1], atol=1e-5, rtol=1e-5)


@needs_torchao
@needs_onnx
def test_onnx_int8_student_matches_torch_and_is_smaller(tmp_path, task, student):
    x, y = task
    q = quantize_ptq(student, x[:200])
    fp32 = export_onnx(student, x[:2], tmp_path / "fp32.onnx")
    int8 = export_onnx(q, x[:2], tmp_path / "int8.onnx")
    out = onnx_predict(int8, x)
    with torch.no_grad():
        ref = q(x)
    # onnxruntime runs real int8 kernels; rounding of requantized activations may differ by a
    # quantization step, so agreement is judged on logits loosely (relative to their scale:
    # measured 0.1-0.2 % of the largest logit) and on decisions tightly.
    assert (out - ref).abs().max() < 0.01 * ref.abs().max()
    assert float((out.argmax(1) == ref.argmax(1)).float().mean()) > 0.99
    assert float((out.argmax(1) == y).float().mean()) > 0.95
    ratio = artifact_nbytes(fp32) / artifact_nbytes(int8)
    assert 3.0 < ratio < 4.2  # int8 weights: ~4x, less the graph and the fp32 biases/scales
    assert deflate_nbytes(int8) <= artifact_nbytes(int8)


@needs_onnx
def test_export_strips_provenance_metadata(tmp_path, student):
    x = torch.rand(2, 1, 8, 8)
    lean = export_onnx(student, x, tmp_path / "lean.onnx")
    full = export_onnx(student, x, tmp_path / "full.onnx", strip_metadata=False)
    assert artifact_nbytes(lean) < artifact_nbytes(full)
    torch.testing.assert_close(onnx_predict(lean, x), onnx_predict(full, x))
    with pytest.raises(ValueError, match=">= 2 rows"):
        export_onnx(student, x[:1], tmp_path / "one.onnx")


# --------------------------------------------------------------------------- CLI


def _fake_run(tmp_path, with_teacher: bool):
    """A run directory as fedkd-sim leaves it: run_config.json and the server's checkpoint."""
    import json

    from fedkd.config import FDConfig, to_run_config
    from fedkd.data.registry import load_splits

    cfg = FDConfig(student_model="mlp", seed=0)
    splits = load_splits("digits", seed=0, public_fraction=cfg.public_fraction)
    torch.manual_seed(0)
    student = build_model("mlp", splits.input_shape, splits.num_classes)
    train_supervised(
        student,
        splits.train_x,
        splits.train_y,
        TrainConfig(epochs=8, lr=0.1),
        generator=torch.Generator().manual_seed(0),
    )
    indices = torch.arange(0, len(splits.public_x), 2)
    with torch.no_grad():
        probs = torch.softmax(student(splits.public_x[indices]) / 2.0, dim=1)
    state = {
        "round": 4,
        "student": student.state_dict(),
        "teacher": [probs, indices] if with_teacher else None,
    }
    torch.save(state, tmp_path / "checkpoint.pt")
    (tmp_path / "run_config.json").write_text(json.dumps(to_run_config(cfg)))
    return tmp_path


@needs_torchao
@needs_onnx
@pytest.mark.parametrize(("method", "with_teacher"), [("ptq", True), ("prune", False)])
def test_cli_compresses_a_runs_student(tmp_path, capsys, method, with_teacher):
    from fedkd.compress.cli import main

    run = _fake_run(tmp_path, with_teacher)
    summary = main([str(run), "--method", method, "--epochs", "2"])
    assert (run / "student.onnx").exists() and summary["round"] == 4
    assert summary["fp32_accuracy"] > 0.85
    assert summary["accuracy"] >= summary["fp32_accuracy"] - 0.03
    # a 9.6k-parameter MLP: the graph and fp32 biases weigh more than in the CNN (3.5x)
    assert summary["fp32_bytes"] / summary["bytes"] > (2.8 if method == "ptq" else 4.0)
    assert "smaller than fp32" in capsys.readouterr().out
