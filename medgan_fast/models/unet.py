"""U-Net: the encoder-decoder segmentation network of Ronneberger et al. (2015).

- O. Ronneberger, P. Fischer, T. Brox. "U-Net: Convolutional Networks for Biomedical Image
  Segmentation". MICCAI 2015. arXiv:1505.04597.

Layer layout (w = width, d = depth; "block" = [Conv3x3(pad 1, no bias) BN ReLU] x 2):

    encoder:    block(in, w) -> pool -> block(w, 2w) -> pool ... block(., w*2^(d-1)) -> pool
    bottleneck: block(w*2^(d-1), w*2^d)
    decoder:    [ConvT(2c, c, 2, 2) -> concat skip (c) -> block(2c, c)] for c = w*2^(d-1) .. w
    head:       Conv1x1(w, num_classes)                                   # logits

Unlike the paper we pad the 3x3 convolutions, so the output has the input's size and skips
concatenate without cropping; the price is that H and W must be multiples of 2^d (each pool
halves them, each up-convolution doubles them back). The head returns logits: train binary
segmentation (num_classes 1) with ``binary_cross_entropy_with_logits`` and multi-class with
``cross_entropy``. Convolutions start from Kaiming normal (fan_out, ReLU), the usual choice
for ReLU networks with batch norm, so training is reproducible from ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_integer

__all__ = ["UNet"]


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    # No conv bias: the batch norm that follows would cancel it.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015): image -> per-pixel class logits.

    Args:
        in_channels: image channels (1 grey, 3 RGB, or any positive number).
        num_classes: output channels: 1 for binary segmentation (one logit per pixel),
            >= 2 for multi-class (one logit per class per pixel).
        depth: number of down-sampling levels; H and W must be multiples of 2**depth.
        width: channels of the first level; level i has width * 2**i.

    Shapes: x (N, in_channels, H, W) float -> (N, num_classes, H, W) logits.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 1, depth: int = 4, width: int = 32):
        super().__init__()
        check_integer("in_channels", in_channels)
        check_integer("num_classes", num_classes)
        check_integer("depth", depth)
        check_integer("width", width)
        # Kept so a checkpoint loader can rebuild the model from its arguments.
        self.in_channels, self.num_classes, self.depth, self.width = in_channels, num_classes, depth, width
        widths = [width * 2**level for level in range(depth)]
        self.encoder = nn.ModuleList(_block(c_in, c_out) for c_in, c_out in zip([in_channels, *widths], widths))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _block(widths[-1], widths[-1] * 2)
        self.up = nn.ModuleList(nn.ConvTranspose2d(c * 2, c, 2, stride=2) for c in reversed(widths))
        self.decoder = nn.ModuleList(_block(c * 2, c) for c in reversed(widths))
        self.head = nn.Conv2d(width, num_classes, 1)
        self.apply(_init)

    @property
    def multiple(self) -> int:
        """What H and W must be multiples of (2**depth)."""
        return 2**self.depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet: x must be (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        if height % self.multiple or width % self.multiple:
            raise ValueError(f"UNet: input height and width must be multiples of {self.multiple} "
                             f"(depth {self.depth}), got {height}x{width}")
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.decoder, reversed(skips)):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)
