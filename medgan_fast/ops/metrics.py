"""Per-image statistics of the image-quality metrics, each one fused kernel over a batch.

Kernels: csrc/ops/metrics. Each op reads the raw (N, C, H, W) images once, applies the
metric's scale (1/data_range or 255/data_range), colour conversion and downsampling as
it loads them, filters (Gaussian, Prewitt, Haar), and reduces per image, without a
full-size temporary per moment. What is left (a log, a power, a mean over the batch) is
done on N numbers by :mod:`medgan_fast.metrics.quality`, which is the public API.

Every op here has a `<op>_reference` in plain PyTorch that follows piq 0.8.0's steps
(the oracle in tests and the fallback when the extension is missing). Inputs are
float32 or float64, contiguous; results are float64 sums turned into the input dtype.

Autograd: the kernels have no backward. When one is needed (grad mode on and an input
requires grad) every op runs its reference instead, which autograd differentiates, so the
metrics give piq's gradients; the choice is made in one place, :func:`_kernel`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .._ext import HAS_CPU_KERNELS, IMPLS, use_kernel

__all__ = [
    "auto_pool", "complex_ssim_means", "gaussian_window", "gmsd_deviation", "gmsd_deviation_reference", "haarpsi_sums",
    "haarpsi_sums_reference", "mdsi_pooled", "mdsi_pooled_reference", "squared_error", "squared_error_reference",
    "ssim_means", "ssim_means_reference",
]

KERNEL_DTYPES = (torch.float32, torch.float64)

# Colour transforms as piq 0.8.0 writes them (rows: output channel).
RGB_TO_YIQ = ((0.299, 0.587, 0.114), (0.5959, -0.2746, -0.3213), (0.2115, -0.5227, 0.3112))
RGB_TO_LHM = ((0.2989, 0.587, 0.114), (0.3, 0.04, -0.35), (0.34, -0.6, 0.17))


def gaussian_window(size: int, sigma: float, dtype=torch.float64, device=None) -> torch.Tensor:
    """The 1-D normalised Gaussian whose outer product is piq's 2-D SSIM kernel."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-coords**2 / (2 * sigma**2))
    return (g / g.sum()).to(dtype=dtype, device=device)


def _check_pair(x: torch.Tensor, y: torch.Tensor, complex_parts: bool = False) -> None:
    """(N, C, H, W) x and y (with `complex_parts`, (N, C, H, W, 2)) of one shape, dtype, device."""
    layout, dims = ("(N, C, H, W, 2)", 5) if complex_parts else ("(N, C, H, W)", 4)
    if (x.shape != y.shape or x.dim() != dims or (complex_parts and x.shape[-1] != 2)
            or x.dtype != y.dtype or x.device != y.device):
        raise ValueError(f"x and y must be {layout} tensors of one shape, dtype and device, got "
                         f"{tuple(x.shape)} {x.dtype} {x.device} and {tuple(y.shape)} {y.dtype} {y.device}")


def _kernel(op: str, impl: str, *tensors: torch.Tensor) -> bool:
    """Whether `op` runs its fused kernel on `tensors` (x first): the one place every op
    here decides between the kernel and its `<op>_reference`.

    The kernels compute no backward, so when autograd will need one (grad mode on and any
    of `tensors` requires grad) the op runs the reference, which autograd differentiates.
    This is preferred to ``register_autograd`` with a backward that recomputes through
    the reference: that would run the kernel forward and then the reference forward again
    in the backward, costing more than the reference alone, and would lose double backward.
    impl="kernel" on such inputs is refused rather than answered without a gradient.
    """
    x = tensors[0]
    if not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors)):
        return x.dtype in KERNEL_DTYPES and use_kernel(op, x.device, impl)
    if impl not in IMPLS:  # use_kernel's check, which this path does not reach
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "kernel":
        raise RuntimeError(f"medgan_fast.ops.{op}: the kernel has no backward, and an input requires grad; "
                           "use impl='auto' or 'reference' (or torch.no_grad())")
    return False


