"""FedDistill end to end, in process: the real ServerApp against real ClientApps (no Ray).

Every run goes through ``simulations.local_grid.run_fd_local`` (the real ServerApp and
ClientApp); misbehaving clients are made by wrapping the real ClientApp.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, Context, Message
from flwr.clientapp import ClientApp

from fedkd import protocol as P
from fedkd.client import load_splits_for
from fedkd.client_app import make_client_app
from fedkd.config import FDConfig, replace, to_run_config
from fedkd.models import build_model, model_nbytes
from fedkd.training import evaluate
from simulations.local_grid import run_fd_local
from strategies.fed_distill import FedDistill, RoundRecord
from strategies.server_app import build_student

Transform = Callable[[Message, Context], Message]


pytestmark = pytest.mark.usefixtures("quiet_logs")  # tests/conftest.py


def _cfg(**changes: Any) -> FDConfig:
    base = dict(
        num_rounds=2,
        num_clients=3,
        min_train_nodes=3,
        local_epochs=1,
        server_epochs=1,
        client_models="mlp",
        student_model="mlp",
        dataset="digits",
        seed=0,
        aggregation="mean",  # the plain path; the selective path has its own tests
        co_distillation=False,
    )
    return FDConfig(**{**base, **changes})


def _wrap(inner: ClientApp, transform: Transform) -> ClientApp:
    """A real ClientApp that passes each reply of ``inner`` through ``transform``."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return transform(inner(msg, context), context)

    @app.query("soft_labels")
    def query(msg: Message, context: Context) -> Message:
        return transform(inner(msg, context), context)

    return app


def _run(cfg: FDConfig, transform: Transform | None = None) -> list[RoundRecord]:
    client_app = None
    if transform is not None:
        client_app = _wrap(make_client_app(to_run_config(cfg)), transform)
    records = run_fd_local(cfg, client_app)
    assert [r.round for r in records] == list(range(1, cfg.num_rounds + 1))
    return records


def _partition(context: Context) -> int:
    return int(context.node_config["partition-id"])


def _raise_on(*partitions: int) -> Transform:
    def transform(reply: Message, context: Context) -> Message:
        if _partition(context) in partitions:
            raise RuntimeError("client crashed")
        return reply

    return transform


def _nan_on(partition: int, then: Transform = lambda r, c: r) -> Transform:
    def transform(reply: Message, context: Context) -> Message:
        if _partition(context) == partition and P.SOFT_LABELS in reply.content.array_records:
            probs = reply.content.array_records[P.SOFT_LABELS]["probs"].numpy().copy()
            probs[0, 0] = np.nan
            reply.content[P.SOFT_LABELS] = ArrayRecord({"probs": Array(probs)})
        return then(reply, context)

    return transform


def _public_size(cfg: FDConfig) -> int:
    return len(load_splits_for(cfg).public_x)


def _assert_sane(records: list[RoundRecord], sampled: int) -> None:
    cum = 0
    for r in records:
        assert r.status == "ok"
        assert r.bytes_up > 0 and r.bytes_down > 0
        cum += r.bytes_up + r.bytes_down
        assert r.cum_bytes == cum
        assert (r.valid_replies, r.rejected, r.missing, r.rejected_reasons) == (sampled, 0, 0, {})
        assert 0.0 <= r.student_accuracy <= 1.0 and math.isfinite(r.student_loss)
        assert r.teacher_accuracy is not None and 0.0 <= r.teacher_accuracy <= 1.0
        assert r.wall_seconds >= 0.0
        assert set(P.ROUND_METRICS) <= set(r.as_dict())
    assert all(b.cum_bytes > a.cum_bytes for a, b in itertools.pairwise(records))


# ----------------------------------------------------------------------------- (a) records
@pytest.mark.parametrize(
    ("num_clients", "fraction", "min_nodes", "sampled"),
    [(4, 1.0, 4, 4), (4, 0.5, 1, 2), (4, 0.25, 3, 3)],
    ids=["all", "half", "min-nodes-wins"],
)
def test_rounds_complete_with_sane_records(
    num_clients: int, fraction: float, min_nodes: int, sampled: int
) -> None:
    records = _run(
        _cfg(
            num_rounds=3,
            num_clients=num_clients,
            fraction_train=fraction,
            min_train_nodes=min_nodes,
        )
    )
    _assert_sane(records, sampled)
    for r in records:
        assert r.client_accuracy is not None and 0.0 <= r.client_accuracy <= 1.0


