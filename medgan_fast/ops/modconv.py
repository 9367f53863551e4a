"""StyleGAN2's modulated convolution, with its epilogue fused into our kernels.

Kernels: csrc/ops/modconv. The convolution runs through ATen (cuDNN / oneDNN) with the
shared weight on activations scaled by the styles (the "non-fused" form NVIDIA trains
with); demodulation, noise, bias, activation, gain and clamp are one pass of ours, and so is
their backward (modconv_layer.cpp says why). :func:`modulated_conv2d_reference` is the
textbook form, one modulated weight per sample in a grouped convolution (Karras et al.
2020, "Analyzing and Improving the Image Quality of StyleGAN", eq. 1-3).
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F

from .._ext import HAS_CPU_KERNELS, use_kernel

__all__ = ["ACTIVATIONS", "modulated_conv2d", "modulated_conv2d_reference", "resample_filter",
           "resampled_conv2d"]

# name: (code in the kernels, default gain). StyleGAN2 scales lrelu by sqrt(2) so that
# activations keep unit variance (stylegan2-ada's bias_act table).
ACTIVATIONS = {"linear": (0, 1.0), "lrelu": (1, math.sqrt(2.0))}
LRELU_ALPHA = 0.2
DEMODULATION_EPS = 1e-8
KERNEL_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


@functools.lru_cache(maxsize=16)
def resample_filter(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The [1, 3, 3, 1] FIR filter of StyleGAN2's 2x resampling as a 4x4 tensor with sum 1."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    return (torch.outer(taps, taps) / taps.sum() ** 2).to(device=device, dtype=dtype)


def _output_size(size: int, kernel: int, up: int, down: int, padding: int) -> int:
    if up == 2:
        return 2 * size + 2 * padding + 1 - kernel
    if down == 2:
        return (size + 2 * padding - 1 - kernel) // 2 + 1
    return size + 2 * padding - kernel + 1


def _check(x, weight, styles, demodulate, up, down, padding, noise, bias, activation, gain, clamp) -> int:
    """The padding to use, after checking every argument."""
    for name, t in (("x", x), ("weight", weight), ("styles", styles)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point (N, I, H, W) tensor, got shape {tuple(x.shape)} {x.dtype}")
    n, i = x.shape[:2]
    if weight.dim() != 4 or weight.shape[1] != i or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight must be (O, I, k, k) with I = {i} (x's channels), got shape {tuple(weight.shape)}")
    if styles.shape != (n, i):
        raise ValueError(f"styles must be (N, I) = ({n}, {i}), got shape {tuple(styles.shape)}")
    for name, t in (("weight", weight), ("styles", styles), ("noise", noise), ("bias", bias)):
        if t is not None and (not isinstance(t, torch.Tensor) or t.dtype != x.dtype or t.device != x.device):
            raise ValueError(f"{name} must be a {x.dtype} tensor on {x.device} like x, got "
                             f"{getattr(t, 'dtype', type(t).__name__)} on {getattr(t, 'device', '-')}")
    if not isinstance(demodulate, bool):
        raise TypeError(f"demodulate must be True or False, got {demodulate!r}")
    if up not in (1, 2) or down not in (1, 2) or (up == 2 and down == 2) or isinstance(up, bool) or isinstance(down, bool):
        raise ValueError(f"up and down must be 1 or 2, not both 2, got up={up!r}, down={down!r}")
    kernel = weight.shape[2]
    if padding is None:
        padding = kernel // 2
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"padding must be None or an integer >= 0, got {padding!r}")
    h, w = (_output_size(s, kernel, up, down, int(padding)) for s in x.shape[2:])
    if h < 1 or w < 1:
        raise ValueError(f"x of {tuple(x.shape[2:])} pixels is too small for a {kernel}x{kernel} kernel with "
                         f"padding {padding}, up {up}, down {down}")
    o = weight.shape[0]
    if noise is not None and (noise.dim() != 4 or noise.shape[0] not in (1, n) or tuple(noise.shape[1:]) != (1, h, w)):
        raise ValueError(f"noise must be (1 or N, 1, H, W) = (1 or {n}, 1, {h}, {w}), got shape {tuple(noise.shape)}")
    if bias is not None and bias.shape != (o,):
        raise ValueError(f"bias must be (O,) = ({o},), got shape {tuple(bias.shape)}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    for name, value, allow_none in (("gain", gain, False), ("clamp", clamp, True)):
        if value is None and allow_none:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}")
    return int(padding)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: int = 1, down: int = 1, padding: int | None = None, noise: torch.Tensor | None = None,
                     bias: torch.Tensor | None = None, activation: str = "lrelu", gain: float = 1.0,
                     clamp: float | None = None, *, impl: str = "auto") -> torch.Tensor:
    """StyleGAN2's modulated convolution with its epilogue, differentiable twice.

    ``w'[n] = weight * styles[n]`` (per input channel), demodulated (``demodulate``) as
    ``w'' = w' / sqrt(sum_{i,k} w'^2 + 1e-8)`` per output channel, then
    ``out = clamp(act(conv(x[n], w''[n]) + noise + bias) * gain_act * gain, -clamp, clamp)``.
    ``up=2`` / ``down=2`` resample 2x through the [1, 3, 3, 1] FIR filter as stylegan2-ada's
    conv2d_resample does (transposed convolution then filter; filter then strided convolution).

    Args:
        x: (N, I, H, W) float32, float64, float16 or bfloat16.
        weight: (O, I, k, k), x's dtype and device.
        styles: (N, I), the per-sample scales of the input channels.
        padding: None for k // 2.
        noise: (N or 1, 1, H', W') added to every channel (already scaled by its strength;
            its gradient is returned, so a strength parameter learns through it).
        bias: (O,).
        activation: "lrelu" (slope 0.2, gain sqrt(2)) or "linear" (gain 1).
        gain: multiplies the activation's own gain; clamp: None or the bound after it.

    Returns:
        (N, O, H', W'): H' = H for up = down = 1 (with the default padding), 2H for up = 2,
        H / 2 for down = 2. Gradients for x, weight, styles, noise and bias; second
        derivatives are exact (R1, path-length regularisation). Dtypes without kernels and
        ``impl="reference"`` use :func:`modulated_conv2d_reference`.

    >>> x, w, s = torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    >>> modulated_conv2d(x, w, s, up=2).shape
    torch.Size([2, 4, 16, 16])
    """
    padding = _check(x, weight, styles, demodulate, up, down, padding, noise, bias, activation, gain, clamp)
    if x.dtype in KERNEL_DTYPES and use_kernel("modulated_conv2d", x.device, impl):
        code, default_gain = ACTIVATIONS[activation]
        fir = resample_filter(x.device, x.dtype) if up == 2 or down == 2 else None
        return torch.ops.medgan_fast.modulated_conv2d(x, weight, styles, noise, bias, fir, demodulate, up, down,
                                                      padding, code, LRELU_ALPHA, default_gain * float(gain),
                                                      0.0 if clamp is None else float(clamp))
    return modulated_conv2d_reference(x, weight, styles, demodulate, up, down, padding, noise, bias, activation,
                                      gain, clamp)


def resampled_conv2d(x, weight, up, down, padding, groups=1):
    """stylegan2-ada's conv2d_resample for a weight of `groups` groups (padding arithmetic
    of its up/down paths; the transposed convolution's weight not flipped)."""
    kernel = weight.shape[2]
    fir = resample_filter(x.device, x.dtype)
    if up == 2:
        fir_padding = padding + 3 - kernel
        out_per_group, in_per_group = weight.shape[0] // groups, weight.shape[1]
        transposed = weight.reshape(groups, out_per_group, in_per_group, kernel, kernel).transpose(1, 2)
        y = F.conv_transpose2d(x, transposed.reshape(groups * in_per_group, out_per_group, kernel, kernel), stride=2,
                               padding=max(-fir_padding, 0), groups=groups)
        return F.conv2d(y, (fir * 4).expand(y.shape[1], 1, 4, 4), padding=max(fir_padding, 0), groups=y.shape[1])
    if down == 2:
        x = F.conv2d(x, fir.expand(x.shape[1], 1, 4, 4), padding=padding + 1, groups=x.shape[1])
        return F.conv2d(x, weight, stride=2, groups=groups)
    return F.conv2d(x, weight, padding=padding, groups=groups)


