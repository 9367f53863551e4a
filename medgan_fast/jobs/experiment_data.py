"""What the cells of an augmentation experiment train and are scored on.

Without ``tile``, the items are the images themselves (each resized to ``image_size`` when
read). With ``tile`` T, every image is first rescaled by ``scale`` and cut into T x T tiles
(the remainder at the right and bottom edges is dropped), written once to
``work/tiles/{images,masks}/<id>_<row>_<column>.png``: large sections (ssTEM's 1024 px) are
then trained on at the scale of their objects rather than shrunk whole. Subsets are always
drawn over the source images (a cell with 2 sections trains on all their tiles), and the
test items are the tiles of the test images.

The GANs of a cell see its items as patch sets (:func:`write_real_sets`): the (image, mask)
pairs at ``image_size``, and the masks alone as grey images for the mask GAN.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.images import read_image, read_mask
from ..data.patchset import PatchSetWriter, make_meta
from ..data.segmentation import SegmentationDataset, segmentation_pairs, unit_image
from ..errors import DataError
from ..outputs import AtomicPath

__all__ = ["MIN_SUBSET", "Source", "prepare_source", "write_real_sets"]

MIN_SUBSET = 2   # source images in the smallest subset (a U-Net needs one to train and one to validate)


@dataclass
class Source:
    """The experiment's data as the cells read it."""

    images: Path                     # folder of the items' images
    masks: Path                      # folder of their masks
    test_split: Path                 # CSV of the test items
    train_ids: list[str]             # source images the subsets are drawn from
    units: dict[str, list[str]]      # source image -> its items (its tiles, or itself)
    test_items: int

    def items(self, ids: list[str]) -> list[str]:
        return [item for stem in ids for item in self.units[stem]]


def _source_ids(config) -> tuple[list[str], list[str]]:
    """(training ids, test ids) by stem; refuses a test id among the training ids."""
    test = [image.stem for image, _ in segmentation_pairs(config.images, config.masks, config.test_split)]
    if config.train_split:
        ids = [image.stem for image, _ in segmentation_pairs(config.images, config.masks, config.train_split)]
        shared = sorted(set(ids) & set(test))
        if shared:
            raise DataError(f"train_split {config.train_split}: {len(shared)} of its ids are also in test_split "
                            f"{config.test_split} (the first: {shared[0]!r}); the test images must stay untouched")
    else:
        ids = [image.stem for image, _ in segmentation_pairs(config.images, config.masks) if image.stem not in set(test)]
    if len(ids) < MIN_SUBSET:
        raise DataError(f"images {config.images}: {len(ids)} training image(s) outside the test split; need at least "
                        f"{MIN_SUBSET}")
    return ids, test


def prepare_source(config, work: Path) -> Source:
    """The experiment's :class:`Source` (tiles written to ``work/tiles`` once, with ``tile``)."""
    train_ids, test_ids = _source_ids(config)
    if not config.tile:
        return Source(Path(config.images), Path(config.masks), Path(config.test_split), train_ids,
                      {stem: [stem] for stem in train_ids}, len(test_ids))
    folder = work / "tiles"
    done = folder / "tiles.csv"   # source,tile lines; written last
    if not done.is_file():
        _write_tiles(config, train_ids + test_ids, folder, done)
    units: dict[str, list[str]] = {}
    for line in done.read_text().splitlines()[1:]:
        stem, tile = line.split(",")
        units.setdefault(stem, []).append(tile)
    empty = [stem for stem in train_ids + test_ids if not units.get(stem)]
    if empty:
        raise DataError(f"tile {config.tile}: image {empty[0]!r} is smaller than one tile after scale {config.scale:g}")
    test_split = folder / "test.csv"
    with AtomicPath(test_split) as tmp:
        tmp.write_text("id\n" + "".join(f"{tile}\n" for stem in test_ids for tile in units[stem]))
    return Source(folder / "images", folder / "masks", test_split, train_ids, {s: units[s] for s in train_ids},
                  sum(len(units[s]) for s in test_ids))


def _write_tiles(config, stems: list[str], folder: Path, done: Path) -> None:
    pairs = {image.stem: (image, mask) for image, mask in segmentation_pairs(config.images, config.masks)}
    for name in ("images", "masks"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    lines, side = ["source,tile"], config.tile
    for stem in stems:
        image_path, mask_path = pairs[stem]
        image = unit_image(read_image(image_path), config.number_channels)
        mask = torch.from_numpy(np.asarray(read_mask(mask_path)) != 0).float()[None]
        size = (round(image.shape[1] * config.scale), round(image.shape[2] * config.scale))
        image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        mask = F.interpolate(mask[None], size=size, mode="area")[0] > 0.5
        for row in range(size[0] // side):
            for column in range(size[1] // side):
                window = np.s_[:, row * side:(row + 1) * side, column * side:(column + 1) * side]
                tile = f"{stem}_{row}_{column}"
                pixels = (image[window] * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
                Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(folder / "images" /
                                                                                          f"{tile}.png")
                Image.fromarray(mask[window][0].numpy().astype(np.uint8) * 255).save(folder / "masks" / f"{tile}.png")
                lines.append(f"{stem},{tile}")
    with AtomicPath(done) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_real_sets(source: Source, split: Path, image_size: int, channels: int, label: str, pairs: Path,
                    masks: Path) -> None:
    """The items of `split` at image_size as an (image, mask) patch set, and their masks as a
    grey image set (mask 255, background 0) for the mask GAN."""
    dataset = SegmentationDataset(segmentation_pairs(source.images, source.masks, split), image_size=image_size,
                                  channels=channels, progress=False)
    items = [dataset.pair(i) for i in range(len(dataset))]
    images = np.stack([((image.numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8) for image, _ in items])
    binary = np.stack([mask.numpy() > 0.5 for _, mask in items]).astype(np.uint8)
    meta = make_meta(len(items), f"{source.images.name} subset {label}", -1, np.arange(1, len(items) + 1),
                     (0, 0, image_size, image_size), binary.reshape(len(items), -1).sum(1), 0)
    attrs = {"mode": "full", "size": image_size, "note": "the cell's items at the U-Net's image_size"}
    for path, pixels in ((pairs, images), (masks, binary * 255)):
        with PatchSetWriter(path, image_size, attrs) as writer:
            writer.append(pixels, binary, meta)
