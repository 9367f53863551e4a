"""A whole SNGAN-64 training step (G and D, batch 64): ours (medgan_fast.training's GANTask
with our models and fused spectral norm) against the plain-PyTorch step our users write
(benches/users_sngan.py: torch's spectral_norm, Sigmoid + BCELoss), same real batch.

report.py divides the users' time by ours: images per second is batch / time, so the
ratio is also the images-per-second ratio.
"""

import pytest
import torch
from _inputs import bench_interleaved, needs_cuda, synchronised
from users_sngan import UsersStep

from medgan_fast.training.config import TrainConfig
from medgan_fast.training.distributed import Distributed
from medgan_fast.training.gan import GANTask
from medgan_fast.training.registry import Context

BATCH = 64


def our_step(device: torch.device):
    config = TrainConfig(arch="SNGAN", image_size=64, batch_size=BATCH, latent_vector=100, gen_feature_maps=64,
                         dis_feature_maps=64, number_channels=3, seed=0)
    task = GANTask(Context(config, Distributed(device=device)))
    steps = iter(range(1 << 30))
    return lambda real: task.train_step(real, next(steps))


STEPS = {"medgan_fast": our_step, "users_reference": lambda device: UsersStep(device)}


def real_batch(device):
    return (torch.rand(BATCH, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(device)


def steps_on(device):
    torch.manual_seed(0)
    real = real_batch(device)
    return {name: (lambda step: lambda: step(real))(build(torch.device(device))) for name, build in STEPS.items()}


def test_sngan64_step_cpu(benchmark):
    bench_interleaved(benchmark, f"SNGAN-64 training step (G + D), batch {BATCH}, CPU", steps_on("cpu"), rounds=10,
                      warmup=2)


@needs_cuda
def test_sngan64_step_cuda(benchmark):
    steps = {name: synchronised(step) for name, step in steps_on("cuda").items()}
    bench_interleaved(benchmark, f"SNGAN-64 training step (G + D), batch {BATCH}, GPU", steps, rounds=50)
