"""Segmentation data: (image, mask) pairs from folders and split files, the validation
split, and the datasets that serve ``{"image", "mask"}`` items to U-Net training.

Why a module of its own: a GAN's data is images alone, cropped and flipped at random
(:mod:`medgan_fast.data.datasets`); a segmentation set is pairs whose mask must follow its
image through every transform, whose masks come as binary masks, instance maps or class
maps, and whose ids come from a split file (EMPS's train.csv). Mistakes here are silent in
training (a grey image read as a mask, a mask transformed apart from its image), so this
module refuses what it cannot read as labels and shares one augmentation between the
folder and the patch-set datasets.

Items, as the training loop batches them:

- ``image``: (C, S, S) float32 in [-1, 1]. The file is read in its dtype, scaled to [0, 1]
  (:func:`medgan_fast.data.datasets.to_unit_float`), made grey (mean of R, G, B) or RGB
  (grey repeated), and the *whole* image resized to S x S (bilinear, antialiased when
  shrinking; the aspect ratio is not kept, so every pixel keeps its label).
- ``mask``: binary (``num_classes`` 1) a (1, S, S) float32 of 0/1, foreground = value > 0
  (instance maps are binarised); class maps (``num_classes`` >= 2) an (S, S) int64 of class
  ids. Resized with nearest neighbour ("nearest-exact"), so no label is invented.

Pairs are read once, at construction (these sets hold hundreds of images, not millions),
and cached at size S. Like every training set here, an item is a pure function of its key
``(epoch, index)`` and the seed (a plain integer key means epoch 0): the classical
augmentation of item i in epoch e draws from
:func:`medgan_fast.data.datasets.item_rng` ``(seed, e, i)``, so loader order, worker count
and a resumed run give the same pixels. Items are fresh tensors: a caller may write to them
without touching the cache.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch.utils.data import Dataset

from .. import console
from ..errors import DataError
from .datasets import item_rng, to_unit_float
from .images import IMAGE_SUFFIXES, find_pairs, list_images, mask_from_array, read_image, read_mask
from .patchset import FORMAT_VERSION

__all__ = [
    "AUGMENTATIONS", "KeyedSubset", "PatchPairDataset", "SegmentationDataset", "augment_pair", "prepare_image",
    "prepare_mask", "segmentation_pairs", "split_ids", "split_pairs", "unit_image", "validation_split",
]

AUGMENTATIONS = ("none", "classical")
SPLIT_HEADERS = ("id", "ids", "image_id", "filename", "file", "name", "image", "stem")   # header words of a split file
GREY_LEVELS = 64   # an 8-bit binary mask has 2 values; see prepare_mask
# Elastic deformation (Simard et al. 2003), relative to the side S: a displacement field of
# smoothed noise, Gaussian sigma S/16 (smooth over a sixteenth of the image) and scaled to
# an RMS displacement of S/64 (2 px at S = 128): a gentle warp that keeps shapes recognisable.
ELASTIC_SIGMA = 1 / 16
ELASTIC_RMS = 1 / 64


# ---------------------------------------------------------------------------------------
# Pairs and splits

def segmentation_pairs(images: str | Path, masks: str | Path,
                       split: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image, mask) files paired by stem (images/001.png with masks/001.tif).

    Args:
        images: the image folder (``--images`` / ``data``).
        masks: the mask folder (``--masks``).
        split: None for every pair (then every image needs a mask and every mask an image,
            as :func:`medgan_fast.data.images.find_pairs`); or a CSV / text file of image
            ids, one per line, for only those pairs in the file's order. A line may be an id
            ("001") or a file name ("001.png", whose stem is used); with commas, the first
            column counts; blank lines are skipped, and a first line "id", "filename",
            "name" (or "image_id", "file", "image", "stem") is a header unless it is an id.
            Images outside the split need no mask.

    Raises:
        DataError: a folder is missing or empty; the split file is missing, names no id,
            lists an id twice, or names ids with no image or no mask (the message counts
            them and names the first).
    """
    if split is None:
        return find_pairs(images, masks)
    split = Path(split)
    image_files = list_images(images, "--images")
    mask_files = list_images(masks, "--masks")
    ids = _read_split(split, image_files)
    missing = [(stem, what, folder) for stem in ids
               for what, files, folder in (("image", image_files, images), ("mask", mask_files, masks))
               if stem not in files]
    missing_ids = sorted({stem for stem, _, _ in missing}, key=ids.index)
    if missing_ids:
        stem, what, folder = missing[0]
        raise DataError(f"--split {split}: {len(missing_ids)} of {len(ids)} image ids have no image in {images} or no "
                        f"mask in {masks}; the first, {stem!r}, has no {what} in {folder}")
    return [(image_files[stem], mask_files[stem]) for stem in ids]


