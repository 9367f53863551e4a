"""Synthetic (image, mask) training pairs from the two GAN stages (the ``augment`` command).

Stage 1, the mask GAN (a DCGAN or SNGAN trained on grey mask patches), draws masks from
latent vectors exactly as ``generate`` does (image i from ``numpy.random.default_rng((seed,
i))``); a mask is its output > ``threshold`` (default 0: the middle of its [-1, 1] range).
Stage 2, the mask -> image GAN (arch Mask2Image), paints an image for each mask, its noise
drawn per batch from ``torch.Generator().manual_seed(seed + batch start)``; so the same seed
and batch size give the same set. With ``real_areas``, a mask is kept only when it has at
least one component and every component's area lies within the range of the component areas
of the image GAN's training patches (read from its config's ``data``); masks are drawn until
``quantity`` are kept (at most 20 x quantity draws).

The output is a patch set (images uint8 (N, C, S, S), masks bool (N, 1, S, S), meta with
the image index) that ``segment train --extra`` reads, and a contact sheet of the first 32
pairs (mask beside image) as <out stem>_contact_sheet.png.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import console
from ..data.datasets import HDF5_SUFFIXES
from ..data.grid import save_grid
from ..data.patches import contact_sheet_path
from ..data.patchset import PatchSetWriter, make_meta, read_patch_set
from ..errors import DataError, Interrupted, OutputError, check_integer
from ..ops.components import component_stats, label_batch
from ..outputs import AtomicPath, check_output_file
from ..training import CheckpointError, ConfigError
from ..training.mask2image import build_mask_to_image
from .checkpoints import load_trained
from .generation import latent_vectors, load_generator, resolve_device, to_uint8

__all__ = ["AugmentConfig", "AugmentSummary", "load_image_gan", "synthesize_pairs"]

SHEET_PAIRS = 32
MAX_DRAWS_PER_PAIR = 20


@dataclass
class AugmentConfig:
    """Settings of ``augment``."""

    mask_gan: Path
    image_gan: Path
    quantity: int
    out: Path
    seed: int = 0
    batch_size: int = 64
    threshold: float = 0.0
    real_areas: bool = False
    device: str = "auto"
    progress: bool = True
    overwrite: bool = False
    command: str = ""

    def __post_init__(self):
        self.mask_gan, self.image_gan, self.out = Path(self.mask_gan), Path(self.image_gan), Path(self.out)
        check_integer("--quantity", self.quantity, 1, ConfigError)
        check_integer("--batch-size", self.batch_size, 1, ConfigError)
        check_integer("--seed", self.seed, 0, ConfigError)
        if not -1 < self.threshold < 1:
            raise ConfigError(f"--threshold: expected a number in (-1, 1), the mask GAN's output range, got "
                              f"{self.threshold!r}")


@dataclass
class AugmentSummary:
    quantity: int
    drawn: int
    out: Path
    sheet: Path
    image_size: int
    seconds: float

    def __str__(self) -> str:
        kept = f" (kept {self.quantity} of {self.drawn} masks drawn)" if self.drawn != self.quantity else ""
        return (f"wrote {self.quantity} synthetic {self.image_size}x{self.image_size} (image, mask) pairs{kept}: "
                f"{self.out} and {self.sheet}\nin {self.seconds:.1f} s")


def synthesize_pairs(config: AugmentConfig) -> AugmentSummary:
    """Writes ``config.quantity`` synthetic pairs to ``config.out`` (see the module docstring).

    Raises:
        CheckpointError: either checkpoint missing, of the wrong architecture, or the two of
            different patch sizes; names the argument and file.
        ConfigError, OutputError: a bad setting or output.
    """
    started = time.perf_counter()
    check_output_file(config.out, "--out", suffixes=HDF5_SUFFIXES, overwrite=config.overwrite)
    sheet = contact_sheet_path(config.out)
    if sheet.exists() and not config.overwrite:
        raise OutputError(f"--out {config.out}: its contact sheet {sheet} already exists; give --overwrite to "
                          "replace both")
    device = resolve_device(config.device, "--device")
    mask_gan, mask_config = _mask_gan(config.mask_gan, device)
    image_gan, image_config, _ = load_image_gan(config.image_gan, device)
    size = image_config.image_size
    if mask_config.image_size != size:
        raise CheckpointError(f"--mask-gan {config.mask_gan} makes {mask_config.image_size} px masks but --image-gan "
                              f"{config.image_gan} paints {size} px images; train both at one patch size")
    areas = _real_area_range(image_config.data) if config.real_areas else None
    console.note(f"writing {config.quantity} pairs to {config.out}" +
                 (f" (masks with component areas in {areas[0]}..{areas[1]} px)" if areas else ""))
    attrs = {"command": config.command, "mode": "synthetic", "size": size, "mask_gan": str(config.mask_gan),
             "image_gan": str(config.image_gan), "seed": config.seed, "threshold": config.threshold,
             "real_areas": "" if areas is None else f"{areas[0]}..{areas[1]}"}
    config.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        drawn, first = _write(config, mask_gan, mask_config.latent_vector, image_gan, device, size, attrs, areas)
        save_grid(first, sheet, columns=8, value_range=(0, 255))
    except KeyboardInterrupt:
        AtomicPath.discard_leftovers(config.out)
        raise Interrupted(f"nothing written: {config.out} was not created or changed")
    return AugmentSummary(config.quantity, drawn, config.out, sheet, size, time.perf_counter() - started)


def load_image_gan(path: str | Path, device: torch.device | str = "cpu"):
    """(generator, config, info) of a Mask2Image checkpoint (:func:`.checkpoints.load_trained`)."""
    return load_trained(path, "Mask2Image", "generator", build_mask_to_image,
                        "is not a mask -> image GAN; --image-gan takes checkpoints of arch Mask2Image (python -m "
                        "medgan_fast.train with arch: Mask2Image)", device)


def _mask_gan(path: Path, device: torch.device):
    try:
        generator, info = load_generator(path, device)
    except CheckpointError as error:
        raise CheckpointError(f"--mask-gan {error}") from error
    if info["config"].number_channels != 1:
        raise CheckpointError(f"--mask-gan {path}: a generator of {info['config'].number_channels}-channel images; "
                              "a mask GAN makes grey (1-channel) masks")
    return generator, info["config"]


def _real_area_range(data) -> tuple[int, int]:
    """(smallest, largest) component area of the masks of the patch set `data`."""
    if data is None or not str(data).lower().endswith(HDF5_SUFFIXES):
        raise ConfigError(f"--real-areas: the image GAN was not trained on a patch set (data {data!r}), so there are "
                          "no real masks to take areas from")
    if not Path(data).is_file():
        raise DataError(f"--real-areas: the image GAN's training patch set {data} is not here (needed for its "
                        "mask areas)")
    masks = torch.from_numpy(np.asarray(read_patch_set(data).masks)[:, 0] != 0)
    areas = _component_areas(masks)
    if not areas:
        raise DataError(f"--real-areas: the masks of {data} have no foreground")
    return min(min(a) for a in areas if a), max(max(a) for a in areas if a)


def _component_areas(masks: torch.Tensor) -> list[list[int]]:
    """Per mask of an (N, H, W) bool batch, the areas of its components (8-connected)."""
    labels, counts = label_batch(masks)
    return [component_stats(labels[i], int(counts[i])).area.tolist() for i in range(len(masks))]


def _write(config, mask_gan, latent, image_gan, device, size, attrs, areas) -> tuple[int, np.ndarray]:
    """Draws and writes the pairs; (masks drawn, the contact sheet's tiles)."""
    written, drawn, sheet = 0, 0, []
    bar = console.progress_bar(config.progress, total=config.quantity, unit="pair", desc="augment")
    with PatchSetWriter(config.out, size, attrs) as writer:
        while written < config.quantity:
            console.check_interrupt()
            if drawn >= MAX_DRAWS_PER_PAIR * config.quantity:
                raise DataError(f"--real-areas: only {written} of {drawn} masks drawn had every component within the "
                                f"real area range {areas[0]}..{areas[1]} px; lower --quantity, or leave out "
                                "--real-areas")
            z = latent_vectors(config.seed, drawn, config.batch_size, latent).to(device)
            with torch.no_grad():
                masks = mask_gan(z)[:, :1] > config.threshold
            start = drawn
            drawn += len(masks)
            if areas is not None:
                keep = [bool(a) and areas[0] <= min(a) and max(a) <= areas[1]
                        for a in _component_areas(masks[:, 0].cpu())]
                masks = masks[torch.tensor(keep, device=masks.device)]
            masks = masks[:config.quantity - written]
            if areas is None:
                drawn = start + len(masks)   # masks drawn beyond the last one needed do not count
            if not len(masks):
                continue
            noise = torch.Generator(device).manual_seed(config.seed + start)
            with torch.no_grad():
                images = to_uint8(image_gan(masks.float() * 2 - 1, noise))
            masks = masks.cpu().numpy()
            writer.append(images, masks, make_meta(len(masks), config.mask_gan.name, -1,
                                                   np.arange(written + 1, written + len(masks) + 1),
                                                   (0, 0, size, size), masks.reshape(len(masks), -1).sum(1), 0))
            if len(sheet) < SHEET_PAIRS:
                mask_tiles = masks.astype(np.uint8) * 255
                for mask, image in zip(mask_tiles, images):
                    sheet += [np.broadcast_to(mask, image.shape), image]
            written += len(masks)
            bar.update(len(masks))
    bar.close()
    return drawn, np.stack(sheet[:2 * SHEET_PAIRS])
