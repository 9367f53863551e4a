"""medgan_fast.metrics.anomaly: each distance by its formula, and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgan_fast.metrics.anomaly import DISTANCES, anomaly_scores


def case():
    g = torch.Generator().manual_seed(0)
    x, r = torch.rand(4, 3, 8, 8, generator=g), torch.rand(4, 3, 8, 8, generator=g)
    f, fr = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
    return x, r, f, fr


def test_each_distance_by_its_formula():
    x, r, f, fr = case()
    expected = {
        "mse": ((x - r) ** 2).mean((1, 2, 3)),
        "l1": (x - r).abs().mean((1, 2, 3)),
        "izif": ((x - r) ** 2).mean((1, 2, 3)) + 0.5 * ((f - fr) ** 2).mean(1),
        "feature_mse": ((f - fr) ** 2).mean(1),
        "cosine": 1 - F.cosine_similarity(f, fr),
        "euclidean": (f - fr).norm(dim=1),
    }
    assert set(expected) == set(DISTANCES)
    for distance, want in expected.items():
        torch.testing.assert_close(anomaly_scores(x, r, f, fr, distance, kappa=0.5), want)
        assert (anomaly_scores(x, x, f, f, distance) <= 1e-6).all()   # a perfect reconstruction scores 0


@pytest.mark.parametrize("call, message", [
    (lambda x, r, f, fr: anomaly_scores(x, r, f, fr, "ssim"), "distance must be one of"),
    (lambda x, r, f, fr: anomaly_scores(x, r[:2], f, fr), "of one shape"),
    (lambda x, r, f, fr: anomaly_scores(x, r, distance="cosine"), "needs features"),
    (lambda x, r, f, fr: anomaly_scores(x, r, f[:3], fr[:3]), "features must be"),
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call(*case())
