"""Set-level metrics: how far a set of generated images is from the real ones, and how diverse it is.

- :func:`swd`: sliced Wasserstein distance between Laplacian-pyramid patch descriptors
  (Karras et al. 2018, "Progressive Growing of GANs", section 5); per level and averaged.
- :func:`ms_ssim_diversity`: mean MS-SSIM over random pairs of generated images (Odena et
  al. 2017); higher means less diverse, a mode-collapse indicator.
- :func:`fid` / :func:`kid` on Inception-v3 pool features (Heusel et al. 2017; Bińkowski et
  al. 2018), or :func:`fid_from_features` / :func:`kid_from_features` on features you already
  have. The Inception weights are never downloaded: :func:`load_inception` reads a local
  TorchScript file such as StyleGAN2-ADA's ``inception-2015-12-05.pt``.

Lower is better for SWD, FID and KID. Set-level results are Python floats (SWD: a
:class:`SWDResult`); images are (N, C, H, W) in [0, data_range] as in
:mod:`medgan_fast.metrics.quality`.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import warnings

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

from . import quality

__all__ = ["SWDResult", "fid", "fid_from_features", "inception_features", "kid", "kid_from_features",
           "laplacian_pyramid", "load_inception", "ms_ssim_diversity", "swd"]

SWD_MIN_SIZE = 16  # the coarsest pyramid level is the last one at least this size (as Karras et al.)
# cv2.pyrDown's 5-tap binomial filter, as Karras et al.'s pyramid.
BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance


@dataclasses.dataclass(frozen=True)
class SWDResult:
    """:func:`swd`'s result. ``levels``: SWD x 1e3 per pyramid level, finest first, shape
    (L,); ``resolutions``: min(H, W) of each level (Karras et al. name them SWDx1e3_<res>);
    ``mean``: their average (SWDx1e3_avg)."""

    levels: torch.Tensor
    resolutions: tuple[int, ...]
    mean: float


def _binomial_filter(x: torch.Tensor, gain: float) -> torch.Tensor:
    """5x5 binomial filter per channel with reflect ("mirror" in scipy) padding."""
    taps = torch.tensor(BINOMIAL_5, dtype=x.dtype, device=x.device) / 16
    kernel = (torch.outer(taps, taps) * gain).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), kernel, groups=x.shape[1])


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _binomial_filter(x, 1.0)[:, :, ::2, ::2]  # cv2.pyrDown: ceil(H/2) x ceil(W/2)


def _pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """cv2.pyrUp: zeros between samples, then the filter with gain 4; cropped to `size`
    (odd sizes: the upsampled image is one row/column too large)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _binomial_filter(up, 4.0)[:, :, : size[0], : size[1]]


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """Laplacian pyramid of (N, C, H, W) float images, finest level first: each level is the
    image minus the upsampled next coarser Gaussian level; the last level is the coarsest
    Gaussian level itself. The filters are cv2.pyrDown/pyrUp's (5-tap binomial, reflect
    padding), as Karras et al.; every level before the last must be at least 3x3.

    Example:
        >>> levels = laplacian_pyramid(torch.rand(2, 1, 32, 32), 3)
        >>> [tuple(level.shape[-2:]) for level in levels]
        [(32, 32), (16, 16), (8, 8)]
    """
    pyramid = [images]
    for _ in range(1, num_levels):
        coarser = _pyr_down(pyramid[-1])
        pyramid[-1] = pyramid[-1] - _pyr_up(coarser, pyramid[-1].shape[-2:])
        pyramid.append(coarser)
    return pyramid


def _random_descriptors(level: torch.Tensor, nhood_size: int, nhoods_per_image: int,
                        generator: torch.Generator) -> torch.Tensor:
    """`nhoods_per_image` random nhood_size^2 patches per image, each channel standardised
    over the whole set -> (N * nhoods_per_image, C * nhood_size^2)."""
    n, _, h, w = level.shape
    half = nhood_size // 2
    count = n * nhoods_per_image
    # Centres drawn on the CPU so a seed gives the same patches on every device.
    rows = torch.randint(half, h - half, (count, 1, 1), generator=generator).to(level.device)
    cols = torch.randint(half, w - half, (count, 1, 1), generator=generator).to(level.device)
    offsets = torch.arange(-half, half + 1, device=level.device)
    image = torch.arange(n, device=level.device).repeat_interleave(nhoods_per_image).view(count, 1, 1)
    patches = level.permute(0, 2, 3, 1)[image, rows + offsets.view(1, -1, 1), cols + offsets.view(1, 1, -1)]
    patches = patches.permute(0, 3, 1, 2)  # [count, C, nhood, nhood]
    mean = patches.mean(dim=(0, 2, 3), keepdim=True)
    std = patches.std(dim=(0, 2, 3), keepdim=True, correction=0)  # np.std, as Karras et al.
    # A channel constant over the set (std 0) gives 0s rather than NaNs.
    return ((patches - mean) / std.clamp_min(torch.finfo(std.dtype).tiny)).reshape(count, -1)


