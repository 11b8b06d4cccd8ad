"""Width/depth-scaled students and "the largest student of at most N parameters"."""

from __future__ import annotations

import pytest

from fedkd.models import STUDENT_LADDER, build_model, count_parameters, student_within


def test_scaled_cnn_grows_with_width_and_depth():
    def n(**kw: int) -> int:
        return count_parameters(build_model("scaled_cnn", (1, 8, 8), 10, **kw))

    assert n(width=4, depth=1) < n(width=8, depth=1) < n(width=8, depth=2) < n(width=8, depth=3)
    assert n(width=8, depth=2, hidden=64) > n(width=8, depth=2)
    # exact count for the smallest: conv 1->4 (40) + head 16->10 (170)
    assert n(width=4, depth=1) == 4 * 9 + 4 + 16 * 10 + 10


@pytest.mark.parametrize("budget", [300, 5_000, 20_000, 60_000, 1_000_000])
def test_student_within_returns_the_largest_fitting_ladder_entry(budget):
    name, kwargs, n = student_within(budget, (1, 8, 8), 10)
    assert n <= budget
    assert count_parameters(build_model(name, (1, 8, 8), 10, **kwargs)) == n
    sizes = [count_parameters(build_model(m, (1, 8, 8), 10, **kw)) for m, kw in STUDENT_LADDER]
    assert n == max(s for s in sizes if s <= budget)


def test_student_within_respects_input_kind_and_families():
    name, _, _ = student_within(50_000, (64,), 10)  # vectors: no conv students
    assert name == "scaled_mlp"
    name, _, _ = student_within(50_000, (1, 8, 8), 10, families=("scaled_mlp",))
    assert name == "scaled_mlp"
    with pytest.raises(ValueError, match="smallest has"):
        student_within(10, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="depth"):
        build_model("scaled_cnn", (1, 8, 8), 10, depth=0)
