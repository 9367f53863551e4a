"""The PatchGAN discriminator of pix2pix (Isola et al. 2017), shared by the mask -> image
GAN and CycleGAN.

- P. Isola et al. "Image-to-Image Translation with Conditional Adversarial Networks". CVPR
  2017. arXiv:1611.07004 (the 70 x 70 PatchGAN is ``n_layers`` 3).

Layout (w = width, n = n_layers; every convolution 4 x 4, padding 1):

    Conv(in, w, stride 2) LReLU(0.2)
    [Conv(w * min(2^(k-1), 8), w * min(2^k, 8), stride 2) norm LReLU(0.2)]  for k = 1 .. n-1
    Conv(., w * min(2^n, 8), stride 1) norm LReLU(0.2)
    Conv(., 1, stride 1)                                                    # patch logits

Each logit sees a window of 70 pixels for n = 3 (34 for n = 2, 142 for n = 4). ``forward``
returns the output of every layer, the last being the (N, 1, h, w) logits, so a caller can
match intermediate features (pix2pixHD) or keep only ``[-1]``.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import check_integer

__all__ = ["PatchGAN"]


class PatchGAN(nn.Module):
    """pix2pix's N-layer PatchGAN (see the module docstring).

    Args:
        in_channels: input channels (an image, or a condition and an image concatenated).
        width: channels of the first layer.
        n_layers: stride-2 layers; 3 gives the 70 x 70 PatchGAN.
        norm: channels -> normalisation layer (``nn.Identity`` style for none).
        bias: whether the normalised convolutions have a bias (not before batch norm).
        wrap: applied to every convolution, e.g. spectral_norm.
    """

    def __init__(self, in_channels: int, width: int = 64, n_layers: int = 3,
                 norm: Callable[[int], nn.Module] = nn.InstanceNorm2d, bias: bool = True,
                 wrap: Callable[[nn.Conv2d], nn.Module] = lambda conv: conv):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("width", width), ("n_layers", n_layers)):
            check_integer(name, value)
        widths = [width * min(2**k, 8) for k in range(n_layers + 1)]
        layers = [nn.Sequential(wrap(nn.Conv2d(in_channels, widths[0], 4, 2, 1)), nn.LeakyReLU(0.2))]
        for k in range(1, n_layers + 1):
            stride = 2 if k < n_layers else 1
            layers.append(nn.Sequential(wrap(nn.Conv2d(widths[k - 1], widths[k], 4, stride, 1, bias=bias)),
                                        norm(widths[k]), nn.LeakyReLU(0.2)))
        layers.append(wrap(nn.Conv2d(widths[-1], 1, 4, 1, 1)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for layer in self.layers:
            x = layer(x)
            features.append(x)
        return features
