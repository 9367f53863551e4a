"""Full-reference image-quality metrics with piq 0.8.0's signatures, defaults and results.

Each metric is one fused kernel per batch (:mod:`medgan_fast.ops.metrics`); this module
checks the inputs as piq does (but raising ValueError or TypeError, see below), and
finishes on the N per-image numbers. piq's documented conventions are kept on purpose, so
results compare exactly:

- SSIM filters without padding (valid convolution) and first average-pools by
  max(1, round(min(H, W) / 256)) when ``downsample``; it is computed per channel of RGB.
- GMSD, MS-GMSD and HaarPSI use the Y of YIQ for RGB; MDSI uses LHM and treats grey input
  as RGB with three equal channels (piq warns about this; so do we).
- MS-GMSD, MDSI and HaarPSI work on the [0, 255] scale internally, whatever data_range is.
- ``reduction``: 'none' gives one value per image, 'mean' and 'sum' reduce over the batch.
- SSIM and MS-SSIM also take piq's complex images, (N, C, H, W, 2) with the real and
  imaginary parts last, and then give (N, 2) per-image values (plain PyTorch, no kernel).

Every metric is differentiable in x and y, with piq's gradients: when x or y requires grad
(and grad mode is on) it computes through the ops' plain-PyTorch references, otherwise
through the kernels (:func:`medgan_fast.ops.metrics._kernel`). ``1 - ssim(x, y)`` is a loss.

Higher is better for PSNR, SSIM, MS-SSIM and HaarPSI; lower is better for GMSD, MS-GMSD and
MDSI (:data:`HIGHER_IS_BETTER`). float16/bfloat16 inputs are computed in float32.

Input errors differ in type from piq 0.8.0's. Where piq raises AssertionError (values
outside [0, data_range], NaN or Inf, a wrong number of dimensions, shapes or devices that
differ, a non-tensor, and the cases each function's docstring adds) these raise ValueError,
or TypeError for a non-tensor. An empty batch is a ValueError (piq: RuntimeError), a complex
dtype a TypeError (piq: NotImplementedError) and a data_range that is not a number a
ValueError (piq: TypeError). Refused here but computed by piq: integer dtypes other than
uint8 (TypeError), a data_range <= 0 (ValueError), and channel counts other than 1 and 3
(ValueError; piq's GMSD and MDSI fail on them with RuntimeError). y of another dtype is
cast to x's (piq's filtering metrics raise RuntimeError).
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F

from ..ops import metrics as ops

__all__ = ["HIGHER_IS_BETTER", "QUALITY_METRICS", "gmsd", "haarpsi", "mdsi", "ms_ssim", "multi_scale_gmsd",
           "multi_scale_ssim", "psnr", "ssim"]

REDUCTIONS = ("none", "mean", "sum")
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_GMSD_WEIGHTS = (0.096, 0.596, 0.289, 0.019)


def check_images(name: str, x, data_range, complex_parts: bool = False) -> torch.Tensor:
    """A 4-D real tensor (with `complex_parts` also piq's complex images, (N, C, H, W, 2)) in
    [0, data_range], without NaN -> float32 (float64 kept); a clear error naming `name`
    otherwise. Shared by the quality and distribution metrics."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 and not (complex_parts and x.dim() == 5 and x.shape[-1] == 2):
        shapes = "4-D (N, C, H, W) or 5-D (N, C, H, W, 2)" if complex_parts else "4-D (N, C, H, W)"
        raise ValueError(f"{name} must be a {shapes} tensor, got shape {tuple(x.shape)}")
    if x.is_complex() or not (x.is_floating_point() or x.dtype == torch.uint8):
        raise TypeError(f"{name} must be a real floating-point (or uint8) tensor, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if isinstance(data_range, bool) or not isinstance(data_range, numbers.Real) or not data_range > 0:
        raise ValueError(f"data_range must be a number > 0, got {data_range!r}")
    x = x.to(x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32)
    low, high = (v.item() for v in torch.aminmax(x))  # NaN propagates into both; Inf fails the range
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{name} contains NaN")
    if not (0 <= low and high <= data_range):
        raise ValueError(f"{name} must have values in [0, data_range] = [0, {data_range}], "
                         f"got values in [{low}, {high}]")
    return x


def _prepare(x, y, data_range, reduction, complex_parts=False):
    """piq's _validate_input as ValueErrors, plus NaN/Inf; returns float32/64 tensors of
    x's dtype."""
    x, y = check_images("x", x, data_range, complex_parts), check_images("y", y, data_range, complex_parts)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.device != y.device:
        raise ValueError(f"x and y must be on the same device, got {x.device} and {y.device}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if x.shape[1] not in (1, 3):
        raise ValueError(f"x and y must have 1 (grey) or 3 (RGB) channels, got {x.shape[1]}")
    return x, y.to(x.dtype)


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    return values.mean(dim=0) if reduction == "mean" else values.sum(dim=0)


def _check_min_size(x, size, what):
    if x.shape[2] < size or x.shape[3] < size:  # H, W of (N, C, H, W) and (N, C, H, W, 2)
        raise ValueError(f"x and y must be at least {size}x{size} for {what}, got {x.shape[2]}x{x.shape[3]}")


def _scale_weights(weights, default):
    if weights is None:
        return torch.tensor(default, dtype=torch.float64)
    weights = torch.as_tensor(weights, dtype=torch.float64).cpu()
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"scale_weights must be a vector of weights, got shape {tuple(weights.shape)}")
    return weights / weights.sum()


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean",
         convert_to_greyscale: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, -10 log10(MSE + 1e-8) on images scaled to [0, 1]
    (piq.psnr). With ``convert_to_greyscale`` RGB is reduced to its luma first.

    Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError: values
    outside [0, data_range] or NaN, fewer than 4 dimensions, shapes or devices that differ;
    5-D inputs, for which piq gives a PSNR per entry of the last dimension, are refused too.
    """
    x, y = _prepare(x, y, data_range, reduction)
    mse = ops.squared_error(x, y, 1.0 / float(data_range), convert_to_greyscale)
    return _reduce(-10 * torch.log10(mse + 1e-8), reduction)


def _ssim_pool(x, downsample):
    if x.dim() == 5:
        # piq takes the factor from the last two sizes, (W, 2) here: complex images are never pooled
        return 1
    pool = ops.auto_pool(x.shape[-2], x.shape[-1])
    return pool if downsample and pool > 1 else 1


def _check_kernel_size(kernel_size):
    if not isinstance(kernel_size, int) or kernel_size % 2 != 1 or kernel_size < 1:
        raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")


def _ssim_means(x, y, window, scale, pool, c1, c2):
    """(ssim, cs) per image and channel: the fused kernel for (N, C, H, W) images, piq's
    complex SSIM (plain PyTorch) for (N, C, H, W, 2) ones, with a last dimension of 2."""
    if x.dim() == 5:
        return ops.complex_ssim_means(x, y, window, scale, c1, c2)
    return ops.ssim_means(x, y, window, scale, pool, c1, c2)


def ssim(x: torch.Tensor, y: torch.Tensor, kernel_size: int = 11, kernel_sigma: float = 1.5,
         data_range: float = 1.0, reduction: str = "mean", full: bool = False, downsample: bool = True,
         k1: float = 0.01, k2: float = 0.03):
    """Structural similarity (piq.ssim): Gaussian window `kernel_size` (odd) and
    `kernel_sigma`, valid filtering, mean over channels. With ``full`` returns
    [ssim, cs] (cs: the mean contrast-structure term).

    x, y: (N, C, H, W), or piq's complex images (N, C, H, W, 2) (real and imaginary parts
    last, both in [0, data_range]), which give (N, 2) per-image values, are never
    downsampled (as in piq) and are computed in plain PyTorch: the kernel has no complex
    form. Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError:
    values outside [0, data_range] or NaN, a wrong number of dimensions, shapes or devices
    that differ, an even kernel_size.
    """
    _check_kernel_size(kernel_size)
    x, y = _prepare(x, y, data_range, reduction, complex_parts=True)
    pool = _ssim_pool(x, downsample)
    height, width = x.shape[2:4]
    if width // pool < kernel_size or height // pool < kernel_size:
        raise ValueError(f"kernel_size {kernel_size} is larger than the input ({height}x{width}"
                         f"{f' pooled by {pool}' if pool > 1 else ''})")
    window = ops.gaussian_window(kernel_size, kernel_sigma, x.dtype, x.device)
    ssim_map, cs = _ssim_means(x, y, window, 1.0 / float(data_range), pool, k1**2, k2**2)
    ssim_value, cs = _reduce(ssim_map.mean(1), reduction), _reduce(cs.mean(1), reduction)
    return [ssim_value, cs] if full else ssim_value


def _halve(t):
    """MS-SSIM's downsampling (piq): replicate padding at the top/left of odd sizes, then 2x2
    means; each part of complex (N, C, H, W, 2) images on its own."""
    if t.dim() == 5:
        return torch.stack([_halve(t[..., 0]), _halve(t[..., 1])], dim=-1)
    pad = max(t.shape[2] % 2, t.shape[3] % 2)
    return F.avg_pool2d(F.pad(t, [pad, 0, pad, 0], mode="replicate"), 2)


def _weighted_product(terms, weights):
    """(N,) from (levels, N, C) terms: mean over channels of prod_l relu(term_l)^w_l. Complex
    terms (levels, N, C, 2) give (N, 2), as piq: moduli to the w_l multiplied, phases times
    w_l added."""
    terms = torch.relu(terms)
    weights = weights.to(terms).view(-1, 1, 1)
    if terms.dim() == 3:
        return torch.prod(terms**weights, dim=0).mean(1)
    modulus = torch.prod((terms[..., 0] ** 2 + terms[..., 1] ** 2).sqrt() ** weights, dim=0)
    phase = torch.sum(torch.atan2(terms[..., 1], terms[..., 0]) * weights, dim=0)
    return torch.stack([modulus * torch.cos(phase), modulus * torch.sin(phase)], dim=-1).mean(1)


def multi_scale_ssim(x: torch.Tensor, y: torch.Tensor, kernel_size: int = 11, kernel_sigma: float = 1.5,
                     data_range: float = 1.0, reduction: str = "mean", scale_weights: torch.Tensor | None = None,
                     k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Multi-scale SSIM (piq.multi_scale_ssim): 5 scales by default, each halved with
    replicate padding at the top/left of odd sizes; the image must be at least
    (kernel_size - 1) * 2^(scales - 1) + 1 on each side.

    x, y: (N, C, H, W), or piq's complex images (N, C, H, W, 2), which give (N, 2) values
    (modulus and phase combined over the scales as piq does) and are computed in plain
    PyTorch. Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError:
    values outside [0, data_range] or NaN, a wrong number of dimensions, shapes or devices
    that differ, an even kernel_size.
    """
    _check_kernel_size(kernel_size)
    x, y = _prepare(x, y, data_range, reduction, complex_parts=True)
    weights = _scale_weights(scale_weights, MS_SSIM_WEIGHTS)
    levels = weights.numel()
    _check_min_size(x, (kernel_size - 1) * 2 ** (levels - 1) + 1, f"MS-SSIM with {levels} scales")
    window = ops.gaussian_window(kernel_size, kernel_sigma, x.dtype, x.device)
    scale, terms = 1.0 / float(data_range), []
    for level in range(levels):
        if level > 0:
            x, y = _halve(x), _halve(y)
        ssim_map, cs = _ssim_means(x, y, window, scale, 1, k1**2, k2**2)
        terms.append(ssim_map if level == levels - 1 else cs)
    return _reduce(_weighted_product(torch.stack(terms), weights), reduction)


ms_ssim = multi_scale_ssim


def gmsd(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean", data_range: float = 1.0,
         t: float = 170 / (255.0**2)) -> torch.Tensor:
    """Gradient magnitude similarity deviation (piq.gmsd) of the luma at half size.

    Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError: values
    outside [0, data_range] or NaN, a tensor that is not 4-D, shapes or devices that differ.
    """
    x, y = _prepare(x, y, data_range, reduction)
    deviation = ops.gmsd_deviation(x, y, 1.0 / float(data_range), True, 1, t, 0.0)
    return _reduce(deviation[:, 0], reduction)


def multi_scale_gmsd(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean",
                     scale_weights: torch.Tensor | None = None, chromatic: bool = False, alpha: float = 0.5,
                     beta1: float = 0.01, beta2: float = 0.32, beta3: float = 15.0, t: float = 170) -> torch.Tensor:
    """Multi-scale GMSD (piq.multi_scale_gmsd) on the [0, 255] scale; with ``chromatic``
    (RGB only) adds the IQ error of the coarsest scale.

    Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError: values
    outside [0, data_range] or NaN, a tensor that is not 4-D, shapes or devices that differ,
    ``chromatic`` on grey images.
    """
    x, y = _prepare(x, y, data_range, reduction)
    weights = _scale_weights(scale_weights, MS_GMSD_WEIGHTS)
    num_scales = weights.numel()
    _check_min_size(x, 2**num_scales + 1, f"MS-GMSD with {num_scales} scales")
    if chromatic and x.shape[1] != 3:
        raise ValueError(f"chromatic MS-GMSD needs RGB images (3 channels), got {x.shape[1]}")
    scale = 255.0 / float(data_range)
    deviations = ops.gmsd_deviation(x, y, scale, False, num_scales, t, alpha)
    value = torch.sqrt((weights.to(deviations) * deviations**2).sum(dim=1))
    if chromatic:
        # Pooling is linear and zero padding maps to zero, so pooling RGB and then
        # converting equals converting and then pooling (what piq does).
        for _ in range(num_scales - 1):
            x, y = ops._pool2_zero(x), ops._pool2_zero(y)
        iq_x, iq_y = ops._colour(x * scale, ops.RGB_TO_YIQ[1:]), ops._colour(y * scale, ops.RGB_TO_YIQ[1:])
        rmse_chroma = torch.sqrt(((iq_x - iq_y) ** 2).mean(dim=(2, 3)).sum(dim=1))
        gamma = 2 / (1 + beta2 * torch.exp(-beta3 * value)) - 1
        value = gamma * value + (1 - gamma) * beta1 * rmse_chroma
    return _reduce(value, reduction)


def mdsi(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, reduction: str = "mean", c1: float = 140.0,
         c2: float = 55.0, c3: float = 550.0, combination: str = "sum", alpha: float = 0.6, beta: float = 0.1,
         gamma: float = 0.2, rho: float = 1.0, q: float = 0.25, o: float = 0.25) -> torch.Tensor:
    """Mean deviation similarity index (piq.mdsi) on the [0, 255] scale; `combination`
    'sum' or 'mult'. Grey images are treated as RGB with three equal channels.

    Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError: values
    outside [0, data_range] or NaN, a tensor that is not 4-D, shapes or devices that differ.
    """
    if combination not in ("sum", "mult"):
        raise ValueError(f"combination must be 'sum' or 'mult', got {combination!r}")
    x, y = _prepare(x, y, data_range, reduction)
    if x.shape[1] == 1:
        warnings.warn("MDSI is defined for RGB images; the grey channel is used as R, G and B (as piq does).",
                      stacklevel=2)
    pool = ops.auto_pool(x.shape[-2], x.shape[-1])
    pooled = ops.mdsi_pooled(x, y, 255.0 / float(data_range), pool, c1, c2, c3, alpha, beta, gamma, q, rho,
                             combination == "mult")
    return _reduce(pooled ** (o / rho), reduction)


def haarpsi(x: torch.Tensor, y: torch.Tensor, reduction: str = "mean", data_range: float = 1.0, scales: int = 3,
            subsample: bool = True, c: float = 30.0, alpha: float = 4.2) -> torch.Tensor:
    """Haar wavelet-based perceptual similarity (piq.haarpsi) on the [0, 255] scale.

    Raises ValueError (TypeError for a non-tensor) where piq raises AssertionError: values
    outside [0, data_range] or NaN, a tensor that is not 4-D, shapes or devices that differ.
    """
    if not isinstance(scales, int) or scales < 3:
        # the two finest scales give the similarities and the coarsest the weights
        raise ValueError(f"scales must be an integer >= 3, got {scales!r}")
    x, y = _prepare(x, y, data_range, reduction)
    _check_min_size(x, 2 ** (scales + 1), f"HaarPSI with {scales} scales")
    sums = ops.haarpsi_sums(x, y, 255.0 / float(data_range), scales, subsample, c, alpha)
    eps = torch.finfo(sums.dtype).eps
    score = (sums[:, 0] + eps) / (sums[:, 1] + eps)
    return _reduce((torch.log(score / (1 - score)) / alpha) ** 2, reduction)


# name -> (function, higher is better); the order of the evaluate command's table.
QUALITY_METRICS = {
    "psnr": psnr, "ssim": ssim, "ms_ssim": multi_scale_ssim, "gmsd": gmsd, "ms_gmsd": multi_scale_gmsd,
    "mdsi": mdsi, "haarpsi": haarpsi,
}
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ms_ssim": True, "gmsd": False, "ms_gmsd": False, "mdsi": False,
                    "haarpsi": True}
