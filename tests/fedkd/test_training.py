"""Tests for fedkd.training: learning works, distillation moves the student, evaluation is exact."""

from __future__ import annotations

import math
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from fedkd import training
from fedkd.kd import KDSpec
from fedkd.training import (
    EvalResult,
    TrainConfig,
    distill,
    evaluate,
    iterate_minibatches,
    make_optimizer,
    predict_logits,
    predict_probs,
    resolve_device,
    seed_everything,
    train_supervised,
)


def blobs(seed: int, n_per_class: int = 50, classes: int = 4, dim: int = 6, noise_seed: int = 0):
    """Well-separated Gaussian blobs (centers from ``seed``, noise from ``noise_seed``)."""
    centers = torch.randn(classes, dim, generator=torch.Generator().manual_seed(seed)) * 4
    y = torch.arange(classes).repeat_interleave(n_per_class)
    g = torch.Generator().manual_seed(1000 + noise_seed)
    x = centers[y] + torch.randn(len(y), dim, generator=g) * 0.5
    return x, y


def mlp(seed: int, dim: int = 6, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.ReLU(), nn.Linear(16, classes))


# --------------------------------------------------------------------------- config


def test_train_config_defaults_are_valid():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.optimizer) == (1, 32, "sgd")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", 1.5),
        ("epochs", True),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("optimizer", "rmsprop"),
        ("momentum", 1.0),
        ("momentum", -0.1),
        ("weight_decay", -1e-4),
        ("label_smoothing", 1.0),
        ("label_smoothing", -0.1),
    ],
)
def test_train_config_rejects_bad_fields(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field}"):
        TrainConfig(**{field: value})


# --------------------------------------------------------------------------- setup helpers


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("banana")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_seed_everything_reseeds_all_generators():
    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(123)
    first = draw()
    seed_everything(123)
    assert draw() == first
    seed_everything(124)
    assert draw() != first


def test_make_optimizer_builds_configured_optimizers():
    model = nn.Linear(3, 2)
    sgd = make_optimizer(model, TrainConfig(lr=0.1, momentum=0.5, weight_decay=1e-3))
    assert isinstance(sgd, torch.optim.SGD)
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.1, 0.5, 1e-3)
    adam = make_optimizer(model, TrainConfig(optimizer="adam", lr=1e-3))
    assert isinstance(adam, torch.optim.Adam)
    model.weight.requires_grad_(False)
    assert len(make_optimizer(model, TrainConfig()).param_groups[0]["params"]) == 1
    model.bias.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        make_optimizer(model, TrainConfig())


