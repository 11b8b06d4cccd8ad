"""Continual-learning metrics against matrices computed by hand.

R[i][j] = accuracy on task j after training through task i (tasks from 0, R is T x T).
Every expected value below is worked out in the comments from the definitions in the issue,
not taken from the implementation.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.continual.metrics import (
    accuracy,
    backward_transfer,
    forgetting,
    forgetting_per_task,
    forward_transfer,
    intransigence,
    mean_std,
    summarize,
)

# Task 0's accuracy is 0.8 right after training it, *improves* to 0.9 after task 1, then drops
# to 0.5: BWT measures the drop from 0.8, forgetting the drop from the best earlier 0.9.
R3 = [
    [0.8, 0.1, 0.2],
    [0.9, 0.7, 0.3],
    [0.5, 0.6, 0.9],
]
B3 = [0.1, 0.2, 0.25]  # accuracy at random initialisation


def test_acc_is_mean_of_last_row() -> None:
    assert accuracy(R3) == pytest.approx((0.5 + 0.6 + 0.9) / 3)


def test_bwt_uses_accuracy_right_after_training() -> None:
    # j=0: 0.5 - 0.8 = -0.3;  j=1: 0.6 - 0.7 = -0.1;  mean = -0.2
    assert backward_transfer(R3) == pytest.approx(-0.2)


def test_forgetting_uses_best_earlier_accuracy_not_the_diagonal() -> None:
    # j=0: max(0.8, 0.9) - 0.5 = 0.4;  j=1: max(0.1, 0.7) - 0.6 = 0.1;  mean = 0.25
    np.testing.assert_allclose(forgetting_per_task(R3), [0.4, 0.1])
    assert forgetting(R3) == pytest.approx(0.25)
    assert forgetting(R3) != pytest.approx(-backward_transfer(R3))  # the two really differ


def test_forgetting_max_includes_rows_before_the_task_was_trained() -> None:
    # Task 1 scores 0.95 after task 0 (before being trained), 0.7 after task 1, 0.6 at the end.
    # The definition takes max over l < T-1 = {0, 1}: f_1 = 0.95 - 0.6 = 0.35.
    r = [
        [0.9, 0.95, 0.1],
        [0.8, 0.70, 0.2],
        [0.7, 0.60, 0.9],
    ]
    np.testing.assert_allclose(forgetting_per_task(r), [0.9 - 0.7, 0.95 - 0.6])


def test_forgetting_since_learned_skips_rows_before_the_task_was_trained() -> None:
    """The other variant: the max runs only over rows l with j <= l < T-1."""
    # Task 1 scored 0.95 before it was trained (row 0), 0.8 right after (row 1), 0.7 at the end.
    r = [
        [0.9, 0.95, 0.2],
        [0.6, 0.80, 0.3],
        [0.4, 0.70, 0.9],
    ]
    # since="start" (Chaudhry et al. as printed): f_0 = max(0.9, 0.6) - 0.4 = 0.5;
    #                                              f_1 = max(0.95, 0.8) - 0.7 = 0.25; mean 0.375
    np.testing.assert_allclose(forgetting_per_task(r), [0.5, 0.25])
    assert forgetting(r) == pytest.approx(0.375)
    # since="learned": f_0 = max(0.9, 0.6) - 0.4 = 0.5 (rows 0, 1: both after task 0);
    #                  f_1 = max(0.8) - 0.7 = 0.1 (row 0 came before task 1); mean 0.3
    np.testing.assert_allclose(forgetting_per_task(r, since="learned"), [0.5, 0.1])
    assert forgetting(r, since="learned") == pytest.approx(0.3)
    # on R3 no task scored higher before being trained, so the variants agree
    assert forgetting(R3, since="learned") == pytest.approx(forgetting(R3))
    assert summarize(r, [0.1] * 3, forgetting_since="learned")["forgetting"] == pytest.approx(0.3)
    with pytest.raises(ValueError, match="since"):
        forgetting(r, since="after")  # type: ignore[arg-type]


def test_forgetting_ignores_the_last_row_in_the_max() -> None:
    # If the last row were included, task 0's improvement at the end would count as 0.
    r = [[0.5, 0.0], [0.9, 0.8]]
    assert forgetting(r) == pytest.approx(0.5 - 0.9)  # negative: the task improved


def test_fwt_compares_accuracy_before_training_with_random_init() -> None:
    # j=1: R[0][1] - b_1 = 0.1 - 0.2 = -0.1;  j=2: R[1][2] - b_2 = 0.3 - 0.25 = 0.05
    assert forward_transfer(R3, B3) == pytest.approx((-0.1 + 0.05) / 2)


def test_fwt_does_not_use_b0_or_the_diagonal() -> None:
    b_changed = [0.99, 0.2, 0.25]
    assert forward_transfer(R3, b_changed) == pytest.approx(forward_transfer(R3, B3))
    r = np.array(R3)
    np.fill_diagonal(r, 0.0)
    assert forward_transfer(r, B3) == pytest.approx(forward_transfer(R3, B3))


def test_intransigence_is_reference_minus_diagonal() -> None:
    a_star = [0.8, 0.9, 0.85]
    # [0.8 - 0.8, 0.9 - 0.7, 0.85 - 0.9]
    np.testing.assert_allclose(intransigence(R3, a_star), [0.0, 0.2, -0.05])


def test_no_forgetting_matrix() -> None:
    # Each task keeps the accuracy it reached: columns constant from the diagonal down.
    r = [[0.9, 0.2, 0.3], [0.9, 0.8, 0.1], [0.9, 0.8, 0.7]]
    assert backward_transfer(r) == pytest.approx(0.0)
    assert forgetting(r) == pytest.approx(0.0)
    assert accuracy(r) == pytest.approx(0.8)


def test_two_task_values() -> None:
    r = [[0.9, 0.4], [0.6, 0.95]]
    assert backward_transfer(r) == pytest.approx(-0.3)
    assert forgetting(r) == pytest.approx(0.3)
    assert forward_transfer(r, [0.5, 0.5]) == pytest.approx(-0.1)


def test_summarize_collects_every_metric() -> None:
    out = summarize(R3, B3, [0.8, 0.9, 0.85])
    assert out["acc"] == pytest.approx(2.0 / 3.0)
    assert out["bwt"] == pytest.approx(-0.2)
    assert out["fwt"] == pytest.approx(-0.025)
    assert out["forgetting"] == pytest.approx(0.25)
    assert out["intransigence"] == pytest.approx([0.0, 0.2, -0.05])
    assert out["intransigence_mean"] == pytest.approx(0.05)
    assert "intransigence" not in summarize(R3, B3)


def test_mean_std_is_sample_std_over_seeds() -> None:
    assert mean_std([1.0, 2.0, 3.0]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert mean_std([0.5]) == {"mean": 0.5, "std": 0.0, "n": 1}
    with pytest.raises(ValueError):
        mean_std([])


@pytest.mark.parametrize(
    "bad",
    [
        [[0.5, 0.5]],  # not square
        [[0.5, np.nan], [0.5, 0.5]],  # non-finite
        [0.5, 0.5],  # 1-D
    ],
)
def test_invalid_matrices_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        backward_transfer(bad)  # type: ignore[arg-type]


def test_transfer_metrics_need_two_tasks() -> None:
    for fn in (backward_transfer, forgetting):
        with pytest.raises(ValueError, match="at least 2 tasks"):
            fn([[0.9]])
    assert accuracy([[0.9]]) == pytest.approx(0.9)


def test_vector_lengths_are_checked() -> None:
    with pytest.raises(ValueError, match="random_init_acc"):
        forward_transfer(R3, [0.1, 0.2])
    with pytest.raises(ValueError, match="reference_acc"):
        intransigence(R3, [0.1])


def test_heatmap_spread_annotates_mean_and_std(monkeypatch, tmp_path) -> None:
    from fedkd.continual import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    runs = [[[0.8, 0.1], [0.6, 0.9]], [[0.6, 0.1], [0.4, 0.9]]]  # R[0][0]: 0.7 ± 0.1
    plots.plot_accuracy_matrix(runs, tmp_path / "a.png", spread=True)
    plots.plot_accuracy_matrix(runs, tmp_path / "b.png")
    with_spread, plain = ([t.get_text() for t in f.axes[0].texts] for f in figures)
    assert with_spread[0] == "0.70\n±0.10" and plain[0] == "0.70"


def test_bwt_from_the_row_each_task_was_learnt() -> None:
    r = np.array([[0.9, 0.8, 0.1], [0.7, 0.9, 0.2], [0.6, 0.5, 0.95]])
    assert backward_transfer(r, [0, 1, 2]) == pytest.approx(backward_transfer(r))
    # tasks 0 and 1 both first learnt at row 0 (a shifted federation's first stage)
    assert backward_transfer(r, [0, 0, 2]) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    with pytest.raises(ValueError, match="learned_at"):
        backward_transfer(r, [0, 1])
    with pytest.raises(ValueError, match="before the last row"):
        backward_transfer(r, [2, 2, 2])
