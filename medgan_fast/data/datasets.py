"""Training datasets: image folders, HDF5 patch sets and the embedded sample, as
(C, S, S) float32 tensors in [-1, 1].

Every item is a pure function of its key ``(epoch, index)`` and the dataset's seed: the
random crop and flips of item i in epoch e come from ``numpy.random.default_rng((seed, e,
i))``, never from a global or per-worker RNG. So any loader order, worker count or restart
point gives the same pixels, which is what makes a resumed run continue exactly. A plain
integer key means epoch 0.

Each image is read in its stored dtype (:mod:`medgan_fast.data.images`), scaled to [0, 1]
(uint8 / 255, uint16 / 65535; float as it is when inside [0, 1], else min-max per image),
converted to the wanted channels (grey -> RGB by repetition, RGB -> grey by ITU-R 601 luma,
as Pillow's ``convert("L")``), resized so its shorter side is S (bilinear, antialiased) and
centre-cropped to S x S (torchvision's ``Resize(S)`` + ``CenterCrop(S)``), optionally
flipped, and mapped to [-1, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .images import IMAGE_SUFFIXES, DataError, read_image
from .patchset import FORMAT_VERSION
from .sample import SAMPLE_NAME, sample_image

__all__ = [
    "HDF5_SUFFIXES", "FolderDataset", "ImageDataset", "PatchSetDataset", "SampleDataset", "convert_channels",
    "find_images", "item_rng", "random_crop", "resize_and_crop", "to_unit_float",
]

LUMA = (0.299, 0.587, 0.114)   # ITU-R 601-2, Pillow's RGB -> L weights
HDF5_SUFFIXES = (".h5", ".hdf5")   # files read as patch sets


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one item: a function of (seed, epoch, index) only."""
    return np.random.default_rng((seed, epoch, index))


def to_unit_float(image: np.ndarray) -> torch.Tensor:
    """(C, H, W) uint8 / uint16 / float32 -> float32 tensor in [0, 1] (see the module docstring)."""
    if image.dtype == np.uint8:
        return torch.from_numpy(image).float().div_(255)
    if image.dtype == np.uint16:
        return torch.from_numpy(image.astype(np.float32)).div_(65535)
    tensor = torch.from_numpy(np.asarray(image, np.float32)).clone()
    low, high = float(tensor.min()), float(tensor.max())
    if low < 0 or high > 1:
        tensor = (tensor - low) / max(high - low, 1e-12)
    return tensor


def convert_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """(C, H, W) with C 1 or 3 -> (channels, H, W): grey repeated to RGB, RGB to luma."""
    if image.shape[0] == channels:
        return image
    if channels == 3:
        return image.expand(3, -1, -1).contiguous()
    weights = torch.tensor(LUMA, dtype=image.dtype)[:, None, None]
    return (image * weights).sum(0, keepdim=True)


def resize_and_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) -> (C, size, size): shorter side to `size` (bilinear, antialiased when
    shrinking), then the centre square (torchvision's Resize(size) + CenterCrop(size))."""
    _, h, w = image.shape
    if min(h, w) != size:
        # The longer side as torchvision computes it (truncated).
        new_h, new_w = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=min(h, w) > size)[0].clamp_(0, 1)
    _, h, w = image.shape
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return image[:, top:top + size, left:left + size]


class ImageDataset(Dataset):
    """Base of the training datasets: ``dataset[(epoch, index)]`` -> (C, S, S) float32 in
    [-1, 1]. Subclasses give :meth:`available` (their item count) and :meth:`load` ((C', H, W)
    in [0, 1], any C', any size, given the item's RNG for random crops).

    Args:
        image_size: side S of the items.
        channels: C, 1 or 3.
        flip: random horizontal and vertical flips (each with probability 1/2).
        seed: with the key, fixes every random choice.

    ``max_images`` (0: all) keeps only the first items, for a quick trial run. ``random_crop``
    (CycleGAN's preprocessing) replaces the resize and centre crop: the shorter side is
    resized to ``load_size`` when it is set (else only when it is shorter than S) and an S x S
    window is cut at a random place.
    """

    max_images: int = 0
    random_crop: bool = False
    load_size: int = 0

    def __init__(self, image_size: int, channels: int, flip: bool = False, seed: int = 0):
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        self.image_size, self.channels, self.flip, self.seed = image_size, channels, flip, seed

    def available(self) -> int:
        raise NotImplementedError

    def __len__(self) -> int:
        count = self.available()
        return min(count, self.max_images) if self.max_images else count

    def _counted(self, noun: str) -> str:
        """'108 images', or 'the first 16 of 108 images' under max_images."""
        count = self.available()
        return f"{count} {noun}" if len(self) == count else f"the first {len(self)} of {count} {noun}"

    def load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        rng = item_rng(self.seed, epoch, index)
        image = convert_channels(self.load(index, rng), self.channels)
        if self.random_crop:
            image = random_crop(image, self.image_size, self.load_size, rng)
        else:
            image = resize_and_crop(image, self.image_size)
        if self.flip:
            horizontal, vertical = rng.random(2) < 0.5
            dims = [d for d, flip in ((2, horizontal), (1, vertical)) if flip]
            if dims:
                image = image.flip(dims)
        return image.mul(2).sub_(1).contiguous()


