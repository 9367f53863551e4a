"""U-Net segmentation (arch 'UNet'): its keys, datasets, losses, step, validation and grids.

Data: ``data`` is the image folder (or ``sample``: tiles of the embedded sample with its
nuclei mask; or an (image, mask) patch set, .h5, made by ``patches --mode full``, its patches
already ``image_size`` on a side) and ``masks`` the mask folder, paired by file stem; ``split`` restricts training
to the ids of a CSV (EMPS's own train.csv), and ``val_fraction`` of those become the
validation set (a seeded draw, the same on resume). ``extra`` mixes (image, mask) patch sets
into training only, never into validation. Images are resized to ``image_size`` (the whole
image) and scaled to [-1, 1]; masks are binarised (instance maps too) unless ``num_classes``
>= 2 asks for class maps.

Losses on the logits: ``bce`` (binary cross-entropy, or cross-entropy for class maps),
``dice`` (1 - soft Dice per image, of the sigmoid or softmax), ``bce+dice`` their sum (the
default: BCE gives dense gradients early, Dice balances the small foreground of sparse
particles). Optimiser: Adam(learning_rate, betas (0.9, 0.999)), as our users' notebook; ``lr_schedule``
cosine lowers the rate along a half cosine to zero at the last epoch.

Validation: ``val_loss`` and the per-image means of ``val_dice``, ``val_iou`` and
``val_accuracy`` (:mod:`medgan_fast.metrics.segmentation`, prediction = logit > 0, i.e.
probability > 0.5); checkpoints/best.pt keeps the epoch of ``monitor`` (default val_loss min).
Sample grid ``validation``: 9 validation images with the predicted mask in red and the true
mask's contour in green.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, Dataset

from ..data.datasets import HDF5_SUFFIXES
from ..data.sample import sample_image_and_mask
from ..data.segmentation import (
    PatchPairDataset,
    SegmentationDataset,
    segmentation_pairs,
    split_pairs,
    validation_split,
)
from ..metrics.segmentation import dice, iou, pixel_accuracy
from ..models.unet import UNet
from .config import ConfigError, TrainConfig
from .options import option
from .registry import Context, Grid, Task, register

__all__ = ["UNetOptions", "UNetTask", "build_unet", "sample_tiles", "segmentation_loss"]

LOSSES = ("bce", "dice", "bce+dice")
GRID_IMAGES = 9
SAMPLE_TILE = 128   # the embedded sample (512 x 512) as 16 tiles of this side


@dataclass(frozen=True)
class UNetOptions:
    masks: str = option("", "mask folder, paired with the data folder's images by file stem (none for a .h5 "
                               "patch set)")
    split: str = option("", "CSV of the image ids to train on (one per line, e.g. EMPS's train.csv); '': all")
    val_fraction: float = option(0.1, "fraction of the training images held out for validation", valid="in [0, 1)")
    extra: str = option("", "comma list of (image, mask) patch sets (.h5) added to training only")
    segmentation_loss: str = option("bce+dice", "training loss on the logits", choices=LOSSES)
    augment: str = option("classical", "none, or classical: flips, 90-degree turns, elastic deformation",
                          choices=("none", "classical"))
    num_classes: int = option(1, "1: binary masks (instance maps binarised); >= 2: class maps", at_least=1)
    depth: int = option(4, "U-Net down-sampling levels (image_size must be a multiple of 2**depth)", at_least=1)
    width: int = option(32, "U-Net channels of the first level (doubled at each level)", at_least=1)
    lr_schedule: str = option("constant", "constant, or cosine: the learning rate falls along a half cosine "
                              "to zero over num_epochs (stepped each epoch)", choices=("constant", "cosine"))
    mask_threshold: float | None = option(None, "masks in a lossy format (JPEG): foreground is value >= it",
                                          valid="a number or null")


def build_unet(config: TrainConfig) -> UNet:
    options = config.arch_options
    return UNet(config.number_channels, options.num_classes, options.depth, options.width)


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, kind: str) -> torch.Tensor:
    """`kind` (bce, dice, bce+dice) of (N, K, H, W) logits against a (N, 1, H, W) 0/1 mask
    (K = 1) or an (N, H, W) class map (K >= 2); the mean over the batch."""
    logits = logits.float()
    if logits.shape[1] == 1:
        mask = mask.float()
        cross_entropy = F.binary_cross_entropy_with_logits(logits, mask)
        probability, target = torch.sigmoid(logits), mask
    else:
        cross_entropy = F.cross_entropy(logits, mask)
        probability = torch.softmax(logits, 1)
        target = F.one_hot(mask, logits.shape[1]).permute(0, 3, 1, 2).to(probability.dtype)
    if kind == "bce":
        return cross_entropy
    dims = (1, 2, 3)
    # +1 in both terms: an image with empty masks scores Dice 1, not 0/0.
    soft_dice = (2 * (probability * target).sum(dims) + 1) / (probability.sum(dims) + target.sum(dims) + 1)
    dice_loss = 1 - soft_dice.mean()
    return dice_loss if kind == "dice" else cross_entropy + dice_loss


def _prediction(logits: torch.Tensor) -> torch.Tensor:
    """Hard labels: (N, H, W) bool for one logit, class ids for several."""
    return logits[:, 0] > 0 if logits.shape[1] == 1 else logits.argmax(1)


def _target(mask: torch.Tensor) -> torch.Tensor:
    return mask[:, 0] > 0.5 if mask.ndim == 4 else mask


@register("UNet", options=UNetOptions)
class UNetTask(Task):
    """U-Net segmentation (see the module docstring)."""

    resume_fixed = ("image_size", "number_channels", "masks", "split", "val_fraction", "extra", "num_classes",
                    "depth", "width", "augment", "mask_threshold", "lr_schedule")
    progress_metrics = ("loss", "dice")
    validation_metrics = ("val_loss", "val_dice", "val_iou", "val_accuracy")
    default_monitor = "val_loss min"

    @classmethod
    def datasets(cls, config: TrainConfig) -> tuple[Dataset, Dataset | None]:
        options = config.arch_options
        common = dict(image_size=config.image_size, channels=config.number_channels, seed=config.seed)
        extra = [PatchPairDataset(path.strip(), augment=options.augment, **common)
                 for path in options.extra.split(",") if path.strip()]
        if str(config.data).lower().endswith(HDF5_SUFFIXES):
            if options.masks or options.split:
                raise ConfigError(f"data {config.data}: a patch set holds its own masks; masks and split are for "
                                  "image folders")
            training, validation = split_pairs(PatchPairDataset(config.data, augment=options.augment, **common),
                                               options.val_fraction, config.seed, config.max_images)
            return (_Mixed([training, *extra]) if extra else training), validation
        if config.is_sample:
            images, masks = sample_tiles(config.number_channels)
            pairs = list(zip(images, masks))
        else:
            if not options.masks:
                raise ConfigError("masks: arch UNet needs masks, the folder of masks paired with the images of data "
                                  f"({config.data}) by file stem")
            pairs = segmentation_pairs(config.data, options.masks, options.split or None)
        train_pairs, val_pairs = validation_split(pairs, options.val_fraction, config.seed)
        if config.max_images:
            train_pairs = train_pairs[:config.max_images]
        make = SegmentationDataset.from_arrays if config.is_sample else SegmentationDataset
        training = make(train_pairs, num_classes=options.num_classes, augment=options.augment,
                        threshold=options.mask_threshold, progress=config.progress, **common)
        if extra:
            training = _Mixed([training, *extra])
        validation = make(val_pairs, num_classes=options.num_classes, augment="none",
                          threshold=options.mask_threshold, progress=config.progress, **common) if val_pairs else None
        return training, validation

    def __init__(self, context: Context):
        super().__init__(context)
        config, options = self.config, self.options
        if config.image_size % 2**options.depth:
            raise ConfigError(f"image_size {config.image_size}: a U-Net of depth {options.depth} needs a multiple of "
                              f"{2**options.depth}")
        self.models = {"unet": context.place(build_unet(config))}
        self.unet = context.parallel(self.models["unet"])
        fused = context.device.type == "cuda"
        self.optimizers = {"unet": torch.optim.Adam(self.models["unet"].parameters(), config.learning_rate,
                                                    fused=fused)}
        if options.lr_schedule == "cosine":
            epochs = config.num_epochs
            self.schedulers = {"unet": torch.optim.lr_scheduler.LambdaLR(
                self.optimizers["unet"], lambda epoch: 0.5 * (1 + math.cos(math.pi * min(epoch, epochs) / epochs)))}
        self.notes.append(f"U-Net depth {options.depth}, width {options.width}, {options.num_classes} output(s); "
                          f"Adam lr {config.learning_rate:g} ({options.lr_schedule}); loss {options.segmentation_loss}; "
                          f"augment {options.augment}")
        self._grid_batch: dict[str, torch.Tensor] | None = None

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        batch = self.context.to_device(batch)
        with self.context.autocast():
            logits = self.unet(batch["image"])
            loss = segmentation_loss(logits, batch["mask"], self.options.segmentation_loss)
        optimizer = self.optimizers["unet"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        num_classes = None if self.options.num_classes == 1 else self.options.num_classes
        with torch.no_grad():
            score = dice(_prediction(logits.detach()), _target(batch["mask"]), num_classes=num_classes)
        return {"loss": loss.detach(), "dice": score}

    def validate(self, batches: Iterable[Any]) -> dict[str, float]:
        unet = self.models["unet"]
        num_classes = None if self.options.num_classes == 1 else self.options.num_classes
        losses, scores = [], {"val_dice": [], "val_iou": [], "val_accuracy": []}
        for batch in batches:
            batch = self.context.to_device(batch)
            if self._grid_batch is None:
                self._grid_batch = {key: value[:GRID_IMAGES].cpu() for key, value in batch.items()}
            with self.context.autocast():
                logits = unet(batch["image"]).float()
            losses.append(segmentation_loss(logits, batch["mask"], self.options.segmentation_loss) * len(logits))
            prediction, target = _prediction(logits), _target(batch["mask"])
            for name, metric in (("val_dice", dice), ("val_iou", iou), ("val_accuracy", pixel_accuracy)):
                scores[name].append(metric(prediction, target, reduction="none", num_classes=num_classes))
        count = sum(len(values) for values in scores["val_dice"])
        return {"val_loss": float(sum(losses)) / count,
                **{name: float(torch.cat(values).mean()) for name, values in scores.items()}}

    @torch.no_grad()
    def sample(self) -> dict[str, Grid]:
        """Validation images (the first 9) with the predicted mask in red, the true contour in
        green; before the first validation (no validation set), nothing."""
        if self._grid_batch is None:
            return {}
        unet = self.models["unet"]
        mode = unet.training
        unet.eval()
        try:
            batch = self.context.to_device(self._grid_batch)
            with self.context.autocast():
                logits = unet(batch["image"]).float()
        finally:
            unet.train(mode)
        return {"validation": Grid(overlay(batch["image"], _prediction(logits), _target(batch["mask"])).cpu(),
                                   value_range=(0.0, 1.0), columns=3)}


def overlay(images: torch.Tensor, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [0, 1]: the images ([-1, 1], grey or RGB) with the predicted
    foreground tinted red and the true foreground's contour drawn in green."""
    rgb = images.float().add(1).div(2).clamp(0, 1)
    rgb = rgb.expand(-1, 3, -1, -1) if rgb.shape[1] == 1 else rgb
    predicted = (prediction != 0)[:, None].float()
    red = torch.tensor([1.0, 0.0, 0.0], device=rgb.device).view(1, 3, 1, 1)
    rgb = rgb * (1 - 0.4 * predicted) + red * 0.4 * predicted
    truth = (target != 0)[:, None].float()
    inner = -F.max_pool2d(-truth, 3, stride=1, padding=1)   # erosion by a 3x3 square
    contour = (truth - inner) > 0
    green = torch.tensor([0.0, 1.0, 0.0], device=rgb.device).view(1, 3, 1, 1)
    return torch.where(contour, green.expand_as(rgb), rgb)


def sample_tiles(channels: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The embedded sample and its nuclei mask cut into 16 tiles of 128 px."""
    image, mask = sample_image_and_mask()
    if channels == 1:
        image = image.mean(0, keepdims=True).round().astype(np.uint8)
    side = image.shape[1] // SAMPLE_TILE
    images, masks = [], []
    for row in range(side):
        for column in range(side):
            window = np.s_[row * SAMPLE_TILE:(row + 1) * SAMPLE_TILE, column * SAMPLE_TILE:(column + 1) * SAMPLE_TILE]
            images.append(image[(slice(None), *window)])
            masks.append(mask[window])
    return images, masks


class _Mixed(ConcatDataset):
    """The training set and the extra patch sets as one set; items by (epoch, index) key."""

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        dataset = np.searchsorted(self.cumulative_sizes, index, side="right")
        start = self.cumulative_sizes[dataset - 1] if dataset else 0
        return self.datasets[dataset][(epoch, index - start)]

    def __repr__(self) -> str:
        return " + ".join(repr(dataset) for dataset in self.datasets)
