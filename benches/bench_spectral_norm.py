"""Spectral-norm overhead: the DCGAN-64 discriminator's forward + backward with our
spectral norm (fused), torch's parametrization, and none, at batch 8, 16 and 64.

report.py prints each one's overhead against "none" (the same discriminator without
spectral norm) and our speed-up over torch's.
"""

import pytest
import torch
from _inputs import bench_interleaved, needs_cuda, synchronised
from torch import nn

from medgan_fast.nn import fuse_spectral_norm, spectral_norm

BATCHES = (8, 16, 64)


def discriminator(sn=None, channels=3, width=64) -> nn.Module:
    """The DCGAN-64 discriminator (Radford et al.), spectral norm on every conv if `sn`."""
    wrap = sn or (lambda layer: layer)
    layers = [wrap(nn.Conv2d(channels, width, 4, 2, 1, bias=False)), nn.LeakyReLU(0.2, inplace=True)]
    for k in (1, 2, 4):
        layers += [wrap(nn.Conv2d(width * k, width * 2 * k, 4, 2, 1, bias=False)), nn.BatchNorm2d(width * 2 * k),
                   nn.LeakyReLU(0.2, inplace=True)]
    layers.append(wrap(nn.Conv2d(width * 8, 1, 4, 1, 0, bias=False)))
    return nn.Sequential(*layers)


VARIANTS = {
    "none": lambda: discriminator(),
    "torch_parametrization": lambda: discriminator(nn.utils.parametrizations.spectral_norm),
    "medgan_fast": lambda: fuse_spectral_norm(discriminator(spectral_norm)),
}


def forward_backward(model, x):
    def run():
        model.zero_grad(set_to_none=True)
        model(x).mean().backward()
    return run


def variants_on(device, batch):
    """Each variant from the same seed, checked equal to torch's, and its step on x."""
    x = torch.randn(batch, 3, 64, 64, device=device)
    steps = {}
    for name, build in VARIANTS.items():
        torch.manual_seed(0)
        model = build().to(device)
        if name == "medgan_fast":  # the same function as torch's from the same seed
            torch.manual_seed(0)
            reference = VARIANTS["torch_parametrization"]().to(device)
            torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-5)
        steps[name] = forward_backward(model, x)
    return steps


# Overheads of a few percent: the variants are timed round-robin (see bench_interleaved);
# the target is at batch 16, so it gets the most rounds.
@pytest.mark.parametrize("batch", BATCHES)
def test_spectral_norm_overhead(benchmark, batch):
    bench_interleaved(benchmark, f"DCGAN-64 D forward+backward, batch {batch}, CPU", variants_on("cpu", batch),
                      rounds=150 if batch == 16 else 40 if batch < 64 else 15)


@needs_cuda
@pytest.mark.parametrize("batch", BATCHES)
def test_spectral_norm_overhead_cuda(benchmark, batch):
    steps = {name: synchronised(step) for name, step in variants_on("cuda", batch).items()}
    bench_interleaved(benchmark, f"DCGAN-64 D forward+backward, batch {batch}, GPU", steps, rounds=100)