def split_ids(split: str | Path, image_files: dict[str, Path], images: str | Path) -> list[str]:
    """The image ids of a split file (as :func:`segmentation_pairs` reads it) that name
    images of `image_files` (the folder `images`, by stem), in the file's order.

    Raises:
        DataError: the file is missing or names no id, or ids with no image (counted).
    """
    split = Path(split)
    ids = _read_split(split, image_files)
    missing = [stem for stem in ids if stem not in image_files]
    if missing:
        raise DataError(f"--split {split}: {len(missing)} of {len(ids)} image ids have no image in {images}; the "
                        f"first is {missing[0]!r}")
    return ids


def _read_split(split: Path, image_files: dict[str, Path]) -> list[str]:
    """The image ids (stems) of a split file, in its order."""
    if not split.is_file():
        raise DataError(f"--split {split}: " + ("not a file" if split.exists() else "no such file"))
    try:
        text = split.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"--split {split}: cannot read as text ({error})") from error
    ids: list[str] = []
    lines: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.replace("\t", ",").split(",")[0].strip().strip("\"'").strip()
        if not entry:
            continue
        stem = _stem(entry, image_files)
        if not ids and not lines and entry.lower() in SPLIT_HEADERS and stem not in image_files:
            lines[""] = number   # the header: seen, not an id
            continue
        if stem in lines:
            raise DataError(f"--split {split}: image id {stem!r} is listed twice (lines {lines[stem]} and {number})")
        lines[stem] = number
        ids.append(stem)
    if not ids:
        raise DataError(f"--split {split}: no image ids in it")
    return ids


def _stem(entry: str, image_files: dict[str, Path]) -> str:
    """A split entry as an image stem: as it is when it names an image, else its file name's
    stem when it has an image suffix ("001.png", "images/001.png")."""
    if entry in image_files:
        return entry
    name = entry.replace("\\", "/").rsplit("/", 1)[-1]
    path = Path(name)
    return path.stem if path.suffix.lower() in IMAGE_SUFFIXES else name


