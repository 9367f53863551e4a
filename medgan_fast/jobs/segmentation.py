"""The segment jobs: score a trained U-Net on a test set, and write its masks for new images.

Both load a checkpoint of arch UNet (checkpoints/best.pt or last.pt of a ``segment train``
run) and read images as training did: the whole image resized to the run's image_size,
scaled to [-1, 1].

**Scores** (:func:`evaluate_segmentation`): IoU, Dice and pixel accuracy of each test image
at the training size (prediction: probability > threshold, default 0.5), then mean and sd
over images. Empty-mask rule: an image whose true and predicted masks are both empty scores 1
(every pixel right); with ``ignore_empty`` (MONAI's rule) images whose true mask is empty are
left out instead.

**Masks** (:func:`predict_masks`): one PNG per image, the image's own size, 0/255 (binary) or
class ids. By default the image is resized to the training size and the prediction resized
back (the scale the model learned); with ``tile`` the image is segmented at its own
resolution in overlapping tiles blended together (:mod:`medgan_fast.data.tiles`), for images
much larger than the training images whose objects are at the training scale.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import console
from .._version import __version__
from ..data.images import list_images, read_image
from ..data.segmentation import SegmentationDataset, prepare_image, segmentation_pairs, split_ids, unit_image
from ..data.tiles import predict_tiled
from ..errors import Interrupted
from ..metrics.segmentation import dice, iou, pixel_accuracy
from ..models.unet import UNet
from ..outputs import AtomicPath, check_output_file, check_output_folder, clear_png_folder, write_json
from ..training import ConfigError, TrainConfig
from ..training.segmentation import build_unet
from .checkpoints import load_trained
from .generation import resolve_device

__all__ = ["PredictConfig", "ScoreConfig", "Scores", "evaluate_segmentation", "load_segmenter", "predict_masks"]

METRICS = {"iou": iou, "dice": dice, "accuracy": pixel_accuracy}


def load_segmenter(path: str | Path, device: torch.device | str = "cpu") -> tuple[UNet, TrainConfig, dict[str, Any]]:
    """The U-Net of a checkpoint, in eval mode on `device`, its training config, and
    {"step", "epoch", "best"}.

    Raises:
        CheckpointError: missing or unreadable file, or a checkpoint of another architecture.
    """
    return load_trained(path, "UNet", "unet", build_unet, "is not a segmentation model; segment takes checkpoints "
                        "of arch UNet (made by python -m medgan_fast.segment train)", device)


# ---------------------------------------------------------------------------------------
# Scores

@dataclass
class ScoreConfig:
    """Settings of ``segment evaluate``."""

    checkpoint: Path
    images: Path
    masks: Path
    split: Path | None = None
    out: Path | None = None
    threshold: float = 0.5
    ignore_empty: bool = False
    batch_size: int = 16
    device: str = "auto"
    progress: bool = True
    overwrite: bool = False
    command: str = ""


@dataclass
class Scores:
    """Per-image IoU, Dice and accuracy of a test set, and their summary."""

    per_image: dict[str, dict[str, float]]     # metric -> {image stem: value}
    left_out: list[str] = field(default_factory=list)   # empty true masks, with ignore_empty
    settings: dict[str, Any] = field(default_factory=dict)
    out: Path | None = None
    seconds: float = 0.0

    def summary(self, metric: str) -> dict[str, float]:
        values = np.array(list(self.per_image[metric].values()), dtype=np.float64)
        return {"mean": float(values.mean()) if len(values) else math.nan,
                "sd": float(values.std(ddof=1)) if len(values) > 1 else 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {"package_version": __version__, **{metric: {**self.summary(metric), "per_image": values}
                                                   for metric, values in self.per_image.items()},
                "images": len(next(iter(self.per_image.values()))), "left_out_empty": self.left_out,
                "settings": self.settings, "seconds": round(self.seconds, 3)}

    def __str__(self) -> str:
        count = len(next(iter(self.per_image.values())))
        lines = [f"{count} test images" + (f" ({len(self.left_out)} with empty true masks left out)"
                                           if self.left_out else ""),
                 f"{'metric':<10}{'mean':>8}{'sd':>8}"]
        lines += [f"{metric:<10}{self.summary(metric)['mean']:>8.4f}{self.summary(metric)['sd']:>8.4f}"
                  for metric in self.per_image]
        if self.out is not None:
            lines.append(f"wrote {self.out}")
        lines.append(f"in {self.seconds:.1f} s")
        return "\n".join(lines)


def evaluate_segmentation(config: ScoreConfig) -> Scores:
    """Scores the checkpoint's U-Net on the (image, mask) pairs of `config` (see the module
    docstring) and writes the JSON when ``out`` is set.

    Raises:
        DataError, CheckpointError, OutputError: naming the file or argument.
    """
    started = time.perf_counter()
    if config.out is not None:
        check_output_file(config.out, "--out", suffixes=(".json",), overwrite=config.overwrite)
    device = resolve_device(config.device, "--device", ConfigError)
    model, trained, _ = load_segmenter(config.checkpoint, device)
    pairs = segmentation_pairs(config.images, config.masks, config.split)
    options = trained.arch_options
    dataset = SegmentationDataset(pairs, image_size=trained.image_size, channels=trained.number_channels,
                                  num_classes=options.num_classes, threshold=options.mask_threshold,
                                  progress=config.progress)
    num_classes = None if options.num_classes == 1 else options.num_classes
    stems = [image.stem for image, _ in pairs]
    per_image: dict[str, dict[str, float]] = {metric: {} for metric in METRICS}
    left_out = []
    bar = console.progress_bar(config.progress, total=len(dataset), desc="segment", unit="image", leave=False)
    for start in range(0, len(dataset), config.batch_size):
        console.check_interrupt()
        items = [dataset[index] for index in range(start, min(start + config.batch_size, len(dataset)))]
        image = torch.stack([item["image"] for item in items]).to(device)
        target = torch.stack([item["mask"] for item in items]).to(device)
        with torch.no_grad():
            logits = model(image).float()
        if num_classes is None:
            prediction, target = torch.sigmoid(logits[:, 0]) > config.threshold, target[:, 0] > 0.5
        else:
            prediction = logits.argmax(1)
        scores = {metric: function(prediction, target, reduction="none", num_classes=num_classes)
                  for metric, function in METRICS.items()}
        for offset, stem in enumerate(stems[start:start + len(items)]):
            if config.ignore_empty and not bool((target[offset] != 0).any()):
                left_out.append(stem)
                continue
            for metric in METRICS:
                per_image[metric][stem] = float(scores[metric][offset])
        bar.update(len(items))
    bar.close()
    result = Scores(per_image, left_out, out=config.out, settings={
        "command": config.command, "checkpoint": str(config.checkpoint), "images": str(config.images),
        "masks": str(config.masks), "split": str(config.split) if config.split else None,
        "image_size": trained.image_size, "threshold": config.threshold, "ignore_empty": config.ignore_empty,
        "empty_mask_rule": "left out" if config.ignore_empty else "both empty scores 1"})
    if not per_image["dice"]:
        raise ConfigError("--ignore-empty: every test image has an empty true mask; nothing left to score")
    result.seconds = time.perf_counter() - started
    if config.out is not None:
        write_json(result.to_dict(), config.out)
    return result


# ---------------------------------------------------------------------------------------
# Masks

@dataclass
class PredictConfig:
    """Settings of ``segment predict``."""

    checkpoint: Path
    images: Path
    out: Path
    split: Path | None = None          # only the image ids of this CSV
    threshold: float = 0.5
    tile: int | None = None
    overlap: int = 32
    batch_size: int = 8
    device: str = "auto"
    progress: bool = True
    overwrite: bool = False


def predict_masks(config: PredictConfig) -> str:
    """Writes a mask PNG per image of ``config.images`` (those of ``split``, when given) into
    ``config.out`` (see the module docstring); returns a summary line."""
    started = time.perf_counter()
    device = resolve_device(config.device, "--device", ConfigError)
    check_output_folder(config.out, "--out", overwrite=config.overwrite)
    model, trained, _ = load_segmenter(config.checkpoint, device)
    files = list_images(config.images, "--images")
    if config.split is not None:
        files = {stem: files[stem] for stem in split_ids(config.split, files, config.images)}
    config.out.mkdir(parents=True, exist_ok=True)
    if config.overwrite:
        clear_png_folder(config.out)
    console.note(f"writing {len(files)} masks to {config.out}/")
    written = 0
    try:
        for stem, path in console.progress(list(files.items()), config.progress, desc="segment", unit="image"):
            console.check_interrupt()
            logits = _logits(model, read_image(path), trained, config, device)
            if logits.shape[0] == 1:
                mask = (torch.sigmoid(logits[0]) > config.threshold).to(torch.uint8) * 255
            else:
                mask = logits.argmax(0).to(torch.uint8)
            with AtomicPath(config.out / f"{stem}.png") as tmp:
                Image.fromarray(mask.cpu().numpy()).save(tmp, format="PNG")
            written += 1
    except KeyboardInterrupt:
        AtomicPath.discard_leftovers(config.out, "*.png")
        raise Interrupted(f"{written} of {len(files)} masks written to {config.out}") from None
    how = f"tiles of {config.tile} px" if config.tile else f"resized to {trained.image_size} px and back"
    return f"wrote {written} masks ({how}) to {config.out}\nin {time.perf_counter() - started:.1f} s"


@torch.no_grad()
def _logits(model: UNet, stored: np.ndarray, trained: TrainConfig, config: PredictConfig,
            device: torch.device) -> torch.Tensor:
    """(K, H, W) logits of an image as read: in tiles at its own size, or resized to the
    training size exactly as training read images (prepare_image) and resized back."""
    height, width = stored.shape[-2:]
    if config.tile:
        image = unit_image(stored, trained.number_channels).mul(2).sub(1).to(device)
        return predict_tiled(model, image, config.tile, config.overlap, multiple=model.multiple,
                             batch_size=config.batch_size)
    small = prepare_image(stored, trained.image_size, trained.number_channels).to(device)
    return F.interpolate(model(small[None]).float(), size=(height, width), mode="bilinear", align_corners=False)[0]
