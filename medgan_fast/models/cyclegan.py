"""CycleGAN's networks (Zhu et al. 2017): two generators (A -> B, B -> A) and two
discriminators, laid out as in pytorch-CycleGAN-and-pix2pix (same layers, same parameter
counts, so speed can be compared side by side), plus our users' VGG-style discriminator.

- J.-Y. Zhu, T. Park, P. Isola, A. A. Efros. "Unpaired Image-to-Image Translation using
  Cycle-Consistent Adversarial Networks". ICCV 2017. arXiv:1703.10593.
- J. Johnson et al. "Perceptual Losses for Real-Time Style Transfer" (the ResNet generator).

Generators (``netG``), images (N, C, H, W) in [-1, 1] in and out:

- ``unet_128`` / ``unet_256``: pix2pix's U-Net with 7 / 8 stride-2 4x4 convolutions down
  (LReLU 0.2, norm; none on the outermost and innermost) and 4x4 transposed convolutions up
  (ReLU, norm), each level's output concatenated after its mirror's LReLU'd output (as the
  reference computes it, so its weights load and give the same images); tanh. H, W multiples of
  128 / 256 (:attr:`multiple`).
- ``resnet_9blocks`` / ``resnet_6blocks``: reflect-pad 7x7 conv, two stride-2 3x3 convs,
  9 / 6 residual blocks (reflect-padded 3x3 conv, norm, ReLU, 3x3 conv, norm), two
  transposed convs, 7x7 conv, tanh. H, W multiples of 4.

Discriminators (``netD``), image -> (N, 1, h, w) logits:

- ``basic``: the 70 x 70 PatchGAN (:class:`.patchgan.PatchGAN`, 3 layers); ``n_layers``:
  the PatchGAN with ``n_layers_D`` layers.
- ``vgg``: our users' deeper discriminator, meant to see global and local features. Five
  VGG-style stages, stage s of width ndf * min(2^s, 8): [3x3 conv (stride 1), norm, LReLU
  0.2; 4x4 conv (stride 2), norm, LReLU 0.2] (no norm on the very first conv), so a 128 px
  image ends at 4 x 4 (256 px: 8 x 8); then a local head (3x3 conv -> one logit per
  position, each seeing most of the image) plus a global head (mean over positions ->
  linear -> one logit per image) broadcast onto it. The sum is one logit map, used like a
  PatchGAN's.

Norms (``norm``): ``instance`` (no affine, as the reference; :class:`StatisticsInstanceNorm`
so ``translate`` can fix its statistics over a whole slide), ``batch``, ``none``.
Convolutions before batch norm have no bias. Initialisation (``init_type``): ``normal``
N(0, gain), ``xavier`` (normal, gain), ``kaiming`` (fan_in), ``orthogonal``; biases 0;
batch-norm weights N(1, gain).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import check_integer
from ..nn import StatisticsInstanceNorm
from .patchgan import PatchGAN

__all__ = ["DISCRIMINATORS", "GENERATORS", "INITS", "NORMS", "ResnetGenerator", "UNetGenerator",
           "VGGDiscriminator", "build_discriminator", "build_generator", "init_weights"]

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "instance": StatisticsInstanceNorm,
    "batch": nn.BatchNorm2d,
    "none": lambda channels: nn.Identity(),
}
GENERATORS = ("unet_128", "unet_256", "resnet_9blocks", "resnet_6blocks")
DISCRIMINATORS = ("vgg", "basic", "n_layers")
INITS = ("normal", "xavier", "kaiming", "orthogonal")


def _norm(name: str) -> tuple[Callable[[int], nn.Module], bool]:
    """The norm layer factory and whether the convolution before it keeps its bias."""
    if name not in NORMS:
        raise ValueError(f"norm: expected one of {', '.join(NORMS)}, got {name!r}")
    return NORMS[name], name != "batch"


class UNetGenerator(nn.Module):
    """pix2pix's U-Net generator with ``num_downs`` levels (see the module docstring)."""

    def __init__(self, input_nc: int, output_nc: int, num_downs: int = 7, ngf: int = 64, norm: str = "instance"):
        super().__init__()
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf)):
            check_integer(name, value)
        check_integer("num_downs", num_downs, 5)
        make_norm, bias = _norm(norm)
        self.input_nc, self.output_nc, self.multiple = input_nc, output_nc, 2**num_downs
        widths = [ngf * min(2**level, 8) for level in range(num_downs)]   # channels after each down step
        down = [nn.Conv2d(input_nc, widths[0], 4, 2, 1, bias=bias)]
        for level in range(1, num_downs):
            innermost = level == num_downs - 1
            down.append(nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(widths[level - 1], widths[level], 4, 2, 1, bias=bias),
                                      *([] if innermost else [make_norm(widths[level])])))
        up = []
        for level in reversed(range(1, num_downs)):
            innermost = level == num_downs - 1
            in_channels = widths[level] * (1 if innermost else 2)
            up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(in_channels, widths[level - 1], 4, 2, 1, bias=bias),
                                    make_norm(widths[level - 1])))
        up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * widths[0], output_nc, 4, 2, 1), nn.Tanh()))
        self.down, self.up = nn.ModuleList(down), nn.ModuleList(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()   # the innermost output is x itself
        for block in self.up[:-1]:
            # pix2pix's order, [skip, upsampled]; its skip has been through the next level's
            # LeakyReLU, which runs in place there, so the same weights give the same images.
            x = torch.cat([F.leaky_relu(skips.pop(), 0.2), block(x)], 1)
        return self.up[-1](x)


class _ResnetBlock(nn.Module):
    def __init__(self, channels: int, make_norm: Callable[[int], nn.Module], bias: bool):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, bias=bias), make_norm(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """Johnson et al.'s ResNet generator as CycleGAN uses it (see the module docstring)."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int = 64, norm: str = "instance", n_blocks: int = 9):
        super().__init__()
        for name, value in (("input_nc", input_nc), ("output_nc", output_nc), ("ngf", ngf), ("n_blocks", n_blocks)):
            check_integer(name, value)
        make_norm, bias = _norm(norm)
        self.input_nc, self.output_nc, self.multiple = input_nc, output_nc, 4
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=bias), make_norm(ngf), nn.ReLU(True)]
        for k in range(2):
            c = ngf * 2**k
            layers += [nn.Conv2d(c, 2 * c, 3, 2, 1, bias=bias), make_norm(2 * c), nn.ReLU(True)]
        layers += [_ResnetBlock(4 * ngf, make_norm, bias) for _ in range(n_blocks)]
        for k in (2, 1):
            c = ngf * 2**k
            layers += [nn.ConvTranspose2d(c, c // 2, 3, 2, 1, output_padding=1, bias=bias), make_norm(c // 2),
                       nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x)
        return self.model(x)


def _check_input(generator: nn.Module, x: torch.Tensor) -> None:
    m = generator.multiple
    if x.ndim != 4 or x.shape[1] != generator.input_nc or x.shape[2] % m or x.shape[3] % m:
        raise ValueError(f"{type(generator).__name__}: expected (N, {generator.input_nc}, H, W) with H and W "
                         f"multiples of {m}, got {tuple(x.shape)}")


class VGGDiscriminator(nn.Module):
    """Our users' VGG-style discriminator with a local and a global head (see the module
    docstring)."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "instance", stages: int = 5):
        super().__init__()
        for name, value in (("input_nc", input_nc), ("ndf", ndf), ("stages", stages)):
            check_integer(name, value)
        make_norm, bias = _norm(norm)
        layers, channels = [], input_nc
        for stage in range(stages):
            width = ndf * min(2**stage, 8)
            first = [nn.Conv2d(channels, width, 3, 1, 1)] if stage == 0 else [
                nn.Conv2d(channels, width, 3, 1, 1, bias=bias), make_norm(width)]
            layers += [*first, nn.LeakyReLU(0.2), nn.Conv2d(width, width, 4, 2, 1, bias=bias), make_norm(width),
                       nn.LeakyReLU(0.2)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.local_head = nn.Conv2d(channels, 1, 3, 1, 1)
        self.global_head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        return self.local_head(features) + self.global_head(features.mean((2, 3)))[:, :, None, None]


class _LastOutput(nn.Module):
    """A PatchGAN returning only its logits."""

    def __init__(self, patchgan: PatchGAN):
        super().__init__()
        self.patchgan = patchgan

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patchgan(x)[-1]


def build_generator(name: str, input_nc: int, output_nc: int, ngf: int, norm: str) -> nn.Module:
    """The generator ``netG`` = `name` (see the module docstring), not yet initialised."""
    if name.startswith("unet_"):
        return UNetGenerator(input_nc, output_nc, 7 if name == "unet_128" else 8, ngf, norm)
    if name.startswith("resnet_"):
        return ResnetGenerator(input_nc, output_nc, ngf, norm, 9 if name == "resnet_9blocks" else 6)
    raise ValueError(f"netG: expected one of {', '.join(GENERATORS)}, got {name!r}")


def build_discriminator(name: str, input_nc: int, ndf: int, norm: str, n_layers: int = 3) -> nn.Module:
    """The discriminator ``netD`` = `name` (see the module docstring), not yet initialised."""
    if name == "vgg":
        return VGGDiscriminator(input_nc, ndf, norm)
    if name in ("basic", "n_layers"):
        make_norm, bias = _norm(norm)
        return _LastOutput(PatchGAN(input_nc, ndf, 3 if name == "basic" else n_layers, make_norm, bias))
    raise ValueError(f"netD: expected one of {', '.join(DISCRIMINATORS)}, got {name!r}")


def init_weights(model: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialises `model`'s convolution and linear weights by `init_type` (see the module
    docstring); returns it."""
    if init_type not in INITS:
        raise ValueError(f"init_type: expected one of {', '.join(INITS)}, got {init_type!r}")

    def initialise(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(module.weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)

    return model.apply(initialise)