def validation_split(pairs: Sequence, fraction: float, seed: int = 0) -> tuple[list, list]:
    """(training, validation): a seeded draw of round(fraction * N) items (at least one
    when fraction > 0 and N >= 2) for validation, the rest for training. Both keep the input
    order; the same pairs, fraction and seed always give the same split.

    Raises:
        DataError: `fraction` not in [0, 1) (named ``--val-fraction``), or no item left
            for training.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise DataError(f"--val-fraction {fraction!r}: expected a number in [0, 1)")
    items = list(pairs)
    count = len(items)
    k = int(round(fraction * count))
    if fraction > 0 and count >= 2:
        k = max(k, 1)
    if count - k < 1:
        raise DataError(f"--val-fraction {fraction:g}: leaves no images for training "
                        f"({count} pair(s), {k} for validation)")
    chosen = set(np.random.default_rng(seed).permutation(count)[:k].tolist())
    training = [item for i, item in enumerate(items) if i not in chosen]
    validation = [item for i, item in enumerate(items) if i in chosen]
    return training, validation


# ---------------------------------------------------------------------------------------
# One image and one mask

def unit_image(image: np.ndarray, channels: int) -> torch.Tensor:
    """A (C, H, W) image as read -> (channels, H, W) float32 in [0, 1], at its own size
    (grey from RGB by the channel mean, RGB from grey by repetition)."""
    tensor = to_unit_float(image)
    if tensor.shape[0] != channels:
        tensor = tensor.mean(0, keepdim=True) if channels == 1 else tensor.expand(3, -1, -1)
    return tensor


def prepare_image(image: np.ndarray, image_size: int, channels: int) -> torch.Tensor:
    """A (C, H, W) image as read (:func:`medgan_fast.data.images.read_image`: uint8, uint16
    or float; C 1 or 3) -> (channels, S, S) float32 in [-1, 1] (see the module docstring)."""
    tensor = unit_image(image, channels)
    _, h, w = tensor.shape
    if (h, w) != (image_size, image_size):
        tensor = F.interpolate(tensor[None], size=(image_size, image_size), mode="bilinear", align_corners=False,
                               antialias=h > image_size or w > image_size)[0].clamp_(0, 1)
    return tensor.mul(2).sub_(1).contiguous()


def prepare_mask(mask: np.ndarray, image_size: int, num_classes: int, source: str | Path) -> torch.Tensor:
    """An (H, W) mask as read (:func:`medgan_fast.data.images.read_mask`) -> binary
    (1, S, S) float32 0/1 (num_classes 1) or an (S, S) int64 class map (num_classes >= 2).

    Binary: foreground is value > 0, so bool, 0/1, 0/255 masks and instance maps (any
    integer ids, e.g. 16-bit) all work. An 8-bit mask with more than 2 values that reaches
    255 is refused: that is a grey image (or a lossy mask), whose > 0 would be nearly
    everything. Float masks must hold whole numbers (else they are probabilities or an
    image); give a threshold for those. Class maps: values must be whole numbers in
    [0, num_classes).

    Raises:
        DataError: naming `source`, for the masks above.
    """
    if mask.dtype.kind == "f":
        finite = np.isfinite(mask)
        if not finite.all() or not (mask == np.round(mask)).all():
            raise DataError(f"{source}: a float mask with fractional (or non-finite) values is not labels; give "
                            "integer masks, or --threshold T (foreground: value >= T)")
    if num_classes == 1:
        if mask.dtype == np.uint8:
            levels = int(np.count_nonzero(np.bincount(mask.ravel(), minlength=256)))
            if levels > 2 and int(mask.max()) == 255:
                raise DataError(f"{source}: an 8-bit mask with {levels} grey levels looks like an image, not labels; "
                                "give binary masks (0/255 or 0/1), an instance map, or --threshold T")
        labels = torch.from_numpy(np.ascontiguousarray(mask > 0)).to(torch.float32)
    else:
        low, high = (float(mask.min()), float(mask.max())) if mask.size else (0.0, 0.0)
        if low < 0 or high >= num_classes:
            value = high if high >= num_classes else low
            raise DataError(f"{source}: mask value {value:g} is not a class id for num_classes {num_classes} "
                            f"(expected 0..{num_classes - 1}" + ("; a 0/255 binary mask wants num_classes 1)"
                                                                  if value == 255 else ")"))
        labels = torch.from_numpy(mask.astype(np.float32))   # ids < num_classes: exact in float32
    h, w = labels.shape
    if (h, w) != (image_size, image_size):
        labels = F.interpolate(labels[None, None], size=(image_size, image_size), mode="nearest-exact")[0, 0]
    return labels[None].contiguous() if num_classes == 1 else labels.to(torch.int64).contiguous()


# ---------------------------------------------------------------------------------------
# Augmentation

def augment_pair(image: torch.Tensor, mask: torch.Tensor, rng: np.random.Generator,
                 elastic: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The classical augmentation, applied to an image and its mask alike.

    A horizontal flip and a vertical flip (probability 1/2 each), a turn by k * 90 degrees
    (k uniform in 0..3), and with probability 1/2 an elastic deformation (Simard et al.
    2003; see ELASTIC_SIGMA, ELASTIC_RMS): the image resampled bilinearly, the mask by
    nearest neighbour, both with mirrored borders. Every draw comes from `rng`, in a fixed
    order, so one generator state gives one result. `elastic` False skips the deformation
    (the draws stay the same).

    Args:
        image: (C, H, W) float.
        mask: (1, H, W) or (H, W), any dtype.

    Returns:
        New tensors (the inputs are not written to) of the input shapes, or with H and W
        swapped after an odd turn of a non-square pair.
    """
    horizontal, vertical = (bool(flip) for flip in rng.random(2) < 0.5)
    turns = int(rng.integers(0, 4))
    deform = bool(rng.random() < 0.5)
    dims = [d for d, flip in ((-1, horizontal), (-2, vertical)) if flip]
    if dims:
        image, mask = image.flip(dims), mask.flip(dims)
    if turns:
        image, mask = image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))
    if deform:
        h, w = image.shape[-2:]
        side = min(h, w)
        sigma = max(side * ELASTIC_SIGMA, 1.0)
        noise = rng.uniform(-1, 1, (2, h, w))
        if elastic:
            field = np.stack([ndimage.gaussian_filter(plane, sigma) for plane in noise])
            field *= side * ELASTIC_RMS / max(float(np.sqrt((field ** 2).mean())), 1e-12)
            coordinates = np.mgrid[0:h, 0:w].astype(np.float64) + field
            pixels = image.numpy()
            image = torch.from_numpy(np.stack([ndimage.map_coordinates(plane, coordinates, order=1, mode="reflect")
                                               for plane in pixels]).astype(pixels.dtype, copy=False))
            labels = mask.numpy()
            warped = ndimage.map_coordinates(labels.reshape(h, w), coordinates, order=0, mode="reflect")
            mask = torch.from_numpy(warped.reshape(labels.shape))
    return image.clone(memory_format=torch.contiguous_format), mask.clone(memory_format=torch.contiguous_format)


