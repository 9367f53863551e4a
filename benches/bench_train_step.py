"""A whole SNGAN-64 training step (G and D, batch 64): ours (medgan_fast.training's GANTask
with our models and fused spectral norm) against the plain-PyTorch step our users write
(benches/users_sngan.py: torch's spectral_norm, Sigmoid + BCELoss), same real batch.

report.py divides the users' time by ours: images per second is batch / time, so the
ratio is also the images-per-second ratio.
"""

import pytest
import torch
from _inputs import bench, needs_cuda, synchronised
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


@pytest.mark.parametrize("entry", list(STEPS))
def test_sngan64_step_cpu(benchmark, entry):
    torch.manual_seed(0)
    step, real = STEPS[entry](torch.device("cpu")), real_batch("cpu")
    bench(benchmark, f"SNGAN-64 training step (G + D), batch {BATCH}, CPU", entry, lambda: step(real))


@needs_cuda
@pytest.mark.parametrize("entry", list(STEPS))
def test_sngan64_step_cuda(benchmark, entry):
    torch.manual_seed(0)
    step, real = STEPS[entry](torch.device("cuda")), real_batch("cuda")
    bench(benchmark, f"SNGAN-64 training step (G + D), batch {BATCH}, GPU", entry, synchronised(lambda: step(real)))