def test_iterate_minibatches_covers_each_index_once():
    batches = list(iterate_minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert [len(b) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat(batches).tolist()) == list(range(10))
    again = list(iterate_minibatches(10, 4, torch.Generator().manual_seed(0)))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    ordered = torch.cat(list(iterate_minibatches(10, 4, None, shuffle=False)))
    assert ordered.tolist() == list(range(10))
    assert list(iterate_minibatches(0, 4, None)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(iterate_minibatches(10, 0, None))


# --------------------------------------------------------------------------- training


def test_train_supervised_learns_a_separable_problem():
    x, y = blobs(0)
    model = mlp(0)
    before = evaluate(model, x, y, num_classes=4).accuracy
    cfg = TrainConfig(epochs=10, batch_size=16, lr=0.05)
    gen = torch.Generator().manual_seed(0)
    first_loss = train_supervised(model, x, y, TrainConfig(batch_size=16), generator=gen)
    last_loss = train_supervised(model, x, y, cfg, generator=gen)
    x_test, y_test = blobs(0, n_per_class=100, noise_seed=1)  # same centers, fresh noise
    after = evaluate(model, x_test, y_test, num_classes=4).accuracy
    assert after > 0.95  # chance is 0.25; untrained nets score <= 0.6 over seeds 0-9
    assert after > before + 0.3
    assert math.isfinite(first_loss) and last_loss < 0.5 * first_loss


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_training_is_deterministic_given_seed(optimizer):
    x, y = blobs(1)
    cfg = TrainConfig(epochs=2, batch_size=8, optimizer=optimizer, lr=0.01)

    def run(gen_seed: int) -> list[torch.Tensor]:
        model = mlp(seed=3)
        train_supervised(model, x, y, cfg, generator=torch.Generator().manual_seed(gen_seed))
        return [p.detach().clone() for p in model.parameters()]

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_passed_optimizer_keeps_its_state_across_calls():
    x, y = blobs(2)
    model = mlp(0)
    cfg = TrainConfig(batch_size=50)
    opt = make_optimizer(model, cfg)
    train_supervised(model, x, y, cfg, optimizer=opt)
    buffers = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]
    train_supervised(model, x, y, cfg, optimizer=opt)
    assert all(
        not torch.equal(b, opt.state[p]["momentum_buffer"])
        for b, p in zip(buffers, model.parameters(), strict=True)
    )


def test_train_supervised_rejects_bad_labels_and_shapes():
    x, y = blobs(3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        train_supervised(mlp(0, classes=3), x, y, TrainConfig())  # labels go up to 3
    with pytest.raises(ValueError, match="rows"):
        train_supervised(mlp(0), x, y[:-1], TrainConfig())
    with pytest.raises(ValueError, match="0 rows"):
        train_supervised(mlp(0), x[:0], y[:0], TrainConfig())


def test_train_supervised_reports_divergence():
    x, y = blobs(4)
    with pytest.raises(RuntimeError, match="diverged"):
        train_supervised(mlp(0), x * 1e38, y, TrainConfig())


def test_train_supervised_moves_model_but_not_data():
    x, y = blobs(5)
    model = mlp(0)
    loss = train_supervised(model, x, y, TrainConfig(), device="cpu")
    assert math.isfinite(loss) and x.device.type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_keeps_data_on_cpu():
    x, y = blobs(6)
    model = mlp(0)
    train_supervised(model, x, y, TrainConfig(epochs=5), device="cuda")
    assert next(model.parameters()).device.type == "cuda" and x.device.type == "cpu"
    logits = predict_logits(model, x)
    assert logits.device.type == "cpu" and logits.dtype == torch.float32
    assert evaluate(model, x, y, num_classes=4).accuracy > 0.9


# --------------------------------------------------------------------------- distillation


def mean_kl(p: torch.Tensor, q: torch.Tensor) -> float:
    return float((p * (p.log() - q.log())).sum(1).mean())


@pytest.mark.parametrize("divergence", ["kl", "mse"])
def test_distill_moves_student_toward_teacher(divergence):
    x, y = blobs(7)
    teacher_model = mlp(1)
    train_supervised(teacher_model, x, y, TrainConfig(epochs=5), generator=torch.Generator())
    t = 3.0
    teacher = predict_probs(teacher_model, x, temperature=t)  # sent already softened
    student = mlp(2)
    spec = KDSpec(temperature=t, divergence=divergence)
    before = mean_kl(teacher, predict_probs(student, x, temperature=t))
    cfg = TrainConfig(epochs=30, batch_size=32, optimizer="adam", lr=1e-2)
    loss = distill(student, x, teacher, spec, cfg, generator=torch.Generator().manual_seed(0))
    after = mean_kl(teacher, predict_probs(student, x, temperature=t))
    assert math.isfinite(loss)
    assert after < 0.1 * before  # measured <= 0.013 over seeds 0-9
    agree = predict_logits(student, x).argmax(1) == predict_logits(teacher_model, x).argmax(1)
    assert agree.float().mean() > 0.9


def test_distill_from_teacher_logits_and_bad_teacher():
    x, _ = blobs(8)
    teacher_logits = predict_logits(mlp(1), x)
    student = mlp(2)
    loss = distill(
        student,
        x,
        teacher_logits,
        KDSpec(),
        TrainConfig(),
        teacher_is_probs=False,
        teacher_temperature=None,
    )
    assert math.isfinite(loss)
    with pytest.raises(ValueError, match="negative"):
        distill(student, x, teacher_logits, KDSpec(), TrainConfig())  # logits sent as probs
    with pytest.raises(ValueError, match="rows"):
        distill(student, x, teacher_logits[:-1], KDSpec(), TrainConfig())


# --------------------------------------------------------------------------- prediction


def test_predict_logits_batches_restore_mode_and_return_cpu_float32():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)).double()
    model.train()
    x = torch.randn(10, 6, dtype=torch.float64)
    out = predict_logits(model, x, batch_size=3)
    assert model.training  # mode restored
    assert out.shape == (10, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert not out.requires_grad and not out.is_inference()
    model.eval()
    with torch.no_grad():
        full = model(x).float()
    torch.testing.assert_close(out, full)  # eval mode: dropout off, batching exact
    assert predict_logits(model, x[:0]).shape == (0, 3)


def test_predict_probs_is_softmax_of_logits_over_t():
    x, _ = blobs(9)
    model = mlp(4)
    logits = predict_logits(model, x).double().numpy()
    for t in (1.0, 2.5):
        probs = predict_probs(model, x, temperature=t, batch_size=7)
        z = logits / t
        ref = np.exp(z - z.max(1, keepdims=True))
        ref /= ref.sum(1, keepdims=True)
        np.testing.assert_allclose(probs.numpy(), ref, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(probs.sum(1).numpy(), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        predict_probs(model, x, temperature=0.0)


# --------------------------------------------------------------------------- evaluation


def fixed_model() -> nn.Module:
    """Logits = x itself (3 classes): the prediction is the argmax of the input."""
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    return model


def test_evaluate_matches_hand_computation():
    x = torch.tensor(
        [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.0]]
    )
    y = torch.tensor([0, 1, 1, 0, 1])  # predictions 0, 1, 0, 2, 1
    result = evaluate(fixed_model(), x, y, num_classes=3, batch_size=2)
    assert isinstance(result, EvalResult)
    assert result.num_examples == 5
    assert result.accuracy == pytest.approx(3 / 5)
    # Class 0: rows 0 (right), 3 (wrong) -> 1/2. Class 1: rows 1, 2, 4 -> 2/3. Class 2: absent.
    assert result.per_class_accuracy[:2] == pytest.approx([0.5, 2 / 3])
    assert math.isnan(result.per_class_accuracy[2])
    xs = x.double().numpy()
    logp = xs - np.log(np.exp(xs).sum(1, keepdims=True))
    assert result.loss == pytest.approx(-logp[np.arange(5), y.numpy()].mean(), rel=1e-6)


def test_evaluate_rejects_bad_inputs():
    x = torch.eye(3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        evaluate(fixed_model(), x, torch.tensor([0, 1, 3]), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(fixed_model(), x, torch.tensor([0, 1, 2]), num_classes=5)
    with pytest.raises(ValueError, match="empty"):
        evaluate(fixed_model(), x[:0], torch.tensor([], dtype=torch.long), num_classes=3)
    with pytest.raises(ValueError, match="rows"):
        evaluate(fixed_model(), x, torch.tensor([0, 1]), num_classes=3)


def test_import_pulls_in_no_federated_stack():
    code = (
        f"import sys, {training.__name__}; "
        "bad = [m for m in ('flwr', 'ray', 'hydra', 'omegaconf') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_auto_threads_follow_the_worker_reservation(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedkd.training import resolve_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert resolve_threads(0) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # what Ray sets for client_cpus=3
    assert resolve_threads(0) == 3
    assert resolve_threads(2) == 2  # an explicit count wins
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert resolve_threads(0) == 1


def test_train_with_teacher_fits_private_labels_and_moves_toward_the_teacher() -> None:
    """Joint co-distillation: the private labels are learned and, on public rows, the model's
    predictions move toward a teacher that disagrees with what the private data alone teaches."""
    from fedkd.kd import KDSpec
    from fedkd.training import predict_probs, train_with_teacher

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] > 0).long()  # classes 0 and 1 only
    public = torch.randn(64, 6, generator=g)
    public[:, 1] += 4.0  # a region the private data never covers: both can be learned
    teacher = torch.zeros(64, 3)
    teacher[:, 2] = 1.0  # the teacher says "class 2", which the private data never shows

    def trained(lam: float) -> torch.nn.Module:
        torch.manual_seed(0)
        model = torch.nn.Linear(6, 3)
        train_with_teacher(
            model,
            x,
            y,
            public,
            teacher,
            KDSpec(temperature=1.0),
            TrainConfig(epochs=30, batch_size=16, lr=0.1),
            lam=lam,
            generator=torch.Generator().manual_seed(1),
        )
        return model

    alone, joint = trained(0.0), trained(1.0)
    for model in (alone, joint):
        assert (model(x).argmax(1) == y).float().mean() >= 0.9
    assert (
        predict_probs(joint, public)[:, 2].mean() > predict_probs(alone, public)[:, 2].mean() + 0.3
    )
    with pytest.raises(ValueError, match="lam"):
        train_with_teacher(alone, x, y, public, teacher, KDSpec(), TrainConfig(), lam=-1.0)
