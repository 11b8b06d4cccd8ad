"""Uplink soft-label codecs: clients encode their public-set predictions, the server decodes.

In federated distillation the per-round uplink is a ``(samples, classes)`` matrix of soft labels,
so its size grows with the public set. These codecs trade a bounded error for bytes:

============  ==========================================  ==========================  =========
codec         payload arrays                              bytes per sample            error
============  ==========================================  ==========================  =========
``none``      ``probs`` float32                           ``4 C``                     0
``fp16``      ``probs`` float16                           ``2 C``                     ~5e-4 rel
``int8``      ``codes`` uint8, ``round(255 p / max p)``   ``C``                       1/510 max
``topk``      ``indices`` uint8/16/32, ``values`` fp16    ``k (1|2|4) + 2k``          tail mass
============  ==========================================  ==========================  =========

Decoding always renormalises rows to sum to 1, which is what the server's aggregation expects.
Because of that, ``int8`` stores no per-row scale: the scale ``max p`` would cancel in the
renormalisation, so sending it would only cost bytes. Quantising relative to the row max (rather
than to 1) spends the 256 levels on the range a softened distribution actually uses.
Quantising soft labels to cut FD's uplink follows Sattler et al. 2020 ("Communication-Efficient
Federated Distillation"). ``topk`` keeps the ``k`` largest entries per row, the soft-label
analogue of top-k gradient sparsification; the decoded row puts all its mass on those classes.

Everything here is pure NumPy and Flower-free: the arrays go into an ``ArrayRecord`` on the
client side, and :func:`payload_nbytes` counts their exact wire bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, get_args

import numpy as np

__all__ = ["CODECS", "Codec", "decode_probs", "encode_probs", "payload_nbytes"]

Codec = Literal["none", "fp16", "int8", "topk"]
CODECS: tuple[str, ...] = get_args(Codec)

# Array names inside a payload; distinct per codec so decoding with the wrong codec fails loudly.
PROBS_KEY = "probs"
CODES_KEY = "codes"
INDICES_KEY = "indices"
VALUES_KEY = "values"
_PAYLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "none": (PROBS_KEY,),
    "fp16": (PROBS_KEY,),
    "int8": (CODES_KEY,),
    "topk": (INDICES_KEY, VALUES_KEY),
}
_INT8_LEVELS = 255


def _check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ValueError(f"Unknown codec {codec!r}; choose one of {list(CODECS)}")


def _index_dtype(num_classes: int) -> np.dtype:
    """Smallest unsigned integer dtype that can hold class indices ``0 .. num_classes - 1``."""
    return np.min_scalar_type(max(num_classes - 1, 0))


def _renormalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their sum in float64 -> float32; all-zero rows become uniform."""
    x = np.asarray(x, dtype=np.float64)  # (samples, classes)
    sums = x.sum(axis=1, keepdims=True)
    safe = np.where(sums > 0, sums, 1.0)
    return np.where(sums > 0, x / safe, 1.0 / x.shape[1]).astype(np.float32)