def modulated_conv2d_reference(x, weight, styles, demodulate=True, up=1, down=1, padding=None, noise=None, bias=None,
                               activation="lrelu", gain=1.0, clamp=None) -> torch.Tensor:
    """:func:`modulated_conv2d` as the paper writes it: one modulated, demodulated weight per
    sample, all samples in one grouped convolution (the test oracle and the fallback)."""
    n, i, h, w = x.shape
    o, _, k, _ = weight.shape
    padding = k // 2 if padding is None else padding
    modulated = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        modulated = modulated * (modulated.square().sum(dim=(2, 3, 4), keepdim=True) + DEMODULATION_EPS).rsqrt()
    y = resampled_conv2d(x.reshape(1, n * i, h, w), modulated.reshape(n * o, i, k, k), up, down, padding, groups=n)
    y = y.reshape(n, o, *y.shape[2:])
    if noise is not None:
        y = y + noise
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    code, default_gain = ACTIVATIONS[activation]
    if activation == "lrelu":
        y = F.leaky_relu(y, LRELU_ALPHA)
    y = y * (default_gain * gain)
    return y if clamp is None else y.clamp(-clamp, clamp)


if HAS_CPU_KERNELS:
    @torch.library.register_fake("medgan_fast::modconv_epilogue")
    def _epilogue_fake(y, dcoefs, noise, bias, activation, alpha, gain, clamp):
        return torch.empty_like(y, memory_format=torch.contiguous_format)

    @torch.library.register_fake("medgan_fast::modconv_epilogue_backward")
    def _epilogue_backward_fake(grad, out, y, dcoefs, noise_batch, activation, alpha, gain, clamp):
        n, c, h, w = y.shape
        return (torch.empty_like(y, memory_format=torch.contiguous_format), y.new_empty((2, n, c)),
                y.new_empty((noise_batch, 1, h, w)))