def _wasserstein_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical distributions of each column of a (n, D) and b (m, D):
    the integral over t in (0, 1] of |quantile_a(t) - quantile_b(t)|, exact for n != m;
    for n == m it is mean(|sort(a) - sort(b)|), Karras et al.'s formula."""
    a, b = a.sort(dim=0).values, b.sort(dim=0).values
    n, m = a.shape[0], b.shape[0]
    if n == m:
        return (a - b).abs().mean(dim=0)
    # The quantile functions are steps at i/n and j/m; integrate piecewise between all steps.
    steps = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                       torch.arange(1, m + 1, dtype=torch.float64) / m]).sort().values
    widths = torch.diff(steps, prepend=steps.new_zeros(1))
    middles = steps - widths / 2
    index_a = (middles * n).long().clamp_max(n - 1).to(a.device)
    index_b = (middles * m).long().clamp_max(m - 1).to(a.device)
    return (widths.to(a).unsqueeze(1) * (a[index_a] - b[index_b]).abs()).sum(dim=0)


def swd(real: torch.Tensor, fake: torch.Tensor, nhood_size: int = 7, nhoods_per_image: int = 128,
        dir_repeats: int = 4, dirs_per_repeat: int = 128, seed: int = 0, data_range: float = 1.0) -> SWDResult:
    """Sliced Wasserstein distance between two image sets, per Laplacian-pyramid level
    (Karras et al. 2018, progressive_growing_of_gans ``metrics/sliced_wasserstein.py``).

    For each level (full resolution, then halved while min(H, W) >= 16; the last level is the
    Gaussian low-pass), take ``nhoods_per_image`` random ``nhood_size`` x ``nhood_size``
    patches per image (all channels), standardise each channel by its mean and std over the
    set (each set by its own statistics), project the descriptors onto ``dir_repeats`` x
    ``dirs_per_repeat`` random unit directions (512 by default), and average the 1-D
    Wasserstein-1 distances between the sorted projections. Values are x 1e3, as the paper.

    Because each set is standardised separately, a global per-channel gain or offset is
    not seen; changes of texture, sharpness, noise or structure are. The patch centres and
    the directions come from a ``torch.Generator`` seeded with ``seed`` and are drawn the
    same for both sets, so ``swd(x, x)`` is exactly 0 and a result is reproducible on any
    device. The sets may hold different numbers of images (the 1-D distance is then the
    exact one between the two empirical distributions).

    Args:
        real, fake: (N, C, H, W) images in [0, data_range], same C, H and W, H and W >= 16.
        nhood_size: odd patch side (7 as the paper).
        nhoods_per_image: patches per image and level (128).
        dir_repeats, dirs_per_repeat: random projections, drawn in repeats of (4 x 128).
        seed: seeds the patch positions and directions.
        data_range: the images' maximum value (1.0 or 255); SWD does not depend on it.

    Returns:
        :class:`SWDResult` with ``levels`` (L,), ``resolutions`` and ``mean``.

    Example:
        >>> real = torch.rand(4, 3, 32, 32)
        >>> result = swd(real, real)
        >>> result.resolutions, result.mean
        ((32, 16), 0.0)
    """
    real, fake = quality.check_images("real", real, data_range), quality.check_images("fake", fake, data_range)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real and fake must have the same C, H and W, got shapes {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    if real.device != fake.device:
        raise ValueError(f"real and fake must be on the same device, got {real.device} and {fake.device}")
    if min(real.shape[-2:]) < SWD_MIN_SIZE:
        raise ValueError(f"real and fake must be at least {SWD_MIN_SIZE}x{SWD_MIN_SIZE} for SWD, "
                         f"got {real.shape[-2]}x{real.shape[-1]}")
    nhood_size = _check_positive_int("nhood_size", nhood_size)
    if nhood_size % 2 != 1 or nhood_size > SWD_MIN_SIZE:
        raise ValueError(f"nhood_size must be odd and at most {SWD_MIN_SIZE}, got {nhood_size}")
    nhoods_per_image = _check_positive_int("nhoods_per_image", nhoods_per_image)
    dir_repeats = _check_positive_int("dir_repeats", dir_repeats)
    dirs_per_repeat = _check_positive_int("dirs_per_repeat", dirs_per_repeat)
    dtype = torch.float64 if torch.float64 in (real.dtype, fake.dtype) else torch.float32
    real, fake = real.to(dtype), fake.to(dtype)

    resolutions, size = [], min(real.shape[-2:])
    while size >= SWD_MIN_SIZE:
        resolutions.append(size)
        size = (size + 1) // 2  # pyrDown's ceil(size / 2)
    pyramids = [laplacian_pyramid(images, len(resolutions)) for images in (real, fake)]

    generator, distances = torch.Generator().manual_seed(seed), []
    for real_level, fake_level in zip(*pyramids):
        # fake's patches replay real's random draws: the same positions where the sets are the same size.
        state = generator.get_state()
        real_descriptors = _random_descriptors(real_level, nhood_size, nhoods_per_image, generator)
        generator.set_state(state)
        fake_descriptors = _random_descriptors(fake_level, nhood_size, nhoods_per_image, generator)
        repeats = []
        for _ in range(dir_repeats):
            # Drawn in float64 whatever the images' dtype, so float32 and float64 use the same directions.
            directions = torch.randn(real_descriptors.shape[1], dirs_per_repeat, generator=generator,
                                     dtype=torch.float64)  # [C * nhood^2, dirs]
            directions = (directions / directions.norm(dim=0, keepdim=True)).to(real)
            repeats.append(_wasserstein_1d(real_descriptors @ directions, fake_descriptors @ directions).mean())
        distances.append(torch.stack(repeats).mean() * 1e3)
    levels = torch.stack(distances)
    return SWDResult(levels=levels, resolutions=tuple(resolutions), mean=levels.mean().item())


# ---------------------------------------------------------------------------------------
# MS-SSIM diversity


def ms_ssim_diversity(fake: torch.Tensor, num_pairs: int = 100, seed: int = 0, data_range: float = 1.0,
                      kernel_size: int = 11, scale_weights: torch.Tensor | None = None,
                      batch_size: int = 64) -> float:
    """Mean MS-SSIM between ``num_pairs`` random pairs of distinct images of ``fake``: a
    mode-collapse indicator (Odena et al. 2017). Higher means less diverse; compare with
    the same number on real images.

    Pairs (i, j), i != j, are drawn uniformly and independently with a generator seeded by
    ``seed``. MS-SSIM is :func:`medgan_fast.metrics.quality.multi_scale_ssim`, which needs
    min(H, W) >= (kernel_size - 1) * 2^(scales - 1) + 1. Without ``scale_weights``, the
    first S of the 5 standard weights are used, S the most scales that fit (5 from
    161x161 with kernel_size 11; 4 from 81, 3 from 41, 2 from 21); fewer than 2 is an
    error, as one scale is plain SSIM.

    Args:
        fake: (N, C, H, W) images in [0, data_range], N >= 2, C 1 or 3.
        num_pairs: pairs to average over.
        seed: seeds the choice of pairs.
        data_range: the images' maximum value.
        kernel_size, scale_weights: passed to multi_scale_ssim (see above for the default).
        batch_size: pairs per MS-SSIM call (bounds memory).

    Example:
        >>> fake = torch.rand(4, 1, 48, 48)
        >>> 0 <= ms_ssim_diversity(fake, num_pairs=8) < 0.2  # noise: very diverse
        True
    """
    fake = quality.check_images("fake", fake, data_range)
    if fake.shape[0] < 2:
        raise ValueError(f"fake must hold at least 2 images to form pairs, got {fake.shape[0]}")
    num_pairs = _check_positive_int("num_pairs", num_pairs)
    batch_size = _check_positive_int("batch_size", batch_size)
    if scale_weights is None:
        if not isinstance(kernel_size, int) or kernel_size % 2 != 1 or kernel_size < 1:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        side, scales = min(fake.shape[-2:]), 0
        while scales < len(quality.MS_SSIM_WEIGHTS) and (kernel_size - 1) * 2**scales + 1 <= side:
            scales += 1
        if scales < 2:
            raise ValueError(f"fake must be at least {2 * (kernel_size - 1) + 1}x{2 * (kernel_size - 1) + 1} for "
                             f"MS-SSIM with 2 scales and kernel_size {kernel_size}, got "
                             f"{fake.shape[-2]}x{fake.shape[-1]}")
        scale_weights = torch.tensor(quality.MS_SSIM_WEIGHTS[:scales])

    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(0, fake.shape[0], (num_pairs,), generator=generator)
    # Draw from the other N - 1 images and skip over `first`: distinct and uniform.
    second = torch.randint(0, fake.shape[0] - 1, (num_pairs,), generator=generator)
    second = second + (second >= first).long()
    first, second = first.to(fake.device), second.to(fake.device)
    total = 0.0
    for start in range(0, num_pairs, batch_size):
        i, j = first[start:start + batch_size], second[start:start + batch_size]
        total += quality.multi_scale_ssim(fake[i], fake[j], kernel_size=kernel_size, data_range=data_range,
                                          reduction="sum", scale_weights=scale_weights).item()
    return total / num_pairs


# ---------------------------------------------------------------------------------------
# FID and KID


def _check_features(name: str, x) -> np.ndarray:
    """(N, D) features, numpy or torch -> float64 numpy."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch.Tensor of features, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"{name} must be (N, D) features with N >= 2, got shape {x.shape}")
    x = x.astype(np.float64)
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def fid_from_features(real_feats, fake_feats) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):
    ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)), S the unbiased covariances.

    Args:
        real_feats, fake_feats: (N, D) and (M, D) arrays or tensors, N, M >= 2 (use
            thousands of samples for a meaningful FID; D = 2048 for Inception pool features).

    Example:
        >>> feats = np.random.default_rng(0).normal(size=(500, 4))
        >>> round(fid_from_features(feats, feats + 1.0), 6)  # the mean shift: 4 x 1^2
        4.0
    """
    real, fake = _check_features("real_feats", real_feats), _check_features("fake_feats", fake_feats)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_feats and fake_feats must have the same feature size, got {real.shape[1]} "
                         f"and {fake.shape[1]}")
    mean_real, mean_fake = real.mean(axis=0), fake.mean(axis=0)
    cov_real, cov_fake = np.atleast_2d(np.cov(real, rowvar=False)), np.atleast_2d(np.cov(fake, rowvar=False))
    cross = scipy.linalg.sqrtm(cov_real @ cov_fake)
    if not np.isfinite(cross).all():
        # Singular product (fewer samples than features): offset both, as pytorch-fid does.
        offset = np.eye(cov_real.shape[0]) * 1e-6
        cross = scipy.linalg.sqrtm((cov_real + offset) @ (cov_fake + offset))
    # sqrtm can return tiny imaginary parts from rounding; only the real part is meaningful.
    trace = np.trace(cov_real) + np.trace(cov_fake) - 2 * np.trace(np.real(cross))
    return float(np.sum((mean_real - mean_fake) ** 2) + trace)


