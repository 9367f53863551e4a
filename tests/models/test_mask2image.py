"""The mask -> image networks: shapes, the noise they are given, and clear refusals."""

from __future__ import annotations

import pytest
import torch

from medgan_fast.models.mask2image import GENERATORS, MultiScalePatchDiscriminator


def _masks(n=3, side=32):
    generator = torch.Generator().manual_seed(0)
    return (torch.rand(n, 1, side, side, generator=generator) > 0.5).float() * 2 - 1


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_a_generator_maps_masks_to_images_and_its_noise_matters(name):
    torch.manual_seed(0)
    generator = GENERATORS[name](channels=3, width=8, depth=3)
    masks = _masks()
    first = generator(masks, torch.Generator().manual_seed(1))
    again = generator(masks, torch.Generator().manual_seed(1))
    other = generator(masks, torch.Generator().manual_seed(2))
    assert first.shape == (3, 3, 32, 32) and first.abs().max() <= 1
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3   # the noise is not ignored at initialisation
    first.mean().backward()
    assert all(p.grad is not None for p in generator.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_a_generator_refuses_a_side_it_cannot_halve(name):
    with pytest.raises(ValueError, match=r"mask: expected \(N, 1, H, W\) with H and W multiples of 8"):
        GENERATORS[name](width=4, depth=3)(_masks(side=36))


def test_the_discriminator_gives_features_and_patch_logits_per_scale():
    discriminator = MultiScalePatchDiscriminator(channels=1, width=8, scales=2)
    outputs = discriminator(_masks(2, 64), torch.rand(2, 1, 64, 64) * 2 - 1)
    assert len(outputs) == 2 and len(outputs[0]) == 5
    assert outputs[0][-1].shape == (2, 1, 6, 6) and outputs[1][-1].shape == (2, 1, 2, 2)
    with pytest.raises(ValueError, match=r"expected \(N, 1, H, W\) and \(N, 1, H, W\)"):
        discriminator(_masks(2, 64), torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="scales: expected 1 to 3"):
        MultiScalePatchDiscriminator(scales=4)
