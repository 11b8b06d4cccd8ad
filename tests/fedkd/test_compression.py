"""Soft-label codecs: round-trip error bounds, wire bytes, argmax preservation, validation."""

from __future__ import annotations

import numpy as np
import pytest

from fedkd.compression import CODECS, decode_probs, encode_probs, payload_nbytes


def soft_labels(seed: int, samples: int = 200, classes: int = 10, alpha: float = 0.3):
    """Random (samples, classes) float32 distributions, from peaked to flat."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(classes, alpha), size=samples).astype(np.float32)


def with_margin(seed: int, samples: int = 300, classes: int = 10, margin: float = 0.05):
    """Soft labels whose top-1 beats the runner-up by at least ``margin``."""
    probs = soft_labels(seed, samples * 4, classes, alpha=0.5)
    top2 = np.sort(probs, axis=1)[:, -2:]
    return probs[(top2[:, 1] - top2[:, 0]) >= margin][:samples]


def round_trip(probs, codec, **kwargs):
    payload = encode_probs(probs, codec, **kwargs)
    return payload, decode_probs(payload, codec, probs.shape[1])


def test_codecs_are_the_literal_options():
    assert CODECS == ("none", "fp16", "int8", "topk")


# ----------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("classes", [2, 10, 300])
def test_decoded_rows_are_float32_distributions(codec, classes):
    probs = soft_labels(1, classes=classes)
    _, out = round_trip(probs, codec, topk=min(3, classes))
    assert out.shape == probs.shape and out.dtype == np.float32
    assert np.all(out >= 0)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_none_is_lossless():
    probs = soft_labels(2)
    _, out = round_trip(probs, "none")
    np.testing.assert_allclose(out, probs, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.05, 1.0, 10.0])
def test_fp16_error_is_about_1e_3(alpha):
    probs = soft_labels(3, alpha=alpha)
    _, out = round_trip(probs, "fp16")
    assert np.abs(out - probs).max() < 1e-3
    # fp16 keeps 11 significant bits: relative error per non-tiny entry stays near 2**-11.
    big = probs > 1e-3
    assert np.max(np.abs(out[big] - probs[big]) / probs[big]) < 2e-3


@pytest.mark.parametrize("alpha", [0.05, 1.0, 10.0])
def test_int8_error_is_at_most_half_a_level_of_the_row_max(alpha):
    probs = soft_labels(4, alpha=alpha).astype(np.float64)
    _, out = round_trip(probs.astype(np.float32), "int8")
    # The row max is coded as exactly 255, so out / max(out) is the dequantised p / max(p).
    rel_in = probs / probs.max(axis=1, keepdims=True)
    rel_out = out / out.max(axis=1, keepdims=True)
    err = np.abs(rel_out - rel_in)
    assert err.max() <= 0.5 / 255 + 1e-6
    assert err.max() > 0.3 / 255  # the bound is tight, i.e. this really quantises
    assert np.abs(out - probs).max() < 1 / 255


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_topk_keeps_the_k_largest_exactly_after_renormalisation(k):
    probs = soft_labels(5).astype(np.float64)
    payload, out = round_trip(probs.astype(np.float32), "topk", topk=k)
    assert payload["indices"].shape == (len(probs), k)
    assert np.all(np.count_nonzero(out, axis=1) <= k)
    for s in range(len(probs)):  # independent per-row reference
        kept = np.argsort(probs[s])[::-1][:k]
        expected = np.zeros_like(probs[s])
        expected[kept] = probs[s, kept] / probs[s, kept].sum()
        np.testing.assert_allclose(out[s], expected, atol=1e-3)
        assert set(np.flatnonzero(out[s])) <= set(kept.tolist())


def test_topk_with_k_equal_to_classes_is_fp16():
    probs = soft_labels(6, classes=7)
    _, top = round_trip(probs, "topk", topk=7)
    _, half = round_trip(probs, "fp16")
    np.testing.assert_allclose(top, half, atol=1e-6)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("seed", range(3))
def test_argmax_survives_with_a_clear_margin(codec, seed):
    probs = with_margin(seed)
    assert len(probs) > 100
    _, out = round_trip(probs, codec, topk=1)
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))


@pytest.mark.parametrize("codec", CODECS)
def test_one_hot_survives_every_codec(codec):
    labels = np.arange(12) % 5
    one_hot = np.eye(5, dtype=np.float32)[labels]
    _, out = round_trip(one_hot, codec, topk=2)
    np.testing.assert_array_equal(out, one_hot)


@pytest.mark.parametrize("codec", CODECS)
def test_zero_row_decodes_to_uniform(codec):
    probs = soft_labels(7, samples=3, classes=4)
    probs[1] = 0.0
    _, out = round_trip(probs, codec, topk=4)
    np.testing.assert_allclose(out[1], 0.25)


# ----------------------------------------------------------------------------- bytes
def test_wire_bytes_ratios():
    samples, classes, k = 1000, 100, 5
    probs = soft_labels(8, samples=samples, classes=classes)
    nbytes = {codec: payload_nbytes(encode_probs(probs, codec, topk=k)) for codec in CODECS}
    assert nbytes["none"] == samples * classes * 4
    assert nbytes["fp16"] * 2 == nbytes["none"]
    assert nbytes["int8"] * 4 == nbytes["none"]
    # uint8 indices (100 classes) + fp16 values: 3 bytes per kept entry.
    assert nbytes["topk"] == samples * k * 3
    assert nbytes["topk"] / nbytes["none"] < 0.04


@pytest.mark.parametrize(
    ("classes", "dtype"), [(256, np.uint8), (257, np.uint16), (70000, np.uint32)]
)
def test_topk_indices_use_the_smallest_sufficient_unsigned_type(classes, dtype):
    probs = np.zeros((2, classes), dtype=np.float32)
    probs[:, -1] = 1.0  # the largest index must fit
    payload, out = round_trip(probs, "topk", topk=1)
    assert payload["indices"].dtype == dtype
    assert payload["values"].dtype == np.float16
    np.testing.assert_array_equal(out, probs)


def test_payload_nbytes_counts_every_array():
    payload = {"a": np.zeros((3, 4), np.float16), "b": np.zeros(5, np.uint8)}
    assert payload_nbytes(payload) == 3 * 4 * 2 + 5
    assert payload_nbytes({}) == 0


def test_payload_arrays_are_contiguous_for_array_records():
    probs = np.asfortranarray(soft_labels(9))
    for codec in CODECS:
        for array in encode_probs(probs, codec).values():
            assert array.flags.c_contiguous


# ----------------------------------------------------------------------------- validation
def test_unknown_codec_lists_the_options():
    probs = soft_labels(10)
    with pytest.raises(ValueError, match=r"zip.*fp16.*int8.*topk"):
        encode_probs(probs, "zip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="topk"):
        decode_probs({}, "zip", 10)  # type: ignore[arg-type]


@pytest.mark.parametrize("k", [0, -1, 11])
def test_topk_outside_range_raises(k):
    with pytest.raises(ValueError, match=r"\[1, 10\]"):
        encode_probs(soft_labels(11), "topk", topk=k)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.full(10, 0.1), "2-D"),
        (np.full((2, 3, 4), 0.25), "2-D"),
        (np.zeros((0, 4)), "2-D"),
        (np.full((2, 4), -0.25), "non-negative"),
        (np.full((2, 4), np.nan), "finite"),
    ],
)
@pytest.mark.parametrize("codec", CODECS)
def test_bad_inputs_raise(bad, match, codec):
    with pytest.raises(ValueError, match=match):
        encode_probs(bad, codec)


def test_decode_rejects_malformed_payloads():
    probs = soft_labels(12, samples=4, classes=6)
    with pytest.raises(ValueError, match="codes"):  # wrong codec for the payload
        decode_probs(encode_probs(probs, "fp16"), "int8", 6)
    with pytest.raises(ValueError, match="shape"):
        decode_probs(encode_probs(probs, "none"), "none", 7)
    topk = encode_probs(probs, "topk", topk=2)
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        decode_probs(topk, "topk", 5)
    duplicated = {**topk, "indices": np.zeros_like(topk["indices"])}
    with pytest.raises(ValueError, match="distinct"):
        decode_probs(duplicated, "topk", 6)
    negative = {**topk, "values": -topk["values"]}
    with pytest.raises(ValueError, match="non-negative"):
        decode_probs(negative, "topk", 6)
