"""Spectral-norm overhead: the DCGAN-64 discriminator's forward + backward with our
spectral norm (fused), torch's parametrization, and none, at batch 8, 16 and 64.
And the op alone: the backward through sigma for the discriminator's largest weight.

report.py prints each one's overhead against "none" (the same discriminator without
spectral norm) and our speed-up over torch's.
"""

import pytest
import torch
from _inputs import bench_interleaved, needs_cuda, synchronised
from torch import nn

from medgan_fast.nn import fuse_spectral_norm, spectral_norm
from medgan_fast.ops.spectral_norm import weight_grad_

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
                      rounds=150 if batch == 16 else 40)


@needs_cuda
@pytest.mark.parametrize("batch", BATCHES)
def test_spectral_norm_overhead_cuda(benchmark, batch):
    steps = {name: synchronised(step) for name, step in variants_on("cuda", batch).items()}
    bench_interleaved(benchmark, f"DCGAN-64 D forward+backward, batch {batch}, GPU", steps, rounds=100)


def weight_grad_steps(device):
    """The gradient of W / sigma(W) for the 512x256x4x4 weight, given the gradient G of
    W / sigma: ours (G copied into a buffer, then completed in place) vs torch's autograd
    through the same formula (what torch's parametrization runs)."""
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(512, 256, 4, 4, generator=g).to(device)
    u = nn.functional.normalize(torch.randn(512, generator=g), dim=0).to(device)
    v = nn.functional.normalize(torch.randn(4096, generator=g), dim=0).to(device)
    upstream = torch.randn(weight.shape, generator=g).to(device)
    leaf = weight.clone().requires_grad_(True)
    sigma = u @ leaf.view(512, -1) @ v
    scaled = leaf / sigma
    sigma, kept, buffer = sigma.detach(), scaled.detach(), torch.empty_like(weight)
    expected = torch.autograd.grad(scaled, leaf, upstream, retain_graph=True)[0]
    torch.testing.assert_close(weight_grad_(buffer.copy_(upstream), sigma, u, v, 0, kept), expected,
                               rtol=1e-4, atol=1e-5)
    return {"medgan_fast": lambda: weight_grad_(buffer.copy_(upstream), sigma, u, v, 0, kept),
            "torch_autograd": lambda: torch.autograd.grad(scaled, leaf, upstream, retain_graph=True)}


def test_weight_grad(benchmark):
    bench_interleaved(benchmark, "Backward through sigma, 512x256x4x4 weight, CPU", weight_grad_steps("cpu"),
                      rounds=50)


@needs_cuda
def test_weight_grad_cuda(benchmark):
    steps = {name: synchronised(step) for name, step in weight_grad_steps("cuda").items()}
    bench_interleaved(benchmark, "Backward through sigma, 512x256x4x4 weight, GPU", steps, rounds=100)
