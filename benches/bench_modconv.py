"""Modulated convolution, forward + backward, at StyleGAN2's shapes: ours
(medgan_fast.ops.modulated_conv2d) against the two plain-PyTorch paths NVIDIA's
stylegan2-ada-pytorch chooses between, written here from its semantics:

- "grouped": the fused form, one modulated and demodulated weight per sample, all samples
  in one grouped convolution (fused_modconv=True);
- "non_fused": what NVIDIA trains with, activations scaled by the styles, one convolution
  with the shared weight, the output scaled by the demodulation coefficients and the noise
  added in one addcmul, then bias, leaky ReLU, gain and clamp (bias_act's reference).

Each layer as StyleGAN2's synthesis layers run it: 3x3 kernel, per-sample noise, bias,
lrelu with gain sqrt(2), clamp 256 (conv_clamp). Channels follow the paper's 256 px config
(512 at 4-32 px, then 256, 128, 64 at 64, 128, 256 px); "up" rows are the first layer of a
block (2x up-sampling). Every entry is checked equal to ours before timing, and all three
are timed round-robin with a pipeline step between calls (benches/_inputs.py).
The CPU set stops at batch 16 for the 32-256 px shapes: one call there takes seconds on
2 threads. The GPU set runs every shape at batch 16 and 32.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from _inputs import bench_interleaved, needs_cuda, pipeline_step, synchronised

from medgan_fast.ops.modconv import modulated_conv2d, resampled_conv2d

GAIN, CLAMP = math.sqrt(2.0), 256.0

# (channels, resolution of the output, up)
SHAPES = [(512, 4, 1), (512, 8, 1), (512, 16, 1), (512, 32, 1), (256, 64, 1), (128, 128, 1), (64, 256, 1),
          (512, 16, 2), (256, 64, 2)]
CPU_CASES = [(16, *shape) for shape in SHAPES] + [(32, c, r, up) for c, r, up in SHAPES if r <= 16]
GPU_CASES = [(batch, *shape) for batch in (16, 32) for shape in SHAPES]


def epilogue(y, bias):
    """bias_act's reference for lrelu with a clamp."""
    return (F.leaky_relu(y + bias.reshape(1, -1, 1, 1), 0.2) * GAIN).clamp(-CLAMP, CLAMP)


def grouped(x, weight, styles, noise, bias, up):
    n, i, h, w = x.shape
    o, _, k, _ = weight.shape
    modulated = weight.unsqueeze(0) * styles.reshape(n, 1, i, 1, 1)
    modulated = modulated * (modulated.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8).rsqrt()
    y = resampled_conv2d(x.reshape(1, n * i, h, w), modulated.reshape(n * o, i, k, k), up, 1, k // 2, n)
    return epilogue(y.reshape(n, o, *y.shape[2:]) + noise, bias)


def non_fused(x, weight, styles, noise, bias, up):
    dcoefs = (styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8).rsqrt()
    y = resampled_conv2d(x * styles.reshape(*styles.shape, 1, 1), weight, up, 1, weight.shape[2] // 2)
    return epilogue(torch.addcmul(noise, y, dcoefs.reshape(*dcoefs.shape, 1, 1)), bias)


def ours(x, weight, styles, noise, bias, up):
    return modulated_conv2d(x, weight, styles, up=up, noise=noise, bias=bias, clamp=CLAMP)


ENTRIES = {"medgan_fast": ours, "grouped": grouped, "non_fused": non_fused}


def steps(device, batch, channels, resolution, up):
    """Each entry's forward + backward on the same seeded layer, checked against ours."""
    g = torch.Generator().manual_seed(0)
    size = resolution // up
    x = torch.randn(batch, channels, size, size, generator=g)
    weight = torch.randn(channels, channels, 3, 3, generator=g)
    styles = torch.randn(batch, channels, generator=g) * 0.5 + 1
    noise = torch.randn(batch, 1, resolution, resolution, generator=g) * 0.1
    bias = torch.randn(channels, generator=g) * 0.1
    tensors = [t.to(device).requires_grad_(True) for t in (x, weight, styles, noise, bias)]
    upstream = torch.randn(batch, channels, resolution, resolution, generator=g).to(device)

    def step(fn):
        def run():
            out = fn(*tensors, up)
            return torch.autograd.grad(out, tensors, upstream)
        return run

    # Mean errors, not the largest: where a pre-activation is within rounding of 0, float32
    # paths may take opposite sides of the leaky ReLU, and one such element moves a bias or
    # noise gradient sum by a whole upstream value.
    expected = step(ours)()
    for name, fn in ENTRIES.items():
        for got, want in zip(step(fn)(), expected):
            error = ((got - want).abs().mean() / want.abs().mean()).item()
            assert error < 1e-3, f"{name} differs from ours: mean relative error {error:.1e}"

    return {name: step(fn) for name, fn in ENTRIES.items()}


def case_id(case):
    batch, channels, resolution, up = case
    return f"b{batch}-{channels}ch-{resolution}px" + ("-up" if up == 2 else "")


@pytest.mark.parametrize("case", CPU_CASES, ids=case_id)
def test_modulated_conv2d_cpu(benchmark, case):
    batch, channels, resolution, up = case
    rounds = 10 if channels * channels * resolution * resolution <= 512 * 512 * 16 * 16 else 4
    bench_interleaved(benchmark, f"modulated_conv2d fwd+bwd {case_id(case)}, CPU", steps("cpu", *case),
                      rounds=rounds, warmup=1, between=pipeline_step)


@needs_cuda
@pytest.mark.parametrize("case", GPU_CASES, ids=case_id)
def test_modulated_conv2d_cuda(benchmark, case):
    entries = {name: synchronised(step) for name, step in steps("cuda", *case).items()}
    bench_interleaved(benchmark, f"modulated_conv2d fwd+bwd {case_id(case)}, GPU", entries, rounds=30)