class _PairItems(Dataset):
    """``dataset[(epoch, index)]`` -> {"image", "mask"}: the cached pair of `index`, through
    :func:`augment_pair` with the item's RNG under augment "classical". Subclasses give
    :meth:`pair` and set image_size, channels, num_classes, augment and seed."""

    image_size: int
    channels: int
    num_classes: int
    augment: str
    seed: int

    def _check(self, image_size: int, channels: int, augment: str) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size: expected an integer >= 1, got {image_size!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels: expected 1 or 3, got {channels!r}")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment: expected one of {', '.join(AUGMENTATIONS)}, got {augment!r}")

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image, mask = self.pair(index)
        if self.augment == "classical":
            image, mask = augment_pair(image, mask, item_rng(self.seed, epoch, index))
        else:
            image, mask = image.clone(), mask.clone()
        return {"image": image, "mask": mask}

    def _kind(self) -> str:
        return "binary" if self.num_classes == 1 else f"{self.num_classes} classes"


# ---------------------------------------------------------------------------------------
# Image and mask folders

class SegmentationDataset(_PairItems):
    """(image, mask) file pairs read and cached at size S (see the module docstring).

    Args:
        pairs: (image file, mask file) pairs, e.g. from :func:`segmentation_pairs`.
        image_size: side S of the items.
        channels: C of the images, 1 (grey) or 3 (RGB).
        num_classes: 1 for binary masks (instance maps binarised), >= 2 for class maps.
        augment: "none", or "classical" (:func:`augment_pair`, drawn per (seed, epoch, index)).
        seed: with the key, fixes every random choice.
        threshold: masks are value >= threshold (needed for lossy, JPEG masks); None: as stored.
        progress: show a progress bar while the pairs are read.

    Attributes:
        image_size, channels, num_classes, augment, seed: as given.
        files: the (image, mask) pairs, as given.

    Raises:
        ValueError: a bad image_size, channels, num_classes or augment.
        DataError: no pairs; a file that cannot be read; an image and mask of different
            sizes; a mask that is not labels (see :func:`prepare_mask`).
    """

    def __init__(self, pairs: Iterable[tuple[str | Path, str | Path]], image_size: int, channels: int = 1,
                 num_classes: int = 1, augment: str = "none", seed: int = 0, threshold: float | None = None,
                 progress: bool = False):
        files = [(Path(image), Path(mask)) for image, mask in pairs]
        self._setup(files, image_size, channels, num_classes, augment, seed, progress,
                    ((read_image(image), read_mask(mask, threshold), image, mask) for image, mask in files))

    @classmethod
    def from_arrays(cls, pairs: Iterable[tuple[np.ndarray, np.ndarray]], image_size: int, channels: int = 1,
                    num_classes: int = 1, augment: str = "none", seed: int = 0, threshold: float | None = None,
                    progress: bool = False) -> SegmentationDataset:
        """The same from arrays in memory: (C, H, W) or (H, W) images (uint8, uint16 or
        float; C 1 or 3) with (H, W) masks. Messages name them "array i"; ``files`` holds
        those names. Other arguments as the constructor."""
        arrays = list(pairs)
        names = [(f"image array {i}", f"mask array {i}") for i in range(len(arrays))]

        def items() -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
            for (image, mask), (image_name, mask_name) in zip(arrays, names):
                image = np.asarray(image)
                image = image[None] if image.ndim == 2 else image
                if image.ndim != 3 or image.shape[0] not in (1, 3):
                    raise DataError(f"{image_name}: expected (H, W) or (C, H, W) with C 1 or 3, got shape "
                                    f"{image.shape}")
                if image.dtype == bool:
                    image = image.astype(np.uint8)
                mask = mask_from_array(np.asarray(mask), mask_name)
                yield image, (mask >= threshold if threshold is not None else mask), image_name, mask_name

        dataset = cls.__new__(cls)
        dataset._setup(names, image_size, channels, num_classes, augment, seed, progress, items())
        return dataset

    def _setup(self, files: list, image_size: int, channels: int, num_classes: int, augment: str, seed: int,
               progress: bool, items: Iterable[tuple[np.ndarray, np.ndarray, str | Path, str | Path]]) -> None:
        self._check(image_size, channels, augment)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected an integer >= 1, got {num_classes!r}")
        if not files:
            raise DataError("pairs: no (image, mask) pairs to read")
        self.image_size, self.channels, self.num_classes = image_size, channels, num_classes
        self.augment, self.seed, self.files = augment, seed, files
        images, masks = [], []
        for image, mask, image_name, mask_name in console.progress(items, progress, total=len(files),
                                                                     desc="reading images", unit="image"):
            if tuple(image.shape[1:]) != tuple(mask.shape):
                raise DataError(f"{mask_name}: mask is {_size(mask.shape)} but its image {image_name} is "
                                f"{_size(image.shape[1:])}; expected the same size")
            images.append(prepare_image(image, image_size, channels))
            masks.append(prepare_mask(mask, image_size, num_classes, mask_name))
        self._images, self._masks = torch.stack(images), torch.stack(masks)

    def __len__(self) -> int:
        return len(self._images)

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._images[index], self._masks[index]

    def __repr__(self) -> str:
        return f"segmentation set of {len(self)} images ({self.image_size}x{self.image_size}, {self._kind()})"


