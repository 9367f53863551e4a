"""DCGAN and SNGAN models: layer layout, shapes, initialisation, spectral norm everywhere."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from medgan_fast.models import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator
from medgan_fast.nn.spectral_norm import SpectralNorm


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes(size, channels):
    generator = DCGANGenerator(size, latent_vector=8, feature_maps=4, channels=channels)
    images = generator(torch.randn(2, 8))
    assert images.shape == (2, channels, size, size)
    assert images.abs().max() <= 1
    assert generator(torch.randn(2, 8, 1, 1)).shape == images.shape   # the users' (N, nz, 1, 1) noise
    for discriminator in (DCGANDiscriminator(size, 4, channels), SNGANDiscriminator(size, 4, channels)):
        assert discriminator(images).shape == (2,)


@pytest.mark.parametrize("size, blocks", [(64, 3), (128, 4), (256, 5)])
def test_one_block_per_doubling_and_widths(size, blocks):
    ngf = ndf = 4
    generator, discriminator = DCGANGenerator(size, 100, ngf, 3), DCGANDiscriminator(size, ndf, 3)
    g_convs = [m for m in generator.main if isinstance(m, nn.ConvTranspose2d)]
    d_convs = [m for m in discriminator.main if isinstance(m, nn.Conv2d)]
    assert len(g_convs) == blocks + 2 and len(d_convs) == blocks + 2
    m = size // 8
    assert (g_convs[0].in_channels, g_convs[0].out_channels, g_convs[0].stride, g_convs[0].padding) == \
        (100, ngf * m, (1, 1), (0, 0))
    assert [c.out_channels for c in g_convs] == [ngf * m // 2 ** k for k in range(blocks + 1)] + [3]
    assert [c.out_channels for c in d_convs] == [ndf * 2 ** k for k in range(blocks + 1)] + [1]
    assert all(c.bias is None for c in g_convs + d_convs)
    assert isinstance(generator.main[-1], nn.Tanh)
    assert not any(isinstance(layer, nn.Sigmoid) for layer in discriminator.main)   # logits
    # BN after every generator conv but the last; in D after every conv but the first and last.
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in generator.main) == blocks + 1
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in discriminator.main) == blocks
    assert all(layer.negative_slope == 0.2 for layer in discriminator.main if isinstance(layer, nn.LeakyReLU))


def test_dcgan_initialisation():
    generator = DCGANGenerator(64, 100, 64, 3)
    conv = generator.main[3].weight
    batch_norm = generator.main[1]
    assert abs(conv.mean().item()) < 1e-3 and abs(conv.std().item() - 0.02) < 1e-3
    assert abs(batch_norm.weight.mean().item() - 1) < 0.01 and abs(batch_norm.weight.std().item() - 0.02) < 0.01
    assert torch.all(batch_norm.bias == 0)


def test_sngan_has_spectral_norm_on_every_conv():
    discriminator = SNGANDiscriminator(64, 4, 3)
    convs = [m for m in discriminator.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    assert len(convs) == 5
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
        assert isinstance(conv.parametrizations.weight[0], SpectralNorm)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules()) == 3   # kept
    keys = discriminator.state_dict().keys()
    assert "main.0.parametrizations.weight.original" in keys and "main.0.parametrizations.weight.0._u" in keys


def test_sngan_weights_have_unit_spectral_norm():
    discriminator = SNGANDiscriminator(64, 4, 3)
    for _ in range(30):   # power iterations converge over training-mode forwards
        discriminator(torch.randn(2, 3, 64, 64))
    for conv in (m for m in discriminator.modules() if isinstance(m, nn.Conv2d)):
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, abs=1e-3)


def test_users_generator_state_dict_keys_load():
    # The users' layer order in `main`: a state_dict of the same layout loads as it is.
    source = DCGANGenerator(64, 100, 8, 3)
    target = DCGANGenerator(64, 100, 8, 3)
    target.load_state_dict({key: value.clone() for key, value in source.state_dict().items()})
    assert list(source.state_dict())[:3] == ["main.0.weight", "main.1.weight", "main.1.bias"]


@pytest.mark.parametrize("build, message", [
    (lambda: DCGANGenerator(100), "image_size: expected one of 64, 128, 256, got 100"),
    (lambda: DCGANGenerator(64, channels=2), "number_channels: expected 1 \\(grey\\) or 3"),
    (lambda: DCGANDiscriminator(64, feature_maps=0), "dis_feature_maps: expected an integer >= 1"),
])
def test_bad_arguments(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_input_shapes():
    with pytest.raises(ValueError, match=r"z must be \(N, 8\)"):
        DCGANGenerator(64, 8, 4)(torch.randn(2, 9))
    with pytest.raises(ValueError, match=r"x must be \(N, 3, 64, 64\)"):
        DCGANDiscriminator(64, 4, 3)(torch.randn(2, 1, 64, 64))