def _colour(x: torch.Tensor, matrix) -> torch.Tensor:
    weights = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,kc->nkhw", x, weights)


def _pool2_zero(x: torch.Tensor) -> torch.Tensor:
    """Zero padding at the bottom and right when either side is odd, then 2x2 mean (piq)."""
    pad = max(x.shape[2] % 2, x.shape[3] % 2)
    return F.avg_pool2d(F.pad(x, [0, pad, 0, pad]), kernel_size=2)


def _prewitt_magnitude(x: torch.Tensor) -> torch.Tensor:
    prewitt = torch.tensor([[-1.0, 0.0, 1.0]] * 3, dtype=x.dtype, device=x.device) / 3
    kernels = torch.stack([prewitt, prewitt.t()]).unsqueeze(1)
    return F.conv2d(x, kernels, padding=1).pow(2).sum(dim=1, keepdim=True).sqrt()


def _similarity(a, b, constant, alpha=0.0):
    return (2.0 * a * b - alpha * a * b + constant) / (a**2 + b**2 - alpha * a * b + constant)


# --- squared error (PSNR) -----------------------------------------------------------------

def squared_error(x: torch.Tensor, y: torch.Tensor, scale: float, greyscale: bool, *, impl: str = "auto"):
    """(N,) mean over C, H, W of (scale * (x - y))^2; with `greyscale` (C = 3) of the luma
    0.299 R + 0.587 G + 0.114 B instead."""
    _check_pair(x, y)
    if _kernel("squared_error", impl, x, y):
        return torch.ops.medgan_fast.metric_squared_error(x.contiguous(), y.contiguous(), float(scale), bool(greyscale))
    return squared_error_reference(x, y, scale, greyscale)


def squared_error_reference(x, y, scale, greyscale):
    x, y = x * scale, y * scale
    if greyscale and x.shape[1] == 3:
        x, y = _colour(x, RGB_TO_YIQ[:1]), _colour(y, RGB_TO_YIQ[:1])
    return ((x - y) ** 2).mean(dim=(1, 2, 3))


# --- SSIM ---------------------------------------------------------------------------------

def ssim_means(x, y, window: torch.Tensor, scale: float, pool: int, c1: float, c2: float, *, impl: str = "auto"):
    """(ssim, cs), each (N, C): per-channel means of the SSIM and contrast-structure maps.

    The images are multiplied by `scale`, average-pooled by `pool` (floor), and filtered
    with the separable Gaussian `window` (1-D, normalised) without padding (piq's valid
    convolution), so each side must be at least len(window) after pooling.
    """
    _check_pair(x, y)
    if _kernel("ssim", impl, x, y, window):
        return torch.ops.medgan_fast.metric_ssim(x.contiguous(), y.contiguous(), window.to(x).contiguous(),
                                                 float(scale), int(pool), float(c1), float(c2))
    return ssim_means_reference(x, y, window, scale, pool, c1, c2)


