"""``vectorize-cohort``: a cohort's members trained in one batched call give the per-member numbers.

The batched path (:mod:`fedkd.vectorized`) stacks K members' MLPs and runs training, the local
test scores and the soft labels through ``torch.func.vmap``. Each member draws its own batches
from its own generator and the optimizers' updates are elementwise, so the only admissible
difference is the order of float sums inside batched matmuls: parameters and soft labels are
compared with ``atol=1e-5`` (float32 values of order 1; a reordered sum moves them by a few
ulps, ~1e-7, and a wrong batch, learning rate or optimizer state by far more than 1e-5), and
what is discrete (argmax predictions, test accuracies, the student's accuracy) must be equal.
The Flower runs use the real in-process grid and the real ServerApp/ClientApp.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedkd import protocol as P
from fedkd import state_blob, vectorized
from fedkd.client import ClientData, FDClient, RoundOutcome, load_client_data
from fedkd.client_app import (
    GROUPS_KEY,
    LIVE_CLIENTS,
    _cohort_member,
    _restore,
    group_state_key,
    make_client_app,
)
from fedkd.config import ConfigError, FDConfig, from_run_config, to_run_config
from simulations.local_grid import run_local
from strategies.fed_distill import RoundRecord
from strategies.server_app import make_server_app
from tests.helpers import tiny_federation

ATOL = 1e-5  # see the module docstring: summation order only, never a different computation

# Six tiny synthetic clients in two cohorts of three; four sampled per round, so some node
# always serves two or more (a batched group) and members join and miss rounds (fresh and
# trained optimizer state side by side, Adam step counts that differ within a cohort).
BASE = tiny_federation(
    min_train_nodes=4,
    num_rounds=3,
    local_epochs=2,
    co_distillation=False,
    clients_per_message=3,
    batch_size=16,
)


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    yield
    logging.disable(logging.NOTSET)


@pytest.fixture
def batched_members(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many members each batched call served (a pass-through spy on our own function)."""
    sizes: list[int] = []
    real = vectorized.run_group

    def spy(clients: Any, req: Any, *, train: bool) -> Any:
        out = real(clients, req, train=train)
        if out is not None:
            sizes.append(len(clients))
        return out

    monkeypatch.setattr(vectorized, "run_group", spy)
    return sizes


Replies = dict[tuple[str, int, int, int], dict[str, Any]]  # (type, round, node, slot) -> reply


def _recording(cfg: FDConfig, replies: Replies) -> ClientApp:
    """The real ClientApp; every member's soft labels and metrics are kept for comparison."""
    inner = make_client_app(to_run_config(cfg))
    app = ClientApp()

    def record(msg: Message, context: Context) -> Message:
        reply = inner(msg, context)
        server_round = P.parse_request(msg.content).server_round
        for slot, part in P.split_cohort_reply(reply.content).items():
            assert not isinstance(part, tuple), part
            kind = msg.metadata.message_type
            replies[(kind, server_round, int(context.node_id), slot)] = {
                "probs": part[P.SOFT_LABELS]["probs"].numpy() if P.SOFT_LABELS in part else None,
                "metrics": dict(part[P.METRICS]),
            }
        return reply

    app.train()(record)
    app.query("soft_labels")(record)
    return app


def _run(cfg: FDConfig) -> tuple[list[RoundRecord], Replies, dict[str, Any]]:
    """A real in-process Flower run: round records, member replies, final member states."""
    records: list[RoundRecord] = []
    replies: Replies = {}
    grid = run_local(
        make_server_app(to_run_config(cfg), [records.append]),
        _recording(cfg, replies),
        cfg.num_nodes,
    )
    states = {
        f"{node}/{key}": _member_state(context, record)
        for node, context in grid.contexts.items()
        for key, record in context.state.config_records.items()
        if ("blob" in record and "token" in record) or "group" in record
    }
    return records, replies, states


