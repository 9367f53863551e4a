"""Mask -> image GANs: the second stage of two-stage organelle synthesis (after Pandey et al.
2020), two generator designs and one multi-scale discriminator.

- S. Pandey et al. "An Image Augmentation Approach using Two-stage Generative Adversarial
  Network for Nuclei Image Segmentation". ISBI 2020.
- P. Isola et al. "Image-to-Image Translation with Conditional Adversarial Networks"
  (pix2pix). CVPR 2017. arXiv:1611.07004.
- T.-C. Wang et al. "High-Resolution Image Synthesis and Semantic Manipulation with
  Conditional GANs" (pix2pixHD: multi-scale discriminator, feature matching). CVPR 2018.
- T. Park et al. "Semantic Image Synthesis with Spatially-Adaptive Normalization" (SPADE,
  GauGAN). CVPR 2019. arXiv:1903.07291.

Why these designs, for small EM data. Our users' second stage was a DCGAN-like generator
whose only input was the mask; it collapsed or stalled. Two things make a conditional GAN
train where that did not: a discriminator that judges *local* texture together with the mask
(a PatchGAN sees 70-pixel windows, not whole images, so a few hundred patches give it many
samples and it cannot simply memorise), and a generator whose output is anchored to the mask
at every scale (U-Net skips, or SPADE's per-layer modulation), so the adversarial signal only
has to supply texture. Plain pix2pix ignores its noise (its dropout is the only randomness),
so one mask gives one image; here noise enters at every decoder level, scaled by a learned
per-channel strength that starts at 1, and the training step adds a diversity term.

- :class:`NoiseUNetGenerator` ("unet"): mask (+ a noise map) -> image through a U-Net with
  stride-2 convolutions down, nearest upsampling + 3x3 convolutions up (no checkerboard),
  instance norm, per-pixel noise added after every decoder convolution.
- :class:`SpadeGenerator` ("spade"): noise -> a small feature map -> SPADE residual blocks that
  upsample and are modulated by the mask at their resolution (the mask is never washed out by
  normalisation).
- :class:`MultiScalePatchDiscriminator`: PatchGAN discriminators on (mask, image) at full and
  halved (and quartered) resolution, spectral-normalised; each returns its intermediate
  features too, for feature matching.

Which is the default: the U-Net generator. ``python -m medgan_fast.experiment mask2image``
(results/mask2image_{sstem,emps}/; 64 px, width 16, the same steps and discriminator)
scores mask fidelity as the Dice, against its mask, of a U-Net trained on real patches run
on the generated image. On ssTEM mitochondria, the organelles closest to our users'
question, the U-Net generator was ahead over 3 seeds (mean 0.913 vs 0.890; 0.914/0.859,
0.894/0.893, 0.930/0.918) and varied as much with its noise; on EMPS (one seed) SPADE was
ahead (0.852 vs 0.828, and a lower SWD, 141 vs 219). SPADE trains 1.5-1.8x faster on the
CPU. One seed moved the ssTEM gap from -0.08 to +0.02 points, so single runs do not decide it.

Shapes: masks (N, 1, S, S) in [-1, 1] (background -1, foreground +1); images (N, C, S, S)
in [-1, 1]; S a multiple of 2**depth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_integer
from ..nn import fuse_spectral_norm, spectral_norm
from .patchgan import PatchGAN

__all__ = ["GENERATORS", "MultiScalePatchDiscriminator", "NoiseUNetGenerator", "SpadeGenerator"]


class _Noise(nn.Module):
    """x + strength_c * N(0, 1) per pixel (StyleGAN's noise input); strength starts at 1 so
    the generator cannot begin by ignoring it."""

    def __init__(self, channels: int):
        super().__init__()
        self.strength = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype, generator=generator)
        return x + self.strength.to(x.dtype) * noise


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """Nearest 2x upsampling. On the CPU in channels_last: instance norm hands back NCHW
    tensors, and torch's NCHW nearest upsampling there is 3-8x slower than the copy to
    channels_last and the upsampling on it (torch 2.14, the generator's shapes at batch 64);
    on a GPU either layout is fast, so nothing is copied."""
    if x.device.type == "cpu":
        x = x.contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _check_side(name: str, x: torch.Tensor, channels: int, depth: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % 2**depth or x.shape[3] % 2**depth:
        raise ValueError(f"{name}: expected (N, {channels}, H, W) with H and W multiples of {2**depth}, "
                         f"got {tuple(x.shape)}")


class NoiseUNetGenerator(nn.Module):
    """pix2pix's U-Net generator with noise at every decoder level (see the module docstring).

    Args:
        channels: image channels C (1 or 3).
        width: channels of the first level, doubled per level up to 8 * width.
        depth: down-sampling levels.
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5):
        super().__init__()
        for name, value in (("channels", channels), ("width", width), ("depth", depth)):
            check_integer(name, value)
        self.channels, self.depth = channels, depth
        widths = [min(width * 2**level, width * 8) for level in range(depth + 1)]
        self.stem = nn.Conv2d(2, widths[0], 3, padding=1)   # mask + one noise map
        self.down = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[level], widths[level + 1], 4, 2, 1),
                          nn.InstanceNorm2d(widths[level + 1], affine=True), nn.LeakyReLU(0.2))
            for level in range(depth))
        self.up = nn.ModuleList(
            nn.Conv2d(widths[level + 1] + (widths[level + 1] if level + 1 < depth else 0), widths[level], 3, padding=1)
            for level in reversed(range(depth)))
        self.up_norm = nn.ModuleList(nn.InstanceNorm2d(widths[level], affine=True) for level in reversed(range(depth)))
        self.noise = nn.ModuleList(_Noise(widths[level]) for level in reversed(range(depth)))
        self.head = nn.Conv2d(2 * widths[0], channels, 3, padding=1)

    def forward(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(N, 1, S, S) masks -> (N, C, S, S) images; `generator` draws the noise."""
        _check_side("mask", mask, 1, self.depth)
        noise = torch.randn(mask.shape, device=mask.device, dtype=mask.dtype, generator=generator)
        x = F.leaky_relu(self.stem(torch.cat([mask, noise], 1)), 0.2)
        skips = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()   # the deepest level is x itself
        for conv, norm, noise_input in zip(self.up, self.up_norm, self.noise):
            x = _upsample(x)
            x = F.relu(norm(noise_input(conv(x), generator)))
            x = torch.cat([x, skips.pop()], 1)
        return torch.tanh(self.head(x))


class _Spade(nn.Module):
    """Batch norm without affine, then x * (1 + gamma(mask)) + beta(mask) per pixel."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.shared = nn.Sequential(nn.Conv2d(1, hidden, 3, padding=1), nn.ReLU())
        self.gamma = nn.Conv2d(hidden, channels, 3, padding=1)
        self.beta = nn.Conv2d(hidden, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        features = self.shared(F.interpolate(mask, size=x.shape[2:], mode="nearest"))
        return self.norm(x) * (1 + self.gamma(features)) + self.beta(features)


class _SpadeBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        middle = min(in_channels, out_channels)
        self.norm_0, self.conv_0 = _Spade(in_channels), nn.Conv2d(in_channels, middle, 3, padding=1)
        self.norm_1, self.conv_1 = _Spade(middle), nn.Conv2d(middle, out_channels, 3, padding=1)
        self.noise = _Noise(middle)
        self.shortcut = None if in_channels == out_channels else nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        skip = x if self.shortcut is None else self.shortcut(x)
        y = self.noise(self.conv_0(F.leaky_relu(self.norm_0(x, mask), 0.2)), generator)
        return skip + self.conv_1(F.leaky_relu(self.norm_1(y, mask), 0.2))


class SpadeGenerator(nn.Module):
    """GauGAN's generator at small scale (see the module docstring).

    Args:
        channels: image channels C.
        width: channels of the last block; the first has 8 * width.
        depth: upsampling blocks; the noise is reshaped to S / 2**depth on a side.
        latent: noise length.
    """

    def __init__(self, channels: int = 1, width: int = 32, depth: int = 5, latent: int = 64):
        super().__init__()
        for name, value in (("channels", channels), ("width", width), ("depth", depth), ("latent", latent)):
            check_integer(name, value)
        self.channels, self.depth, self.latent = channels, depth, latent
        widths = [min(width * 2**level, width * 8) for level in reversed(range(depth + 1))]
        self.start = nn.Conv2d(latent, widths[0], 3, padding=1)
        self.blocks = nn.ModuleList(_SpadeBlock(widths[i], widths[i + 1]) for i in range(depth))
        self.head = nn.Conv2d(widths[-1], channels, 3, padding=1)

    def forward(self, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_side("mask", mask, 1, self.depth)
        side = (mask.shape[2] // 2**self.depth, mask.shape[3] // 2**self.depth)
        z = torch.randn(mask.shape[0], self.latent, 1, 1, device=mask.device, dtype=mask.dtype, generator=generator)
        # The noise vector spread over the smallest map, and the mask at that scale beside
        # it through the first block's SPADE: the layout comes from the mask, the style from z.
        x = self.start(z.expand(-1, -1, *side))
        for block in self.blocks:
            x = _upsample(block(x, mask, generator))
        return torch.tanh(self.head(F.leaky_relu(x, 0.2)))


GENERATORS = {"unet": NoiseUNetGenerator, "spade": SpadeGenerator}


class MultiScalePatchDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminator: one PatchGAN per scale, the input average-pooled
    by 2 between scales (a 70-pixel window at full resolution, 140 at half, ...).

    Args:
        channels: image channels C.
        width: channels of each PatchGAN's first layer.
        scales: how many discriminators (1 to 3).

    forward(mask, image) -> one feature list per scale (see :class:`.patchgan.PatchGAN`).
    """

    def __init__(self, channels: int = 1, width: int = 64, scales: int = 2):
        super().__init__()
        for name, value in (("channels", channels), ("width", width), ("scales", scales)):
            check_integer(name, value)
        if scales > 3:
            raise ValueError(f"scales: expected 1 to 3, got {scales}")
        self.channels = channels
        # Instance norm (affine) in place of pix2pix's batch norm, spectral norm on every convolution.
        self.scales = nn.ModuleList(
            PatchGAN(1 + channels, width, 3, norm=lambda c: nn.InstanceNorm2d(c, affine=True), wrap=spectral_norm)
            for _ in range(scales))
        fuse_spectral_norm(self)

    def forward(self, mask: torch.Tensor, image: torch.Tensor) -> list[list[torch.Tensor]]:
        if mask.shape[0] != image.shape[0] or mask.shape[2:] != image.shape[2:] or image.shape[1] != self.channels:
            raise ValueError(f"mask {tuple(mask.shape)} and image {tuple(image.shape)}: expected (N, 1, H, W) and "
                             f"(N, {self.channels}, H, W)")
        x = torch.cat([mask, image], 1)
        outputs = []
        for index, discriminator in enumerate(self.scales):
            if index:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(discriminator(x))
        return outputs
