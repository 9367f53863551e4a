"""f-AnoGAN's encoder for a trained StyleGAN2 (Schlegl et al. 2019, "f-AnoGAN: Fast
unsupervised anomaly detection with generative adversarial networks", Medical Image
Analysis 54): E maps an image to the latent space so that G(E(x)) reconstructs it; an image
unlike the training images (a melanoma among nevi) reconstructs worse.

Ours maps into StyleGAN2's w-space (one w for every layer), not z: the mapping network's
eight layers are hard to invert, and encoders into w reconstruct markedly better (Abdal et
al. 2019, Richardson et al. 2021). E is the residual discriminator's trunk
(:class:`medgan_fast.models.stylegan2.DiscriminatorBlock`) and a fully connected head whose
output is added to G's running mean of w (zero-initialised, so E starts at w_avg: the
average image).
"""

from __future__ import annotations

import torch
from torch import nn

from ..nn.stylegan2 import Conv2dLayer, FullyConnected, block_channels, log2_resolution
from .stylegan2 import DiscriminatorBlock

__all__ = ["LatentEncoder", "reconstruct"]


class LatentEncoder(nn.Module):
    """images (N, C, R, R) in [-1, 1] -> w (N, w_dim), around ``w_avg``."""

    def __init__(self, img_resolution: int, img_channels: int, w_avg: torch.Tensor, channel_base: int = 16384,
                 channel_max: int = 512):
        super().__init__()
        resolutions = [2 ** i for i in range(log2_resolution(img_resolution), 2, -1)]
        channels = {r: block_channels(r, channel_base, channel_max) for r in resolutions + [4]}
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(0 if r == img_resolution else channels[r], channels[r], channels[r // 2], img_channels)
            for r in resolutions)
        self.conv = Conv2dLayer(channels[4], channels[4], 3, activation="lrelu")
        self.fc = FullyConnected(channels[4] * 16, channels[4], activation="lrelu")
        self.out = FullyConnected(channels[4], w_avg.numel())
        nn.init.zeros_(self.out.weight)
        self.register_buffer("w_avg", w_avg.detach().clone().reshape(-1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = None
        for block in self.blocks:
            x = block(x, images)
        return self.w_avg + self.out(self.fc(self.conv(x).flatten(1)))


def reconstruct(encoder: LatentEncoder, generator: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, G(w)): the encoder's w for `images`, given to every layer of the StyleGAN2
    generator, with its fixed noise maps (so a reconstruction depends on its image alone)."""
    w = encoder(images)
    return w, generator.synthesis(w.unsqueeze(1).repeat(1, generator.num_ws, 1), noise_mode="const")