def _member_state(context: Context, record: Any) -> Any:
    """A member's saved state: its own blob, or its row of its group's stacked state."""
    if "group" not in record:
        return state_blob.loads(record["blob"])
    group = context.state[group_state_key(record["group"])]["blob"]
    return state_blob.row(state_blob.loads(group), record["row"])


def _assert_trees_close(a: Any, b: Any) -> None:
    """Nested dicts/lists of tensors equal within ATOL (scalars exactly)."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_trees_close(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_trees_close(x, y)
    else:
        assert a == b


@pytest.mark.parametrize(
    "changes",
    [{"optimizer": "sgd"}, {"optimizer": "adam"}, {"separate_query": True}],
    ids=["sgd", "adam", "separate-query"],
)
def test_a_vectorized_cohort_gives_the_numbers_of_its_members_one_by_one(
    changes: dict[str, Any], batched_members: list[int]
) -> None:
    one_by_one = dataclasses.replace(BASE, **changes)
    queries = 4 * BASE.num_rounds if one_by_one.separate_query else 0
    records, replies, states = _run(one_by_one)
    assert batched_members == []  # the option is off: nothing batched
    records_v, replies_v, states_v = _run(dataclasses.replace(one_by_one, vectorize_cohort=True))
    # it really ran batched, every round (and every query phase)
    assert sum(batched_members) >= 2 * BASE.num_rounds * (2 if queries else 1)

    # the student: same accuracy every round (the teacher is the mean of the soft labels)
    assert [r.student_accuracy for r in records_v] == [r.student_accuracy for r in records]
    assert [r.client_accuracy for r in records_v] == [r.client_accuracy for r in records]
    assert [r.valid_replies for r in records_v] == [r.valid_replies for r in records]
    np.testing.assert_allclose(
        [r.student_loss for r in records_v], [r.student_loss for r in records], atol=ATOL
    )
    # every member: soft labels close, the same argmax, the same metrics
    assert replies_v.keys() == replies.keys() and len(replies) == 4 * BASE.num_rounds + queries
    assert sum(r["probs"] is not None for r in replies.values()) == 4 * BASE.num_rounds
    for key, mine in replies_v.items():
        theirs = replies[key]
        if theirs["probs"] is None:  # a train reply when a query phase follows
            assert mine["probs"] is None
        else:
            np.testing.assert_allclose(mine["probs"], theirs["probs"], atol=ATOL, rtol=0)
            assert (mine["probs"].argmax(1) == theirs["probs"].argmax(1)).all()
        m, t = mine["metrics"], theirs["metrics"]
        assert m.keys() == t.keys()
        for name in m:
            if name in ("train-loss", "test-loss"):
                assert m[name] == pytest.approx(t[name], abs=ATOL)
            else:
                assert m[name] == t[name], name
    # what later rounds start from: each member's saved model and optimizer state
    assert states_v.keys() == states.keys() and len(states) >= 4
    _assert_trees_close(states_v, states)


def test_co_distillation_rounds_take_the_per_member_path(batched_members: list[int]) -> None:
    """Round 1 has no teacher (batched); later rounds co-distil (per member), same numbers."""
    # every teacher row goes back (the default gate keeps none of a first round's flat rows,
    # and a teacher without rows is plain training, which is batched)
    cfg = dataclasses.replace(BASE, co_distillation=True, codistill_min_certainty=0.0, num_rounds=2)
    records, replies, _ = _run(cfg)
    batched_members.clear()
    records_v, replies_v, _ = _run(dataclasses.replace(cfg, vectorize_cohort=True))
    assert 2 <= sum(batched_members) <= 4  # round 1's members only
    assert [r.student_accuracy for r in records_v] == [r.student_accuracy for r in records]
    for key, mine in replies_v.items():
        np.testing.assert_allclose(mine["probs"], replies[key]["probs"], atol=ATOL, rtol=0)
        assert (mine["probs"].argmax(1) == replies[key]["probs"].argmax(1)).all()


# ----------------------------------------------------------------------------- unit level
def _clients(cfg: FDConfig, sizes: list[int] | None = None) -> list[FDClient]:
    """Cohort members built as the ClientApp builds them; ``sizes`` trims their private sets."""
    out = []
    for i in range(cfg.num_clients):
        data = load_client_data(cfg, i, cfg.num_clients)
        if sizes is not None:
            data = dataclasses.replace(data, train_x=data.train_x[: sizes[i]])
            data = dataclasses.replace(data, train_y=data.train_y[: sizes[i]])
        out.append(FDClient(cfg, data, "mlp", i))
    return out


def _request(client: FDClient, server_round: int, **changes: Any) -> P.RoundRequest:
    req = P.RoundRequest(
        server_round=server_round,
        local_epochs=2,
        lr=0.05,
        temperature=2.0,
        codec="none",
        topk=0,
        public_indices=np.arange(0, 80, 2),
        public_size=len(client.data.public_x),
        public_hash=client.data.public_digest,
        with_predictions=True,
        distill_epochs=0,
        teacher_probs=None,
        teacher_indices=None,
    )
    return dataclasses.replace(req, **changes)


def _assert_same(mine: RoundOutcome, theirs: RoundOutcome, a: FDClient, b: FDClient) -> None:
    assert mine.payload is not None and theirs.payload is not None
    np.testing.assert_allclose(mine.payload["probs"], theirs.payload["probs"], atol=ATOL, rtol=0)
    assert mine.metrics["test-accuracy"] == theirs.metrics["test-accuracy"]
    assert mine.metrics["train-loss"] == pytest.approx(theirs.metrics["train-loss"], abs=ATOL)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=ATOL, rtol=0)


def test_members_of_unequal_sizes_are_grouped_by_size_and_still_match() -> None:
    cfg = dataclasses.replace(BASE, num_clients=5, min_train_nodes=1, clients_per_message=5)
    sizes = [40, 33, 40, 33, 20]  # two groups of two, one member alone
    clients = _clients(cfg, sizes)
    req = _request(clients[0], 1)
    groups, singles = vectorized.plan(dict(enumerate(clients)), req, train=True)
    assert (groups, singles) == ([[0, 2], [1, 3]], [4])
    one_by_one = copy.deepcopy(clients)
    expected = [c.run_round(req, train=True) for c in one_by_one]
    for group in groups:
        outcomes = vectorized.run_group([clients[s] for s in group], req, train=True)
        assert outcomes is not None
        for slot, outcome in zip(group, outcomes, strict=True):
            assert isinstance(outcome, RoundOutcome)
            _assert_same(outcome, expected[slot], clients[slot], one_by_one[slot])


def test_a_diverging_member_fails_alone() -> None:
    cfg = dataclasses.replace(BASE, num_clients=3, min_train_nodes=1)
    clients = _clients(cfg)
    bad = clients[1].data
    clients[1].data = ClientData(**{**vars(bad), "train_x": torch.full_like(bad.train_x, np.nan)})
    one_by_one = copy.deepcopy(clients)
    req = _request(clients[0], 1)
    with pytest.raises(RuntimeError, match="training diverged") as err:
        one_by_one[1].run_round(req, train=True)
    outcomes = vectorized.run_group(clients, req, train=True)
    assert outcomes is not None
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == str(err.value)
    for i in (0, 2):
        outcome = outcomes[i]
        assert isinstance(outcome, RoundOutcome)
        _assert_same(outcome, one_by_one[i].run_round(req, train=True), clients[i], one_by_one[i])


def test_only_plain_local_training_is_batched() -> None:
    client = _clients(dataclasses.replace(BASE, num_clients=3, min_train_nodes=1))[0]
    req = _request(client, 2)
    assert vectorized.why_not(client, req, train=True) is None
    teacher = _request(
        client, 2, teacher_probs=np.full((4, 10), 0.1, np.float32), teacher_indices=np.arange(4)
    )
    assert vectorized.why_not(client, teacher, train=True) == "co-distillation teacher"
    assert vectorized.why_not(client, teacher, train=False) is None  # a query only predicts
    for changes in ({"fault_crash_train": 0.1}, {"byzantine_fraction": 0.5}):
        client.cfg = dataclasses.replace(BASE, **changes)
        assert vectorized.why_not(client, req, train=True) == "faults or attackers injected"


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"vectorize_cohort": True, "clients_per_message": 1}, "needs clients-per-message > 1"),
        ({"vectorize_cohort": "yes"}, "expected bool"),
        ({"vectorize_cohort": 1}, "expected bool"),
    ],
)
def test_a_bad_vectorize_cohort_fails_naming_the_key(changes: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=f"invalid config key 'vectorize-cohort': .*{says}") as e:
        dataclasses.replace(BASE, **changes)
    assert "\n" not in str(e.value)  # one line
    flat = {**to_run_config(BASE), "vectorize-cohort": changes["vectorize_cohort"]}
    flat["clients-per-message"] = changes.get("clients_per_message", 3)
    with pytest.raises(ConfigError, match="'vectorize-cohort'"):
        from_run_config(flat)


def test_a_cnn_cohort_batches_too() -> None:
    """Convolutions and pooling go through vmap as well (embedded 8x8 digits, small CNN)."""
    cfg = FDConfig(
        dataset="digits",
        partition="iid",
        num_clients=8,
        min_train_nodes=2,
        client_models="cnn",
        student_model="cnn",
        val_fraction=0.0,
        checkpoint=False,
    )
    clients = [FDClient(cfg, load_client_data(cfg, i, 8), "cnn", i) for i in range(3)]
    req = _request(clients[0], 1, local_epochs=1)
    groups, singles = vectorized.plan(dict(enumerate(clients)), req, train=True)
    assert groups == [[0, 1, 2]] and singles == []  # digits split 113 rows each
    one_by_one = copy.deepcopy(clients)
    outcomes = vectorized.run_group(clients, req, train=True)
    assert outcomes is not None
    for i, outcome in enumerate(outcomes):
        assert isinstance(outcome, RoundOutcome)
        _assert_same(outcome, one_by_one[i].run_round(req, train=True), clients[i], one_by_one[i])


def test_bench_scale_vec_variants_run_cohorts_batched() -> None:
    from benchmarks import bench_scale as B

    assert B.split_variant("flower-ray-k50-vec") == ("flower-ray", 50)
    assert B.vectorized("flower-ray-k50-vec") and B.vectorized("flower-local-k10-vec")
    assert not B.vectorized("flower-ray-k50") and not B.vectorized("flower-ray-vec")
    assert B.scale_config(100, 2, per_message=50, vectorize=True).vectorize_cohort


def test_a_failing_batched_call_falls_back_to_one_by_one(
    monkeypatch: pytest.MonkeyPatch, batched_members: list[int]
) -> None:
    """Whatever vmap cannot batch is served one by one, with the per-member numbers."""
    cfg = dataclasses.replace(BASE, num_rounds=2)
    records, replies, states = _run(cfg)

    def unbatchable(self: Any, req: Any) -> Any:
        raise RuntimeError("an op vmap has no batching rule for")

    monkeypatch.setattr(vectorized._Stacked, "train", unbatchable)
    records_v, replies_v, states_v = _run(dataclasses.replace(cfg, vectorize_cohort=True))
    assert batched_members == []  # every batched call failed ...
    assert [r.as_dict() | {"wall_seconds": 0} for r in records_v] == [
        r.as_dict() | {"wall_seconds": 0} for r in records
    ]  # ... and the members one by one gave exactly the numbers of the option off
    assert replies_v.keys() == replies.keys()
    for key, mine in replies_v.items():
        np.testing.assert_array_equal(mine["probs"], replies[key]["probs"])
    _assert_trees_close(states_v, states)


# ----------------------------------------------------------------------------- group states
def _named_groups(context: Context) -> set[str]:
    return {
        str(record["group"])
        for record in context.state.config_records.values()
        if "group" in record
    }


@pytest.mark.parametrize("where", ["context", "disk"])
def test_a_batched_group_saves_one_stacked_state_and_drops_those_nobody_names(
    where: str, tmp_path: Path
) -> None:
    """One state per group (not per member); every member's record names an existing group
    state and its row; no group state outlives the records naming it; and a member rebuilt
    from its row (another worker) holds exactly the bytes its live object would save."""
    cfg = dataclasses.replace(
        BASE,
        vectorize_cohort=True,
        num_rounds=4,
        client_state=where,
        client_state_dir=str(tmp_path) if where == "disk" else "",
    )
    grid = run_local(
        make_server_app(to_run_config(cfg), []), make_client_app(to_run_config(cfg)), 2
    )
    rows = retired = 0
    for node, context in grid.contexts.items():
        named = _named_groups(context)
        stored = (
            {p.name.split(".")[2] for p in tmp_path.glob(f"run-*/node-{node}.group.*.pt")}
            if where == "disk"
            else {k.rsplit(".", 1)[1] for k in context.state.config_records if ".group." in k}
        )
        groups = context.state[GROUPS_KEY]
        assert set(groups["tokens"]) == named
        # on disk, the groups this message superseded stay one message longer (a worker dying
        # before its reply leaves the driver a Context naming them); in the Context, they go
        kept = set(groups.get("retired", []))
        assert kept.isdisjoint(named) and (where == "disk" or not kept)
        retired += len(kept)
        assert named and stored == named | kept  # no orphans, nothing missing
        for key, record in context.state.config_records.items():
            if "group" not in record:
                continue
            rows += 1
            member = _cohort_member(context, cfg, int(key.rsplit(".", 1)[1]))
            live = LIVE_CLIENTS.get(member.key, str(record["token"]), cfg)
            assert live is not None
            LIVE_CLIENTS.drop(member.key)  # as if another worker served it next
            rebuilt = _restore(context, cfg, member)
            assert rebuilt is not live and rebuilt.state_bytes() == live.state_bytes()
    assert rows >= 4 and (retired > 0) == (where == "disk")
    if where == "disk":  # a member's own file only while its record names it (not its group)
        own = {p.name.split(".")[1] for p in tmp_path.glob("run-*/node-*.pt")} - {"group"}
        records = [r for c in grid.contexts.values() for r in c.state.config_records.values()]
        named = {str(r["token"]) for r in records if "token" in r and "group" not in r}
        prior = {str(r["prior"]) for r in records if "prior" in r}  # kept one save longer
        assert own == named | prior


def test_states_stack_only_when_they_match_exactly() -> None:
    torch.manual_seed(0)
    trees = [
        {"w": torch.randn(3, 2), "s": {0: {"step": torch.tensor(4.0)}}, "lr": 0.1, "k": [1, "a"]}
        for _ in range(3)
    ]
    stacked = state_blob.stack(trees)
    assert stacked is not None and stacked["w"].shape == (3, 3, 2)
    for i, tree in enumerate(trees):  # each member's bytes exactly
        assert state_blob.dumps(state_blob.row(stacked, i)) == state_blob.dumps(tree)
    assert state_blob.row(stacked, 1)["w"].untyped_storage().size() == 3 * 2 * 4  # its own copy
    bad = [
        {**trees[0], "w": torch.randn(2, 2)},  # a shape
        {**trees[0], "lr": 0.2},  # a setting
        {"lr": 0.1, "w": trees[0]["w"], "s": trees[0]["s"], "k": [1, "a"]},  # key order
        {**trees[0], "w": trees[0]["w"].double()},  # a dtype
        {**trees[0], "k": [1]},  # a length
    ]
    for other in bad:
        assert state_blob.stack([trees[0], other]) is None
    assert state_blob.stack([]) is None