# ----------------------------------------------------------------------------- (b) architectures
def test_heterogeneous_architectures_in_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, str]] = []
    original = FedDistill.validate

    def spy(self: FedDistill, replies: list[Message], num_samples: int, **kwargs: Any) -> Any:
        valid, rejected = original(self, replies, num_samples, **kwargs)
        seen.extend((int(v.metrics[P.PARTITION_ID]), v.model_name) for v in valid)
        return valid, rejected

    monkeypatch.setattr(FedDistill, "validate", spy)
    models = ("mlp", "cnn", "resnet8")
    records = _run(_cfg(client_models=",".join(models), student_model="cnn", num_rounds=1))
    _assert_sane(records, 3)
    assert {name for _, name in seen} == set(models)
    assert all(name == models[pid % 3] for pid, name in seen)  # round-robin by partition id


# ----------------------------------------------------------------------------- (c) public subset
def test_public_subset_queries_fewer_rows() -> None:
    cfg = _cfg()
    subset = 100
    full, sub = _run(cfg), _run(replace(cfg, public_subset=subset))
    _assert_sane(sub, 3)
    rows_saved = _public_size(cfg) - subset
    float32_saved = 3 * rows_saved * 10 * 4  # replies × rows × classes × bytes
    for f, s in zip(full, sub, strict=True):
        assert abs((f.bytes_up - s.bytes_up) - float32_saved) <= 3 * 16  # framing differs by digits
        assert s.bytes_down - f.bytes_down >= 3 * subset * 4  # the int32 indices go down


# ----------------------------------------------------------------------------- (d) separate query
def test_separate_query_matches_the_one_reply_path() -> None:
    cfg = _cfg()
    one, two = _run(cfg), _run(replace(cfg, separate_query=True))
    _assert_sane(two, 3)
    for a, b in zip(one, two, strict=True):
        # Same models answer the same query, so the teacher and the student are the same ...
        assert b.teacher_accuracy == pytest.approx(a.teacher_accuracy, abs=1e-9)
        assert b.student_accuracy == pytest.approx(a.student_accuracy, abs=1e-9)
        # ... but a second message phase costs a second request per client and reply framing.
        assert b.bytes_down >= 2 * a.bytes_down - 3 * 16
        assert b.bytes_up > a.bytes_up


def test_separate_query_reports_client_accuracy() -> None:
    records = _run(_cfg(separate_query=True, num_rounds=1))
    assert records[0].client_accuracy is not None


# ----------------------------------------------------------------------------- (e) co-distillation
def test_co_distillation_sends_the_teacher_after_round_one() -> None:
    cfg = _cfg(num_rounds=3)
    plain = _run(cfg)
    codist = _run(replace(cfg, co_distillation=True, codistill_min_certainty=0.0))
    _assert_sane(codist, 3)
    assert codist[0].bytes_down == plain[0].bytes_down  # no teacher exists yet
    teacher_arrays = _public_size(cfg) * (10 * 4 + 4)  # float32 probs + int32 indices per row
    for r in codist[1:]:
        assert r.bytes_down - plain[0].bytes_down >= 3 * teacher_arrays
    # Clients really distil toward it: their local models (and accuracy) change.
    assert codist[1].client_accuracy != pytest.approx(plain[1].client_accuracy, abs=1e-9)


def test_only_certain_teacher_rows_go_back_to_clients() -> None:
    """The certainty gate: a near-uniform mean teacher (round 1, three clients that know little)
    sends fewer rows than the full set, and a gate of 1 sends none (clients then train alone)."""
    cfg = _cfg(num_rounds=2, co_distillation=True)
    first = _run(replace(cfg, codistill_min_certainty=0.0))
    mean_certainty = first[0].teacher_certainty  # about half the rows are above the mean
    assert mean_certainty is not None
    gated, none = (
        _run(replace(cfg, codistill_min_certainty=g))[1].bytes_down for g in (mean_certainty, 1.0)
    )
    full = first[1].bytes_down
    assert none < gated < full
    assert full - none >= 3 * _public_size(cfg) * (10 * 4 + 4)  # every row vs no row