# ----------------------------------------------------------------------------- encode
def encode_probs(probs: np.ndarray, codec: Codec, *, topk: int = 3) -> dict[str, np.ndarray]:
    """Encode soft labels for the uplink.

    Parameters
    ----------
    probs : np.ndarray
        ``(samples, classes)`` non-negative rows (probabilities already softened at T).
    codec : {"none", "fp16", "int8", "topk"}
        See the module table.
    topk : int
        Entries kept per row by ``topk``; must lie in ``[1, classes]``. Ignored otherwise.

    Returns
    -------
    dict[str, np.ndarray]
        Named contiguous arrays, ready for a Flower ``ArrayRecord``.

    Raises
    ------
    ValueError
        Unknown codec (lists the options), non-2-D, empty, negative or non-finite input, or
        ``topk`` outside ``[1, classes]``.
    """
    _check_codec(codec)
    probs = np.asarray(probs)
    if probs.ndim != 2 or 0 in probs.shape:
        raise ValueError(
            f"probs must be a non-empty 2-D (samples, classes) array, got {probs.shape}"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError("probs must be finite and non-negative")
    if codec == "none":
        return {PROBS_KEY: np.ascontiguousarray(probs, dtype=np.float32)}
    if codec == "fp16":
        return {PROBS_KEY: np.ascontiguousarray(probs, dtype=np.float16)}
    if codec == "int8":
        return {CODES_KEY: _quantise_uint8(probs)}
    return _encode_topk(probs, topk)


def _quantise_uint8(probs: np.ndarray) -> np.ndarray:
    """``round(255 * p / max p)`` per row; an all-zero row stays zero."""
    p = probs.astype(np.float64)
    row_max = p.max(axis=1, keepdims=True)  # (samples, 1)
    scaled = p / np.where(row_max > 0, row_max, 1.0)  # in [0, 1]
    return np.ascontiguousarray(np.rint(scaled * _INT8_LEVELS), dtype=np.uint8)


def _encode_topk(probs: np.ndarray, k: int) -> dict[str, np.ndarray]:
    num_classes = probs.shape[1]
    if not 1 <= k <= num_classes:
        raise ValueError(f"topk must lie in [1, {num_classes}] (the class count), got {k}")
    # argpartition finds the k largest in O(C); sorting only those k keeps the payload
    # deterministic and ordered by value (largest first).
    part = np.argpartition(-probs, k - 1, axis=1)[:, :k]  # (samples, k)
    order = np.argsort(-np.take_along_axis(probs, part, axis=1), axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1)  # (samples, k)
    values = np.take_along_axis(probs, indices, axis=1)
    return {
        INDICES_KEY: np.ascontiguousarray(indices, dtype=_index_dtype(num_classes)),
        VALUES_KEY: np.ascontiguousarray(values, dtype=np.float16),
    }


# ----------------------------------------------------------------------------- decode
def decode_probs(payload: Mapping[str, np.ndarray], codec: Codec, num_classes: int) -> np.ndarray:
    """Decode a payload made by :func:`encode_probs` back to soft labels.

    The server calls this on untrusted client replies, so the payload is validated.

    Parameters
    ----------
    payload : Mapping[str, np.ndarray]
        The named arrays (e.g. read back from an ``ArrayRecord``).
    codec : {"none", "fp16", "int8", "topk"}
        The codec the client used.
    num_classes : int
        Class count of the task; ``topk`` needs it to rebuild dense rows.

    Returns
    -------
    np.ndarray
        ``(samples, classes)`` float32, non-negative rows summing to 1 (``topk``: mass only on
        the kept classes; an all-zero row becomes uniform).

    Raises
    ------
    ValueError
        Unknown codec, missing arrays, wrong shapes or dtypes (``int8`` codes must be
        ``uint8``), out-of-range indices, negative values.
    """
    _check_codec(codec)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    missing = [key for key in _PAYLOAD_KEYS[codec] if key not in payload]
    if missing:
        raise ValueError(f"payload for codec {codec!r} lacks {missing}; got {sorted(payload)}")
    if codec == "topk":
        return _decode_topk(payload, num_classes)
    dense = np.asarray(payload[CODES_KEY if codec == "int8" else PROBS_KEY])
    if codec == "int8" and dense.dtype != np.uint8:  # codes are 0..255 by construction
        raise ValueError(f"int8 codes must be uint8 (0..255), got {dense.dtype}")
    if codec in ("none", "fp16") and not np.issubdtype(dense.dtype, np.floating):
        raise ValueError(f"{codec} probabilities must be floating point, got {dense.dtype}")
    if dense.ndim != 2 or dense.shape[1] != num_classes:
        raise ValueError(f"payload has shape {dense.shape}, expected (samples, {num_classes})")
    _check_values(dense)
    return _renormalise(dense)  # int8: the codes themselves, the scale cancels


def _check_values(values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("payload values must be finite and non-negative")


def _decode_topk(payload: Mapping[str, np.ndarray], num_classes: int) -> np.ndarray:
    indices = np.asarray(payload[INDICES_KEY])  # (samples, k)
    values = np.asarray(payload[VALUES_KEY])  # (samples, k)
    if indices.ndim != 2 or indices.shape != values.shape or indices.shape[1] > num_classes:
        raise ValueError(
            f"topk payload needs matching (samples, k<= {num_classes}) arrays, "
            f"got indices {indices.shape} and values {values.shape}"
        )
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"topk indices must be integers, got {indices.dtype}")
    if indices.size and (indices.min() < 0 or indices.max() >= num_classes):
        raise ValueError(f"topk indices must lie in [0, {num_classes})")
    if indices.shape[1] > 1 and np.any(np.diff(np.sort(indices, axis=1), axis=1) == 0):
        raise ValueError("topk indices must be distinct within a row")
    _check_values(values)
    dense = np.zeros((indices.shape[0], num_classes), dtype=np.float64)
    np.put_along_axis(dense, indices.astype(np.intp), values.astype(np.float64), axis=1)
    return _renormalise(dense)


def payload_nbytes(payload: Mapping[str, np.ndarray]) -> int:
    """Exact bytes the payload's arrays occupy on the wire (sum of ``.nbytes``, no framing)."""
    return int(sum(np.asarray(array).nbytes for array in payload.values()))
