"""Support scores: how much a public sample looks like a client's private data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkd.support import (
    MASK_THRESHOLD,
    decode_support,
    encode_support,
    in_support,
    support_scores,
)


def _blobs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    private = torch.randn(200, 1, 4, 4, generator=g) * 0.3  # a blob around 0
    near = torch.randn(50, 1, 4, 4, generator=g) * 0.3  # the same distribution
    far = torch.randn(50, 1, 4, 4, generator=g) * 0.3 + 5.0  # another blob, far away
    return private, near, far


def test_samples_like_the_private_data_score_high_and_far_ones_near_zero() -> None:
    private, near, far = _blobs()
    scores = support_scores(private, torch.cat([near, far]))
    assert scores.shape == (100,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    assert in_support(scores[:50]).mean() >= 0.8  # most same-distribution samples are in
    assert in_support(scores[50:]).sum() == 0 and scores[50:].max() < 1e-3


def test_a_private_sample_itself_scores_one_and_the_radius_scores_a_half() -> None:
    private, _, _ = _blobs(1)
    assert support_scores(private, private[:5]) == pytest.approx(np.ones(5))
    # One private point at the origin, queries along an axis: the radius is then the median
    # query distance, where the score is exactly 1/2.
    one = torch.zeros(1, 2)
    queries = torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    np.testing.assert_allclose(support_scores(one, queries), [2**-0.25, 0.5, 2**-2.25], rtol=1e-6)


def test_no_private_data_supports_nothing_and_quantile_is_checked() -> None:
    assert support_scores(torch.empty(0, 3), torch.ones(4, 3)).tolist() == [0.0] * 4
    with pytest.raises(ValueError, match="quantile"):
        support_scores(torch.ones(3, 3), torch.ones(2, 3), quantile=0.0)


def test_codes_round_trip_within_half_a_level_and_keep_the_mask() -> None:
    scores = np.array([0.0, 0.2, MASK_THRESHOLD, 0.77, 1.0, np.nan])
    codes = encode_support(scores)
    assert codes.dtype == np.uint8 and codes[-1] == 0  # NaN never travels as support
    back = decode_support(codes)
    np.testing.assert_allclose(back[:5], scores[:5], atol=0.5 / 255)
    assert in_support(back).tolist() == [False, False, True, True, True, False]