def _blur(t: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Each channel of (N, C, H, W) `t` filtered with the 2-D Gaussian outer(window, window),
    without padding (piq's SSIM convolution)."""
    channels = t.shape[1]
    kernel = torch.outer(window, window).to(t).expand(channels, 1, -1, -1)
    return F.conv2d(t, kernel, groups=channels)


def ssim_means_reference(x, y, window, scale, pool, c1, c2):
    x, y = x * scale, y * scale
    if pool > 1:
        x, y = F.avg_pool2d(x, pool), F.avg_pool2d(y, pool)

    def blur(t):
        return _blur(t, window)

    mu_x, mu_y = blur(x), blur(y)
    sigma_xx = blur(x * x) - mu_x**2
    sigma_yy = blur(y * y) - mu_y**2
    sigma_xy = blur(x * y) - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_xx + sigma_yy + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def complex_ssim_means(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor, scale: float, c1: float, c2: float):
    """(ssim, cs), each (N, C, 2): piq 0.8.0's SSIM of complex images, (N, C, H, W, 2) with
    the real and imaginary parts in the last dimension (piq's _ssim_per_channel_complex).

    Plain PyTorch, no kernel: the fused SSIM kernel reduces real maps per channel, and
    complex SSIM needs the cross products of the parts before filtering. Images times
    `scale`, valid Gaussian filtering with `window`; the complex means and (co)variances
    give cs = (2 sigma_xy + c2) / (sigma_x^2 + sigma_y^2 + c2) and
    ssim = (2 mu_x mu_y + c1) / (|mu_x|^2 + |mu_y|^2 + c1) * cs, where piq, and so this,
    stacks sigma_xy as (imaginary, real) but mu_x mu_y as (real, imaginary) and
    multiplies the two component by component. Differentiable by autograd.
    """
    _check_pair(x, y, complex_parts=True)
    x, y = x * scale, y * scale
    x_re, x_im, y_re, y_im = x[..., 0], x[..., 1], y[..., 0], y[..., 1]
    mu_x_re, mu_x_im, mu_y_re, mu_y_im = (_blur(t, window) for t in (x_re, x_im, y_re, y_im))
    mu_xx, mu_yy = mu_x_re**2 + mu_x_im**2, mu_y_re**2 + mu_y_im**2
    mu_xy_re, mu_xy_im = mu_x_re * mu_y_re - mu_x_im * mu_y_im, mu_x_re * mu_y_im + mu_x_im * mu_y_re
    sigma_xx = _blur(x_re**2 + x_im**2, window) - mu_xx
    sigma_yy = _blur(y_re**2 + y_im**2, window) - mu_yy
    sigma_xy_re = _blur(x_re * y_re - x_im * y_im, window) - mu_xy_re
    sigma_xy_im = _blur(x_re * y_im + x_im * y_re, window) - mu_xy_im
    cs = (2 * torch.stack([sigma_xy_im, sigma_xy_re], dim=-1) + c2) / (sigma_xx + sigma_yy + c2).unsqueeze(-1)
    ssim = (2 * torch.stack([mu_xy_re, mu_xy_im], dim=-1) + c1) / (mu_xx + mu_yy + c1).unsqueeze(-1) * cs
    return ssim.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


# --- GMSD and MS-GMSD ---------------------------------------------------------------------

def gmsd_deviation(x, y, scale: float, pool_first: bool, num_scales: int, t: float, alpha: float, *,
                   impl: str = "auto"):
    """(N, num_scales): the standard deviation of the gradient-magnitude similarity map of
    the luma (Y of YIQ for RGB) at each scale of a 2x pyramid (zero-padded 2x2 means).

    The luma is multiplied by `scale`; with `pool_first` the first scale is already halved
    (GMSD), otherwise it is the full image (MS-GMSD). Gradients: Prewitt, zero padding 1.
    """
    _check_pair(x, y)
    if _kernel("gmsd", impl, x, y):
        return torch.ops.medgan_fast.metric_gmsd(x.contiguous(), y.contiguous(), float(scale), bool(pool_first),
                                                 int(num_scales), float(t), float(alpha))
    return gmsd_deviation_reference(x, y, scale, pool_first, num_scales, t, alpha)


def gmsd_deviation_reference(x, y, scale, pool_first, num_scales, t, alpha):
    x, y = x * scale, y * scale
    if x.shape[1] == 3:
        x, y = _colour(x, RGB_TO_YIQ[:1]), _colour(y, RGB_TO_YIQ[:1])
    deviations = []
    for level in range(num_scales):
        if level > 0 or pool_first:
            x, y = _pool2_zero(x), _pool2_zero(y)
        gms = _similarity(_prewitt_magnitude(x), _prewitt_magnitude(y), t, alpha)
        mean = gms.mean(dim=(1, 2, 3), keepdim=True)
        deviations.append((gms - mean).pow(2).mean(dim=(1, 2, 3)).sqrt())
    return torch.stack(deviations, dim=1)


# --- MDSI ---------------------------------------------------------------------------------

def mdsi_pooled(x, y, scale: float, pool: int, c1: float, c2: float, c3: float, alpha: float, beta: float,
                gamma: float, q: float, rho: float, mult: bool, *, impl: str = "auto"):
    """(N,): mean over pixels of |gcs^q - mean(gcs^q)|^rho (complex powers), MDSI's
    deviation pooling before the final power o/rho.

    RGB (grey is used as three equal channels) times `scale`, zero-padded
    ((pool-1)//2 before, pool//2 after) and pooled by `pool`, then LHM; gcs combines the
    gradient similarity of L (Prewitt) with the chroma similarity of H, M by a sum
    (alpha) or, with `mult`, piq's product of complex powers (gamma, beta).
    """
    _check_pair(x, y)
    if _kernel("mdsi", impl, x, y):
        return torch.ops.medgan_fast.metric_mdsi(x.contiguous(), y.contiguous(), float(scale), int(pool), float(c1),
                                                 float(c2), float(c3), float(alpha), float(beta), float(gamma),
                                                 float(q), float(rho), bool(mult))
    return mdsi_pooled_reference(x, y, scale, pool, c1, c2, c3, alpha, beta, gamma, q, rho, mult)


def _complex_power(real, imag, exponent):
    """(r^e cos(e phi), r^e sin(e phi)) of real + i imag, phi = atan2(imag, real)."""
    radius = (real**2 + imag**2).sqrt() ** exponent
    phase = torch.atan2(imag, real) * exponent
    return radius * torch.cos(phase), radius * torch.sin(phase)


def mdsi_pooled_reference(x, y, scale, pool, c1, c2, c3, alpha, beta, gamma, q, rho, mult):
    if x.shape[1] == 1:
        x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
    x, y = x * scale, y * scale
    if pool > 1:
        pads = [(pool - 1) // 2, pool // 2] * 2
        x, y = F.avg_pool2d(F.pad(x, pads), pool), F.avg_pool2d(F.pad(y, pads), pool)
    x, y = _colour(x, RGB_TO_LHM), _colour(y, RGB_TO_LHM)
    gm_x, gm_y = _prewitt_magnitude(x[:, :1]), _prewitt_magnitude(y[:, :1])
    gm_avg = _prewitt_magnitude((x[:, :1] + y[:, :1]) / 2)
    gs = _similarity(gm_x, gm_y, c1) + _similarity(gm_x, gm_avg, c2) - _similarity(gm_y, gm_avg, c2)
    h_x, m_x, h_y, m_y = x[:, 1:2], x[:, 2:], y[:, 1:2], y[:, 2:]
    cs = (2 * (h_x * h_y + m_x * m_y) + c3) / (h_x**2 + h_y**2 + m_x**2 + m_y**2 + c3)
    zero = torch.zeros_like(gs)
    if mult:
        gs_re, gs_im = _complex_power(gs, zero, gamma)
        cs_re, cs_im = _complex_power(cs, zero, beta)
        re, im = _complex_power(gs_re * cs_re, gs_im + cs_im, q)
    else:
        re, im = _complex_power(alpha * gs + (1 - alpha) * cs, zero, q)
    mean_re, mean_im = re.mean(dim=(2, 3), keepdim=True), im.mean(dim=(2, 3), keepdim=True)
    deviation = ((re - mean_re) ** 2 + (im - mean_im) ** 2).sqrt()
    return (deviation**rho).mean(dim=(1, 2, 3))


# --- HaarPSI ------------------------------------------------------------------------------

def haarpsi_sums(x, y, scale: float, scales: int, subsample: bool, c: float, alpha: float, *, impl: str = "auto"):
    """(N, 2): sum of sigmoid(alpha * similarity) * weight and sum of weights over HaarPSI's
    maps (horizontal, vertical, and for RGB the IQ chroma map).

    Y of YIQ (or grey) times `scale`, halved by zero-padded 2x2 means with `subsample`;
    Haar filters of sizes 2, 4, ..., 2^scales, zero-padded as MATLAB's conv2 'same'; the
    largest gives the weights, the two finest the similarities (constant `c`).
    """
    _check_pair(x, y)
    if _kernel("haarpsi", impl, x, y):
        return torch.ops.medgan_fast.metric_haarpsi(x.contiguous(), y.contiguous(), float(scale), int(scales),
                                                    bool(subsample), float(c), float(alpha))
    return haarpsi_sums_reference(x, y, scale, scales, subsample, c, alpha)


def _haar_coefficients(luma, scales):
    """(N, 2 * scales, H, W): horizontal and vertical Haar responses per scale."""
    out = []
    for level in range(scales):
        size = 2 ** (level + 1)
        haar = torch.ones(size, size, dtype=luma.dtype, device=luma.device) / size
        haar[size // 2:] *= -1
        kernels = torch.stack([haar, haar.t()]).unsqueeze(1)
        pads = [size // 2 - 1, size // 2] * 2
        out.append(F.conv2d(F.pad(luma, pads), kernels))
    return torch.cat(out, dim=1)


def haarpsi_sums_reference(x, y, scale, scales, subsample, c, alpha):
    colour = x.shape[1] == 3
    x, y = x * scale, y * scale
    if colour:
        x, y = _colour(x, RGB_TO_YIQ), _colour(y, RGB_TO_YIQ)
    if subsample:
        x, y = _pool2_zero(x), _pool2_zero(y)
    coef_x, coef_y = _haar_coefficients(x[:, :1], scales), _haar_coefficients(y[:, :1], scales)
    last = 2 * (scales - 1)
    weights = torch.maximum(coef_x[:, last:last + 2].abs(), coef_y[:, last:last + 2].abs())
    similarity = [(_similarity(coef_x[:, (o, o + 2)].abs(), coef_y[:, (o, o + 2)].abs(), c).sum(1, keepdim=True) / 2)
                  for o in range(2)]
    if colour:
        chroma_x = F.avg_pool2d(F.pad(x[:, 1:], [0, 1, 0, 1]), kernel_size=2, stride=1).abs()
        chroma_y = F.avg_pool2d(F.pad(y[:, 1:], [0, 1, 0, 1]), kernel_size=2, stride=1).abs()
        weights = torch.cat([weights, weights.mean(dim=1, keepdim=True)], dim=1)
        similarity.append(_similarity(chroma_x, chroma_y, c).sum(1, keepdim=True) / 2)
    similarity = torch.cat(similarity, dim=1)
    weighted = (torch.sigmoid(similarity * alpha) * weights).sum(dim=(1, 2, 3))
    return torch.stack([weighted, weights.sum(dim=(1, 2, 3))], dim=1)


if HAS_CPU_KERNELS:
    @torch.library.register_fake("medgan_fast::metric_squared_error")
    def _squared_error_fake(x, y, scale, greyscale):
        return x.new_empty((x.shape[0],))

    @torch.library.register_fake("medgan_fast::metric_ssim")
    def _ssim_fake(x, y, window, scale, pool, c1, c2):
        return x.new_empty(x.shape[:2]), x.new_empty(x.shape[:2])

    @torch.library.register_fake("medgan_fast::metric_gmsd")
    def _gmsd_fake(x, y, scale, pool_first, num_scales, t, alpha):
        return x.new_empty((x.shape[0], num_scales))

    @torch.library.register_fake("medgan_fast::metric_mdsi")
    def _mdsi_fake(x, y, scale, pool, c1, c2, c3, alpha, beta, gamma, q, rho, mult):
        return x.new_empty((x.shape[0],))

    @torch.library.register_fake("medgan_fast::metric_haarpsi")
    def _haarpsi_fake(x, y, scale, scales, subsample, c, alpha):
        return x.new_empty((x.shape[0], 2))


def auto_pool(height: int, width: int) -> int:
    """max(1, round(min(H, W) / 256)): piq's automatic downsampling factor (Python's
    round, halves to even)."""
    return max(1, round(min(height, width) / 256))