def kid_from_features(real_feats, fake_feats, num_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 0) -> float:
    """Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of the squared
    MMD with the cubic polynomial kernel k(x, y) = (x . y / D + 1)^3, averaged over
    ``num_subsets`` random subsets of ``min(subset_size, N, M)`` samples of each set (drawn
    without replacement, independently per subset; as StyleGAN2-ADA). Unbiased, so it can be
    slightly negative when the sets come from the same distribution.

    Args:
        real_feats, fake_feats: (N, D) and (M, D) arrays or tensors, N, M >= 2.
        num_subsets, subset_size: the subsets averaged over.
        seed: seeds the subset draws.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real, fake = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
        >>> abs(kid_from_features(real, fake, subset_size=100)) < 0.05
        True
    """
    real, fake = _check_features("real_feats", real_feats), _check_features("fake_feats", fake_feats)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real_feats and fake_feats must have the same feature size, got {real.shape[1]} "
                         f"and {fake.shape[1]}")
    num_subsets = _check_positive_int("num_subsets", num_subsets)
    size = min(_check_positive_int("subset_size", subset_size, minimum=2), real.shape[0], fake.shape[0])
    dim = real.shape[1]
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(fake.shape[0], size, replace=False)]
        y = real[rng.choice(real.shape[0], size, replace=False)]
        k_xx, k_yy, k_xy = ((a @ b.T / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        # Unbiased: the within-set means leave out the diagonal k(x_i, x_i).
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (size * (size - 1))
        total += within - 2 * k_xy.mean()
    return float(total / num_subsets)


def load_inception(weights_path: str | os.PathLike | None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Loads Inception-v3 for FID/KID from a local TorchScript file, such as StyleGAN2-ADA's
    ``inception-2015-12-05.pt`` (the TF-FID network ported to PyTorch). It never downloads.

    The module must accept ``model(images, return_features=True)`` with images (N, 3, H, W)
    uint8 in [0, 255] (any size; it resizes itself) and return (N, 2048) pool features.

    Example:
        >>> load_inception(None)
        Traceback (most recent call last):
        ...
        ValueError: load_inception never downloads; pass --inception PATH to a local copy of ...
    """
    hint = ("pass --inception PATH to a local copy of the Inception-v3 TorchScript weights "
            "(inception-2015-12-05.pt, as used by StyleGAN2-ADA), or precomputed features to "
            "fid_from_features/kid_from_features")
    if weights_path is None or str(weights_path) == "":
        raise ValueError(f"load_inception never downloads; {hint}")
    if not isinstance(weights_path, (str, os.PathLike)):
        raise TypeError(f"weights_path must be a str or os.PathLike, got {type(weights_path).__name__}")
    if not os.path.isfile(weights_path):
        raise FileNotFoundError(f"Inception weights not found at {os.fspath(weights_path)!r}; "
                                f"load_inception never downloads; {hint}")
    with warnings.catch_warnings():
        # torch.jit.load is deprecated, but TorchScript is the only form these weights ship in.
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=FutureWarning)
        try:
            model = torch.jit.load(os.fspath(weights_path), map_location=device)
        except RuntimeError as error:
            raise ValueError(f"{os.fspath(weights_path)!r} is not a TorchScript file ({error}); {hint}") from error
    return model.eval()


@torch.no_grad()
def inception_features(images: torch.Tensor, model: torch.nn.Module, data_range: float = 1.0,
                       batch_size: int = 64) -> np.ndarray:
    """Pool features (N, 2048) of (N, C, H, W) images in [0, data_range], C 1 or 3, from a
    :func:`load_inception` model. Images are quantised to uint8 as StyleGAN2-ADA feeds them
    (grey repeated to RGB) and moved to the model's device batch by batch.

    Example:
        >>> model = load_inception("inception-2015-12-05.pt")  # doctest: +SKIP
        >>> inception_features(torch.rand(8, 3, 64, 64), model).shape  # doctest: +SKIP
        (8, 2048)
    """
    images = quality.check_images("images", images, data_range)
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")
    batch_size = _check_positive_int("batch_size", batch_size)
    device = next(iter(model.parameters()), torch.empty(0)).device
    features = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size].to(device)
        batch = (batch * (255 / data_range)).round().clamp(0, 255).to(torch.uint8)
        if batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        features.append(model(batch, return_features=True).double().cpu())
    return torch.cat(features).numpy()


def _feature_pair(real, fake, weights, data_range: float, batch_size: int) -> list:
    """Both sets as features: (N, D) inputs are features already; (N, C, H, W) images go
    through Inception, loaded from ``weights`` once (or ``weights`` is the loaded model)."""
    model, features = weights if isinstance(weights, torch.nn.Module) else None, []
    for x in (real, fake):
        if isinstance(x, (np.ndarray, torch.Tensor)) and x.ndim == 2:
            features.append(x)
            continue
        if model is None:
            model = load_inception(weights)
        features.append(inception_features(x, model, data_range, batch_size))
    return features


def fid(real, fake, weights: str | os.PathLike | torch.nn.Module | None = None, data_range: float = 1.0,
        batch_size: int = 64) -> float:
    """Fréchet Inception Distance between two sets given as (N, D) features or as
    (N, C, H, W) images in [0, data_range]; images need ``weights``, a path for
    :func:`load_inception` (or a model it returned). See :func:`fid_from_features`.

    Example:
        >>> feats = np.random.default_rng(0).normal(size=(100, 4))
        >>> abs(fid(feats, feats)) < 1e-9  # zero up to rounding
        True
    """
    return fid_from_features(*_feature_pair(real, fake, weights, data_range, batch_size))


def kid(real, fake, weights: str | os.PathLike | torch.nn.Module | None = None, data_range: float = 1.0,
        batch_size: int = 64, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """Kernel Inception Distance between two sets given as features or images, as :func:`fid`;
    see :func:`kid_from_features` for the estimator.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> kid(rng.normal(size=(100, 4)), rng.normal(size=(100, 4)) + 1.0, subset_size=50) > 0.1
        True
    """
    return kid_from_features(*_feature_pair(real, fake, weights, data_range, batch_size),
                             num_subsets=num_subsets, subset_size=subset_size, seed=seed)
