"""The layers of StyleGAN2 (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN", arXiv:1912.04958) and its ADA training setup (Karras et al. 2020, "Training
Generative Adversarial Networks with Limited Data", arXiv:2006.06676), written from the
papers and from stylegan2-ada-pytorch's semantics (its code is under NVIDIA's non-commercial
licence and is not used here): same parameters, initialisations, gains and resampling, so a
network of ours given its weights computes the same function (tests/nn/test_stylegan2.py).

All weights use the equalised learning rate: stored as N(0, 1) (divided by the layer's
learning-rate multiplier) and scaled by 1 / sqrt(fan_in) at every forward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops.modconv import ACTIVATIONS, LRELU_ALPHA, modulated_conv2d, resample_filter, resampled_conv2d

__all__ = ["Conv2dLayer", "FullyConnected", "MinibatchStd", "ModulatedConv2d", "ToRGB", "bias_act", "downsample2d",
           "normalize_2nd_moment", "upsample2d"]


def bias_act(x: torch.Tensor, bias: torch.Tensor | None = None, activation: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """``clamp(act(x + bias) * default_gain * gain)``, bias along dim 1 (the layers outside
    the modulated convolutions: mapping network, discriminator)."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.dim() - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_ALPHA)
    x = x * (ACTIVATIONS[activation][1] * gain)
    return x if clamp is None else x.clamp(-clamp, clamp)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2) + eps) per row: the mapping network's input normalisation."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def upsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x up-sampling through the [1, 3, 3, 1] FIR filter (gain 4), as the skip generator
    up-samples its images: zero insertion and the filter, as one transposed convolution."""
    channels = x.shape[1]
    fir = (resample_filter(x.device, x.dtype) * 4).expand(channels, 1, 4, 4)
    return F.conv_transpose2d(x, fir, stride=2, padding=1, groups=channels)


def downsample2d(x: torch.Tensor) -> torch.Tensor:
    """2x down-sampling through the [1, 3, 3, 1] FIR filter (the residual skip of D)."""
    channels = x.shape[1]
    return F.conv2d(x, resample_filter(x.device, x.dtype).expand(channels, 1, 4, 4), stride=2, padding=1,
                    groups=channels)


class FullyConnected(nn.Module):
    """Equalised-learning-rate linear layer with bias and activation.

    ``lr_multiplier`` scales the effective learning rate (0.01 in the mapping network):
    the stored weight is N(0, 1) / lr_multiplier and is used times lr_multiplier / sqrt(in).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * self.weight_gain
        bias = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear":
            return F.linear(x, weight, bias)
        return bias_act(F.linear(x, weight), bias, self.activation)


class Conv2dLayer(nn.Module):
    """Equalised-learning-rate convolution with optional 2x up/down-sampling through the FIR
    filter, bias, activation and clamp (the discriminator's layers)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = resampled_conv2d(x, self.weight.to(x.dtype) * self.weight_gain, self.up, self.down, self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return bias_act(x, None if self.bias is None else self.bias.to(x.dtype), self.activation, gain, clamp)


class ModulatedConv2d(nn.Module):
    """StyleGAN2's synthesis layer: a style from w (affine, bias 1), the modulated and
    demodulated convolution (optionally 2x up), per-pixel noise with a learned strength,
    bias, lrelu (gain sqrt(2)), clamp; all but the affine in one
    :func:`medgan_fast.ops.modulated_conv2d`.

    ``noise_mode``: "random" (fresh N(0, 1) noise each call), "const" (a fixed map, the
    ``noise_const`` buffer) or "none".
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, conv_clamp: float | None = None):
        super().__init__()
        self.up, self.resolution, self.use_noise, self.conv_clamp = up, resolution, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", gain: float = 1.0) -> torch.Tensor:
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength.to(x.dtype)
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).to(x.dtype).reshape(1, 1, self.resolution,
                                                                                self.resolution)
        elif noise_mode not in ("random", "const", "none"):
            raise ValueError(f"noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        return modulated_conv2d(x, self.weight.to(x.dtype), styles.to(x.dtype), up=self.up, padding=self.padding,
                                noise=noise, bias=self.bias.to(x.dtype), gain=gain, clamp=clamp)


class ToRGB(nn.Module):
    """The skip generator's output layer: a 1x1 modulated convolution without demodulation
    (styles scaled by 1 / sqrt(fan_in)), bias, no activation, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = (self.affine(w) * self.weight_gain).to(x.dtype)
        return modulated_conv2d(x, self.weight.to(x.dtype), styles, demodulate=False, bias=self.bias.to(x.dtype),
                                activation="linear", clamp=self.conv_clamp)


class MinibatchStd(nn.Module):
    """The discriminator's minibatch standard deviation (Karras et al. 2018): per group of
    ``group_size`` images, the standard deviation of each feature over the group, averaged
    into ``num_channels`` extra channels. ``group_size=1`` makes each image its own group
    (the extra channel is then the constant sqrt(1e-8)), so scores do not depend on the
    rest of the batch (what the anomaly encoder's feature loss and scores need)."""

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size if group_size is None else group_size, n)
        if n % g:
            raise ValueError(f"the batch ({n}) must be a multiple of the minibatch-std group size ({g})")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(dim=0)).square().mean(dim=0)
        y = (y + 1e-8).sqrt().mean(dim=(2, 3, 4))  # [N / G, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


def block_channels(resolution: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: min(channel_base / resolution, channel_max)."""
    return int(min(channel_base // resolution, channel_max))


def log2_resolution(resolution: int) -> int:
    log2 = int(np.log2(resolution))
    if resolution != 2 ** log2 or resolution < 4:
        raise ValueError(f"resolution must be a power of 2 and at least 4, got {resolution}")
    return log2
