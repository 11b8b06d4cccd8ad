"""fedkd.explain: input-gradient saliency and student-teacher saliency agreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedkd.explain import plot_saliency_agreement, saliency, saliency_agreement


class Pixel(nn.Module):
    """Logit of class c = w_c · x over a fixed pixel mask: saliency is known in closed form."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(weights)  # (classes, pixels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_saliency_of_a_linear_model_matches_the_closed_form():
    torch.manual_seed(0)
    w = torch.randn(3, 6, dtype=torch.float64)
    model = Pixel(w).train()
    x = torch.randn(5, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1])
    got = saliency(model, x, target)
    p = torch.softmax(x @ w.T, dim=1).numpy()
    wn = w.numpy()
    # d log p_t / dx = w_t - sum_c p_c w_c
    expected = np.abs(wn[target.numpy()] - p @ wn)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    assert model.training and model.w.grad is None


def test_agreement_is_high_for_a_copy_and_low_for_a_model_looking_elsewhere():
    w_left = torch.zeros(2, 8)
    w_left[0, :4], w_left[1, :4] = 1.0, -1.0  # evidence on the first 4 pixels
    w_right = torch.zeros(2, 8)
    w_right[0, 4:], w_right[1, 4:] = 1.0, -1.0  # same task, other pixels
    x = torch.rand(10, 8)
    teachers = [Pixel(w_left.clone()), Pixel(w_left * 2)]
    same = saliency_agreement(Pixel(w_left.clone()), teachers, x, top_fraction=0.5)
    other = saliency_agreement(Pixel(w_right), teachers, x, top_fraction=0.5)
    assert same["cosine"].shape == (2, 10)
    assert min(same["mean_cosine"]) > 0.999 and min(same["mean_topk_overlap"]) == 1.0
    assert max(other["mean_cosine"]) < 1e-6 and max(other["mean_topk_overlap"]) == 0.0
    assert same["teacher_teacher_cosine"] == pytest.approx(1.0)


def test_agreement_plot_and_errors(tmp_path):
    x = torch.rand(6, 8)
    teachers = [Pixel(torch.randn(3, 8)) for _ in range(2)]
    result = saliency_agreement(Pixel(torch.randn(3, 8)), teachers, x)
    assert result["target"].shape == (6,)
    path = plot_saliency_agreement(result, tmp_path / "saliency.png", names=["a", "b"])
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="teacher"):
        saliency_agreement(teachers[0], [], x)
    with pytest.raises(ValueError, match="target"):
        saliency(teachers[0], x, torch.zeros(2, dtype=torch.long))
