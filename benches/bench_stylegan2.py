"""A whole StyleGAN2-64 training step, ours against the same networks whose modulated
convolutions take the faster plain-PyTorch path (bench_modconv's "non_fused": on the CPU
the faster of the two references at every shape of this network).

One step = the generator phase (non-saturating logistic loss through D) and the
discriminator phase (fakes and reals), each with its Adam update; no regularisation (R1 and
path length run every 16 / 4 steps and are timed with the training job). Both sides are
built from one seed, so they hold the same weights; their first losses are checked equal
before the timing, which is round-robin (benches/_inputs.py).

Networks: 64 px RGB, z and w 512, 8 mapping layers, channel_base 8192 (512 channels at 4-16
px, 256 at 32, 128 at 64; the paper's 64 px setup has 512 throughout, which takes tens of
seconds a step on 2 CPU threads), batch 8 on the CPU, 32 on a GPU with channel_base 16384.
"""

import contextlib
import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from _inputs import bench_interleaved, needs_cuda, synchronised

import medgan_fast.nn.stylegan2 as layers
from medgan_fast.models.stylegan2 import Discriminator, Generator
from medgan_fast.ops.modconv import resampled_conv2d


def non_fused_modconv(x, weight, styles, demodulate=True, up=1, down=1, padding=None, noise=None, bias=None,
                      activation="lrelu", gain=1.0, clamp=None):
    """modulated_conv2d's semantics the way stylegan2-ada trains them (fused_modconv=False)."""
    padding = weight.shape[2] // 2 if padding is None else padding
    y = resampled_conv2d(x * styles.reshape(*styles.shape, 1, 1), weight, up, down, padding)
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
        y = y * dcoefs.reshape(*dcoefs.shape, 1, 1) if noise is None else torch.addcmul(noise, y, dcoefs.reshape(
            *dcoefs.shape, 1, 1))
    elif noise is not None:
        y = y + noise
    return layers.bias_act(y, bias, activation, gain, clamp)


class Training:
    """G, D and their Adam optimisers (the paper's 0.0025, betas (0, 0.99)) on a fixed batch."""

    def __init__(self, device, batch, channel_base, patched: bool):
        torch.manual_seed(0)
        self.G = Generator(z_dim=512, w_dim=512, img_resolution=64, img_channels=3, channel_base=channel_base).to(device)
        self.D = Discriminator(img_resolution=64, img_channels=3, channel_base=channel_base).to(device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=0.0025, betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=0.0025, betas=(0.0, 0.99))
        g = torch.Generator().manual_seed(1)
        self.z = torch.randn(batch, 512, generator=g).to(device)
        self.reals = torch.randn(batch, 3, 64, 64, generator=g).clamp(-1, 1).to(device)
        self.patched = patched

    def step(self):
        with mock.patch.object(layers, "modulated_conv2d", non_fused_modconv) if self.patched else contextlib.nullcontext():
            self.G.requires_grad_(True)
            self.D.requires_grad_(False)
            loss_g = F.softplus(-self.D(self.G(self.z))).mean()
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            self.G.requires_grad_(False)
            self.D.requires_grad_(True)
            with torch.no_grad():
                fakes = self.G(self.z)
            loss_d = F.softplus(self.D(fakes)).mean() + F.softplus(-self.D(self.reals)).mean()
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
        return loss_g.detach(), loss_d.detach()


def steps(device, batch, channel_base):
    ours, reference = Training(device, batch, channel_base, False), Training(device, batch, channel_base, True)
    # Same weights, same noise draws: the first steps' losses agree.
    check_ours, check_reference = copy.deepcopy(ours), copy.deepcopy(reference)
    torch.manual_seed(2)
    first = check_ours.step()
    torch.manual_seed(2)
    second = check_reference.step()
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    return {"medgan_fast": ours.step, "non_fused": reference.step}


def test_stylegan2_64_step_cpu(benchmark):
    bench_interleaved(benchmark, "StyleGAN2-64 training step (G and D phases), batch 8, CPU", steps("cpu", 8, 8192),
                      rounds=6, warmup=1)


@needs_cuda
@pytest.mark.parametrize("batch", [32])
def test_stylegan2_64_step_cuda(benchmark, batch):
    entries = {name: synchronised(step) for name, step in steps("cuda", batch, 16384).items()}
    bench_interleaved(benchmark, f"StyleGAN2-64 training step (G and D phases), batch {batch}, GPU", entries,
                      rounds=30)
