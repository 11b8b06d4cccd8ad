"""The seed texts' loss formulas in fedkd.kd, each against an independent NumPy reference.

The references are written as plain per-row loops in float64 (no shared code with the torch
implementation), so a wrong axis, sign or weight in either shows up as a mismatch.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedkd.kd import (
    FeatureHintLoss,
    KDSpec,
    bidirectional_kl_loss,
    cosine_angle_loss,
    distillation_loss,
    hinge_distillation_loss,
)

# --------------------------------------------------------------------------- NumPy references


def ref_hinge(z: np.ndarray, teacher: np.ndarray, margin: float, aggregate: str) -> np.ndarray:
    rows = []
    for zi, ti in zip(z, teacher, strict=True):
        c = int(np.argmax(ti))
        viol = [max(0.0, margin - (zi[c] - zi[j])) for j in range(len(zi)) if j != c]
        rows.append(sum(viol) if aggregate == "sum" else max(viol))
    return np.array(rows)


def ref_softmax_row(z: np.ndarray, t: float) -> np.ndarray:
    e = np.exp((z - z.max()) / t)
    return e / e.sum()


def ref_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0))


def ref_bidirectional(
    z: np.ndarray, teacher_logits: np.ndarray, lam: float, t: float, t2: bool
) -> np.ndarray:
    out = []
    for zi, ti in zip(z, teacher_logits, strict=True):
        q = ref_softmax_row(zi, t)
        p = ref_softmax_row(ti, t)
        value = lam * ref_kl(p, q) + ref_kl(q, p)
        out.append(value * (t * t if t2 else 1.0))
    return np.array(out)


def ref_angle(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    out = []
    for si, ti in zip(s.reshape(len(s), -1), t.reshape(len(t), -1), strict=True):
        cos = float(np.dot(si, ti) / (np.linalg.norm(si) * np.linalg.norm(ti)))
        out.append(math.acos(min(1.0, max(-1.0, cos))))
    return np.array(out)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    student = torch.randn(16, 7, generator=g, dtype=torch.float64) * 2
    teacher = torch.randn(16, 7, generator=g, dtype=torch.float64) * 3
    return student, teacher


# --------------------------------------------------------------------------- hinge


@pytest.mark.parametrize("aggregate", ["sum", "max"])
@pytest.mark.parametrize("margin", [0.0, 0.5, 2.0])
def test_hinge_matches_numpy(batch, aggregate, margin):
    student, teacher = batch
    rows = hinge_distillation_loss(student, teacher, margin, aggregate=aggregate, reduction="none")
    expected = ref_hinge(student.numpy(), teacher.numpy(), margin, aggregate)
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-12, atol=1e-12)
    mean = hinge_distillation_loss(student, teacher, margin, aggregate=aggregate)
    total = hinge_distillation_loss(student, teacher, margin, aggregate=aggregate, reduction="sum")
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-12)
    assert float(total) == pytest.approx(expected.sum(), rel=1e-12)


def test_hinge_is_zero_once_margin_holds_and_uses_teacher_argmax():
    teacher = torch.softmax(torch.tensor([[0.1, 3.0, 0.2], [2.0, 0.0, 0.0]]), dim=1)
    agree = torch.tensor([[0.0, 5.0, 0.0], [4.0, 0.0, 1.0]])  # gap >= 3 on the teacher's class
    assert float(hinge_distillation_loss(agree, teacher, 2.0, teacher_is_probs=True)) == 0.0
    disagree = torch.tensor([[5.0, 0.0, 0.0], [4.0, 0.0, 1.0]])
    rows = hinge_distillation_loss(disagree, teacher, 2.0, teacher_is_probs=True, reduction="none")
    # row 0: target 1 at 0; violations 2-(0-5)=7 (class 0), 2-(0-0)=2 (class 2)
    assert rows.tolist() == [9.0, 0.0]


def test_hinge_gradient_pushes_target_up_and_violators_down():
    student = torch.tensor([[1.0, 0.0, 0.9]], requires_grad=True)
    teacher = torch.tensor([[0.0, 5.0, 0.0]])
    hinge_distillation_loss(student, teacher, 1.0).backward()
    grad = student.grad
    assert grad is not None
    assert grad[0, 1] < 0  # descending raises the teacher's class
    assert grad[0, 0] > 0 and grad[0, 2] > 0
    assert teacher.grad is None


def test_hinge_rejects_bad_arguments(batch):
    student, teacher = batch
    with pytest.raises(ValueError, match="margin"):
        hinge_distillation_loss(student, teacher, -1.0)
    with pytest.raises(ValueError, match="aggregate"):
        hinge_distillation_loss(student, teacher, aggregate="mean")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative entries"):  # logits passed as probabilities
        hinge_distillation_loss(student, teacher, teacher_is_probs=True)
    with pytest.raises(ValueError, match="same shape"):
        hinge_distillation_loss(student, teacher[:, :3])


# --------------------------------------------------------------------------- bidirectional KL


@pytest.mark.parametrize("t2", [True, False])
@pytest.mark.parametrize(("lam", "t"), [(0.0, 1.0), (1.0, 2.0), (3.5, 4.0)])
def test_bidirectional_kl_matches_numpy(batch, lam, t, t2):
    student, teacher = batch
    rows = bidirectional_kl_loss(
        student, teacher, lam, temperature=t, t2_scaling=t2, reduction="none"
    )
    expected = ref_bidirectional(student.numpy(), teacher.numpy(), lam, t, t2)
    np.testing.assert_allclose(rows.numpy(), expected, rtol=1e-9)
    mean = bidirectional_kl_loss(student, teacher, lam, temperature=t, t2_scaling=t2)
    assert float(mean) == pytest.approx(expected.mean(), rel=1e-9)


@pytest.mark.parametrize("balance", [0.2, 0.5, 0.9])
def test_bidirectional_kl_is_the_balance_form_rescaled(batch, balance):
    """balance·KL(p‖q) + (1−balance)·KL(q‖p) = (1−balance)·(λ·KL(p‖q) + KL(q‖p)), λ = b/(1−b)."""
    student, teacher = batch
    lam = balance / (1 - balance)
    seed = bidirectional_kl_loss(student, teacher, lam, temperature=2.0)
    today = distillation_loss(
        student, teacher, KDSpec(temperature=2.0, divergence="symmetric_kl", balance=balance)
    )
    assert float(today) == pytest.approx((1 - balance) * float(seed), rel=1e-10)


def test_bidirectional_kl_with_probability_teacher_and_zeros_stays_finite():
    student = torch.randn(4, 5, requires_grad=True)
    teacher = torch.eye(5)[:4]  # one-hot: KL(q‖p) uses the floored teacher log
    loss = bidirectional_kl_loss(
        student, teacher, 2.0, temperature=1.0, teacher_is_probs=True, teacher_temperature=1.0
    )
    loss.backward()
    value = float(loss.detach())
    assert math.isfinite(value) and value > 0
    assert student.grad is not None and torch.isfinite(student.grad).all()


def test_bidirectional_kl_zero_iff_distributions_match(batch):
    _, teacher = batch
    assert float(bidirectional_kl_loss(teacher.clone(), teacher, 3.0)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="lam"):
        bidirectional_kl_loss(teacher, teacher, -0.1)


# --------------------------------------------------------------------------- cosine angle


def test_cosine_angle_matches_numpy():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(12, 4, 3, generator=g, dtype=torch.float64)  # flattened to 12 features
    t = torch.randn(12, 4, 3, generator=g, dtype=torch.float64)
    rows = cosine_angle_loss(s, t, reduction="none")
    np.testing.assert_allclose(rows.numpy(), ref_angle(s.numpy(), t.numpy()), rtol=1e-9)
    assert float(cosine_angle_loss(s, t)) == pytest.approx(ref_angle(s.numpy(), t.numpy()).mean())


def test_cosine_angle_known_angles_and_scale_invariance():
    s = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 3.0], [-2.0, 0.0], [5.0, 5.0]])
    rows = cosine_angle_loss(s, t, reduction="none")
    np.testing.assert_allclose(rows.numpy(), [math.pi / 2, math.pi, 0.0], atol=1e-3)
    scaled = cosine_angle_loss(s * 7.0, t * 0.1, reduction="none")
    torch.testing.assert_close(rows, scaled)


def test_cosine_angle_gradient_is_finite_at_alignment_and_larger_than_one_minus_cos():
    t = torch.tensor([[1.0, 0.0, 0.0]])
    near = torch.tensor([[1.0, 0.05, 0.0]], requires_grad=True)
    cosine_angle_loss(near, t).backward()
    assert near.grad is not None
    angle_grad = near.grad.norm()
    near_cos = near.detach().clone().requires_grad_(True)
    FeatureHintLoss(3, 3, kind="cosine")(near_cos, t).backward()
    assert near_cos.grad is not None
    assert angle_grad > 5 * near_cos.grad.norm()  # 1 − cos flattens near 0; the angle does not
    aligned = t.clone().requires_grad_(True)
    cosine_angle_loss(aligned, t).backward()
    assert aligned.grad is not None and torch.isfinite(aligned.grad).all()


def test_cosine_angle_rejects_bad_inputs():
    with pytest.raises(ValueError, match="equal shape"):
        cosine_angle_loss(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(ValueError, match="non-finite"):
        cosine_angle_loss(torch.full((2, 3), float("nan")), torch.randn(2, 3))
    with pytest.raises(ValueError, match="eps"):
        cosine_angle_loss(torch.randn(2, 3), torch.randn(2, 3), eps=0.0)
