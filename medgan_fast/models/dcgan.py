"""DCGAN and SNGAN: the generator and discriminator of Radford et al. (2016), and the
spectrally normalised discriminator of Miyato et al. (2018).

- A. Radford, L. Metz, S. Chintala. "Unsupervised Representation Learning with Deep
  Convolutional Generative Adversarial Networks". ICLR 2016. arXiv:1511.06434.
- T. Miyato, T. Kataoka, M. Koyama, Y. Yoshida. "Spectral Normalization for Generative
  Adversarial Networks". ICLR 2018. arXiv:1802.05957.

Layer layout (the one our users train; widths for image_size 64, m = 8):

    G: z (N, nz) -> ConvT(nz, ngf*m, 4, 1, 0) BN ReLU                      # 4 x 4
                 -> [ConvT(k, k/2, 4, 2, 1) BN ReLU] while k > ngf           # 8 .. S/2
                 -> ConvT(ngf, nc, 4, 2, 1) Tanh                              # S x S, in [-1, 1]
    D: x (N, nc, S, S) -> Conv(nc, ndf, 4, 2, 1) LeakyReLU(0.2)              # S/2
                 -> [Conv(k, 2k, 4, 2, 1) BN LeakyReLU(0.2)] while k < ndf*m  # .. 4 x 4
                 -> Conv(ndf*m, 1, 4, 1, 0)                                   # (N,) logits

m = image_size / 8 (8, 16, 32 for 64, 128, 256 px): one more block per doubling. All
convolutions are bias-free; weights start as N(0, 0.02) (convolutions) and N(1, 0.02) with
zero bias (batch norm). The discriminator returns logits, not probabilities: train it with
``binary_cross_entropy_with_logits`` (the users' Sigmoid + BCELoss, computed stably) or a
hinge loss. Modules keep their layers in ``main`` (an ``nn.Sequential``) in the order above,
so a generator state_dict saved by the users' code loads as it is.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import check_integer
from ..nn import fuse_spectral_norm, spectral_norm

__all__ = ["IMAGE_SIZES", "DCGANDiscriminator", "DCGANGenerator", "SNGANDiscriminator", "dcgan_init"]

IMAGE_SIZES = (64, 128, 256)
CHANNELS = (1, 3)


def _width_multiplier(image_size: int) -> int:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size: expected one of {', '.join(map(str, IMAGE_SIZES))}, got {image_size!r}")
    return image_size // 8


def _check_channels(channels: int) -> None:
    if channels not in CHANNELS:
        raise ValueError(f"number_channels: expected 1 (grey) or 3 (RGB), got {channels!r}")


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation, for ``model.apply``: convolution weights N(0, 0.02), batch-norm
    weights N(1, 0.02) and biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator (Radford et al. 2016): latent vector -> image in [-1, 1].

    Args:
        image_size: output side S: 64, 128 or 256.
        latent_vector: length nz of the latent vector z ~ N(0, I).
        feature_maps: width ngf of the last hidden layer; the first has ngf * S / 8.
        channels: nc, 1 (grey) or 3 (RGB).

    Shapes: z (N, nz) or (N, nz, 1, 1) -> (N, nc, S, S) float.
    """

    def __init__(self, image_size: int = 64, latent_vector: int = 100, feature_maps: int = 64, channels: int = 3):
        super().__init__()
        multiplier = _width_multiplier(image_size)
        check_integer("latent_vector", latent_vector)
        check_integer("gen_feature_maps", feature_maps)
        _check_channels(channels)
        self.image_size, self.latent_vector, self.channels = image_size, latent_vector, channels
        width = feature_maps * multiplier
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_vector, width, 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        while width > feature_maps:
            layers += [nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width // 2),
                       nn.ReLU(inplace=True)]
            width //= 2
        layers += [nn.ConvTranspose2d(feature_maps, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim == 2:
            z = z[:, :, None, None]
        if z.ndim != 4 or z.shape[1:] != (self.latent_vector, 1, 1):
            raise ValueError(f"z must be (N, {self.latent_vector}) or (N, {self.latent_vector}, 1, 1), "
                             f"got {tuple(z.shape)}")
        return self.main(z)


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator (Radford et al. 2016): image -> one real/fake logit.

    Args:
        image_size: input side S: 64, 128 or 256.
        feature_maps: width ndf of the first layer; the last hidden one has ndf * S / 8.
        channels: nc, 1 (grey) or 3 (RGB).

    Shapes: x (N, nc, S, S) in [-1, 1] -> (N,) logits (no sigmoid).
    """

    def __init__(self, image_size: int = 64, feature_maps: int = 64, channels: int = 3):
        super().__init__()
        multiplier = _width_multiplier(image_size)
        check_integer("dis_feature_maps", feature_maps)
        _check_channels(channels)
        self.image_size, self.channels = image_size, channels
        layers: list[nn.Module] = [nn.Conv2d(channels, feature_maps, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2, inplace=True)]
        width = feature_maps
        while width < feature_maps * multiplier:
            layers += [nn.Conv2d(width, width * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(width * 2),
                       nn.LeakyReLU(0.2, inplace=True)]
            width *= 2
        layers += [nn.Conv2d(width, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1:] != (self.channels, self.image_size, self.image_size):
            raise ValueError(f"x must be (N, {self.channels}, {self.image_size}, {self.image_size}), "
                             f"got {tuple(x.shape)}")
        return self.main(x).flatten()


class SNGANDiscriminator(DCGANDiscriminator):
    """The DCGAN discriminator with spectral normalisation (Miyato et al. 2018) on every
    convolution and linear layer; batch norm is kept, as in our users' SN discriminator.

    Weights are DCGAN-initialised first and then normalised: W / sigma(W), with sigma the
    largest singular value estimated by one power iteration per training forward
    (:func:`medgan_fast.nn.spectral_norm`). All the layers' power iterations run fused,
    one launch per forward (:func:`medgan_fast.nn.fuse_spectral_norm`).
    Arguments and shapes as :class:`DCGANDiscriminator`.
    """

    def __init__(self, image_size: int = 64, feature_maps: int = 64, channels: int = 3):
        super().__init__(image_size, feature_maps, channels)
        for index, layer in enumerate(self.main):
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                self.main[index] = spectral_norm(layer)
        fuse_spectral_norm(self)