def _size(shape: Sequence[int]) -> str:
    """(H, W) as "W x H" pixels, the way image viewers say it."""
    return f"{shape[1]}x{shape[0]}"


# ---------------------------------------------------------------------------------------
# (image, mask) patch sets

class PatchPairDataset(_PairItems):
    """The (image, mask) patches of an HDF5 patch set (made by ``python -m
    medgan_fast.patches``; layout in :mod:`medgan_fast.data.patchset`), read into memory.
    Patches must already be S x S with C channels: they are not resized or converted, so
    that the patches train on the pixels they were cut with. Images scale as
    :func:`prepare_image`; masks are (1, S, S) float32 0/1 (binary only: num_classes is 1).

    Args:
        path: the .h5 file.
        image_size, channels, augment, seed: as :class:`SegmentationDataset`.

    Raises:
        ValueError: a bad image_size, channels or augment.
        DataError: naming the file: missing, not HDF5, not a patch set with ``images`` and
            ``masks``, empty, or patches of another size or channel count.
    """

    num_classes = 1

    def __init__(self, path: str | Path, image_size: int, channels: int, augment: str = "none", seed: int = 0):
        self._check(image_size, channels, augment)
        self.path = Path(path)
        self.image_size, self.channels, self.augment, self.seed = image_size, channels, augment, seed
        if not self.path.is_file():
            raise DataError(f"{self.path}: " + ("not a file" if self.path.exists() else "no such file"))
        try:
            with h5py.File(self.path, "r") as file:
                version = file.attrs.get("format_version")
                found = {name: file.get(name) for name in ("images", "masks")}
                missing = [name for name, data in found.items() if not isinstance(data, h5py.Dataset)]
                if missing:
                    raise DataError(f"{self.path}: not an (image, mask) patch set (no dataset "
                                    f"{' or '.join(repr(name) for name in missing)}); make one with "
                                    "python -m medgan_fast.patches")
                images, masks = found["images"], found["masks"]
                self._check_layout(images.shape, masks.shape, version)
                self._images, self._masks = images[...], masks[...]
        except OSError as error:
            raise DataError(f"{self.path}: cannot read as HDF5 ({error})") from error
        if self._images.dtype.kind not in "uif":
            raise DataError(f"{self.path}: images of dtype {self._images.dtype}; expected uint8, uint16 or float")

    def _check_layout(self, images: tuple, masks: tuple, version) -> None:
        if version is not None and int(version) != FORMAT_VERSION:
            raise DataError(f"{self.path}: patch-set format_version {int(version)}; this reader knows {FORMAT_VERSION}")
        if len(images) != 4 or images[1] not in (1, 3):
            raise DataError(f"{self.path}: 'images' of shape {images}; expected (N, C, H, W) with C 1 or 3")
        if tuple(masks) != (images[0], 1, *images[2:]):
            raise DataError(f"{self.path}: 'masks' of shape {masks}; expected {(images[0], 1, *images[2:])} to match "
                            f"the images {images}")
        if images[0] == 0:
            raise DataError(f"{self.path}: the patch set is empty")
        if tuple(images[2:]) != (self.image_size, self.image_size) or images[1] != self.channels:
            raise DataError(f"{self.path}: patches are {images[3]}x{images[2]} with {images[1]} channel(s); this "
                            f"training uses {self.image_size}x{self.image_size} with {self.channels}")

    def __len__(self) -> int:
        return len(self._images)

    def pair(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = to_unit_float(self._images[index]).mul_(2).sub_(1)
        mask = torch.from_numpy(self._masks[index] != 0).to(torch.float32)
        return image, mask

    def __repr__(self) -> str:
        return f"patch pairs {self.path} ({len(self)} patches, {self.image_size}x{self.image_size}, binary)"


class KeyedSubset(Dataset):
    """Items `indices` of a dataset keyed by (epoch, index), keyed alike (a validation
    split of a patch set)."""

    def __init__(self, dataset: Dataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        return self.dataset[(epoch, self.indices[index])]

    def __repr__(self) -> str:
        return f"{len(self)} of {self.dataset!r}"


def split_pairs(dataset: _PairItems, fraction: float, seed: int,
                max_images: int = 0) -> tuple[KeyedSubset, KeyedSubset | None]:
    """(training, validation) parts of an in-memory pair set (:func:`validation_split` of its
    indices): training reads items with the set's augmentation, validation the same pairs as
    they are; the first `max_images` training items only when it is > 0."""
    plain = copy.copy(dataset)   # the same pairs in memory, read without augmentation
    plain.augment = "none"
    train_indices, val_indices = validation_split(range(len(plain)), fraction, seed)
    if max_images:
        train_indices = train_indices[:max_images]
    return KeyedSubset(dataset, train_indices), (KeyedSubset(plain, val_indices) if val_indices else None)
