"""Check every client reply before it can touch the teacher.

A federated-distillation server aggregates whatever clients upload, so one malformed or
malicious reply could poison the teacher or crash the round. :func:`validate_reply` turns a
reply into either a :class:`ValidReply` (decoded soft labels plus the metadata aggregation
needs) or a :class:`Rejection` naming the client and the defect. It never raises on bad input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedkd import protocol as P
from fedkd.compression import CODECS, decode_probs
from fedkd.support import decode_support

ROW_SUM_TOLERANCE = 1e-3  # float16 soft labels sum to 1 within ~5e-4 over 10-100 classes
DEFAULT_MAX_PAYLOAD_BYTES = 256 * 2**20
MAX_NUM_EXAMPLES = 10**12  # a trillion examples on one client: far above any real one
# Largest honest encoding per soft label is float32 (4 bytes); twice that, plus room for the
# .npy headers of a few arrays, bounds what a reply to a query may occupy on the wire.
_BYTES_PER_ENTRY = 8
_HEADER_ALLOWANCE = 16 * 1024
# Arrays that must have exactly one dtype: int8 codes are 0..255 by construction.
_EXACT_DTYPES: dict[tuple[str, str], type] = {("int8", "codes"): np.uint8}


def payload_limit(num_samples: int, num_classes: int) -> int:
    """Encoded bytes a reply to a ``(num_samples, num_classes)`` query may carry at most.

    Twice the float32 size of the soft labels (every codec encodes to at most that) plus
    header room, capped by :data:`DEFAULT_MAX_PAYLOAD_BYTES`.
    """
    tight = _BYTES_PER_ENTRY * num_samples * num_classes + _HEADER_ALLOWANCE
    return min(DEFAULT_MAX_PAYLOAD_BYTES, tight)


@dataclass(frozen=True)
class Expected:
    """What a valid reply to this round's query must look like.

    ``server_round``, ``message_type`` and ``public_hash``, when set, must be echoed by the
    reply (``fedkd.protocol.ECHO_*``): a reply is bound to the round and public set it answers.
    ``max_payload_bytes`` bounds the *encoded* size of the soft-label arrays, checked before
    anything is decoded.
    """

    num_samples: int
    num_classes: int
    codec: str
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    with_support: bool = False  # the rule needs per-sample support scores (fedkd.support)
    server_round: int | None = None
    message_type: str | None = None
    public_hash: str | None = None


@dataclass(frozen=True)
class ValidReply:
    """A reply that passed every check, decoded."""

    node_id: int
    probs: np.ndarray  # (samples, classes) float32, rows sum to 1
    num_examples: int
    class_counts: np.ndarray  # (classes,)
    model_name: str
    metrics: dict[str, Any]
    support: np.ndarray | None = None  # (samples,) scores in [0, 1] when the round asked


@dataclass(frozen=True)
class Rejection:
    """A dropped reply and why (logged, and counted in the round's metrics)."""

    node_id: int
    reason: str  # short machine-friendly defect name, e.g. "non-finite"
    detail: str  # human sentence


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def validate_reply(node_id: int, content: Any, expected: Expected) -> ValidReply | Rejection:
    """Decode and check one reply's content (a Flower ``RecordDict``); never raises on bad data."""
    try:
        return _validate(node_id, content, expected)
    except _Reject as bad:
        return Rejection(node_id, bad.reason, bad.detail)
    except Exception as exc:  # a reply must never crash the server
        return Rejection(node_id, "unreadable", f"{type(exc).__name__}: {exc}")


def _validate(node_id: int, content: Any, expected: Expected) -> ValidReply:
    metrics = _record(content.metric_records, P.METRICS, "missing-metrics")
    meta = _record(content.config_records, P.META, "missing-meta")
    arrays = _record(content.array_records, P.SOFT_LABELS, "missing-soft-labels")
    num_examples = _metadata(metrics, expected)
    class_counts = _class_counts(metrics, expected)
    codec = meta.get(P.CODEC)
    if codec != expected.codec or codec not in CODECS:
        raise _Reject(
            "codec", f"reply uses codec {codec!r}, the round asked for {expected.codec!r}"
        )
    _check_echo(meta, expected)
    # The encoded size is known before decoding: an oversized upload is refused without
    # allocating its decoded copy.
    nbytes = sum(len(array.data) for array in arrays.values())
    if nbytes > expected.max_payload_bytes:
        raise _Reject(
            "oversized", f"payload of {nbytes} encoded bytes exceeds {expected.max_payload_bytes}"
        )
    payload = {name: P.array_values(array) for name, array in arrays.items()}
    _check_raw(payload, expected)
    try:
        probs = decode_probs(payload, codec, expected.num_classes)
    except ValueError as exc:
        raise _Reject("malformed", str(exc)) from exc
    return ValidReply(
        node_id=node_id,
        probs=probs,
        num_examples=num_examples,
        class_counts=class_counts,
        model_name=str(meta.get(P.MODEL_NAME, "?")),
        metrics=dict(metrics.items()),
        support=_support(content, expected) if expected.with_support else None,
    )


def _support(content: Any, expected: Expected) -> np.ndarray:
    """The reply's support scores: one uint8 code per queried row (fedkd.support)."""
    record = _record(content.array_records, P.SUPPORT, "missing-support")
    if P.SUPPORT_SCORES not in record:
        raise _Reject("missing-support", f"{P.SUPPORT!r} record lacks {P.SUPPORT_SCORES!r}")
    array = record[P.SUPPORT_SCORES]
    if len(array.data) > expected.num_samples + _HEADER_ALLOWANCE:  # checked before decoding
        raise _Reject("oversized", f"support of {len(array.data)} encoded bytes is too large")
    codes = P.array_values(array)
    if codes.dtype != np.uint8 or codes.shape != (expected.num_samples,):
        raise _Reject(
            "bad-support",
            f"support must be uint8 ({expected.num_samples},), got {codes.dtype} {codes.shape}",
        )
    return decode_support(codes)


def _record(records: Mapping[str, Any], key: str, reason: str) -> Any:
    if key not in records:
        raise _Reject(reason, f"reply has no {key!r} record")
    return records[key]


def _metadata(metrics: Mapping[str, Any], expected: Expected) -> int:
    if P.NUM_EXAMPLES not in metrics:
        raise _Reject("missing-metadata", f"metrics lack {P.NUM_EXAMPLES!r}")
    num_examples = metrics[P.NUM_EXAMPLES]
    integral = isinstance(num_examples, int) and not isinstance(num_examples, bool)
    if isinstance(num_examples, float):  # a legal metric; only whole, finite counts pass
        integral = math.isfinite(num_examples) and num_examples.is_integer()
    if not integral or not 0 <= num_examples <= MAX_NUM_EXAMPLES:
        raise _Reject(
            "bad-metadata",
            f"{P.NUM_EXAMPLES} must be a whole number in [0, {MAX_NUM_EXAMPLES}], "
            f"got {num_examples!r}",
        )
    return int(num_examples)


def _check_echo(meta: Mapping[str, Any], expected: Expected) -> None:
    """The reply must name the round, message type and public set it answers (when asked)."""
    checks = (
        (P.ECHO_ROUND, expected.server_round, "wrong-round"),
        (P.ECHO_TYPE, expected.message_type, "wrong-type"),
        (P.ECHO_PUBLIC_HASH, expected.public_hash, "wrong-public-set"),
    )
    for key, want, reason in checks:
        if want is None:
            continue
        got = meta.get(key)
        if type(got) is not type(want) or got != want:
            raise _Reject(reason, f"reply echoes {key}={got!r}, this round expects {want!r}")


def _class_counts(metrics: Mapping[str, Any], expected: Expected) -> np.ndarray:
    if P.CLASS_COUNTS not in metrics:
        raise _Reject("missing-metadata", f"metrics lack {P.CLASS_COUNTS!r}")
    counts = np.asarray(metrics[P.CLASS_COUNTS], dtype=np.float64)
    if (
        counts.shape != (expected.num_classes,)
        or np.any(counts < 0)
        or not np.all(np.isfinite(counts))
    ):
        raise _Reject(
            "bad-metadata", f"{P.CLASS_COUNTS} must be {expected.num_classes} non-negative counts"
        )
    return counts


def _check_raw(payload: Mapping[str, np.ndarray], expected: Expected) -> None:
    """Shape, dtype, finiteness, sign and row sums, before any renormalisation hides them."""
    for name, arr in payload.items():
        if arr.ndim != 2 or arr.shape[0] != expected.num_samples:
            raise _Reject(
                "shape",
                f"array {name!r} has shape {arr.shape}, expected ({expected.num_samples}, ...)",
            )
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise _Reject("dtype", f"array {name!r} has dtype {arr.dtype}")
        code_dtype = _EXACT_DTYPES.get((expected.codec, name))
        if code_dtype is not None and arr.dtype != code_dtype:
            raise _Reject(
                "dtype",
                f"{expected.codec} array {name!r} must be {np.dtype(code_dtype)}, got {arr.dtype}",
            )
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)):
                raise _Reject("non-finite", f"array {name!r} holds NaN or inf")
            if np.any(arr < 0):
                raise _Reject("negative", f"array {name!r} holds negative values")
    if expected.codec in ("none", "fp16"):
        probs = payload.get("probs")
        if probs is None:
            raise _Reject("malformed", "payload lacks 'probs'")
        if probs.shape[1] != expected.num_classes:
            raise _Reject(
                "shape", f"probs have {probs.shape[1]} classes, expected {expected.num_classes}"
            )
        sums = probs.astype(np.float64).sum(axis=1)
        worst = float(np.max(np.abs(sums - 1.0))) if len(sums) else 0.0
        if worst > ROW_SUM_TOLERANCE:
            raise _Reject(
                "not-distribution", f"rows must sum to 1, worst row is off by {worst:.3g}"
            )
