"""The class-IL plasticity probe measures what it says (dead units, the new task's accuracy)."""

from __future__ import annotations

import torch

from benchmarks.cil_plasticity_probe import probe


def test_fine_tuning_through_class_il_kills_hidden_units() -> None:
    torch.set_num_threads(1)
    result = probe(lr=0.1, hidden=(16,), seed=0)
    dead, new_task = result["dead"], result["new_task"]
    assert len(dead) == len(new_task) == 5
    assert all(0.0 <= v <= 1.0 for v in dead + new_task)
    assert new_task[0] > 0.9  # the first task is learnt ...
    assert dead[-1] > dead[0] + 0.3  # ... and the hidden layer dies as the tasks go by
