"""Tests for fedkd.kd: values against NumPy references, gradients, stability and every error."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedkd.kd import (
    REVERSE_KL_LOG_FLOOR,
    FeatureHintLoss,
    KDSpec,
    distillation_loss,
    kd_objective,
    log_soft_targets,
    soft_targets,
    validate_distribution,
)

DIVERGENCES = ["kl", "reverse_kl", "symmetric_kl", "soft_ce", "mse"]


# --------------------------------------------------------------------------- NumPy references


def np_softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_row_divergence(p: np.ndarray, q: np.ndarray, divergence: str, balance: float) -> np.ndarray:
    """Per-row reference divergence; 0 log 0 = 0, reverse KL floors log p at 1e-8."""
    with np.errstate(divide="ignore", invalid="ignore"):
        fwd = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0).sum(axis=1)
        rev = (q * (np.log(q) - np.log(np.maximum(p, 1e-8)))).sum(axis=1)
    return {
        "kl": fwd,
        "reverse_kl": rev,
        "symmetric_kl": balance * fwd + (1 - balance) * rev,
        "soft_ce": -(p * np.log(q)).sum(axis=1),
        "mse": ((p - q) ** 2).sum(axis=1),
    }[divergence]


def t64(a) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


# --------------------------------------------------------------------------- KDSpec


def test_kdspec_defaults_follow_hinton():
    spec = KDSpec()
    assert (spec.temperature, spec.divergence, spec.t2_scaling, spec.balance) == (
        2.0,
        "kl",
        True,
        0.5,
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"divergence": "js"}, "divergence"),
        ({"balance": -0.1}, "balance"),
        ({"balance": 1.5}, "balance"),
    ],
)
def test_kdspec_rejects_bad_fields(kwargs, field):
    with pytest.raises(ValueError, match=field):
        KDSpec(**kwargs)


# --------------------------------------------------------------------------- soft targets


def test_soft_targets_from_logits_match_numpy():
    z = np.array([[1.0, 2.0, 3.0], [0.0, -5.0, 5.0]])
    out = soft_targets(t64(z), 2.5)
    np.testing.assert_allclose(out.numpy(), np_softmax(z, 2.5), rtol=1e-12)


def test_soft_targets_from_probs_by_hand():
    p = t64([[0.5, 0.25, 0.25, 0.0]])
    out = soft_targets(p, 2.0, is_probs=True)
    # p^(1/2) = (sqrt(.5), .5, .5, 0), renormalised.
    root = math.sqrt(0.5)
    expected = np.array([[root, 0.5, 0.5, 0.0]]) / (root + 1.0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12)
    assert out[0, 3].item() == 0.0  # exact zeros stay exactly zero


def test_soft_targets_probs_at_t1_are_identity_and_consistent_with_logits():
    z = torch.randn(4, 6, dtype=torch.float64)
    p = torch.softmax(z, dim=1)
    torch.testing.assert_close(soft_targets(p, 1.0, is_probs=True), p)
    # Softening the probabilities equals softening the logits that produced them.
    torch.testing.assert_close(soft_targets(p, 3.0, is_probs=True), soft_targets(z, 3.0))
    torch.testing.assert_close(log_soft_targets(z, 3.0).exp(), soft_targets(z, 3.0))


def test_soft_targets_reject_bad_temperature():
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(torch.zeros(1, 2), 0.0)


# --------------------------------------------------------------------------- values


def test_hand_computed_values_uniform_student():
    # Teacher (.5, .5, 0), student uniform over 3 classes, T = 1, no T^2.
    student = torch.zeros(1, 3, dtype=torch.float64)
    teacher = t64([[0.5, 0.5, 0.0]])

    def loss(divergence: str) -> float:
        spec = KDSpec(temperature=1.0, divergence=divergence, t2_scaling=False)
        return distillation_loss(student, teacher, spec, teacher_is_probs=True).item()

    assert loss("kl") == pytest.approx(math.log(1.5), rel=1e-12)  # 2 * .5 * log(.5 / (1/3))
    assert loss("soft_ce") == pytest.approx(math.log(3.0), rel=1e-12)  # -log(1/3)
    assert loss("mse") == pytest.approx(1.0 / 6.0, rel=1e-12)  # 2 (1/6)^2 + (1/3)^2
    # Reverse KL: the zero class is floored at log(1e-8).
    third = 1.0 / 3.0
    rev = 2 * third * math.log(third / 0.5) + third * (math.log(third) - REVERSE_KL_LOG_FLOOR)
    assert loss("reverse_kl") == pytest.approx(rev, rel=1e-12)


def test_hand_computed_reverse_kl_without_zeros():
    student = torch.zeros(1, 3, dtype=torch.float64)
    teacher = t64([[0.5, 0.25, 0.25]])
    spec = KDSpec(temperature=1.0, divergence="reverse_kl", t2_scaling=False)
    third = 1.0 / 3.0
    expected = third * (math.log(third / 0.5) + 2 * math.log(third / 0.25))
    got = distillation_loss(student, teacher, spec, teacher_is_probs=True).item()
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_logit_teacher_matches_numpy_reference(divergence):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 7)) * 3, rng.normal(size=(5, 7)) * 3
    spec = KDSpec(temperature=3.0, divergence=divergence, balance=0.3)
    rows = np_row_divergence(np_softmax(t, 3.0), np_softmax(s, 3.0), divergence, 0.3) * 9.0
    none = distillation_loss(t64(s), t64(t), spec, reduction="none")
    np.testing.assert_allclose(none.numpy(), rows, rtol=1e-10)
    batchmean = distillation_loss(t64(s), t64(t), spec)
    total = distillation_loss(t64(s), t64(t), spec, reduction="sum")
    assert batchmean.item() == pytest.approx(rows.mean(), rel=1e-10)
    assert total.item() == pytest.approx(rows.sum(), rel=1e-10)


def test_probability_teacher_used_as_is_at_teacher_temperature_one():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(4, 5))
    p = np_softmax(rng.normal(size=(4, 5)), 4.0)  # already softened by the sender
    spec = KDSpec(temperature=4.0)
    got = distillation_loss(t64(s), t64(p), spec, teacher_is_probs=True, teacher_temperature=1.0)
    ref = np_row_divergence(p, np_softmax(s, 4.0), "kl", 0.5).mean() * 16.0
    assert got.item() == pytest.approx(ref, rel=1e-10)
    # teacher_temperature=None softens the probabilities again at spec.temperature.
    again = distillation_loss(t64(s), t64(p), spec, teacher_is_probs=True)
    ref_again = np_row_divergence(np_softmax(np.log(p), 4.0), np_softmax(s, 4.0), "kl", 0.5)
    assert again.item() == pytest.approx(ref_again.mean() * 16.0, rel=1e-10)


def test_float64_teacher_is_cast_to_float32_student():
    s = torch.randn(3, 4)
    t = torch.randn(3, 4, dtype=torch.float64)
    out = distillation_loss(s, t)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(distillation_loss(s.double(), t).item(), rel=1e-5)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_half_precision_student_is_scored_in_float32(half):
    s = torch.randn(3, 4).to(half).requires_grad_(True)
    p = torch.softmax(torch.randn(3, 4), dim=1)  # float32 teacher, as decoded from the wire
    loss = distillation_loss(s, p, teacher_is_probs=True)
    assert loss.dtype == torch.float32
    ref = distillation_loss(s.detach().double(), p.double(), teacher_is_probs=True)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    loss.backward()
    assert s.grad is not None and s.grad.dtype == half


# --------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("teacher_kind", ["logits", "probs_with_zero"])
def test_gradcheck(divergence, teacher_kind):
    torch.manual_seed(0)
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    if teacher_kind == "logits":
        teacher, is_probs = torch.randn(3, 5, dtype=torch.float64), False
    else:
        teacher = torch.softmax(torch.randn(3, 5, dtype=torch.float64), dim=1)
        teacher[:, 0] = 0.0
        teacher, is_probs = teacher / teacher.sum(dim=1, keepdim=True), True
    spec = KDSpec(temperature=1.7, divergence=divergence, balance=0.3)

    def fn(s: torch.Tensor) -> torch.Tensor:
        return distillation_loss(s, teacher, spec, teacher_is_probs=is_probs)

    assert torch.autograd.gradcheck(fn, (student,))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_gradcheck_with_class_mask(divergence):
    torch.manual_seed(1)
    student = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(4, 6, dtype=torch.float64)
    spec = KDSpec(divergence=divergence)
    assert torch.autograd.gradcheck(
        lambda s: distillation_loss(s, teacher, spec, class_mask=[0, 2, 3]), (student,)
    )


def test_teacher_gets_no_gradient():
    student = torch.randn(2, 3, requires_grad=True)
    teacher = torch.randn(2, 3, requires_grad=True)
    distillation_loss(student, teacher).backward()
    assert teacher.grad is None
    assert student.grad is not None and bool(student.grad.abs().sum() > 0)


# --------------------------------------------------------------------------- properties


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_teacher_equal_to_student_is_a_stationary_minimum(divergence):
    torch.manual_seed(2)
    z = torch.randn(4, 6, dtype=torch.float64)
    student = z.clone().requires_grad_(True)
    spec = KDSpec(temperature=2.0, divergence=divergence)
    loss = distillation_loss(student, z, spec)
    loss.backward()
    assert student.grad is not None
    assert student.grad.abs().max().item() < 1e-12
    if divergence == "soft_ce":
        # Soft cross-entropy = KL + H(p): at equality it is the teacher entropy (times T^2).
        p = np_softmax(z.numpy(), 2.0)
        entropy = -(p * np.log(p)).sum(axis=1).mean()
        assert loss.item() == pytest.approx(4.0 * entropy, rel=1e-10)
    else:
        assert abs(loss.item()) < 1e-12
    # Same with the teacher sent as probabilities already softened at T.
    probs = torch.softmax(z / 2.0, dim=1)
    as_probs = distillation_loss(z, probs, spec, teacher_is_probs=True, teacher_temperature=1.0)
    assert as_probs.item() == pytest.approx(loss.item(), abs=1e-10)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0, 10.0])
def test_t2_scaling_multiplies_by_t_squared(divergence, temperature):
    torch.manual_seed(3)
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    with_t2 = distillation_loss(s, t, KDSpec(temperature, divergence, t2_scaling=True))
    without = distillation_loss(s, t, KDSpec(temperature, divergence, t2_scaling=False))
    assert with_t2.item() == pytest.approx(temperature**2 * without.item(), rel=1e-12)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_one_hot_and_zero_containing_teachers_are_finite(divergence):
    student = torch.randn(3, 4, requires_grad=True)
    one_hot = torch.eye(4)[[0, 2, 3]]
    with_zeros = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.2, 0.0, 0.3, 0.5]])
    for teacher in (one_hot, with_zeros):
        for t_teacher in (None, 1.0):
            spec = KDSpec(divergence=divergence)
            loss = distillation_loss(
                student, teacher, spec, teacher_is_probs=True, teacher_temperature=t_teacher
            )
            (grad,) = torch.autograd.grad(loss, student)
            assert torch.isfinite(loss) and loss.item() >= -1e-6
            assert bool(torch.isfinite(grad).all())


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_huge_logits_are_finite(divergence):
    student = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3]], requires_grad=True)
    teacher = torch.tensor([[-1e4, 1e4, 0.0], [1e4, 0.0, -1e4]])
    loss = distillation_loss(student, teacher, KDSpec(temperature=1.0, divergence=divergence))
    (grad,) = torch.autograd.grad(loss, student)
    assert torch.isfinite(loss)
    assert bool(torch.isfinite(grad).all())
    if divergence in ("kl", "soft_ce"):  # confident and wrong: the loss must be large
        assert loss.item() > 1e3


# --------------------------------------------------------------------------- class_mask


def test_class_mask_renormalises_over_the_selected_columns():
    rng = np.random.default_rng(4)
    s = rng.normal(size=(4, 6))
    p = np_softmax(rng.normal(size=(4, 6)))
    cols = [1, 3, 4]
    spec = KDSpec(temperature=2.0)
    got = distillation_loss(t64(s), t64(p), spec, teacher_is_probs=True, class_mask=cols)
    p_sub = p[:, cols] / p[:, cols].sum(axis=1, keepdims=True)
    p_ref = np_softmax(np.log(p_sub), 2.0)
    ref = np_row_divergence(p_ref, np_softmax(s[:, cols], 2.0), "kl", 0.5).mean() * 4.0
    assert got.item() == pytest.approx(ref, rel=1e-10)
    bool_mask = torch.zeros(6, dtype=torch.bool)
    bool_mask[cols] = True
    same = distillation_loss(t64(s), t64(p), spec, teacher_is_probs=True, class_mask=bool_mask)
    assert same.item() == pytest.approx(got.item(), rel=1e-12)
    as_tensor = distillation_loss(
        t64(s), t64(p), spec, teacher_is_probs=True, class_mask=torch.tensor(cols)
    )
    assert as_tensor.item() == pytest.approx(got.item(), rel=1e-12)


def test_class_mask_ignores_other_columns_entirely():
    torch.manual_seed(5)
    student = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 5, dtype=torch.float64)
    loss = distillation_loss(student, teacher, class_mask=[0, 1])
    (grad,) = torch.autograd.grad(loss, student)
    assert grad[:, 2:].abs().max().item() == 0.0
    assert grad[:, :2].abs().max().item() > 0.0
    changed = teacher.clone()
    changed[:, 2:] = torch.randn(3, 3, dtype=torch.float64) * 10
    assert distillation_loss(student, changed, class_mask=[0, 1]).item() == pytest.approx(
        loss.item(), rel=1e-12
    )


# --------------------------------------------------------------------------- kd_objective


@pytest.mark.parametrize("divergence", ["kl", "soft_ce"])
def test_divergences_that_do_not_read_q_compute_no_student_exp(monkeypatch, divergence):
    """Forward KL and soft CE need only ``p = exp(log_p)``; the student's ``q = exp(log_q)``
    was computed for every divergence and thrown away for these two (issue 15 (f))."""
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    spec = KDSpec(temperature=2.0, divergence=divergence)
    expected = distillation_loss(student, teacher, spec)
    calls = []
    real_exp = torch.Tensor.exp

    def counting_exp(self):
        calls.append(tuple(self.shape))
        return real_exp(self)

    monkeypatch.setattr(torch.Tensor, "exp", counting_exp)
    got = distillation_loss(student, teacher, spec)
    assert len(calls) == 1  # the teacher's p only
    assert torch.equal(got, expected)


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("teacher_kind", ["logits", "probs"])
@pytest.mark.parametrize("mask", [None, [0, 2, 3], [True, False, True, True, False]])
def test_validate_false_returns_the_same_value(divergence, teacher_kind, mask):
    """``validate=False`` skips only the host-syncing value checks, never changes a number."""
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=gen, requires_grad=True)
    teacher = torch.randn(6, 5, generator=gen)
    kwargs = {}
    if teacher_kind == "probs":
        teacher = torch.softmax(teacher, dim=1)
        kwargs = {"teacher_is_probs": True, "teacher_temperature": 1.0}
    spec = KDSpec(temperature=3.0, divergence=divergence)
    cols = None if mask is None else torch.tensor(mask)
    checked = distillation_loss(student, teacher, spec, class_mask=cols, **kwargs)
    (grad_checked,) = torch.autograd.grad(checked, student)
    fast = distillation_loss(student, teacher, spec, class_mask=cols, validate=False, **kwargs)
    (grad_fast,) = torch.autograd.grad(fast, student)
    assert torch.equal(checked, fast) and torch.equal(grad_checked, grad_fast)


def test_validate_false_skips_value_checks_but_not_shape_checks():
    spec = KDSpec()
    nan_student = torch.tensor([[float("nan"), 0.0]])
    with pytest.raises(ValueError, match="non-finite"):
        distillation_loss(nan_student, torch.zeros(1, 2), spec)
    assert torch.isnan(distillation_loss(nan_student, torch.zeros(1, 2), spec, validate=False))
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4), spec, validate=False)


def test_kd_objective_is_ce_plus_lambda_kd():
    rng = np.random.default_rng(6)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    eps, lam = 0.1, 0.7
    logq = np.log(np_softmax(s))
    ce = (-(1 - eps) * logq[np.arange(5), y] - eps * logq.mean(axis=1)).mean()
    kd = np_row_divergence(np_softmax(t, 2.0), np_softmax(s, 2.0), "kl", 0.5).mean() * 4.0
    got = kd_objective(t64(s), torch.tensor(y), t64(t), KDSpec(), lam=lam, label_smoothing=eps)
    assert got.item() == pytest.approx(ce + lam * kd, rel=1e-10)
    ce_only = kd_objective(t64(s), torch.tensor(y), t64(t), KDSpec(), lam=0.0)
    assert ce_only.item() == pytest.approx(-logq[np.arange(5), y].mean(), rel=1e-10)


def test_kd_objective_class_mask_applies_to_kd_term_only():
    torch.manual_seed(7)
    s, t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([4, 4, 3, 0])  # labels outside the mask are fine: CE uses all columns
    got = kd_objective(s, y, t, KDSpec(), lam=2.0, class_mask=[0, 1])
    ce = torch.nn.functional.cross_entropy(s, y)
    expected = ce + 2.0 * distillation_loss(s[:, :2], t[:, :2], KDSpec())
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


# --------------------------------------------------------------------------- errors


def test_shape_mismatch_message_shows_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        distillation_loss(torch.zeros(3), torch.zeros(3))


@pytest.mark.parametrize(
    ("student", "teacher", "kwargs", "match"),
    [
        (torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2), {}, "student_logits"),
        (torch.tensor([[float("inf"), 0.0]]), torch.zeros(1, 2), {}, "student_logits"),
        (torch.zeros(1, 2), torch.tensor([[float("nan"), 0.0]]), {}, "teacher"),
        (torch.zeros(0, 2), torch.zeros(0, 2), {}, "empty"),
        (torch.zeros(1, 2), torch.zeros(1, 2), {"teacher_temperature": 0.0}, "temperature"),
        (torch.zeros(1, 2), torch.zeros(1, 2), {"teacher_temperature": -2.0}, "temperature"),
        (torch.zeros(1, 2), torch.zeros(1, 2), {"reduction": "mean"}, "reduction"),
        (torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), {}, "floating"),
    ],
)
def test_bad_inputs_raise(student, teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(student, teacher, **kwargs)


@pytest.mark.parametrize(
    ("teacher", "match"),
    [
        (torch.tensor([[0.5, 0.4]]), "sum to 1"),  # logits or truncated probabilities
        (torch.tensor([[2.0, -1.0]]), "negative"),
        (torch.tensor([[float("nan"), 1.0]]), "non-finite"),
        (torch.tensor([[1.0, 2.0, 3.0]]).log_softmax(1), "negative"),  # log-probs by mistake
    ],
)
def test_probability_teacher_must_be_a_distribution(teacher, match):
    student = torch.zeros_like(teacher)
    with pytest.raises(ValueError, match=match):
        distillation_loss(student, teacher, teacher_is_probs=True)


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        ([0, 5], r"\[0, 4\)"),
        ([-1], r"\[0, 4\)"),
        ([1, 1], "duplicate"),
        ([], "non-empty"),
        ([[0, 1]], "1-D"),
        (torch.tensor([True, False]), "length"),
        (torch.zeros(4, dtype=torch.bool), "no class"),
        (torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_bad_class_mask_raises(mask, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(torch.zeros(2, 4), torch.zeros(2, 4), class_mask=mask)


def test_class_mask_with_zero_teacher_mass_raises():
    teacher = torch.tensor([[0.0, 0.0, 1.0], [0.3, 0.3, 0.4]])
    with pytest.raises(ValueError, match="zero mass"):
        distillation_loss(torch.zeros(2, 3), teacher, teacher_is_probs=True, class_mask=[0, 1])


@pytest.mark.parametrize(
    ("labels", "kwargs", "match"),
    [
        (torch.tensor([0, 3]), {}, r"\[0, 3\)"),
        (torch.tensor([-1, 0]), {}, r"\[0, 3\)"),
        (torch.tensor([0.0, 1.0]), {}, "integer"),
        (torch.tensor([0, 1, 2]), {}, "rows"),
        (torch.tensor([[0, 1]]), {}, "1-D"),
        (torch.tensor([0, 1]), {"lam": -1.0}, "lam"),
        (torch.tensor([0, 1]), {"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_kd_objective_bad_inputs_raise(labels, kwargs, match):
    kw = {"lam": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        kd_objective(torch.zeros(2, 3), labels, torch.zeros(2, 3), KDSpec(), **kw)


def test_validate_distribution():
    validate_distribution(torch.tensor([[0.2, 0.8], [1.0, 0.0]]))  # valid: no error
    validate_distribution(torch.tensor([[0.5, 0.50005]]), atol=1e-4)  # within tolerance
    with pytest.raises(ValueError, match="2-D"):
        validate_distribution(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match=r"client_3.*row 1"):
        validate_distribution(torch.tensor([[0.5, 0.5], [0.6, 0.6]]), name="client_3")
    with pytest.raises(ValueError, match="non-finite"):
        validate_distribution(torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="negative"):
        validate_distribution(torch.tensor([[1.5, -0.5]]))


# --------------------------------------------------------------------------- feature hints


def test_feature_hint_equal_widths_is_parameter_free_mse_and_cosine():
    rng = np.random.default_rng(8)
    s, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    mse = FeatureHintLoss(3, 3, kind="mse")
    assert list(mse.parameters()) == []
    assert mse(t64(s), t64(t)).item() == pytest.approx(((s - t) ** 2).mean(), rel=1e-12)
    cos = FeatureHintLoss(3, 3, kind="cosine")
    ref = 1 - (s * t).sum(1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1))
    assert cos(t64(s), t64(t)).item() == pytest.approx(ref.mean(), rel=1e-10)
    assert cos(t64(s), t64(3 * s)).item() == pytest.approx(0.0, abs=1e-12)  # scale-invariant
    assert mse(t64(s), t64(s)).item() == 0.0


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_feature_hint_projection_learns_across_widths(kind):
    torch.manual_seed(9)
    student = torch.randn(64, 5)
    teacher = student @ torch.randn(5, 8)  # (64, 8): reachable by a linear map
    hint = FeatureHintLoss(5, 8, kind=kind)
    params = list(hint.parameters())
    assert params, "differing widths need a learnable projection"
    opt = torch.optim.Adam(params, lr=0.05)
    first = hint(student, teacher).item()
    for _ in range(100):
        opt.zero_grad()
        hint(student, teacher).backward()
        opt.step()
    assert hint(student, teacher).item() < 0.2 * first


def test_feature_hint_flattens_maps_detaches_teacher_and_validates():
    hint = FeatureHintLoss(2 * 3 * 3, 4)
    student = torch.randn(2, 2, 3, 3, requires_grad=True)
    teacher = torch.randn(2, 4, requires_grad=True)
    hint(student, teacher).backward()
    assert teacher.grad is None and student.grad is not None
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        hint(torch.randn(2, 5), teacher)
    with pytest.raises(ValueError, match="rows"):
        hint(torch.randn(3, 18), teacher)
    with pytest.raises(ValueError, match="2-D"):
        hint(torch.randn(18), teacher)
    with pytest.raises(ValueError, match="non-finite"):
        hint(torch.full((2, 18), float("nan")), teacher)
    with pytest.raises(ValueError, match="kind"):
        FeatureHintLoss(2, 2, kind="l1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="> 0"):
        FeatureHintLoss(0, 2)


# --------------------------------------------------------------------------- imports


def test_import_pulls_in_no_federated_stack():
    code = (
        "import sys, fedkd.kd; "
        "bad = [m for m in ('flwr', 'ray', 'hydra', 'omegaconf') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
