"""The anomaly command's jobs beyond training: a trained izi_f encoder and its frozen
StyleGAN2 loaded from their checkpoints, and G(E(x)) written for every image of a folder
(``anomaly reconstruct``).

Images are prepared as the encoder was trained on them: resized so the shorter side is the
generator's resolution and centre-cropped (:class:`medgan_fast.data.datasets.FolderDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import console
from ..data.datasets import FolderDataset
from ..data.grid import save_grid
from ..errors import DataError
from ..models.encoder import LatentEncoder, reconstruct
from ..outputs import AtomicPath, check_output_folder, clear_png_folder
from ..training.checkpoint import CheckpointError, load_checkpoint
from ..training.config import TrainConfig, saved_config
from ..training.encoder import load_stylegan2
from .generation import to_uint8

__all__ = ["Reconstructor", "ReconstructConfig", "load_encoder", "reconstruct_folder"]

GRID_IMAGES = 8
GRID_NAME = "grid"


@dataclass
class Reconstructor:
    """E, and the frozen G and D it was trained for, in eval mode on one device."""

    encoder: LatentEncoder
    generator: torch.nn.Module
    discriminator: torch.nn.Module
    config: TrainConfig   # the encoder run's

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w, G(w)) for images (N, C, R, R) in [-1, 1]."""
        return reconstruct(self.encoder, self.generator, images)


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> Reconstructor:
    """The encoder of an ``anomaly train-encoder`` run (arch Encoder) and its StyleGAN2."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("config", {}).get("arch") != "Encoder":
        raise CheckpointError(f"{path}: --encoder must be a checkpoint of anomaly train-encoder (arch Encoder), got "
                              f"arch {checkpoint.get('config', {}).get('arch')!r}")
    config = saved_config(checkpoint["config"])
    generator, discriminator, gan = load_stylegan2(config.arch_options.generator_checkpoint, device)
    encoder = LatentEncoder(config.image_size, config.number_channels, generator.mapping.w_avg,
                            gan.arch_options.channel_base, gan.arch_options.channel_max)
    encoder.load_state_dict(checkpoint["models"]["encoder"])
    return Reconstructor(encoder.to(device).eval(), generator, discriminator, config)


@dataclass
class ReconstructConfig:
    encoder: Path
    data: Path
    out: Path
    batch_size: int = 16
    device: str = "cpu"
    progress: bool = True
    overwrite: bool = False


def reconstruct_folder(config: ReconstructConfig) -> Path:
    """Writes G(E(x)) for every image of ``data`` as ``out/<stem>.png``, and ``out/grid.png``
    (the first images above their reconstructions); returns ``out``."""
    out = check_output_folder(config.out, "--out", overwrite=config.overwrite)
    model = load_encoder(config.encoder, config.device)
    images = FolderDataset(config.data, model.config.image_size, model.config.number_channels)
    stems = [file.stem for file in images.files]
    if len(set(stems)) != len(stems) or GRID_NAME in stems:
        raise DataError(f"--data {config.data}: two images share a file stem, or one is named {GRID_NAME}; "
                        "reconstructions are named by the stem")
    if config.overwrite:
        clear_png_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    shown = []
    bar = console.progress_bar(config.progress, total=len(images), unit="image", desc="reconstruct")
    for start in range(0, len(images), config.batch_size):
        console.check_interrupt()
        batch = torch.stack([images[index] for index in range(start, min(start + config.batch_size, len(images)))])
        _, rebuilt = model(batch.to(config.device))
        pixels = to_uint8(rebuilt)
        for stem, image in zip(stems[start:start + len(batch)], pixels):
            with AtomicPath(out / f"{stem}.png") as tmp:
                Image.fromarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1)).save(tmp, "PNG")
        if len(shown) < GRID_IMAGES:
            shown.append((to_uint8(batch), pixels))
        bar.update(len(batch))
    bar.close()
    originals = np.concatenate([a for a, _ in shown])[:GRID_IMAGES]
    rebuilt = np.concatenate([b for _, b in shown])[:GRID_IMAGES]
    save_grid(np.concatenate([originals, rebuilt]), out / f"{GRID_NAME}.png", columns=len(originals))
    return out