def random_crop(image: torch.Tensor, size: int, load_size: int, rng: np.random.Generator) -> torch.Tensor:
    """(C, H, W) -> (C, size, size): the shorter side resized to `load_size` (0: to `size`
    only when shorter), then a window at a random place drawn from `rng`."""
    target = load_size or max(size, min(image.shape[1:]))
    if min(image.shape[1:]) != target:
        h, w = image.shape[1:]
        new_h, new_w = (target, max(target, round(target * w / h))) if h <= w else (max(target, round(target * h / w)), target)
        image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                              antialias=min(h, w) > target)[0].clamp_(0, 1)
    top, left = (int(rng.integers(0, n - size + 1)) for n in image.shape[1:])
    return image[:, top:top + size, left:left + size]


# ---------------------------------------------------------------------------------------
# Folders

def find_images(root: str | Path, argument: str = "data") -> list[Path]:
    """Image files under `root`, sorted: directly in it (a flat folder) and in its subfolders
    (a torchvision ImageFolder root: one subfolder per class). Hidden files and folders skipped.

    Raises:
        DataError: `root` is not a folder or holds no images (the message starts with
            `argument`, the setting or option that named the folder).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{argument} {root}: " + ("not a folder" if root.exists() else "no such folder or file"))
    files = sorted(path for path in root.rglob("*")
                   if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
                   and not any(part.startswith(".") for part in path.relative_to(root).parts))
    if not files:
        raise DataError(f"{argument} {root}: no images ({', '.join(IMAGE_SUFFIXES)}) in it or its subfolders")
    return files


class FolderDataset(ImageDataset):
    """The images of a folder (flat, or ImageFolder-style class subfolders; class labels are
    not used): PNG, JPEG, TIFF or NPY; 8- or 16-bit (or float), grey or RGB. Files are read
    when an item is asked for. Arguments after `root` as :class:`ImageDataset`."""

    def __init__(self, root: str | Path, image_size: int, channels: int, flip: bool = False, seed: int = 0):
        super().__init__(image_size, channels, flip, seed)
        self.root = Path(root)
        self.files = find_images(self.root)

    def available(self) -> int:
        return len(self.files)

    def load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        return to_unit_float(read_image(self.files[index]))

    def __repr__(self) -> str:
        return f"folder {self.root} ({self._counted('images')})"


# ---------------------------------------------------------------------------------------
# HDF5 patch sets

class PatchSetDataset(ImageDataset):
    """The ``images`` (N, C, H, W) of an HDF5 patch set (made by the ``patches`` command, or
    by ``generate``), read lazily: each process opens the file on its first item, so loader
    workers never share an HDF5 handle. Arguments after `path` as :class:`ImageDataset`.

    Raises:
        DataError: the file is missing, not HDF5, or has no (N, C, H, W) ``images`` with C 1 or 3.
    """

    def __init__(self, path: str | Path, image_size: int, channels: int, flip: bool = False, seed: int = 0):
        super().__init__(image_size, channels, flip, seed)
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"data {self.path}: no such file")
        try:
            with h5py.File(self.path, "r") as file:
                images = file.get("images")
                version = file.attrs.get("format_version")
                shape = images.shape if isinstance(images, h5py.Dataset) else None
        except OSError as error:
            raise DataError(f"data {self.path}: cannot read as HDF5 ({error})") from error
        if shape is None or len(shape) != 4 or shape[1] not in (1, 3):
            raise DataError(f"data {self.path}: not a patch set (expected a dataset 'images' of shape (N, C, H, W) "
                            f"with C 1 or 3, got {shape if shape is not None else 'none'})")
        if version is not None and int(version) != FORMAT_VERSION:
            raise DataError(f"data {self.path}: patch-set format_version {int(version)}; this reader knows "
                            f"{FORMAT_VERSION}")
        if shape[0] == 0:
            raise DataError(f"data {self.path}: the patch set is empty")
        self.count = shape[0]
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def available(self) -> int:
        return self.count

    def load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        if self._pid != os.getpid():   # first item in this process (a fresh worker after fork)
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return to_unit_float(self._file["images"][index])

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}   # h5py handles do not pickle

    def __repr__(self) -> str:
        return f"patch set {self.path} ({self._counted('patches')})"


# ---------------------------------------------------------------------------------------
# The embedded sample

class SampleDataset(ImageDataset):
    """Random S x S crops of the embedded sample (scikit-image's immunohistochemistry image,
    512 x 512 RGB; no download): `crops` items per epoch, each at a position drawn from its
    (seed, epoch, index) RNG. Other arguments as :class:`ImageDataset`."""

    def __init__(self, image_size: int, channels: int, crops: int = 1024, flip: bool = False, seed: int = 0):
        super().__init__(image_size, channels, flip, seed)
        if crops < 1:
            raise ValueError(f"crops: expected an integer >= 1, got {crops!r}")
        self.crops = crops
        self.image = convert_channels(to_unit_float(sample_image()), channels)   # [C, 512, 512]
        if image_size > min(self.image.shape[1:]):
            raise ValueError(f"image_size {image_size}: larger than the sample image {tuple(self.image.shape[1:])}")

    def available(self) -> int:
        return self.crops

    def load(self, index: int, rng: np.random.Generator) -> torch.Tensor:
        _, h, w = self.image.shape
        top, left = (int(v) for v in rng.integers(0, (h - self.image_size + 1, w - self.image_size + 1)))
        return self.image[:, top:top + self.image_size, left:left + self.image_size]

    def __repr__(self) -> str:
        return f"the embedded sample ({SAMPLE_NAME}, {len(self)} random crops per epoch)"
