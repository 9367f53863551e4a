"""SWD, MS-SSIM diversity, FID and KID: the pieces against scipy (pyramid filters, 1-D
Wasserstein), the closed forms of the Fréchet distance, a loop oracle for the KID estimator,
and the promised behaviour of each metric on identical, near-identical and altered sets.
No test touches the network: the Inception tests use a tiny TorchScript stand-in."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.stats
import torch
import torch.nn.functional as F

from medgan_fast.metrics import distribution, quality
from medgan_fast.metrics.distribution import (
    SWDResult,
    fid,
    fid_from_features,
    kid,
    kid_from_features,
    laplacian_pyramid,
    load_inception,
    ms_ssim_diversity,
    swd,
)


def textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) images in [0, 1]: random-frequency stripes and checks plus noise,
    so patches carry structure at every pyramid level."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    frequency = 0.1 + 0.3 * torch.rand(n, 1, 1, 1, generator=g)
    phase = 6 * torch.rand(n, 1, 1, 1, generator=g)
    images = 0.5 + 0.4 * torch.sin(frequency * xx + phase) * torch.cos(frequency * yy)
    return (images + 0.05 * torch.randn(n, 1, size, size, generator=g)).clamp(0, 1)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------------------------------
# SWD: the pieces

BINOMIAL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def pyramid_reference(images: np.ndarray, num_levels: int) -> list[np.ndarray]:
    """Karras et al.'s pyramid with scipy: cv2.pyrDown/pyrUp as "mirror" convolutions."""
    def down(x):
        return ndi.convolve(x, BINOMIAL[None, None], mode="mirror")[:, :, ::2, ::2]

    def up(x):
        zeros = np.zeros(x.shape[:2] + (2 * x.shape[2], 2 * x.shape[3]))
        zeros[:, :, ::2, ::2] = x
        return ndi.convolve(zeros, 4 * BINOMIAL[None, None], mode="mirror")

    pyramid = [images]
    for _ in range(1, num_levels):
        pyramid.append(down(pyramid[-1]))
        pyramid[-2] = pyramid[-2] - up(pyramid[-1])
    return pyramid


