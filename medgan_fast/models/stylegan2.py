"""StyleGAN2's generator and residual discriminator (Karras et al. 2020, arXiv:1912.04958;
the ADA configuration, arXiv:2006.06676), built from :mod:`medgan_fast.nn.stylegan2`.

- :class:`MappingNetwork`: z (normalised) -> 8 fully connected lrelu layers (learning rate
  x0.01) -> w, broadcast to every layer's w; a running mean of w for truncation.
- :class:`SynthesisNetwork`: the "skip" generator: a learned 4x4 constant, per resolution a
  block of two modulated 3x3 convolutions (the first up-samples 2x) with noise, and a ToRGB
  whose images are up-sampled and summed across resolutions.
- :class:`Discriminator`: the "resnet" discriminator: FromRGB at full resolution, per
  resolution two 3x3 convolutions (the second down-samples) plus a down-sampling 1x1 skip,
  both scaled by sqrt(1/2); then minibatch standard deviation, a 3x3 convolution, two
  fully connected layers and one logit. :meth:`Discriminator.features` returns the
  penultimate features (f-AnoGAN's f(x)).

Channels at resolution r: min(channel_base / r, channel_max); the paper's 256 px setup is
channel_base 16384 (512 at 4-32 px, 256, 128, 64 at 64, 128, 256 px). Images are (N, C, R,
R) in [-1, 1], C = 1 (grey) or 3.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.stylegan2 import (
    Conv2dLayer,
    FullyConnected,
    MinibatchStd,
    ModulatedConv2d,
    ToRGB,
    block_channels,
    log2_resolution,
    normalize_2nd_moment,
    upsample2d,
)

__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork"]

SKIP_GAIN = math.sqrt(0.5)


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(FullyConnected(a, b, activation="lrelu", lr_multiplier=lr_multiplier)
                                    for a, b in zip(features[:-1], features[1:]))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool | None = None) -> torch.Tensor:
        """(N, z_dim) -> (N, num_ws, w_dim). Training updates the running mean of w unless
        ``update_w_avg`` is False; psi < 1 pulls w towards it (the first ``truncation_cutoff``
        layers only, if given)."""
        x = normalize_2nd_moment(z.to(self.w_avg.dtype))
        for layer in self.layers:
            x = layer(x)
        if (self.training if update_w_avg is None else update_w_avg) and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = ModulatedConv2d(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp)
        self.conv1 = ModulatedConv2d(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws, noise_mode="random"):
        """ws: (N, num_conv + 1, w_dim), the last one the ToRGB's (shared with the next block's
        first convolution)."""
        w = ws.unbind(dim=1)
        if self.in_channels == 0:
            x = self.conv1(self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1).to(ws.dtype), w[0], noise_mode)
        else:
            x = self.conv1(self.conv0(x, w[0], noise_mode), w[1], noise_mode)
        y = self.torgb(x, w[-1])
        img = y if img is None else upsample2d(img) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 16384,
                 channel_max: int = 512, conv_clamp: float | None = None):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.resolutions = [2 ** i for i in range(2, log2_resolution(img_resolution) + 1)]
        self.blocks = nn.ModuleList()
        for resolution in self.resolutions:
            in_channels = 0 if resolution == 4 else block_channels(resolution // 2, channel_base, channel_max)
            self.blocks.append(SynthesisBlock(in_channels, block_channels(resolution, channel_base, channel_max),
                                              w_dim, resolution, img_channels, conv_clamp))
        self.num_ws = sum(block.num_conv for block in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = img = None
        first = 0
        for block in self.blocks:
            x, img = block(x, img, ws.narrow(1, first, block.num_conv + 1), noise_mode)
            first += block.num_conv
        return img


class Generator(nn.Module):
    """z (N, z_dim) -> images (N, img_channels, R, R), through w (:class:`MappingNetwork`)."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 256, img_channels: int = 3,
                 channel_base: int = 16384, channel_max: int = 512, mapping_layers: int = 8,
                 conv_clamp: float | None = 256.0):
        super().__init__()
        self.z_dim, self.w_dim, self.img_resolution, self.img_channels = z_dim, w_dim, img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, mapping_layers)

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff), noise_mode)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=SKIP_GAIN)
        return y + self.conv1(self.conv0(x), gain=SKIP_GAIN)


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, resolution: int, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 conv_clamp: float | None = None):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, 1)

    def features(self, x, mbstd_group_size=None):
        return self.fc(self.conv(self.mbstd(x, mbstd_group_size)).flatten(1))


class Discriminator(nn.Module):
    """images (N, img_channels, R, R) -> logits (N, 1)."""

    def __init__(self, img_resolution: int = 256, img_channels: int = 3, channel_base: int = 16384,
                 channel_max: int = 512, mbstd_group_size: int = 4, conv_clamp: float | None = 256.0):
        super().__init__()
        self.img_resolution, self.img_channels = img_resolution, img_channels
        resolutions = [2 ** i for i in range(log2_resolution(img_resolution), 2, -1)]
        channels = {r: block_channels(r, channel_base, channel_max) for r in resolutions + [4]}
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(0 if r == img_resolution else channels[r], channels[r], channels[r // 2], img_channels,
                               conv_clamp)
            for r in resolutions)
        self.epilogue = DiscriminatorEpilogue(channels[4], 4, mbstd_group_size, conv_clamp=conv_clamp)

    def trunk(self, img: torch.Tensor) -> torch.Tensor:
        x = None
        for block in self.blocks:
            x = block(x, img)
        return x

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.epilogue.out(self.epilogue.features(self.trunk(img)))

    def features(self, img: torch.Tensor, mbstd_group_size: int | None = 1) -> torch.Tensor:
        """The penultimate features (N, channels at 4 px) with the minibatch standard
        deviation over groups of ``mbstd_group_size`` (1 by default: each image alone, so a
        feature never depends on the rest of the batch)."""
        return self.epilogue.features(self.trunk(img), mbstd_group_size)

