"""Patch extraction: images + masks -> one patch per connected component -> HDF5 patch set.

The `patches` command line is a thin face over :func:`extract_patches`:

    >>> from medgan_fast.data.patches import PatchesConfig, extract_patches
    >>> summary = extract_patches(PatchesConfig(images="emps/images", masks="emps/segmaps",
    ...                                         out="emps.h5"))   # doctest: +SKIP
    >>> print(summary)                                             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import h5py
import numpy as np
import torch

from .. import console
from .._ext import IMPLS
from ..outputs import HDF5_SUFFIXES, check_output_file
from ..ops.components import CROP_MODES, crop_components, label
from .grid import save_grid
from .images import DataError, image_from_array, mask_from_array, read_image, read_mask
from ..outputs import AtomicPath
from .patchset import PatchSetWriter, make_meta
from .sample import SAMPLE_NAME, SAMPLE_PATCH_SETTINGS, sample_image_and_mask
from .segmentation import segmentation_pairs

__all__ = ["CONTACT_SHEET_PATCHES", "PatchesConfig", "PatchesSummary", "contact_sheet_path", "extract_patches"]

CONTACT_SHEET_PATCHES = 64


@dataclass
class PatchesConfig:
    """Settings of one patch extraction (the `patches` command's arguments).

    Inputs are one of: `images` + `masks` folders (files paired by stem), a `volume`
    HDF5 file with `image_key` + `mask_key` datasets (D, H, W[, C]) / (D, H, W), or
    neither: the embedded sample (see :meth:`for_sample`).
    """

    out: Path = Path("patches.h5")        # the .h5/.hdf5 patch set (its folder is made if missing)
    images: Path | None = None            # folder of PNG/TIFF/NPY/JPEG images
    masks: Path | None = None             # folder of masks with the images' stems; nonzero = foreground
    split: Path | None = None             # CSV of the image ids to crop (e.g. EMPS's train.csv); None: all
    volume: Path | None = None            # HDF5 file with a 3-D stack (each z slice is cropped on its own)
    image_key: str | None = None          # dataset of the volume's images
    mask_key: str | None = None           # dataset of the volume's masks
    size: int = 250                       # patch side in pixels
    mode: str = "mask"                    # "mask", "texture" or "full" (see crop_components)
    dilation: int = 5                     # disk radius around the component in mode "texture"
    min_area: int = 0                     # drop components with fewer pixels
    connectivity: int = 2                 # 1: 4-neighbour, 2: 8-neighbour (scikit-image's)
    instances: bool = False               # each nonzero mask value is its own component
    threshold: float | None = None        # foreground: mask value >= threshold (needed for JPEG masks)
    device: str = "cpu"                   # "cpu", "cuda" or "cuda:N"
    contact_sheet: bool = True            # also write <out stem>_contact_sheet.png
    overwrite: bool = False               # replace an existing out (and contact sheet); else refuse
    progress: bool = True                 # tqdm bar on stderr (on a terminal)
    impl: str = "auto"                    # ops implementation: "auto", "kernel" or "reference"
    command: str = ""                     # command line stored in the file (default: this config)

    def __post_init__(self):
        for name in ("out", "images", "masks", "split", "volume"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))

    @classmethod
    def for_sample(cls, **changes) -> PatchesConfig:
        """The embedded sample's settings (size 64, mode texture, dilation 5), then `changes`."""
        return cls(**{**SAMPLE_PATCH_SETTINGS, **changes})

    @property
    def is_sample(self) -> bool:
        return self.images is None and self.masks is None and self.volume is None

    def to_json(self) -> str:
        """The resolved settings as JSON (stored in the patch set beside the command line)."""
        return json.dumps({name: str(value) if isinstance(value, Path) else value
                           for name, value in dataclasses.asdict(self).items()})


@dataclass
class PatchesSummary:
    """What :func:`extract_patches` did."""

    images: int                   # images (or volume slices) read
    components: int               # components found (distinct instance ids with --instances)
    patches: int                  # patches written
    dropped_min_area: int         # components under min_area
    out: Path
    contact_sheet: Path | None
    seconds: float
    source: str = ""              # what was read: folders, volume or the sample
    unit: str = "image"           # what `images` counts: "image" or "slice"

    def __str__(self) -> str:
        lines = [
            f"read {_plural(self.images, self.unit)} from {self.source}",
            f"found {self.components} components; kept {self.patches} patches, dropped {self.dropped_min_area} "
            f"under --min-area",
            f"wrote {self.out}" + (f" and {self.contact_sheet}" if self.contact_sheet else ""),
            f"in {self.seconds:.1f} s",
        ]
        return "\n".join(lines)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


class _Item(NamedTuple):
    source: str           # file name of the image (or of the volume)
    slice: int            # z index in a volume, -1 for a 2-D image
    image: np.ndarray     # (C, H, W) uint8 / uint16 / float32
    mask: np.ndarray      # (H, W), nonzero = foreground


def contact_sheet_path(out: str | Path) -> Path:
    """Where the contact sheet of patch set `out` goes: DIR/NAME.h5 -> DIR/NAME_contact_sheet.png."""
    out = Path(out)
    return out.with_name(f"{out.stem}_contact_sheet.png")


# ---------------------------------------------------------------------------------------
# Checks

def _check_config(config: PatchesConfig) -> torch.device:
    """Raises DataError naming the argument for any bad setting; returns the device."""
    for name, low in (("size", 1), ("dilation", 0), ("min_area", 0)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise DataError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}")
    if config.mode not in CROP_MODES:
        raise DataError(f"--mode: expected one of {', '.join(CROP_MODES)}, got {config.mode!r}")
    if config.impl not in IMPLS:
        raise DataError(f"--impl: expected one of {', '.join(IMPLS)}, got {config.impl!r}")
    if config.connectivity not in (1, 2):
        raise DataError(f"--connectivity: expected 1 (4-neighbour) or 2 (8-neighbour), got {config.connectivity!r}")
    if config.threshold is not None and config.instances:
        raise DataError("--threshold: makes a two-level mask, so it cannot go with --instances (instance ids)")
    if config.volume is not None and (config.images is not None or config.masks is not None):
        raise DataError("--volume: give either --volume or --images with --masks, not both")
    if config.volume is None and (config.images is None) != (config.masks is None):
        raise DataError("--images and --masks go together: give both folders")
    if config.split is not None and config.images is None:
        raise DataError("--split: chooses images of --images/--masks folders; give them too")
    check_output_file(config.out, "--out", suffixes=HDF5_SUFFIXES, overwrite=config.overwrite)
    if config.contact_sheet:
        sheet = contact_sheet_path(config.out)
        if sheet.exists() and not config.overwrite:
            raise DataError(f"--out {config.out}: its contact sheet {sheet} already exists; give --overwrite to "
                            "replace both, or --no-contact-sheet")
    try:
        device = torch.device(config.device)
    except RuntimeError as error:
        raise DataError(f"--device: expected cpu, cuda or cuda:N, got {config.device!r}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {config.device}: CUDA is not available here (torch.cuda.is_available() is "
                        "False); use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DataError(f"--device {config.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise DataError(f"--device: expected cpu or cuda, got {config.device!r}")
    return device


# ---------------------------------------------------------------------------------------
# Inputs: each yields (C, H, W) images with their (H, W) masks

def _folder_items(pairs: list[tuple[Path, Path]], threshold: float | None) -> Iterator[_Item]:
    for image_path, mask_path in pairs:
        image, mask = read_image(image_path), read_mask(mask_path, threshold)
        if image.shape[1:] != mask.shape:
            raise DataError(f"{mask_path}: mask is {_hw(mask.shape)} but its image {image_path} is "
                            f"{_hw(image.shape[1:])} (height x width)")
        yield _Item(image_path.name, -1, image, mask)


def _hw(shape) -> str:
    return "x".join(str(n) for n in shape)


def _volume_datasets(file: h5py.File, config: PatchesConfig) -> tuple[h5py.Dataset, h5py.Dataset]:
    names = []
    file.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    available = f"datasets in it: {', '.join(names) or 'none'}"
    datasets = []
    for argument, key in (("--image-key", config.image_key), ("--mask-key", config.mask_key)):
        if key is None:
            raise DataError(f"{argument}: required with --volume {config.volume} ({available})")
        if key not in file or not isinstance(file[key], h5py.Dataset):
            raise DataError(f"{argument} {key!r}: no such dataset in {config.volume} ({available})")
        datasets.append(file[key])
    images, masks = datasets
    if images.ndim not in (3, 4) or masks.ndim != 3 or images.shape[:3] != masks.shape:
        raise DataError(f"--volume {config.volume}: expected images (D, H, W) or (D, H, W, C) and masks (D, H, W) "
                        f"of the same D, H, W; got {config.image_key!r} {images.shape} and "
                        f"{config.mask_key!r} {masks.shape}")
    return images, masks


def _volume_items(config: PatchesConfig) -> Iterator[_Item]:
    with h5py.File(config.volume, "r") as file:
        images, masks = _volume_datasets(file, config)
        for z in range(images.shape[0]):
            where = f"{config.volume}:{config.image_key}[{z}]"
            # One slice at a time, so a large stack never sits in memory whole.
            mask = mask_from_array(masks[z], f"{config.volume}:{config.mask_key}[{z}]")
            yield _Item(config.volume.name, z, image_from_array(images[z], where),
                        mask if config.threshold is None else mask >= config.threshold)


def _volume_depth(config: PatchesConfig) -> int:
    if not config.volume.is_file():
        raise DataError(f"--volume {config.volume}: no such file")
    try:
        with h5py.File(config.volume, "r") as file:
            return _volume_datasets(file, config)[0].shape[0]
    except OSError as error:
        raise DataError(f"--volume {config.volume}: cannot read as HDF5 ({error})") from error


def _sample_items() -> Iterator[_Item]:
    image, mask = sample_image_and_mask()
    yield _Item(SAMPLE_NAME, -1, image, mask)


# ---------------------------------------------------------------------------------------
# Labelling and cropping one image

def _labels(item: _Item, config: PatchesConfig, device: torch.device) -> tuple[torch.Tensor, int, int]:
    """int32 (H, W) labels on `device`, their count (the largest id) and the number of
    components that have pixels."""
    if not config.instances:
        labels, count = label(torch.from_numpy(item.mask != 0).to(device), config.connectivity, impl=config.impl)
        return labels, count, count
    ids = item.mask
    where = f"{item.source}" + (f" slice {item.slice}" if item.slice >= 0 else "")
    if ids.dtype.kind == "f" and not np.array_equal(ids, np.round(ids)):
        raise DataError(f"{where}: --instances needs integer instance ids in the mask, got non-integer "
                        f"{ids.dtype} values")
    present = np.unique(ids)
    if present.size and (present[0] < 0 or present[-1] > np.iinfo(np.int32).max):
        raise DataError(f"{where}: --instances needs ids in [0, 2^31), got values in [{present[0]}, {present[-1]}]")
    count = int(present[-1]) if present.size else 0
    found = int(np.count_nonzero(present))
    return torch.from_numpy(ids.astype(np.int32)).to(device), count, found


def _crop(item: _Item, config: PatchesConfig, device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Patches of one image: images (K, C, S, S), masks (K, 1, S, S) bool, meta (K,), and
    the number of components found."""
    labels, count, found = _labels(item, config, device)
    image = torch.from_numpy(item.image).to(device) if config.mode != "mask" else None
    crops = crop_components(image, labels, count, config.size, config.mode, config.dilation, config.min_area,
                            impl=config.impl)
    images = crops.patches.cpu().numpy()
    if config.mode == "mask":
        images = images.view(np.uint8) * np.uint8(255)  # bool masks as a viewable 8-bit image
    meta = make_meta(len(images), item.source, item.slice, crops.ids.cpu().numpy(), crops.bbox.cpu().numpy(),
                     crops.area.cpu().numpy(), _effective_dilation(config))
    return images, crops.masks.cpu().numpy(), meta, found


def _effective_dilation(config: PatchesConfig) -> int:
    # Only mode "texture" dilates; the file records what was applied.
    return config.dilation if config.mode == "texture" else 0


# ---------------------------------------------------------------------------------------
# The pipeline

def extract_patches(config: PatchesConfig) -> PatchesSummary:
    """Labels each mask's connected components (or takes its instance ids), crops a
    config.size-pixel patch around each (see :func:`medgan_fast.ops.crop_components`),
    and writes them to the HDF5 patch set config.out (format: :mod:`medgan_fast.data.
    patchset`), plus a contact sheet of the first 64 patches when config.contact_sheet.

    Both files are written under temporary names and renamed when complete: on any
    error nothing is left at config.out.

    Raises:
        DataError: a bad setting or input; the message names the argument or file.
    """
    start = time.perf_counter()
    device = _check_config(config)
    if config.is_sample:
        total, items, source, unit = 1, _sample_items(), f"the embedded sample ({SAMPLE_NAME})", "image"
    elif config.volume is not None:
        total, items, unit = _volume_depth(config), _volume_items(config), "slice"
        source = f"volume {config.volume} ({config.image_key}, {config.mask_key})"
    else:
        pairs = segmentation_pairs(config.images, config.masks, config.split)
        total, items, unit = len(pairs), _folder_items(pairs, config.threshold), "image"
        source = f"{config.images} with masks {config.masks}" + (f", ids of {config.split}" if config.split else "")

    attrs = {
        "command": config.command or f"medgan_fast.data.patches.extract_patches({config!r})",
        "mode": config.mode, "size": config.size, "connectivity": config.connectivity,
        "min_area": config.min_area, "instances": config.instances, "dilation": _effective_dilation(config),
        "config": config.to_json(),
    }
    sheet_path = contact_sheet_path(config.out) if config.contact_sheet else None
    console.note(f"writing {config.out}" + (f" and {sheet_path}" if sheet_path else ""))
    sheet_written = []
    try:
        kept = _write_patch_set(config, device, items, total, unit, attrs, sheet_path, sheet_written)
    except BaseException:
        # The set is renamed into place last, so an interrupted or failed run leaves neither file.
        if sheet_written:
            sheet_path.unlink(missing_ok=True)
        for path in (config.out, sheet_path):
            if path is not None:
                AtomicPath.discard_leftovers(path)
        raise
    return PatchesSummary(images=kept.read, components=kept.found, patches=kept.patches,
                          dropped_min_area=kept.found - kept.patches, out=config.out, contact_sheet=sheet_path, seconds=time.perf_counter() - start,
                          source=source, unit=unit)


class _Written(NamedTuple):
    read: int
    found: int
    patches: int


def _write_patch_set(config, device, items, total, unit, attrs, sheet_path, sheet_written) -> _Written:
    read = found = 0
    sheet: list[np.ndarray] = []   # the first patches, for the contact sheet
    with PatchSetWriter(config.out, config.size, attrs) as writer:
        for item in console.progress(items, config.progress, total=total, unit=unit, desc="patches"):
            images, masks, meta, item_found = _crop(item, config, device)
            if writer.layout not in (None, (images.shape[1], images.dtype)):
                channels, dtype = writer.layout
                raise DataError(f"{item.source}: image is {images.shape[1]}-channel {images.dtype}, but the earlier "
                                f"ones are {channels}-channel {dtype}; a patch set holds one kind")
            writer.append(images, masks, meta)
            read, found = read + 1, found + item_found
            if len(sheet) < CONTACT_SHEET_PATCHES:
                sheet.extend(images[:CONTACT_SHEET_PATCHES - len(sheet)].copy())  # copy: don't pin all of `images`
        if sheet_path is not None:
            # Written even with no patches (one empty tile), so no stale sheet sits beside a new set.
            channels = writer.layout[0] if writer.layout else 1
            first = np.stack(sheet) if sheet else np.zeros((0, channels, config.size, config.size), np.uint8)
            save_grid(first, sheet_path)
            sheet_written.append(sheet_path)
        console.check_interrupt()
        return _Written(read, found, writer.count)
