"""The augmentation experiment (``python -m medgan_fast.experiment augmentation``): does GAN
augmentation help segmentation?

A U-Net is trained in up to four arms, each on a nested subset of the real training images
(``fractions`` of them, drawn once per seed: the subsets of one seed are prefixes of one
permutation, so 10% is inside 25%), for every seed of ``seeds``, and scored on the untouched
test split:

- ``real``: the subset alone; ``classical``: with flips, 90-degree turns and elastic
  deformation;
- ``gan``: the subset plus synthetic pairs; ``gan+classical``: both.

The synthetic pairs of a cell come from two GANs trained on that cell's subset alone (no
information from images the cell does not have): a mask GAN (DCGAN or SNGAN, section
``mask_gan``) on its masks and a Mask2Image GAN (section ``image_gan``) on its (image, mask)
pairs, then ``augment`` draws ``synthetic_ratio`` x (subset size) pairs. Both GANs see the
U-Net's own items (whole images at ``image_size``, or tiles: :mod:`.experiment_data`), not
component patches: the pairs then have the scale and framing of what the U-Net segments, so
``--extra`` adds examples of the task itself rather than crops at another magnification.

Training length is given in optimiser steps (``steps`` in each section), converted to epochs
for the cell's training-set size, so that a small subset is not also trained for fewer
steps, and the arms with synthetic pairs take no more steps than those without.

Everything a cell trains goes to ``work``/f<fraction>_s<seed>/ (runs, logs, patch sets,
test scores). A stopped experiment continues where it stopped when run again with the same
config: finished stages are kept, an interrupted training resumes from its last checkpoint.
Cells are independent: ``shard`` (K, N) runs every N-th cell, so N processes (an array job,
one per GPU) share the work folder, and ``merge`` (or any run that finds every cell done)
writes the report (:mod:`.experiment_report`) to ``out``; its time is the cells' own.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import console
from ..errors import Interrupted, check_integer
from ..outputs import AtomicPath, write_json
from ..training import ConfigError
from .augmentation import AugmentConfig, synthesize_pairs
from .experiment_data import MIN_SUBSET, Source, prepare_source, write_real_sets
from .experiment_report import write_report
from .stages import claim_work, log_to, read_settings, section_overrides, train_stage, training_count
from .segmentation import ScoreConfig, evaluate_segmentation

__all__ = ["ARMS", "ExperimentConfig", "load_experiment", "run_experiment"]

CELL_RECORD = "cell.json"   # a finished cell's scores, in its folder

# arm -> (the U-Net's augment, whether it trains with the synthetic pairs)
ARMS = {"real": ("none", False), "classical": ("classical", False), "gan": ("none", True),
        "gan+classical": ("classical", True)}

# Each section's train keys (any key of `python -m medgan_fast.train` for its arch), plus
# `steps`; a config's section is merged over these.
UNET_DEFAULTS = {"steps": 600, "batch_size": 8, "learning_rate": 0.001, "depth": 3, "width": 16,
                 "segmentation_loss": "bce+dice", "val_fraction": 0.1, "monitor": "val_dice max"}
MASK_GAN_DEFAULTS = {"arch": "DCGAN", "steps": 600, "batch_size": 16, "gen_feature_maps": 16,
                     "dis_feature_maps": 16, "latent_vector": 64, "flip": True}
IMAGE_GAN_DEFAULTS = {"steps": 400, "batch_size": 8, "generator": "unet", "gen_feature_maps": 16,
                      "dis_feature_maps": 16, "gen_depth": 4, "val_fraction": 0.1}
SECTION_ARCHS = {"unet": "UNet", "image_gan": "Mask2Image"}   # mask_gan: its own arch key
SECTIONS = {"unet": UNET_DEFAULTS, "mask_gan": MASK_GAN_DEFAULTS, "image_gan": IMAGE_GAN_DEFAULTS}
# What a section may not set: the experiment decides it per cell (and the U-Net's augment per
# arm); the mask GAN's arch (DCGAN or SNGAN) is the section's own.
CELL_KEYS = ("data", "path", "masks", "split", "extra", "out", "run", "seed", "num_epochs", "resume", "image_size",
             "number_channels", "progress", "n_gpu")
DECIDED_KEYS = {"unet": (*CELL_KEYS, "arch", "augment"), "mask_gan": CELL_KEYS, "image_gan": (*CELL_KEYS, "arch")}


@dataclass
class ExperimentConfig:
    """The keys of an augmentation experiment's YAML file (see the module docstring)."""

    images: str = ""                  # image folder
    masks: str = ""                   # mask folder, paired by file stem
    train_split: str = ""             # CSV of the ids the subsets are drawn from ('' : every image not in test)
    test_split: str = ""              # CSV of the test ids, never trained on
    out: str = "results/augmentation"
    work: str = "runs/augmentation"
    image_size: int = 64
    number_channels: int = 1
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 0.5, 1.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    tile: int = 0                     # > 0: train on tiles of this side (then image_size = tile)
    scale: float = 1.0                # images rescaled by it before tiling
    synthetic_ratio: float = 1.0      # synthetic pairs per real item of the subset
    threshold: float = 0.0            # a generated mask is the mask GAN's output > it
    real_areas: bool = False          # keep only masks whose components lie in the real area range
    device: str = "auto"
    unet: dict[str, Any] = field(default_factory=dict)
    mask_gan: dict[str, Any] = field(default_factory=dict)
    image_gan: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("images", "masks", "test_split"):
            if not getattr(self, name):
                raise ConfigError(f"{name}: required (the {'test CSV' if name == 'test_split' else name + ' folder'})")
        check_integer("image_size", self.image_size, 16, ConfigError)
        if self.number_channels not in (1, 3):
            raise ConfigError(f"number_channels: expected 1 or 3, got {self.number_channels!r}")
        check_integer("tile", self.tile, 0, ConfigError)
        if self.tile and self.tile != self.image_size:
            raise ConfigError(f"tile {self.tile}: the U-Net trains on the tiles as they are; set image_size to it too "
                              f"(image_size {self.image_size})")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not 0 < self.scale <= 4:
            raise ConfigError(f"scale: expected a number in (0, 4], got {self.scale!r}")
        if self.scale != 1 and not self.tile:
            raise ConfigError("scale: rescales images before tiling; set tile too (without it images are resized "
                              "whole to image_size)")
        self.fractions = _list("fractions", self.fractions)
        if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"fractions: expected numbers in (0, 1], got {self.fractions!r}")
        self.fractions = sorted(float(f) for f in set(self.fractions))
        self.seeds = _list("seeds", self.seeds)
        for seed in self.seeds:
            check_integer("seeds", seed, 0, ConfigError)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: listed twice in {self.seeds!r}")
        self.arms = _list("arms", self.arms)
        unknown = [arm for arm in self.arms if arm not in ARMS]
        if unknown or len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"arms: expected distinct arms of {', '.join(ARMS)}, got {self.arms!r}")
        self.arms = [arm for arm in ARMS if arm in self.arms]
        if not isinstance(self.synthetic_ratio, (int, float)) or self.synthetic_ratio <= 0:
            raise ConfigError(f"synthetic_ratio: expected a number > 0, got {self.synthetic_ratio!r}")
        for name, defaults in SECTIONS.items():
            section = getattr(self, name)
            if not isinstance(section, dict):
                raise ConfigError(f"{name}: expected a mapping of train keys, got {section!r}")
            decided = [key for key in section if key in DECIDED_KEYS[name]]
            if decided:
                raise ConfigError(f"{name}.{decided[0]}: set by the experiment for each cell (give the "
                                  f"experiment's own keys: images, masks, image_size, seeds, ...)")
            setattr(self, name, {**defaults, **section})
            check_integer(f"{name}.steps", getattr(self, name)["steps"], 1, ConfigError)
        if str(self.mask_gan["arch"]).upper() not in ("DCGAN", "SNGAN"):
            raise ConfigError(f"mask_gan.arch: expected DCGAN or SNGAN, got {self.mask_gan['arch']!r}")
        if self.unet["val_fraction"] <= 0:
            raise ConfigError("unet.val_fraction: expected > 0 (the best checkpoint is chosen on it)")

    @property
    def uses_gan(self) -> bool:
        return any(ARMS[arm][1] for arm in self.arms)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _list(name: str, value: Any) -> list:
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name}: expected a non-empty list, got {value!r}")
    return list(value)