def test_laplacian_pyramid_matches_scipy(rng):
    images = rng.random((2, 3, 32, 32))
    actual = laplacian_pyramid(torch.from_numpy(images), 3)
    for level, expected in zip(actual, pyramid_reference(images, 3), strict=True):
        np.testing.assert_allclose(level.numpy(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", [(32, 32), (37, 22)])
def test_laplacian_pyramid_reconstructs(rng, shape):
    images = torch.from_numpy(rng.random((2, 1) + shape))
    pyramid = laplacian_pyramid(images, 3)
    assert [tuple(level.shape[-2:]) for level in pyramid] == [shape, ((shape[0] + 1) // 2, (shape[1] + 1) // 2),
                                                              ((shape[0] + 3) // 4, (shape[1] + 3) // 4)]
    rebuilt = pyramid[-1]
    for level in pyramid[-2::-1]:
        rebuilt = distribution._pyr_up(rebuilt, level.shape[-2:]) + level
    np.testing.assert_allclose(rebuilt.numpy(), images.numpy(), atol=1e-12)


@pytest.mark.parametrize("n, m", [(50, 50), (50, 23), (7, 40)])
def test_wasserstein_1d_matches_scipy(rng, n, m):
    a, b = rng.normal(size=(n, 3)), rng.normal(1.0, 2.0, size=(m, 3))
    actual = distribution._wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b))
    expected = [scipy.stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(3)]
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# SWD: behaviour

def test_swd_identical_sets_is_zero_with_paper_defaults():
    real = torch.rand(8, 3, 64, 64)
    result = swd(real, real)
    assert isinstance(result, SWDResult)
    assert result.resolutions == (64, 32, 16)
    assert result.levels.shape == (3,) and result.levels.dtype == torch.float32
    assert result.mean == 0.0 and torch.all(result.levels == 0)


# Fewer patches and directions than the paper: keeps each call well under a second here.
FAST = {"nhoods_per_image": 64, "dir_repeats": 2, "dirs_per_repeat": 32}


def test_swd_grows_for_blurred_noisy_and_contrast_changed_sets():
    real = textures(8)
    near = swd(real, (real + 0.002 * torch.randn(real.shape)).clamp(0, 1), **FAST)
    blurred = swd(real, F.avg_pool2d(real, 3, stride=1, padding=1, count_include_pad=False), **FAST)
    noisy = swd(real, (real + 0.1 * torch.randn(real.shape)).clamp(0, 1), **FAST)
    contrast = swd(real, real**2, **FAST)  # not affine, so standardising does not undo it
    resampled = swd(real, textures(8, seed=1), **FAST)  # other images of the same kind
    assert near.mean < 10
    for changed in (blurred, noisy, contrast):
        assert changed.mean > 3 * near.mean and torch.all(changed.levels > near.levels)
    # Blur removes the finest detail: that level moves far more than for a resampled set.
    assert blurred.levels[0] > 1.5 * resampled.levels[0]


def test_swd_ignores_affine_intensity_changes():
    """Each set is standardised per channel by its own mean and std (as Karras et al.)."""
    real = textures(4, 32)
    assert swd(real, 0.8 * real + 0.1, **FAST).mean == pytest.approx(0.0, abs=1e-2)


def test_swd_is_reproducible_and_seeded():
    real, fake = textures(8, 32), textures(8, 32, seed=1)
    first, again, other_seed = (swd(real, fake, **FAST, seed=s) for s in (0, 0, 1))
    assert torch.equal(first.levels, again.levels)
    assert not torch.equal(first.levels, other_seed.levels)
    assert other_seed.mean == pytest.approx(first.mean, rel=0.5)  # same statistic, other samples


def test_swd_ignores_data_range_and_dtype():
    real, fake = textures(4, 32), textures(4, 32, seed=1)
    expected = swd(real, fake, **FAST)
    scaled = swd(real * 255, fake * 255, **FAST, data_range=255)
    np.testing.assert_allclose(scaled.levels.numpy(), expected.levels.numpy(), rtol=1e-4, atol=1e-3)
    in_float64 = swd(real.double(), fake.double(), **FAST)
    assert in_float64.levels.dtype == torch.float64
    np.testing.assert_allclose(in_float64.levels.numpy(), expected.levels.numpy(), rtol=1e-4, atol=1e-3)


def test_swd_sets_of_different_sizes():
    real = textures(8, 32)
    result = swd(real, real[:5], **FAST)
    assert result.levels.shape == (2,) and 0 < result.mean < swd(real, real[:5] ** 3, **FAST).mean


def test_swd_odd_non_square_size():
    real = textures(4, 40)[:, :, :, :37]
    result = swd(real, textures(4, 40, seed=1)[:, :, :, :37], **FAST)
    assert result.resolutions == (37, 19) and torch.isfinite(result.levels).all()


def test_swd_device(device):
    real, fake = textures(4, 32), textures(4, 32, seed=1)
    on_device = swd(real.to(device), fake.to(device), **FAST)
    np.testing.assert_allclose(on_device.levels.cpu().numpy(), swd(real, fake, **FAST).levels.numpy(),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("real, fake, kwargs, error, match", [
    (torch.rand(2, 1, 15, 32), torch.rand(2, 1, 15, 32), {}, ValueError, r"at least 16x16 for SWD, got 15x32"),
    (torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32), {}, ValueError, r"same C, H and W"),
    (torch.rand(2, 32, 32), torch.rand(2, 1, 32, 32), {}, ValueError, r"real must be a 4-D"),
    (torch.rand(2, 1, 32, 32) * 2, torch.rand(2, 1, 32, 32), {}, ValueError,
     r"real must have values in \[0, data_range\] = \[0, 1.0\]"),
    (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), {"nhood_size": 6}, ValueError, r"nhood_size must be odd"),
    (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), {"dir_repeats": 0}, ValueError, r"dir_repeats must be"),
    (torch.rand(2, 1, 32, 32), torch.rand(2, 1, 32, 32), {"data_range": 0}, ValueError, r"data_range must be"),
    (torch.rand(2, 1, 32, 32), np.zeros((2, 1, 32, 32)), {}, TypeError, r"fake must be a torch.Tensor"),
])
def test_swd_errors(real, fake, kwargs, error, match):
    with pytest.raises(error, match=match):
        swd(real, fake, **kwargs)


# ---------------------------------------------------------------------------------------
# MS-SSIM diversity (calls quality.multi_scale_ssim, whose kernels it shares)

def test_ms_ssim_diversity_of_copies_is_one():
    fake = textures(1, 41).expand(5, -1, -1, -1)
    assert ms_ssim_diversity(fake, num_pairs=6) == pytest.approx(1.0, abs=1e-5)


def test_ms_ssim_diversity_lower_for_diverse_sets():
    collapsed = (textures(1, 41) + 0.02 * torch.randn(6, 1, 41, 41)).clamp(0, 1)
    diverse = textures(6, 41, seed=3)
    assert ms_ssim_diversity(diverse, num_pairs=12) < ms_ssim_diversity(collapsed, num_pairs=12)


@pytest.mark.parametrize("size, scales", [(161, 5), (100, 4), (41, 3), (21, 2)])
def test_ms_ssim_diversity_uses_the_scales_that_fit(size, scales):
    # Two images: every pair is (0, 1) or (1, 0), and MS-SSIM is symmetric.
    # float64: MS-SSIM(x, y) and MS-SSIM(y, x) differ by rounding only.
    fake = torch.cat([textures(1, size), textures(1, size, seed=1)]).double()
    expected = quality.multi_scale_ssim(fake[:1], fake[1:], scale_weights=torch.tensor(
        quality.MS_SSIM_WEIGHTS[:scales])).item()
    assert ms_ssim_diversity(fake, num_pairs=2) == pytest.approx(expected, rel=1e-9)


def test_ms_ssim_diversity_passes_kernel_size_and_weights():
    fake = torch.cat([textures(1, 32), textures(1, 32, seed=1)])
    weights = torch.tensor([0.5, 0.5])
    expected = quality.multi_scale_ssim(fake[:1], fake[1:], kernel_size=7, scale_weights=weights).item()
    assert ms_ssim_diversity(fake, num_pairs=2, kernel_size=7, scale_weights=weights) == pytest.approx(expected)


def test_ms_ssim_diversity_is_seeded():
    fake = textures(6, 41)
    assert ms_ssim_diversity(fake, num_pairs=5, seed=4) == ms_ssim_diversity(fake, num_pairs=5, seed=4)


@pytest.mark.parametrize("fake, kwargs, match", [
    (torch.rand(1, 1, 41, 41), {}, r"at least 2 images"),
    (torch.rand(3, 1, 20, 41), {}, r"at least 21x21 for MS-SSIM with 2 scales and kernel_size 11, got 20x41"),
    (torch.rand(3, 1, 41, 41), {"num_pairs": 0}, r"num_pairs must be an integer >= 1"),
    (torch.rand(3, 1, 41, 41), {"kernel_size": 4}, r"kernel_size must be an odd"),
])
def test_ms_ssim_diversity_errors(fake, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ms_ssim_diversity(fake, **kwargs)


# ---------------------------------------------------------------------------------------
# FID

def test_fid_identical_is_zero(rng):
    features = rng.normal(size=(300, 16))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)


def test_fid_shift_is_squared_distance(rng):
    """Equal covariances: the trace term vanishes and FID = ||mu_r - mu_f||^2."""
    features, shift = rng.normal(size=(400, 8)), rng.normal(size=8)
    assert fid_from_features(features, features + shift) == pytest.approx(np.sum(shift**2), rel=1e-8)


def test_fid_closed_form_with_scaled_covariance(rng):
    """fake = 2 real + shift: S_f = 4 S_r, (S_r S_f)^(1/2) = 2 S_r, so the trace term is Tr(S_r)."""
    real = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    fake = 2 * real + 3.0
    expected = np.sum((fake.mean(0) - real.mean(0)) ** 2) + np.trace(np.cov(real, rowvar=False))
    assert fid_from_features(real, fake) == pytest.approx(expected, rel=1e-7)


def test_fid_one_dimensional_closed_form(rng):
    """1-D: (m_r - m_f)^2 + (s_r - s_f)^2 with unbiased standard deviations."""
    real, fake = rng.normal(0.0, 1.0, size=(200, 1)), rng.normal(0.5, 3.0, size=(150, 1))
    expected = (real.mean() - fake.mean()) ** 2 + (real.std(ddof=1) - fake.std(ddof=1)) ** 2
    assert fid_from_features(real, torch.from_numpy(fake)) == pytest.approx(expected, rel=1e-9)


def test_fid_fewer_samples_than_features_is_finite(rng):
    assert np.isfinite(fid_from_features(rng.normal(size=(10, 32)), rng.normal(size=(12, 32))))


@pytest.mark.parametrize("function", [fid_from_features, kid_from_features])
@pytest.mark.parametrize("real, fake, error, match", [
    (np.zeros((5, 3)), np.zeros((5, 4)), ValueError, r"same feature size, got 3 and 4"),
    (np.zeros((1, 3)), np.zeros((5, 3)), ValueError, r"real_feats must be \(N, D\) features with N >= 2"),
    (np.zeros((5, 3)), np.zeros(5), ValueError, r"fake_feats must be \(N, D\)"),
    (np.full((5, 3), np.nan), np.zeros((5, 3)), ValueError, r"real_feats contains NaN"),
    ([[0.0]], np.zeros((5, 3)), TypeError, r"real_feats must be a numpy array or torch.Tensor"),
])
def test_feature_errors(function, real, fake, error, match):
    with pytest.raises(error, match=match):
        function(real, fake)


# ---------------------------------------------------------------------------------------
# KID

def kid_loop_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a . b / d + 1)^3, one pair at a time."""
    d = x.shape[1]

    def k(a, b):
        return (a @ b / d + 1) ** 3

    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return within - 2 * across


def test_kid_matches_loop_reference(rng):
    # One subset holding every sample: the draw only permutes, which MMD ignores.
    real, fake = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(30, 5))
    actual = kid_from_features(real, fake, num_subsets=1, subset_size=30)
    assert actual == pytest.approx(kid_loop_reference(fake, real), rel=1e-10)


def test_kid_identical_near_zero_and_grows_with_shift(rng):
    real = rng.normal(size=(200, 16))
    kwargs = {"num_subsets": 10, "subset_size": 100}
    identical = kid_from_features(real, real, **kwargs)
    shifted = [kid_from_features(real, real + shift, **kwargs) for shift in (0.5, 1.0, 2.0)]
    assert abs(identical) < 0.1 * shifted[0]  # unbiased: near 0, either sign
    assert shifted[0] < shifted[1] < shifted[2]


def test_kid_is_seeded(rng):
    real, fake = rng.normal(size=(50, 4)), rng.normal(size=(60, 4))
    assert kid_from_features(real, fake, subset_size=20, seed=1) == kid_from_features(real, fake, subset_size=20,
                                                                                      seed=1)


# ---------------------------------------------------------------------------------------
# Inception: local weights only

class PixelStatistics(torch.nn.Module):
    """Stands in for StyleGAN2-ADA's TorchScript Inception: same call, tiny features."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.shape[1] != 3:
            raise ValueError("expects uint8 RGB")
        x = images.float().mean(dim=1, keepdim=True)  # grey repeated to RGB: channels are equal
        quadrants = F.adaptive_avg_pool2d(x, 2).flatten(1)
        return torch.cat([quadrants, x.std(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


@pytest.fixture
def inception_file(tmp_path):
    path = tmp_path / "inception.pt"
    with pytest.warns(FutureWarning):  # torch.jit.script is deprecated; the real weights are TorchScript
        torch.jit.script(PixelStatistics()).save(str(path))
    return path


def test_load_inception_without_path_explains(no_network):
    with pytest.raises(ValueError, match=r"never downloads; pass --inception PATH to a local copy of .*"
                                         r"inception-2015-12-05.pt"):
        load_inception(None)


def test_load_inception_missing_file_explains(no_network, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not found at .*missing.pt.*never downloads; pass --inception PATH"):
        load_inception(tmp_path / "missing.pt")


def test_load_inception_rejects_a_non_path(no_network):
    with pytest.raises(TypeError, match=r"weights_path must be a str or os.PathLike, got int"):
        load_inception(3)


def test_load_inception_rejects_other_files(no_network, tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not a model")
    with pytest.raises(ValueError, match=r"is not a TorchScript file"):
        load_inception(path)


@pytest.mark.parametrize("metric", [fid, kid])
def test_images_without_weights_explain(no_network, metric):
    with pytest.raises(ValueError, match=r"never downloads"):
        metric(torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16))


def test_fid_and_kid_from_images_use_the_weights(no_network, inception_file):
    real, fake = torch.rand(12, 1, 16, 16), torch.rand(10, 1, 16, 16) ** 2
    model = PixelStatistics()

    def features(images):  # as StyleGAN2-ADA feeds the network: uint8, RGB
        return model((images * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)).double().numpy()

    expected_fid = fid_from_features(features(real), features(fake))
    assert fid(real, fake, weights=inception_file) == pytest.approx(expected_fid, rel=1e-9)
    assert fid(real * 255, features(fake), weights=inception_file, data_range=255) == pytest.approx(expected_fid,
                                                                                                     rel=1e-9)
    loaded = load_inception(inception_file)
    expected_kid = kid_from_features(features(real), features(fake), num_subsets=3, subset_size=4)
    assert kid(real, fake, weights=loaded, num_subsets=3, subset_size=4) == pytest.approx(expected_kid, rel=1e-9)


def test_features_need_no_weights(no_network, rng):
    real, fake = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    assert fid(real, fake) == fid_from_features(real, fake)
    assert kid(real, fake, num_subsets=2, subset_size=10) == kid_from_features(real, fake, num_subsets=2,
                                                                               subset_size=10)