def test_selective_rule_asks_for_support_and_skips_unsupported_rows() -> None:
    records = _run(_cfg(aggregation="selective", num_rounds=2, co_distillation=True))
    _assert_sane(records, 3)
    for r in records:
        assert r.teacher_coverage is not None and 0.5 < r.teacher_coverage <= 1.0
        assert r.teacher_certainty is not None and 0.0 <= r.teacher_certainty <= 1.0
    plain = _run(_cfg(num_rounds=1))[0]
    assert records[0].bytes_up - plain.bytes_up >= 3 * _public_size(_cfg())  # 1 byte per row


# ----------------------------------------------------------------------------- (f) codecs
# Payload bytes per (row, class) relative to float32: fp16 2/4, int8 1/4, topk(k=3, C=10) with
# uint8 indices and fp16 values 3·(1+2)/(10·4).
CODEC_RATIOS = {"fp16": 0.5, "int8": 0.25, "topk": 9 / 40}


def test_codecs_shrink_uplink_by_the_expected_ratio() -> None:
    cfg = _cfg(num_rounds=1, topk=3)
    up = {codec: _run(replace(cfg, codec=codec))[0].bytes_up for codec in ("none", *CODEC_RATIOS)}
    float32_payload = 3 * _public_size(cfg) * 10 * 4
    overhead = up["none"] - float32_payload  # framing, metrics and metadata of 3 replies
    assert 0 < overhead < 0.1 * float32_payload
    for codec, ratio in CODEC_RATIOS.items():
        measured = (up[codec] - overhead) / float32_payload
        assert measured == pytest.approx(ratio, abs=0.03), codec
        assert up[codec] < up["none"]


# ----------------------------------------------------------------------------- (g) bad clients
def test_crashing_and_malformed_clients_are_rejected_and_the_round_goes_on() -> None:
    cfg = _cfg(num_clients=4, min_train_nodes=4)
    bad = _run(cfg, _nan_on(1, then=_raise_on(0)))
    for r in bad:
        assert r.status == "ok"
        assert (r.valid_replies, r.rejected, r.missing) == (2, 2, 0)
        assert r.rejected_reasons == {"client-error": 1, "non-finite": 1}
    # The NaN reply never touched the teacher: dropping both bad clients gives the same run.
    dropped = _run(cfg, _raise_on(0, 1))
    for a, b in zip(bad, dropped, strict=True):
        assert a.student_accuracy == pytest.approx(b.student_accuracy, abs=1e-9)
        assert a.teacher_accuracy == pytest.approx(b.teacher_accuracy, abs=1e-9)
        assert a.bytes_up > b.bytes_up  # the rejected reply still crossed the wire


# ----------------------------------------------------------------------------- (h) too few replies
def test_too_few_valid_replies_skip_the_round_and_keep_the_student() -> None:
    from simulations.local_grid import run_local
    from strategies.server_app import NoRoundCompleted, make_server_app

    cfg = _cfg(min_replies=3)
    records: list[RoundRecord] = []
    run_config = to_run_config(cfg)
    client_app = _wrap(make_client_app(run_config), _raise_on(0))
    # Every round is skipped: the records are written, then the run ends non-zero.
    with pytest.raises(NoRoundCompleted, match="no round completed in 2"):
        run_local(make_server_app(run_config, [records.append]), client_app, cfg.num_clients)
    assert [r.round for r in records] == [1, 2]
    splits = load_splits_for(cfg)
    untouched = evaluate(
        build_student(cfg, splits.input_shape, splits.num_classes),
        splits.test_x,
        splits.test_y,
        num_classes=splits.num_classes,
    )
    for r in records:
        assert r.status.startswith("skipped")
        assert (r.valid_replies, r.rejected, r.teacher_accuracy) == (2, 1, None)
        assert r.student_loss == pytest.approx(untouched.loss, abs=1e-6)
        assert r.student_accuracy == pytest.approx(untouched.accuracy, abs=1e-9)
        assert r.bytes_up > 0  # the valid replies were still received and counted


