"""The translate job: a trained CycleGAN generator over images of any size, tile by tile,
without seams (:mod:`medgan_fast.translate` is its command).

How a large image is translated (one that does not fit in one tile):

1. Statistics: the image is read band by band and shrunk by an integer factor (mean over
   f x f blocks) until its longer side is at most ``thumbnail`` pixels; the generator runs
   once on that thumbnail and every instance-norm layer records its feature statistics
   (:func:`medgan_fast.nn.record_statistics`). Batch norm (eval mode) and no norm have none
   to record.
2. Tiles: the image is translated in ``tile`` x ``tile`` tiles overlapping by ``overlap``
   pixels, every tile normalised with the thumbnail's statistics
   (:func:`medgan_fast.nn.reuse_statistics`), and the overlaps blended
   (:func:`medgan_fast.data.tiles.predict_tiled_rows`). Input and output are read and
   written a band of tiles at a time (:mod:`medgan_fast.data.slides`), so memory is bounded
   by a band, not by the image.

Why: with per-tile statistics the same tissue is normalised differently in neighbouring
tiles and every tile edge shows as a seam; blending only smears it. With one set of
statistics a tile's output depends only on the pixels it sees, and the blend hides what is
left (the context a tile lacks at its edge). An image within one tile is translated whole
with its own statistics, as the reference (pytorch-CycleGAN-and-pix2pix) does.

Pixels: read in their stored dtype, scaled to [-1, 1] (uint8 / 255, uint16 / 65535), and
written back in the same dtype. The output of a TIFF is a tiled, zlib-compressed TIFF; of a
PNG or JPEG, a PNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import console
from ..data.datasets import convert_channels, to_unit_float
from ..data.images import TIFF_SUFFIXES, list_images
from ..data.slides import SlideReader, SlideWriter
from ..data.tiles import count_tiles, predict_tiled_rows
from ..errors import DataError, Interrupted, check_integer
from ..nn import record_statistics, reuse_statistics
from ..outputs import AtomicPath, check_output_file, check_output_folder, clear_png_folder
from ..training import ConfigError
from ..training.cyclegan import build_translator
from .checkpoints import load_trained
from .generation import resolve_device

__all__ = ["DIRECTIONS", "TranslateConfig", "translate"]

DIRECTIONS = {"AtoB": "g_ab", "BtoA": "g_ba"}
OUTPUT_SUFFIXES = (".tif", ".tiff", ".png")
OUTPUT_PATTERNS = ("*.png", "*.tif")   # what a folder translation writes


@dataclass
class TranslateConfig:
    """What ``python -m medgan_fast.translate`` was asked."""

    checkpoint: Path
    direction: str
    input: Path
    out: Path
    tile: int = 256
    overlap: int = 32
    batch_size: int = 8
    thumbnail: int = 1024
    device: str = "auto"
    progress: bool = True
    overwrite: bool = False


def _check(config: TranslateConfig) -> None:
    if config.direction not in DIRECTIONS:
        raise ConfigError(f"--direction: expected AtoB or BtoA, got {config.direction!r}")
    for name, value, low in (("--tile", config.tile, 1), ("--overlap", config.overlap, 0),
                             ("--batch-size", config.batch_size, 1), ("--thumbnail", config.thumbnail, 1)):
        check_integer(name, value, low, ConfigError)
    if config.overlap >= config.tile:
        raise ConfigError(f"--overlap {config.overlap}: must be smaller than --tile ({config.tile})")


def _load(config: TranslateConfig, device: torch.device):
    model, trained, _ = load_trained(
        config.checkpoint, "CycleGAN", DIRECTIONS[config.direction],
        lambda c: build_translator(c, config.direction),
        "cannot be translated with; translate needs a CycleGAN checkpoint (checkpoints/last.pt of an arch "
        "CycleGAN run)", device)
    multiple = model.multiple
    if config.tile % multiple:
        raise ConfigError(f"--tile {config.tile}: netG {trained.arch_options.netG} needs a multiple of {multiple} "
                          f"(e.g. {max(multiple, config.tile // multiple * multiple)})")
    if config.thumbnail < multiple:
        raise ConfigError(f"--thumbnail {config.thumbnail}: netG {trained.arch_options.netG} needs at least "
                          f"{multiple}")
    return model, trained


def translate(config: TranslateConfig) -> str:
    """Translates ``config.input`` (one image, or a folder of them) into ``config.out`` (see
    the module docstring); returns a summary line."""
    started = time.perf_counter()
    _check(config)
    device = resolve_device(config.device, "--device", ConfigError)
    if config.input.is_dir():
        files = list(list_images(config.input, "--input").values())
        targets = [config.out / (path.stem + (".tif" if path.suffix.lower() in TIFF_SUFFIXES else ".png"))
                   for path in files]
        check_output_folder(config.out, "--out", overwrite=config.overwrite, pattern="*.*")
    elif config.input.is_file():
        files = [config.input]
        targets = [check_output_file(config.out, "--out", suffixes=OUTPUT_SUFFIXES, overwrite=config.overwrite)]
    else:
        raise DataError(f"--input {config.input}: no such file or folder")
    model, trained = _load(config, device)
    convert = trained.arch_options.convert_channels
    if config.input.is_dir():
        config.out.mkdir(parents=True, exist_ok=True)
        if config.overwrite:
            for pattern in OUTPUT_PATTERNS:
                clear_png_folder(config.out, pattern)
    console.note(f"translating {len(files)} image(s) {config.direction} to {config.out}")
    written, pixels = 0, 0
    try:
        for source, target in console.progress(list(zip(files, targets)), config.progress and len(files) > 1,
                                               desc="translate", unit="image"):
            pixels += _translate_file(model, source, target, config, convert, device)
            written += 1
    except KeyboardInterrupt:
        if config.input.is_dir():
            for pattern in OUTPUT_PATTERNS:
                AtomicPath.discard_leftovers(config.out, pattern)
        raise Interrupted(f"{written} of {len(files)} images translated into {config.out}") from None
    seconds = time.perf_counter() - started
    return (f"translated {written} image(s) {config.direction} ({pixels / 1e6:.1f} megapixels, tiles of "
            f"{config.tile} px overlapping by {config.overlap}) into {config.out}\nin {seconds:.1f} s "
            f"({pixels / 1e6 / max(seconds, 1e-9):.2f} megapixels per second)")


def _translate_file(model: torch.nn.Module, source: Path, target: Path, config: TranslateConfig, convert: bool,
                    device: torch.device) -> int:
    """Translates one file into `target` (written atomically); returns its pixel count."""
    with SlideReader(source) as reader:
        channels, height, width = reader.shape
        if channels != model.input_nc and not convert:
            raise DataError(f"--input {source}: has {channels} channel(s), the {config.direction} generator takes "
                            f"{model.input_nc} (the model was trained without convert_channels)")
        dtype = reader.dtype if reader.dtype in (np.uint8, np.uint16) else np.dtype(np.uint8)

        def read(y0: int, y1: int) -> torch.Tensor:
            return _to_model(reader.read_rows(y0, y1), model.input_nc).to(device)

        def predict(batch: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", torch.bfloat16, enabled=device.type == "cuda"):
                return model(batch).float()

        total = count_tiles(height, width, config.tile, config.overlap, model.multiple)
        with SlideWriter(target, (model.output_nc, height, width), dtype) as writer, torch.no_grad():
            def write(rows: np.ndarray) -> None:
                console.check_interrupt()
                writer.write_rows(_from_model(rows, dtype))

            bar = console.progress_bar(config.progress, total=total, desc=source.name, unit="tile", leave=False)
            try:
                if total == 1:
                    predict_tiled_rows(predict, read, write, (channels, height, width), config.tile, config.overlap,
                                       model.multiple, 1, bar)
                else:
                    _record_thumbnail_statistics(model, reader, config.thumbnail, read)
                    with reuse_statistics(model):
                        predict_tiled_rows(predict, read, write, (channels, height, width), config.tile,
                                           config.overlap, model.multiple, config.batch_size, bar)
            finally:
                bar.close()
    return height * width


def _to_model(stored: np.ndarray, channels: int) -> torch.Tensor:
    """(C, rows, W) stored pixels -> (channels, rows, W) float32 in [-1, 1]."""
    # Float pixels are clamped, not min-max scaled per band as to_unit_float would (bands differ).
    unit = to_unit_float(stored) if stored.dtype != np.float32 else torch.from_numpy(stored).clamp(0, 1)
    return convert_channels(unit, channels).mul(2).sub(1)   # as training converted them


def _from_model(rows: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """(K, rows, W) float in [-1, 1] -> the stored dtype, rounded."""
    scale = 65535 if dtype == np.uint16 else 255
    return np.rint((np.clip(rows, -1, 1) + 1) * (scale / 2)).astype(dtype)


def _record_thumbnail_statistics(model: torch.nn.Module, reader: SlideReader, side: int, read) -> None:
    """Runs `model` once on a thumbnail of the image (longer side at most `side`, padded to
    the generator's multiple) with its instance norms recording (see the module docstring)."""
    _, height, width = reader.shape
    factor = max(1, math.ceil(max(height, width) / side))
    bands = []
    band = factor * max(1, 256 // factor)
    for y0 in range(0, height, band):
        rows = read(y0, min(height, y0 + band))
        bands.append(F.avg_pool2d(rows[None], factor, ceil_mode=True)[0])
    thumbnail = torch.cat(bands, 1)
    multiple = model.multiple
    pad_h, pad_w = (-thumbnail.shape[1]) % multiple, (-thumbnail.shape[2]) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < thumbnail.shape[1] and pad_w < thumbnail.shape[2] else "replicate"
        thumbnail = F.pad(thumbnail[None], (0, pad_w, 0, pad_h), mode=mode)[0]
    with record_statistics(model):
        model(thumbnail[None])

