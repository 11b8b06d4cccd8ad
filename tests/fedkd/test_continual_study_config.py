"""The forgetting study's bookkeeping: per-learner timings and config validation (issue 15)."""

from __future__ import annotations

import types
from collections.abc import Iterator

import pytest
import torch

from fedkd.continual import FineTune, LearnerSpec, SequenceConfig, StudyConfig, registry, run_study
from fedkd.continual import study as study_module
from fedkd.continual.study import study_steps
from fedkd.training import TrainConfig

TINY = SequenceConfig(kind="split", scenario="task_il", num_tasks=3, max_train_per_task=30)
FAST = TrainConfig(epochs=1, batch_size=16)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class FakeClock:
    """``time.perf_counter`` that only moves when a learner says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def test_one_time_costs_are_not_charged_to_the_first_learner(monkeypatch) -> None:
    """(d) The first training step of a process pays one-time costs (torch's lazy imports:
    6.6 s against 0.4-0.7 s in the issue). Two identical learners must report the same
    ``seconds`` whichever runs first."""
    clock = FakeClock()
    fake_time = types.SimpleNamespace(perf_counter=clock.perf_counter)
    monkeypatch.setattr(study_module, "time", fake_time)
    warmed = {"done": False}

    class Lazy(FineTune):
        """Fine-tuning whose very first task in the process costs 100 extra seconds."""

        def train_task(self, net, sequence, t, generator=None):  # type: ignore[no-untyped-def]
            if not warmed["done"]:
                clock.now += 100.0
                warmed["done"] = True
            clock.now += 1.0
            return super().train_task(net, sequence, t, generator)

    monkeypatch.setattr(registry, "_LEARNERS", dict(registry._LEARNERS))
    registry.register_learner("lazy")(Lazy)
    cfg = StudyConfig(
        sequence=TINY,
        learners=(LearnerSpec("first", "lazy"), LearnerSpec("second", "lazy")),
        seeds=(0,),
        train=FAST,
    )
    out = run_study(cfg)
    assert warmed["done"]
    assert out["seconds"]["first"] == out["seconds"]["second"] == [3.0]  # 1 s per task


def test_the_warm_up_changes_no_number(monkeypatch) -> None:
    """The untimed warm-up trains throwaway copies on a forked RNG: every matrix is the same
    as without it."""
    cfg = StudyConfig(
        sequence=TINY,
        learners=(LearnerSpec("ft", "finetune"), LearnerSpec("lwf", "lwf", {"warmup_epochs": 1})),
        seeds=(0, 1),
        train=FAST,
    )
    calls = []
    real = study_module.warm_up
    monkeypatch.setattr(study_module, "warm_up", lambda *a: calls.append(a) or real(*a))
    warmed = run_study(cfg)
    monkeypatch.setattr(study_module, "warm_up", lambda *a: None)
    cold = run_study(cfg)
    assert len(calls) == 1  # once per study, before the first timed run
    assert [s.label for s in calls[0][2]] == ["ft", "lwf", "_joint_reference"]
    assert warmed["acc_matrix"] == cold["acc_matrix"]
    assert warmed["random_init_acc"] == cold["random_init_acc"]


def test_a_rotated_sequence_with_one_angle_is_rejected_at_validation() -> None:
    """(e) Explicit angles override num_tasks; one angle is one task, which the metrics
    cannot score. The error names the key that set it."""
    one = SequenceConfig(kind="rotated", scenario="domain_il", angles=(30.0,))
    assert one.task_count == 1 and one.task_count_key == "angles"
    with pytest.raises(ValueError, match=r"sequence\.angles gives 1 task"):
        StudyConfig(sequence=one)
    with pytest.raises(ValueError, match=r"sequence\.num_tasks gives 1 task"):
        StudyConfig(sequence=SequenceConfig(num_tasks=1))
    with pytest.raises(ValueError, match="angles must list at least one"):
        SequenceConfig(kind="rotated", scenario="domain_il", angles=())
    two = SequenceConfig(kind="rotated", scenario="domain_il", num_tasks=1, angles=(0.0, 90.0))
    cfg = StudyConfig(sequence=two, seeds=(0,))  # two angles: valid despite num_tasks=1
    assert study_steps(cfg) == 3 * 2  # finetune, lwf, joint x 2 tasks
    # angles are ignored by other kinds, and so is their length
    assert SequenceConfig(kind="split", num_tasks=5, angles=(1.0,)).task_count == 5


def test_forgetting_variant_is_a_study_option() -> None:
    with pytest.raises(ValueError, match="forgetting_since"):
        StudyConfig(forgetting_since="later")  # type: ignore[arg-type]
    cfg = StudyConfig(
        sequence=TINY,
        learners=(LearnerSpec("ft", "finetune"),),
        seeds=(0,),
        train=FAST,
        forgetting_since="learned",
    )
    from fedkd.continual import forgetting

    out = run_study(cfg)
    matrix = out["acc_matrix"]["ft"][0]
    assert out["forgetting"]["ft"] == [pytest.approx(forgetting(matrix, since="learned"))]