# ----------------------------------------------------------------------------- (i) FedAvg
def test_fedavg_path_reports_bytes_far_above_fd() -> None:
    cfg = _cfg(client_models="cnn", student_model="cnn")
    fedavg = _run(replace(cfg, strategy="fedavg"))
    fd = _run(cfg)
    splits = load_splits_for(cfg)
    weights = model_nbytes(build_model("cnn", splits.input_shape, splits.num_classes))
    cum = 0
    for r in fedavg:
        assert r.valid_replies == 3 and 0.0 <= r.student_accuracy <= 1.0
        assert r.bytes_up >= 3 * weights and r.bytes_down >= 3 * weights  # weights both ways
        cum += r.bytes_up + r.bytes_down
        assert r.cum_bytes == cum
    fd_per_round = np.mean([r.bytes_up + r.bytes_down for r in fd])
    fedavg_per_round = np.mean([r.bytes_up + r.bytes_down for r in fedavg])
    assert fedavg_per_round > 5 * fd_per_round


# ----------------------------------------------------------------------------- streaming teacher
@pytest.mark.parametrize("rule", ["mean", "confidence", "median"])
def test_mean_type_rules_fold_replies_and_give_the_stacked_teacher(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The round folds each decoded reply into running sums for mean-type rules (no stack);
    # a spy recomputes the teacher from the same replies the stacked way and compares.
    from strategies import fed_distill as FD

    kept: list[tuple[np.ndarray, np.ndarray, bool]] = []
    original = FedDistill.validate

    def spy(self: FedDistill, replies: list[Message], num_samples: int, **kwargs: Any) -> Any:
        full, _ = original(self, replies, num_samples)  # unfolded copy, for the reference
        valid, rejected = original(self, replies, num_samples, **kwargs)
        folded = kwargs.get("fold") is not None
        kept.append((self.aggregate_teacher(full), np.stack([v.probs for v in full]), folded))
        assert all((v.probs is FD.FOLDED) == folded for v in valid)
        return valid, rejected

    monkeypatch.setattr(FedDistill, "validate", spy)
    # The spy re-validates the round's replies, so they must be held until validate runs;
    # streamed receive (the default) has let go of their arrays by then, and is checked
    # against this held path in tests/strategies/test_receive.py.
    monkeypatch.setattr(FedDistill, "stream_replies", False)
    teachers: list[np.ndarray] = []
    original_distil = FedDistill.distil_student

    def capture(self: FedDistill, teacher: np.ndarray, indices: Any) -> float:
        teachers.append(teacher)
        return original_distil(self, teacher, indices)

    monkeypatch.setattr(FedDistill, "distil_student", capture)
    _run(_cfg(aggregation=rule, num_rounds=1))
    [(reference, stack, folded)] = kept
    assert folded == (rule != "median") and stack.shape[0] == 3
    np.testing.assert_allclose(teachers[0], reference, atol=1e-6)


def test_explain_teacher_writes_a_report_per_round(tmp_path) -> None:
    """explain-teacher: one JSON (and picture) per round naming every client that replied,
    with agreement and leave-one-out effects judged against the simulator's public labels."""
    import json

    cfg = _cfg(num_rounds=2, run_dir=str(tmp_path), explain_teacher=True, checkpoint=False)
    records = _run(cfg)
    _assert_sane(records, 3)
    for r in (1, 2):
        report = json.loads((tmp_path / "explain" / f"round-{r}.json").read_text())
        assert report["round"] == r and len(report["clients"]) == 3
        assert all(0.0 <= a <= 1.0 for a in report["agreement"])
        assert report["judged_against"] == "reference"
        assert report["teacher_accuracy"] == pytest.approx(records[r - 1].teacher_accuracy)
        assert len(report["samples"]["label"]) == _public_size(cfg)
        assert (tmp_path / "explain" / f"round-{r}.png").exists()
    plain = _run(_cfg(num_rounds=1, run_dir=str(tmp_path / "off"), checkpoint=False))
    assert plain and not (tmp_path / "off" / "explain").exists()
