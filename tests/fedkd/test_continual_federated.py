"""Federated continual learning, the ML side: per-client data, client learners, the student's
distillation with LwF retention, weight averaging and byte counts."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from fedkd import kd
from fedkd.continual import FineTune, Joint, LwF, LwFConfig, SequenceConfig, build_net, task_data
from fedkd.continual.federated import (
    FCLClient,
    FCLClientSpec,
    StudentDistiller,
    average_state_dicts,
    build_client_learner,
    client_order,
    federated_split,
    prediction_nbytes,
    stage_queries,
    weights_nbytes,
)
from fedkd.continual.training_data import TrainingData
from fedkd.data import load_splits
from fedkd.training import TrainConfig

FAST = TrainConfig(epochs=2, batch_size=16, lr=0.05)
SEQ = SequenceConfig(kind="split", scenario="task_il", num_tasks=3, classes_per_task=2)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tasks():
    return federated_split(SEQ, num_clients=3, seed=0, alpha=0.5, min_rows=5)


def test_every_task_is_shared_out_exactly_once(tasks) -> None:
    assert tasks.num_clients == 3 and tasks.sequence.num_tasks == 3
    for t, task in enumerate(tasks.sequence.tasks):
        client_rows = [c.tasks[t].train_x for c in tasks.clients]
        assert all(len(x) >= 5 for x in client_rows)
        assert sum(len(x) for x in client_rows) == len(task.train_x)
        # the union of the client shares is the task's training set, row for row
        pooled_y = torch.cat([c.tasks[t].train_y for c in tasks.clients])
        assert sorted(pooled_y.tolist()) == sorted(task.train_y.tolist())
        torch.testing.assert_close(
            torch.cat(client_rows).sum(0), task.train_x.sum(0), atol=1e-3, rtol=0
        )
        for c in tasks.clients:  # same classes, same test set, own rows
            assert c.tasks[t].classes == task.classes and c.tasks[t].test_x is task.test_x


def test_public_inputs_are_grouped_by_task_and_unlabelled(tasks) -> None:
    splits = load_splits("digits", seed=0, public_fraction=0.3, test_fraction=0.2)
    oracle = splits.oracle_public_labels()
    assert sum(len(p) for p in tasks.public) == int(
        torch.isin(oracle, torch.tensor([c for t in tasks.sequence.tasks for c in t.classes]))
        .sum()
        .item()
    )
    for task, public in zip(tasks.sequence.tasks, tasks.public, strict=True):
        rows = torch.isin(oracle, torch.tensor(task.classes))
        assert torch.equal(public, splits.public_x[rows])  # exactly that task's public inputs


def test_domain_il_public_inputs_are_the_pool_as_each_task_transforms_it() -> None:
    cfg = SequenceConfig(kind="rotated", scenario="domain_il", angles=(0.0, 90.0))
    tasks = federated_split(cfg, num_clients=2, seed=0, min_rows=5)
    pool = load_splits("digits", seed=0, public_fraction=0.3, test_fraction=0.2).public_x
    assert tasks.public[0].shape == pool.shape
    torch.testing.assert_close(tasks.public[0], pool, atol=1e-5, rtol=0)  # 0° changes nothing
    torch.testing.assert_close(tasks.public[1], tasks.sequence.tasks[1].inputs(pool))
    assert not torch.allclose(tasks.public[1], pool, atol=1e-3)
    # every class in every domain task, each client holding its own rows of both
    for c in tasks.clients:
        assert all(len(t.train_y) >= 5 for t in c.tasks)


def test_federated_split_rejects_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="num_clients"):
        federated_split(SEQ, num_clients=0, seed=0)
    with pytest.raises(ValueError, match=r"task 0.*min_rows=10000"):
        federated_split(SEQ, num_clients=3, seed=0, min_rows=10_000)


def test_average_state_dicts_is_the_weighted_mean() -> None:
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(9)}
    out = average_state_dicts([a, b], [1, 3])  # (1*a + 3*b) / 4
    torch.testing.assert_close(out["w"], torch.tensor([2.5, 5.0]))
    assert out["n"].item() == 3  # counters come from the first state
    with pytest.raises(ValueError, match="weight"):
        average_state_dicts([a, b], [1])
    with pytest.raises(ValueError, match="positive sum"):
        average_state_dicts([a, b], [0, 0])


def test_client_learners_by_name() -> None:
    assert isinstance(build_client_learner("finetune", "task_il", FAST), FineTune)
    lwf = build_client_learner("lwf", "class_il", FAST, {"lam": 2.0})
    assert isinstance(lwf, LwF) and lwf.config.lam == 2.0
    joint = build_client_learner("joint", "task_il", FAST)
    assert isinstance(joint, Joint) and not joint.config.from_scratch  # keeps FedAvg's rounds
    with pytest.raises(ValueError, match="one of"):
        build_client_learner("ewc", "task_il", FAST)
    with pytest.raises(ValueError, match="no options"):
        build_client_learner("finetune", "task_il", FAST, {"lam": 1.0})
    with pytest.raises(ValueError, match="LwFConfig"):
        build_client_learner("lwf", "task_il", FAST, {"lam": -1.0})


def test_fedavg_client_distils_from_the_anchor_not_its_round_start(tasks) -> None:
    seq = tasks.clients[0]
    net = build_net("mlp", seq, seed=0, hidden_sizes=(16,))
    client = FCLClient(seq, net, build_client_learner("lwf", "task_il", FAST), seed=0)
    client.train_task(0)
    anchor = build_net("mlp", seq, seed=7, hidden_sizes=(16,))  # differs from net
    client.learner.anchor = anchor  # type: ignore[attr-defined]
    client.learner.before_task(net, seq, 1, task_data(seq, 1), None)
    teacher = client.learner._teacher  # type: ignore[attr-defined]
    assert all(
        torch.equal(a, b) for a, b in zip(teacher.parameters(), anchor.parameters(), strict=True)
    )
    assert teacher is not anchor and not any(p.requires_grad for p in teacher.parameters())


def _public_data(tasks, t: int) -> tuple[TrainingData, torch.Tensor]:
    """Public inputs of tasks 0..t with a (made-up) teacher: one-hot-ish distributions."""
    xs = [tasks.public[j] for j in range(t + 1)]
    heads = torch.cat([torch.full((len(x),), j) for j, x in enumerate(xs)])
    x = torch.cat(xs)
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(len(x), 2, generator=gen), dim=1)
    return TrainingData(x, torch.arange(len(x)), heads), probs


def test_student_teacher_term_is_the_kd_core_per_head(tasks) -> None:
    seq = tasks.sequence
    net = build_net("mlp", seq, seed=0, hidden_sizes=(16,))
    spec = kd.KDSpec(temperature=2.0)
    student = StudentDistiller("task_il", FAST, LwFConfig(lam=0.0), spec)
    data, probs = _public_data(tasks, 1)
    student._probs = probs
    student.before_task(net, seq, 1, data, None)
    rows = torch.tensor([0, 1, 2, len(tasks.public[0]), len(tasks.public[0]) + 1])  # 2 heads
    batch = data.batch(rows, torch.device("cpu"))
    got = student.batch_loss(net, batch, seq, 1)
    per_row = torch.cat(
        [
            kd.distillation_loss(
                net(data.x[r : r + 1], int(data.heads[r])),
                probs[r : r + 1],
                spec,
                teacher_is_probs=True,
                teacher_temperature=1.0,
                reduction="none",
            )
            for r in rows.tolist()
        ]
    )
    torch.testing.assert_close(got, per_row.mean())


def test_student_learns_the_teacher_and_its_retention_keeps_old_heads(tasks) -> None:
    seq = tasks.sequence
    spec = kd.KDSpec(temperature=2.0)
    data, probs = _public_data(tasks, 1)
    new_rows = data.heads == 1
    results = {}
    for lam in (0.0, 5.0):
        net = build_net("mlp", seq, seed=0, hidden_sizes=(16,))
        head0_before = net(data.x[new_rows], 0).detach()
        student = StudentDistiller("task_il", FAST, LwFConfig(lam=lam, t2_scaling=True), spec)
        only_new = TrainingData(
            data.x[new_rows], torch.arange(int(new_rows.sum())), data.heads[new_rows]
        )
        before = kd.distillation_loss(
            net(only_new.x, 1),
            probs[new_rows],
            spec,
            teacher_is_probs=True,
            teacher_temperature=1.0,
        )
        student.distil(net, seq, 1, only_new, probs[new_rows], torch.Generator().manual_seed(0))
        after = kd.distillation_loss(
            net(only_new.x, 1),
            probs[new_rows],
            spec,
            teacher_is_probs=True,
            teacher_temperature=1.0,
        )
        drift = (net(data.x[new_rows], 0).detach() - head0_before).abs().mean()
        results[lam] = (before.item(), after.item(), drift.item())
    assert results[0.0][1] < results[0.0][0]  # it does learn the teacher
    assert results[5.0][2] < results[0.0][2]  # and the LwF term holds the old head in place


def test_byte_counts() -> None:
    assert prediction_nbytes(torch.full((7, 3), 1 / 3)) == 7 * 3 * 4
    net = torch.nn.Linear(4, 2)
    assert weights_nbytes(net) == (4 * 2 + 2) * 4
    assert np.isclose(weights_nbytes(net), sum(p.numel() * 4 for p in net.parameters()))


# --------------------------------------------------------------------------- schedules


def test_client_orders_rotate_the_sequence() -> None:
    assert client_order(0, 4, 1) == (0, 1, 2, 3)
    assert client_order(1, 4, 1) == (1, 2, 3, 0)
    assert client_order(3, 4, 2) == (2, 3, 0, 1)
    assert client_order(5, 4, 0) == (0, 1, 2, 3)  # shift 0: everyone on the same schedule
    assert stage_queries((2, 0, 1), 1, "seen") == [2, 0]
    assert stage_queries((2, 0, 1), 1, "current") == [0]
    with pytest.raises(ValueError, match="shift"):
        client_order(0, 3, -1)


def test_a_reordered_sequence_keeps_each_tasks_head_and_id(tasks) -> None:
    seq = tasks.sequence.reordered([2, 0, 1])
    assert [t.index for t in seq.tasks] == [2, 0, 1]
    assert [seq.head_of(p) for p in range(3)] == [2, 0, 1]
    assert seq.tasks[0] is tasks.sequence.tasks[2]
    # LwF keeps the heads of the tasks met earlier in *this* order
    from fedkd.continual.lwf import distill_targets

    assert distill_targets(seq, 2, "old") == [(2, None), (0, None)]
    with pytest.raises(ValueError, match="permutation"):
        tasks.sequence.reordered([0, 0, 1])


def test_a_shifted_client_learns_its_own_first_task_on_that_tasks_head(tasks) -> None:
    seq = tasks.clients[1]
    net = build_net("mlp", seq, seed=0, hidden_sizes=(16,))
    learner = build_client_learner("finetune", "task_il", FAST)
    client = FCLClient(seq, net, learner, seed=0, order=(2, 0, 1), public=tasks.public)
    before = [h.weight.detach().clone() for h in net.heads]
    upload = client.fd_stage(0, "seen", temperature=2.0)
    moved = [not torch.equal(b, h.weight) for b, h in zip(before, net.heads, strict=True)]
    assert moved == [False, False, True]  # stage 0 = task 2, on head 2 only
    assert set(upload.probs) == {2} and upload.rows[2] == client.rows(2) == len(
        seq.tasks[2].train_y
    )
    assert upload.probs[2].shape == (len(tasks.public[2]), 2)
    assert upload.class_counts[2].sum() == upload.rows[2]


def test_client_state_bytes_resume_the_client_exactly(tasks) -> None:
    spec = FCLClientSpec(
        sequence=SEQ, num_clients=3, seed=0, min_rows=5, local=FAST, schedule_shift=1
    )
    assert FCLClientSpec.from_json(spec.to_json()) == spec
    straight = spec.build_client(1)
    straight.fd_stage(0, "seen", 2.0)
    resumed = spec.build_client(1)
    resumed.fd_stage(0, "seen", 2.0)
    blob = resumed.state_bytes()
    resumed = spec.build_client(1)  # a fresh process: built from the spec, then its state
    resumed.load_state_bytes(blob)
    a = straight.fd_stage(1, "seen", 2.0)
    b = resumed.fd_stage(1, "seen", 2.0)
    assert set(a.probs) == set(b.probs) == {1, 2}  # client 1 meets tasks 1, 2, 0
    for j in a.probs:
        assert torch.equal(a.probs[j], b.probs[j])  # same weights and same shuffling


def test_student_retention_keeps_exactly_the_tasks_met_before(tasks) -> None:
    seq = tasks.sequence
    data, probs = _public_data(tasks, 1)
    student = StudentDistiller("task_il", FAST, LwFConfig(lam=1.0), kd.KDSpec(temperature=2.0))
    net = build_net("mlp", seq, seed=0, hidden_sizes=(16,))
    seen: list = []
    original = student.before_task

    def spy(*args, **kwargs):
        original(*args, **kwargs)
        seen.append([h for h, _ in student._targets])

    student.before_task = spy  # type: ignore[method-assign]
    student.distil(net, seq, 1, data, probs, old_tasks=[2])
    student.distil(net, seq, 1, data, probs)  # default: range(t)
    student.distil(net, seq, 0, data, probs, old_tasks=[])
    assert seen == [[2], [0], []]