def load_experiment(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The experiment of a YAML file with ``key=value`` overrides (``unet.steps=100`` sets a
    section's key; values read as YAML). Unknown keys get the closest valid one.

    Raises:
        ConfigError: naming the key or value.
    """
    config = read_settings(path, overrides, ExperimentConfig, tuple(SECTIONS), "the augmentation experiment")
    for name in SECTIONS:   # the section keys are train keys: checked now, not hours into the run
        _section_overrides(config, name, 0, 1)
    return config


# ---------------------------------------------------------------------------------------
# Cells

@dataclass
class Cell:
    """One (fraction, seed): its subset of training ids and its folder."""

    fraction: float
    seed: int
    ids: list[str]
    folder: Path

    @property
    def label(self) -> str:
        return f"fraction {self.fraction:g}, seed {self.seed}"


def plan_cells(config: ExperimentConfig, train_ids: list[str]) -> list[Cell]:
    """Every (fraction, seed) cell; the subsets of a seed are nested (prefixes of one
    permutation of `train_ids`) and keep the ids' own order."""
    cells = []
    for seed in config.seeds:
        order = np.random.default_rng(seed).permutation(len(train_ids))
        for fraction in config.fractions:
            count = max(MIN_SUBSET, int(round(fraction * len(train_ids))))
            chosen = sorted(order[:count].tolist())
            cells.append(Cell(fraction, seed, [train_ids[i] for i in chosen],
                              Path(config.work) / f"f{fraction:g}_s{seed}"))
    return cells


# ---------------------------------------------------------------------------------------
# Running

def run_experiment(config: ExperimentConfig, progress: bool = True, overwrite: bool = False, command: str = "",
                   shard: tuple[int, int] | None = None, merge: bool = False) -> dict[str, Any]:
    """Runs (or continues) the cells and, once every cell is done, writes the report; returns
    the results record, or with cells still to do {"complete": False, "done", "cells", "ran"}.

    Args:
        shard: (K, N): run only every N-th cell, starting with the K-th (1-based), e.g. one
            array job of a cluster scheduler or one process per GPU; shards share ``work``.
        merge: run no cell; write the report from the finished cells of all shards.

    Raises:
        ConfigError, DataError, OutputError: naming the key, file or folder; ``merge`` with
            cells not done.
        Interrupted: Ctrl-C; the finished stages stay in ``work``.
    """
    out, work = Path(config.out), Path(config.work)
    claim_work(config.to_dict(), out, work, overwrite)
    source = prepare_source(config, work)
    cells = plan_cells(config, source.train_ids)
    mine = [] if merge else cells if shard is None else cells[shard[0] - 1::shard[1]]
    mine = [cell for cell in mine if not (cell.folder / CELL_RECORD).is_file()]
    stages = len(mine) * (3 * config.uses_gan + 2 * len(config.arms))
    if mine:
        console.note(f"{len(mine)} of {len(cells)} cells ({len(config.fractions)} fractions x {len(config.seeds)} "
                     f"seeds) x {len(config.arms)} arms, {stages} stages; runs in {work}/, report in {out}/")
    bar = console.progress_bar(progress and bool(mine), total=stages, desc="experiment", unit="stage")
    try:
        for cell in mine:
            cell.folder.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            record = _run_cell(config, source, cell, bar, progress)
            write_json({**record, "seconds": round(time.perf_counter() - started, 1)}, cell.folder / CELL_RECORD)
    except KeyboardInterrupt:
        raise Interrupted(f"finished stages are kept in {work}/; run the same command again to continue (an "
                          "interrupted training resumes from its last checkpoint)") from None
    finally:
        bar.close()
    missing = [cell for cell in cells if not (cell.folder / CELL_RECORD).is_file()]
    if missing:
        if merge:
            raise ConfigError(f"--merge: {len(missing)} of {len(cells)} cells are not done ("
                              + "; ".join(cell.label for cell in missing) + "); run their shards first")
        return {"complete": False, "done": len(cells) - len(missing), "cells": len(cells), "ran": len(mine)}
    records = [json.loads((cell.folder / CELL_RECORD).read_text()) for cell in cells]
    return write_report(config, records, out, seconds=sum(record.get("seconds", 0.0) for record in records),
                        command=command, train_images=len(source.train_ids), test_images=source.test_items)


def _run_cell(config: ExperimentConfig, source: Source, cell: Cell, bar, progress: bool) -> dict[str, Any]:
    """The GAN stages (when an arm uses them), then each arm's U-Net and its test scores."""
    items = source.items(cell.ids)
    split = cell.folder / "subset.csv"
    if not split.is_file():
        with AtomicPath(split) as tmp:
            tmp.write_text("id\n" + "".join(f"{stem}\n" for stem in items))
    synthetic, synthetic_count = None, 0
    if config.uses_gan:
        synthetic, synthetic_count = _synthetic_pairs(config, source, cell, items, split, bar, progress)
    record = {"fraction": cell.fraction, "seed": cell.seed, "subset": len(cell.ids), "items": len(items),
              "synthetic": synthetic_count, "arms": {}}
    real_train = training_count(len(items), config.unet["val_fraction"])
    for arm in config.arms:
        augment, with_gan = ARMS[arm]
        run = "unet_" + arm.replace("+", "_")
        extra = synthetic if with_gan else None
        count = real_train + (synthetic_count if with_gan else 0)
        overrides = [*_section_overrides(config, "unet", cell.seed, count),
                     f"data={source.images}", f"masks={source.masks}", f"split={split}",
                     f"augment={augment}", *([f"extra={extra}"] if extra else [])]
        _stage(bar, f"{cell.label}: U-Net {arm}")
        trained = train_stage(cell.folder, run, overrides, progress)
        _stage(bar, f"{cell.label}: U-Net {arm} on the test split")
        scores = _test_scores(config, source, cell, arm, cell.folder / run, progress)
        record["arms"][arm] = {"train_seconds": trained["seconds"], "train_steps": trained["steps"], **scores}
    return record


def _stage(bar, what: str) -> None:
    console.check_interrupt()
    bar.set_postfix_str(what, refresh=False)
    bar.update(0)
    if not console.show_progress():
        console.note(what)


def _synthetic_pairs(config: ExperimentConfig, source: Source, cell: Cell, items: list[str], split: Path, bar,
                     progress: bool) -> tuple[Path, int]:
    """The cell's synthetic patch set: its real pairs at image_size as patch sets, the two
    GANs trained on them, and ``augment``'s pairs; each step kept once done."""
    pairs, masks = cell.folder / "pairs.h5", cell.folder / "masks.h5"
    if not (pairs.is_file() and masks.is_file()):
        write_real_sets(source, split, config.image_size, config.number_channels, cell.label, pairs, masks)
    # The mask GAN trains on every mask; Mask2Image holds out its val_fraction.
    gans = (("mask_gan", masks, len(items), "mask GAN"),
            ("image_gan", pairs, training_count(len(items), config.image_gan["val_fraction"]), "Mask2Image GAN"))
    for name, data, count, what in gans:
        overrides = [*_section_overrides(config, name, cell.seed, count), f"data={data}"]
        _stage(bar, f"{cell.label}: {what}")
        train_stage(cell.folder, name, overrides, progress)
    out = cell.folder / "synthetic.h5"
    quantity = max(1, int(round(config.synthetic_ratio * len(items))))
    _stage(bar, f"{cell.label}: {quantity} synthetic pairs")
    if not out.is_file():
        with log_to(cell.folder / "augment.log"):
            synthesize_pairs(AugmentConfig(
                mask_gan=cell.folder / "mask_gan" / "checkpoints" / "last.pt",
                image_gan=cell.folder / "image_gan" / "checkpoints" / "last.pt", quantity=quantity, out=out,
                seed=cell.seed, threshold=config.threshold, real_areas=config.real_areas, device=config.device,
                progress=progress, command="python -m medgan_fast.experiment augmentation"))
    return out, quantity


def _section_overrides(config: ExperimentConfig, name: str, seed: int, train_count: int) -> list[str]:
    """A section's overrides for one run of a cell (see :func:`.stages.section_overrides`)."""
    section = getattr(config, name)
    return section_overrides(name, section, train_count, {
        "image_size": config.image_size, "number_channels": config.number_channels, "seed": seed,
        "n_gpu": int(config.device != "cpu" and torch.cuda.is_available()),
        "arch": SECTION_ARCHS.get(name, section.get("arch"))})


def _test_scores(config: ExperimentConfig, source: Source, cell: Cell, arm: str, run_dir: Path,
                 progress: bool) -> dict[str, Any]:
    """The arm's test scores (IoU, Dice, accuracy per test image) of its best checkpoint."""
    path = cell.folder / f"test_{arm.replace('+', '_')}.json"
    if not path.is_file():
        evaluate_segmentation(ScoreConfig(
            checkpoint=run_dir / "checkpoints" / "best.pt", images=source.images, masks=source.masks,
            split=source.test_split, out=path, device=config.device, progress=progress,
            command="python -m medgan_fast.experiment augmentation"))
    scores = json.loads(path.read_text())
    return {metric: {"mean": scores[metric]["mean"], "per_image": scores[metric]["per_image"]}
            for metric in ("dice", "iou", "accuracy")}
