"""Malformed client replies are rejected with the right reason, never raised, never aggregated.

Each case starts from a valid reply built by ``fedkd.protocol.reply_content`` (what the real
ClientApp sends) and corrupts one thing; the checks run through a real ``FedDistill.validate``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from flwr.app import (
    DEFAULT_TTL,
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)

from fedkd import protocol as P
from fedkd.compression import encode_probs
from fedkd.config import FDConfig
from fedkd.models import build_model
from strategies.fed_distill import FedDistill, PublicSet
from strategies.fed_distill import TestSet as EvalSet  # aliased: pytest would collect Test*
from strategies.validation import Expected, Rejection, ValidReply, validate_reply

ROWS, CLASSES = 12, 10


def _strategy(codec: str = "none", aggregation: str = "mean") -> FedDistill:
    cfg = FDConfig(codec=codec, client_models="mlp", student_model="mlp", aggregation=aggregation)
    public = PublicSet(torch.rand(ROWS, 1, 8, 8))
    test = EvalSet(torch.rand(4, 1, 8, 8), torch.arange(4), CLASSES)
    return FedDistill(cfg, build_model("mlp", (1, 8, 8), CLASSES), public, test)


def _probs(rows: int = ROWS, classes: int = CLASSES) -> np.ndarray:
    return np.random.default_rng(0).dirichlet(np.ones(classes), size=rows).astype(np.float32)


def _content(codec: str = "none", probs: np.ndarray | None = None) -> RecordDict:
    payload = encode_probs(_probs() if probs is None else probs, codec, topk=3)  # type: ignore[arg-type]
    metrics = {P.NUM_EXAMPLES: 80, P.CLASS_COUNTS: [8] * CLASSES, P.PARTITION_ID: 0}
    return P.reply_content(payload, metrics, model_name="mlp", codec=codec)


def _metadata(node: int) -> Metadata:
    return Metadata(
        run_id=1,
        message_id=f"reply-{node}",
        src_node_id=node,
        dst_node_id=1,
        reply_to_message_id=f"req-{node}",
        group_id="1",
        created_at=time.time(),
        ttl=DEFAULT_TTL,
        message_type=P.TRAIN,
    )


def _reply(node: int, content: RecordDict) -> Message:
    return Message(metadata=_metadata(node), content=content)


# ----------------------------------------------------------------------------- corruptions
def _set_probs(content: RecordDict, arr: np.ndarray, key: str = "probs") -> None:
    content[P.SOFT_LABELS] = ArrayRecord({key: Array(np.ascontiguousarray(arr))})


def _with_probs(make: Callable[[np.ndarray], np.ndarray]) -> Callable[[RecordDict], None]:
    return lambda c: _set_probs(c, make(_probs()))


def _put(arr: np.ndarray, value: float) -> np.ndarray:
    arr = arr.copy()
    arr[3, 4] = value
    return arr


def _drop(record_key: str) -> Callable[[RecordDict], None]:
    def corrupt(content: RecordDict) -> None:
        del content[record_key]

    return corrupt


def _metric(key: str, value: object | None) -> Callable[[RecordDict], None]:
    def corrupt(content: RecordDict) -> None:
        metrics = dict(content.metric_records[P.METRICS].items())
        if value is None:
            del metrics[key]
        else:
            metrics[key] = value
        content[P.METRICS] = MetricRecord(metrics)

    return corrupt


def _meta_codec(codec: str) -> Callable[[RecordDict], None]:
    def corrupt(content: RecordDict) -> None:
        content[P.META] = ConfigRecord({P.MODEL_NAME: "mlp", P.CODEC: codec})

    return corrupt


def _metrics_as_config(content: RecordDict) -> None:
    metrics = dict(content.metric_records[P.METRICS].items())
    del content[P.METRICS]
    content[P.METRICS] = ConfigRecord(metrics)  # right key, wrong record type


def _topk_index(value: int) -> Callable[[RecordDict], None]:
    def corrupt(content: RecordDict) -> None:
        arrays = {k: a.numpy() for k, a in content.array_records[P.SOFT_LABELS].items()}
        indices = arrays["indices"].astype(np.int64)
        indices[0, 0] = value
        arrays["indices"] = indices
        content[P.SOFT_LABELS] = ArrayRecord(
            {k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()}
        )

    return corrupt


@dataclass(frozen=True)
class Case:
    name: str
    corrupt: Callable[[RecordDict], None]
    reason: str
    codec: str = "none"


CASES = [
    Case("too-few-rows", _with_probs(lambda p: p[:-1]), "shape"),
    Case("too-many-rows", _with_probs(lambda p: np.vstack([p, p[:1]])), "shape"),
    Case("one-dimensional", _with_probs(lambda p: p.ravel()), "shape"),
    Case("three-dimensional", _with_probs(lambda p: p[None]), "shape"),
    Case("wrong-classes", lambda c: _set_probs(c, _probs(classes=CLASSES + 1)), "shape"),
    Case("nan", _with_probs(lambda p: _put(p, np.nan)), "non-finite"),
    Case("inf", _with_probs(lambda p: _put(p, np.inf)), "non-finite"),
    Case(
        "fp16-nan", _with_probs(lambda p: _put(p, np.nan).astype(np.float16)), "non-finite", "fp16"
    ),
    Case("negative", _with_probs(lambda p: _put(p, -0.1)), "negative"),
    Case("rows-sum-to-2", _with_probs(lambda p: 2 * p), "not-distribution"),
    Case("rows-sum-to-0.99", _with_probs(lambda p: 0.99 * p), "not-distribution"),
    Case("all-zero", _with_probs(np.zeros_like), "not-distribution"),
    Case("complex-dtype", _with_probs(lambda p: p.astype(np.complex64)), "dtype"),
    Case("bool-dtype", _with_probs(lambda p: p > 0.1), "dtype"),
    Case("missing-metrics", _drop(P.METRICS), "missing-metrics"),
    Case("metrics-wrong-record-type", _metrics_as_config, "missing-metrics"),
    Case("missing-meta", _drop(P.META), "missing-meta"),
    Case("missing-soft-labels", _drop(P.SOFT_LABELS), "missing-soft-labels"),
    Case("missing-num-examples", _metric(P.NUM_EXAMPLES, None), "missing-metadata"),
    Case("missing-class-counts", _metric(P.CLASS_COUNTS, None), "missing-metadata"),
    Case("negative-num-examples", _metric(P.NUM_EXAMPLES, -5), "bad-metadata"),
    Case("nan-num-examples", _metric(P.NUM_EXAMPLES, float("nan")), "bad-metadata"),
    Case("list-num-examples", _metric(P.NUM_EXAMPLES, [1, 2]), "bad-metadata"),
    Case("short-class-counts", _metric(P.CLASS_COUNTS, [8] * (CLASSES - 1)), "bad-metadata"),
    Case(
        "negative-class-count", _metric(P.CLASS_COUNTS, [8] * (CLASSES - 1) + [-1]), "bad-metadata"
    ),
    Case("other-codec", _meta_codec("int8"), "codec"),
    Case("unknown-codec", _meta_codec("zip"), "codec"),
    Case("array-named-for-other-codec", _with_probs(lambda p: p), "malformed", "int8"),
    Case("wrong-array-name", lambda c: _set_probs(c, _probs(), key="logits"), "malformed"),
    Case("topk-index-out-of-range", _topk_index(CLASSES), "malformed", "topk"),
    Case("topk-negative-index", _topk_index(-1), "malformed", "topk"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_reply_is_rejected_with_reason(case: Case) -> None:
    strategy = _strategy(case.codec)
    content = _content(case.codec)
    case.corrupt(content)
    valid, rejected = strategy.validate([_reply(7, content)], ROWS)
    assert valid == []
    assert [(r.node_id, r.reason) for r in rejected] == [(7, case.reason)]
    assert rejected[0].detail  # a human sentence for the log


@pytest.mark.parametrize("codec", ["none", "fp16", "int8", "topk"])
def test_valid_reply_passes_decoded(codec: str) -> None:
    probs = _probs()
    valid, rejected = _strategy(codec).validate([_reply(3, _content(codec, probs))], ROWS)
    assert rejected == []
    (reply,) = valid
    assert isinstance(reply, ValidReply)
    assert (reply.node_id, reply.num_examples, reply.model_name) == (3, 80, "mlp")
    np.testing.assert_array_equal(reply.class_counts, [8] * CLASSES)
    assert reply.probs.shape == (ROWS, CLASSES)
    np.testing.assert_allclose(reply.probs.sum(axis=1), 1.0, atol=1e-5)
    if codec != "topk":  # topk drops the tail mass by design
        np.testing.assert_allclose(reply.probs, probs, atol=0.01)


def test_mixed_batch_keeps_only_valid_and_counts_every_rejection() -> None:
    strategy = _strategy()
    replies = [_reply(100, _content()), _reply(101, _content())]
    for node, case in enumerate(CASES[:8], start=200):
        if case.codec == "none":
            content = _content()
            case.corrupt(content)
            replies.append(_reply(node, content))
    error = Message(
        metadata=_metadata(300), error=Error(code=0, reason="ValueError: public set mismatch")
    )
    replies.append(error)
    valid, rejected = strategy.validate(replies, ROWS)
    assert sorted(v.node_id for v in valid) == [100, 101]
    assert len(rejected) == len(replies) - 2
    assert {r.node_id for r in rejected} == {int(r.metadata.src_node_id) for r in replies[2:]}
    assert next(r for r in rejected if r.node_id == 300).reason == "client-error"


def test_row_count_is_checked_against_the_query_not_the_public_set() -> None:
    # With a public subset the server expects exactly the queried rows.
    valid, rejected = _strategy().validate([_reply(1, _content())], ROWS - 2)
    assert valid == [] and rejected[0].reason == "shape"


def test_oversized_payload_is_rejected_before_decoding() -> None:
    content = _content()
    # The cap is on the encoded bytes (what crossed the wire, .npy header included).
    nbytes = sum(len(a.data) for a in content.array_records[P.SOFT_LABELS].values())
    assert nbytes > ROWS * CLASSES * 4
    at_cap = Expected(num_samples=ROWS, num_classes=CLASSES, codec="none", max_payload_bytes=nbytes)
    assert isinstance(validate_reply(1, content, at_cap), ValidReply)
    below = Expected(
        num_samples=ROWS, num_classes=CLASSES, codec="none", max_payload_bytes=nbytes - 1
    )
    result = validate_reply(1, content, below)
    assert isinstance(result, Rejection) and result.reason == "oversized"


def test_oversized_extra_array_is_rejected() -> None:
    content = _content()
    payload = {"probs": _probs(), "junk": np.ones((ROWS, 4096), dtype=np.float32)}
    content[P.SOFT_LABELS] = ArrayRecord({k: Array(v) for k, v in payload.items()})
    cap = Expected(num_samples=ROWS, num_classes=CLASSES, codec="none", max_payload_bytes=64 * 1024)
    result = validate_reply(1, content, cap)
    assert isinstance(result, Rejection) and result.reason == "oversized"


@pytest.mark.parametrize("content", [None, object(), {"metrics": 1}, RecordDict()])
def test_garbage_content_never_raises(content: object) -> None:
    expected = Expected(num_samples=ROWS, num_classes=CLASSES, codec="none")
    result = validate_reply(5, content, expected)
    assert isinstance(result, Rejection) and result.node_id == 5


def test_support_rules_need_well_formed_support_codes() -> None:
    """selective asks for uint8 support codes, one per row; a reply without them, or with the
    wrong shape or dtype, is rejected; a good one arrives decoded to [0, 1]."""
    strategy = _strategy(aggregation="selective")
    missing, rejected = strategy.validate([_reply(1, _content())], ROWS)
    assert missing == [] and [r.reason for r in rejected] == ["missing-support"]
    payload = encode_probs(_probs(), "none")
    metrics = {P.NUM_EXAMPLES: 80, P.CLASS_COUNTS: [8] * CLASSES}
    for codes, reason in [
        (np.zeros(ROWS - 1, dtype=np.uint8), "bad-support"),
        (np.zeros(ROWS, dtype=np.float32), "bad-support"),
    ]:
        content = P.reply_content(payload, metrics, model_name="mlp", codec="none", support=codes)
        valid, rejected = strategy.validate([_reply(2, content)], ROWS)
        assert valid == [] and [r.reason for r in rejected] == [reason]
    codes = np.full(ROWS, 255, dtype=np.uint8)
    codes[0] = 0
    content = P.reply_content(payload, metrics, model_name="mlp", codec="none", support=codes)
    (reply,), rejected = strategy.validate([_reply(3, content)], ROWS)
    assert rejected == [] and reply.support is not None
    assert reply.support[0] == 0.0 and np.all(reply.support[1:] == 1.0)
