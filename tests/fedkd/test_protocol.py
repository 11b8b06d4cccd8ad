"""The message contract: request/reply content round trips, wire byte counts, public-set hash."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd import protocol as P
from fedkd.compression import encode_probs, payload_nbytes


def _request(
    *, indices: np.ndarray | None = None, teacher: bool = False, rows: int = 30, classes: int = 10
) -> P.RoundRequest:
    rng = np.random.default_rng(0)
    teacher_idx = np.arange(rows) if indices is None else indices
    teacher_probs = rng.dirichlet(np.ones(classes), size=len(teacher_idx)).astype(np.float32)
    return P.RoundRequest(
        server_round=3,
        local_epochs=2,
        lr=0.05,
        temperature=2.5,
        codec="fp16",
        topk=4,
        public_indices=indices,
        public_size=rows,
        public_hash="0123456789abcdef",
        with_predictions=True,
        distill_epochs=1 if teacher else 0,
        teacher_probs=teacher_probs if teacher else None,
        teacher_indices=teacher_idx if teacher else None,
    )


def _assert_same_request(got: P.RoundRequest, want: P.RoundRequest) -> None:
    for name in (
        "server_round",
        "local_epochs",
        "lr",
        "temperature",
        "codec",
        "topk",
        "public_size",
        "public_hash",
        "with_predictions",
        "distill_epochs",
    ):
        assert getattr(got, name) == getattr(want, name), name
    for name in ("public_indices", "teacher_probs", "teacher_indices"):
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None) == (b is None), name
        if a is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("indices", "teacher"),
    [(None, False), (np.array([2, 5, 7, 11]), False), (None, True), (np.array([0, 3, 29]), True)],
    ids=["all", "subset", "all+teacher", "subset+teacher"],
)
def test_request_round_trip(indices: np.ndarray | None, teacher: bool) -> None:
    req = _request(indices=indices, teacher=teacher)
    content = P.request_content(req)
    assert (P.PUBLIC_INDICES in content.array_records) == (indices is not None)
    assert (P.TEACHER in content.array_records) == teacher
    _assert_same_request(P.parse_request(content), req)


def test_parse_request_names_missing_key() -> None:
    content = P.request_content(_request())
    del content.config_records[P.CONFIG][P.TEMPERATURE]
    with pytest.raises(KeyError, match=P.TEMPERATURE):
        P.parse_request(content)


@pytest.mark.parametrize("codec", ["none", "fp16", "int8", "topk"])
def test_reply_round_trip(codec: str) -> None:
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=25).astype(np.float32)
    payload = encode_probs(probs, codec, topk=3)  # type: ignore[arg-type]
    metrics = {P.NUM_EXAMPLES: 40, P.CLASS_COUNTS: [4] * 10, P.TRAIN_LOSS: 0.5}
    content = P.reply_content(payload, metrics, model_name="cnn", codec=codec)
    meta = content.config_records[P.META]
    assert (meta[P.MODEL_NAME], meta[P.CODEC]) == ("cnn", codec)
    assert P.config_entries(content.metric_records[P.METRICS]) == metrics
    arrays = content.array_records[P.SOFT_LABELS]
    assert set(arrays) == set(payload)
    for name, arr in payload.items():
        back = arrays[name].numpy()
        assert back.dtype == arr.dtype
        np.testing.assert_array_equal(back, arr)


def test_reply_without_payload_has_no_soft_labels() -> None:
    content = P.reply_content(None, {P.NUM_EXAMPLES: 3}, model_name="mlp", codec="none")
    assert P.SOFT_LABELS not in content.array_records
    assert P.METRICS in content.metric_records


# ----------------------------------------------------------------------------- byte counts
def _reply_bytes(rows: int, classes: int = 10) -> tuple[int, int]:
    probs = np.full((rows, classes), 1.0 / classes, dtype=np.float32)
    payload = encode_probs(probs, "none")
    content = P.reply_content(payload, {P.NUM_EXAMPLES: 1}, model_name="mlp", codec="none")
    return P.wire_nbytes(content), payload_nbytes(payload)


def test_wire_nbytes_at_least_the_array_bytes_and_grows_with_payload() -> None:
    sizes = [_reply_bytes(rows) for rows in (1, 10, 100, 1000)]
    for wire, arrays in sizes:
        assert wire >= arrays
    wires = [w for w, _ in sizes]
    assert wires == sorted(wires) and len(set(wires)) == len(wires)
    # Growth tracks the payload: framing overhead is the same whatever the row count.
    overheads = [w - a for w, a in sizes]
    assert max(overheads) - min(overheads) <= 64


def test_wire_nbytes_counts_request_arrays() -> None:
    plain = P.wire_nbytes(P.request_content(_request()))
    with_teacher = P.wire_nbytes(P.request_content(_request(teacher=True)))
    teacher_arrays = 30 * 10 * 4 + 30 * 4  # float32 probs + int32 indices
    assert with_teacher - plain >= teacher_arrays


def _contents_to_size() -> dict[str, object]:
    """Flower trees of every shape the server sizes: replies per codec, with support, a
    cohort reply, requests with and without a teacher, model weights of several chunks,
    duplicate arrays and records (Flower lists a repeated child once), non-ASCII names."""
    from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(10), size=40).astype(np.float32)
    out: dict[str, object] = {}
    for codec in ("none", "fp16", "int8", "topk"):
        payload = encode_probs(probs, codec, topk=3)
        metrics = {P.NUM_EXAMPLES: 12, P.CLASS_COUNTS: [1.0] * 10, "loss": 0.25}
        out[f"reply-{codec}"] = P.reply_content(
            payload, metrics, model_name="mlp", codec=codec, support=np.arange(40, dtype=np.uint8)
        )
    out["cohort"] = P.cohort_reply_content(
        {0: out["reply-none"], 2: (7, "boom"), 5: out["reply-int8"]}  # type: ignore[dict-item]
    )
    out["request"] = P.request_content(_request())
    out["request-teacher"] = P.request_content(_request(teacher=True))
    big = rng.random(700_000).astype(np.float32)  # several Flower array chunks
    twin = Array(np.zeros(100, dtype=np.float32))
    out["weights"] = RecordDict(
        {
            "arrays": ArrayRecord({"w": Array(big), "a": twin, "b": Array(np.zeros(100, "f4"))}),
            "same": ConfigRecord({"x": 1}),
            "also-same": ConfigRecord({"x": 1}),
            "m\u00e9triques": MetricRecord({"\u00e9": 1.5}),
        }
    )
    return out


@pytest.mark.parametrize("name", list(_contents_to_size()))
def test_wire_nbytes_equals_the_sum_of_flower_deflates(name: str) -> None:
    content = _contents_to_size()[name]
    assert P.wire_nbytes(content) == P.wire_nbytes_reference(content)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).random((200, 10), dtype=np.float32),
        np.arange(7, dtype=np.uint8),
        np.zeros((0, 3), dtype=np.float16),
        np.array(3.5),
        np.arange(12.0).reshape(3, 4).T,  # Fortran order: np.save writes another header
        np.array([1, 2], dtype=">i4"),
    ],
    ids=["f4", "u1", "empty", "scalar", "fortran", "big-endian"],
)
def test_array_values_equals_flower_numpy(values: np.ndarray) -> None:
    from flwr.app import Array

    array = Array(values)
    fast, slow = P.array_values(array), array.numpy()
    assert fast.dtype == slow.dtype and fast.shape == slow.shape
    np.testing.assert_array_equal(fast, slow)
    assert fast.flags.writeable


def test_array_values_of_a_lying_array_fails_like_flower() -> None:
    """A header that disagrees with the declared shape, or truncated data, takes Flower's
    own decoder, which rejects it as before."""
    from flwr.app import Array

    good = Array(np.ones((4, 2), dtype=np.float32))
    lying = Array(dtype=good.dtype, shape=(4, 3), stype=good.stype, data=good.data)
    assert P.array_values(lying).shape == lying.numpy().shape == (4, 2)  # Flower's answer
    truncated = Array(dtype=good.dtype, shape=good.shape, stype=good.stype, data=good.data[:-4])
    with pytest.raises(ValueError):
        truncated.numpy()
    with pytest.raises(ValueError):
        P.array_values(truncated)


# ----------------------------------------------------------------------------- public hash
def test_public_hash_detects_one_changed_value() -> None:
    x = np.random.default_rng(2).random((50, 1, 8, 8), dtype=np.float32)
    h = P.public_hash(x)
    assert P.public_hash(x.copy()) == h
    y = x.copy()
    y[17, 0, 3, 4] += 1e-6
    assert P.public_hash(y) != h


def test_public_hash_sees_shape_and_order() -> None:
    x = np.arange(64, dtype=np.float32).reshape(4, 16)
    assert P.public_hash(x) != P.public_hash(x.reshape(16, 4))
    assert P.public_hash(x) != P.public_hash(x[::-1])


def test_select_public_keeps_requested_order() -> None:
    x = np.arange(10)[:, None]
    np.testing.assert_array_equal(P.select_public(x, np.array([7, 2, 5]))[:, 0], [7, 2, 5])
    assert P.select_public(x, None) is x


def test_round_metric_names_are_unique() -> None:
    assert len(set(P.ROUND_METRICS)) == len(P.ROUND_METRICS)
