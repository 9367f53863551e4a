"""Fixtures of the training tests: tiny configs (feature maps 4, image_size 64, a few
steps), a command runner, and one trained checkpoint shared by the generate tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from medgan_fast.data.patchset import PatchSetWriter, make_meta
from medgan_fast.training.config import TrainConfig
from medgan_fast.training.loop import train

REPO = Path(__file__).resolve().parents[2]

# 8 crops of 4: 2 steps an epoch, on a model of ~20k parameters.
TINY = dict(gen_feature_maps=4, dis_feature_maps=4, latent_vector=8, batch_size=4, sample_crops=8, num_epochs=1,
            loader_workers=0, log_every=1, sample_count=4, progress=False, n_gpu=0)


def tiny_config(out: Path, **changes) -> TrainConfig:
    """A config that trains in about a second on the CPU (on the embedded sample by default)."""
    return TrainConfig(**{**TINY, "out": str(out), "run": "tiny", **changes})


def tiny_overrides(out: Path, **changes) -> list[str]:
    """tiny_config as --set arguments of the train command."""
    settings = {**TINY, "out": str(out), "run": "tiny", **changes}
    return [item for key, value in settings.items() for item in ("--set", f"{key}={value}")]


def run_module(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs python with `args` (e.g. "-m", "medgan_fast.train") with the checkout importable."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory) -> Path:
    """checkpoints/last.pt of a 2-step tiny DCGAN run (RGB)."""
    out = tmp_path_factory.mktemp("trained")
    return train(tiny_config(out)).checkpoint


# A Mask2Image of ~10k parameters per network: 3 steps an epoch on the 9 training pairs below.
TINY_MASK2IMAGE = ["arch=Mask2Image", "image_size=64", "number_channels=1", "gen_feature_maps=4",
                   "dis_feature_maps=4", "gen_depth=3", "batch_size=4", "num_epochs=2", "loader_workers=0", "metrics=",
                   "n_gpu=0", "progress=false", "log_every=1", "val_fraction=0.25", "checkpoint_every=0",
                   "augment=none"]


@pytest.fixture(scope="session")
def pairs(tmp_path_factory):
    """12 (image, mask) patches of 64 px: bright disks with noise texture, as `patches --mode full`."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.h5"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:64, :64]
    masks = np.zeros((12, 1, 64, 64), bool)
    for k in range(12):
        cy, cx, r = rng.integers(16, 48, 2).tolist() + [int(rng.integers(6, 14))]
        masks[k, 0] = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    images = np.clip(rng.normal(80, 25, masks.shape) + 110 * masks, 0, 255).astype(np.uint8)
    with PatchSetWriter(path, 64) as writer:
        writer.append(images, masks, make_meta(12, "source.png", -1, np.arange(12), 0, 1, 0))
    return path


@pytest.fixture(scope="session")
def disks(tmp_path_factory):
    """12 grey 80x96 images of bright disks on noise, their 16-bit instance maps, a split file."""
    root = tmp_path_factory.mktemp("disks")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:80, :96]
    for k in range(12):
        labels = np.zeros((80, 96), np.uint16)
        for instance in range(1, 4):
            cy, cx, r = rng.integers(15, 65), rng.integers(15, 80), rng.integers(5, 12)
            labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = instance
        image = np.clip(rng.normal(70, 20, labels.shape) + 120 * (labels > 0), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{k:02d}.png")
        Image.fromarray(labels).save(root / "masks" / f"{k:02d}.png")
    (root / "train.csv").write_text("".join(f"{k:02d}\n" for k in range(8)))
    (root / "test.csv").write_text("".join(f"{k:02d}\n" for k in range(8, 12)))
    return root


# ResNet-6 generators and 2-layer PatchGANs of width 4 on 64 px: a step takes ~0.1 s.
TINY_CYCLEGAN = ["arch=CycleGAN", "image_size=64", "gen_feature_maps=4", "dis_feature_maps=4", "netG=resnet_6blocks",
                 "netD=n_layers", "n_layers_D=2", "batch_size=2", "num_epochs=1", "decay_epochs=1", "loader_workers=0",
                 "n_gpu=0", "progress=false", "log_every=1", "metric_images=4", "pool_size=3", "checkpoint_every=1",
                 "flip=true"]


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    """Domain A: 6 RGB PNGs of 80 x 72 px (pink, H&E-like); B: 5 16-bit RGB TIFFs (brown)."""
    root = tmp_path_factory.mktemp("domains")
    rng = np.random.default_rng(0)
    (root / "a").mkdir(), (root / "b").mkdir()
    for i in range(6):
        pixels = (rng.random((72, 80, 3)) * [60, 40, 60] + [180, 120, 170]).astype(np.uint8)
        Image.fromarray(pixels).save(root / "a" / f"a{i}.png")
    for i in range(5):
        pixels = (rng.random((70, 70, 3)) * [8000, 8000, 6000] + [30000, 20000, 10000]).astype(np.uint16)
        tifffile.imwrite(root / "b" / f"b{i}.tif", pixels)
    return root
