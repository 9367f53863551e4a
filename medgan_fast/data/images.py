"""Image and mask readers: PNG/JPEG (Pillow), TIFF (tifffile), NPY (NumPy).

Every reader returns NumPy arrays in the dtype the file stores (8- or 16-bit stays
8- or 16-bit) and raises :class:`DataError` naming the file when it cannot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ..errors import DataError

__all__ = [
    "IMAGE_SUFFIXES", "DataError", "find_pairs", "image_channels", "image_from_array", "is_lossy", "list_images", "mask_from_array", "read_array",
    "read_image", "read_mask",
]

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".npy", ".jpg", ".jpeg")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")

# Pillow modes whose pixels we keep as they are; anything else (CMYK, YCbCr, ...) is
# converted to RGB. "P" is kept for masks (its indices are the labels) and made RGB for images.
_PIL_NATIVE_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F", "RGB", "RGBA", "P")


# ---------------------------------------------------------------------------------------
# Raw arrays

def read_array(path: str | Path, *, palette: bool = True) -> np.ndarray:
    """Decodes one 2-D image file as it is stored.

    Args:
        path: a .png/.jpg/.jpeg (Pillow), .tif/.tiff (tifffile) or .npy (NumPy) file.
        palette: keep a palette image's indices (True, as masks want) or make it RGB.

    Returns:
        (H, W) or channels-last (H, W, C) array in the stored dtype.

    Raises:
        DataError: unreadable, truncated or not a single 2-D image.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        if suffix in PIL_SUFFIXES:
            array = _read_pil(path, palette)
        elif suffix in TIFF_SUFFIXES:
            array = _read_tiff(path)
        else:
            array = np.load(path, allow_pickle=False)
    except DataError:
        raise
    except Exception as error:  # decoders raise OSError, SyntaxError, ValueError, zlib.error, ...
        raise DataError(f"{path}: cannot read ({type(error).__name__}: {error})") from error
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] > 4) or 0 in array.shape:
        raise DataError(f"{path}: expected one 2-D image, (H, W) or channels-last (H, W, C) with C <= 4, "
                        f"got shape {array.shape}")
    return array


def _read_pil(path: Path, palette: bool) -> np.ndarray:
    with Image.open(path) as image:
        image.load()  # decode now, so a truncated file fails here and not later
        if image.mode not in _PIL_NATIVE_MODES or (image.mode == "P" and not palette):
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        return np.array(image)


def _read_tiff(path: Path) -> np.ndarray:
    with tifffile.TiffFile(path) as tiff:
        series = tiff.series[0]
        array, axes = series.asarray(), series.axes
    # Samples ("S") are channels; planar files store them first. Any other axis beyond
    # Y and X (pages, Z, time) would make this a stack, not one image.
    extra = [(axis, n) for axis, n in zip(axes, array.shape) if axis not in "YXS" and n > 1]
    if extra:
        raise DataError(f"{path}: holds a stack (axes {axes!r}, shape {array.shape}); expected one 2-D image "
                        "(use --volume with an HDF5 file for stacks)")
    array = array.reshape([n for axis, n in zip(axes, array.shape) if axis in "YXS"])
    kept_axes = [axis for axis in axes if axis in "YXS"]
    if "S" in kept_axes:
        array = np.moveaxis(array, kept_axes.index("S"), -1)
    return array


def image_channels(path: str | Path) -> int:
    """The channels :func:`read_image` gives for `path` (1 grey, 3 colour), from the file's
    header where the format has one (PNG/JPEG/TIFF), so a folder is checked without decoding it.

    Raises:
        DataError: unreadable file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in PIL_SUFFIXES:
            with Image.open(path) as image:
                bands = len(image.getbands()) if image.mode != "P" else 3
        elif suffix in TIFF_SUFFIXES:
            with tifffile.TiffFile(path) as tiff:
                bands = tiff.pages.first.samplesperpixel
        else:
            return read_image(path).shape[0]
    except Exception as error:
        raise DataError(f"{path}: cannot read ({type(error).__name__}: {error})") from error
    return 1 if bands <= 2 else 3   # alpha is dropped: LA -> grey, RGBA -> RGB


# ---------------------------------------------------------------------------------------
# Images and masks

def read_image(path: str | Path) -> np.ndarray:
    """Reads an image as channels-first (C, H, W), the layout the ops take; see
    :func:`image_from_array`.

    Raises:
        DataError: unreadable file, or pixels that fit none of the image dtypes.
    """
    return image_from_array(read_array(path, palette=False), path)


def read_mask(path: str | Path, threshold: float | None = None) -> np.ndarray:
    """Reads a mask as (H, W); see :func:`mask_from_array`. A mask saved with lossy
    compression (JPEG, or a JPEG-compressed TIFF) has dozens of grey levels along its edges
    and in blocks, which would label as junk components: it is read only with a
    `threshold` (then foreground is value >= threshold, as a bool mask).

    Raises:
        DataError: unreadable file, colour channels that differ, or a lossy mask without a
        threshold.
    """
    path = Path(path)
    if threshold is None and is_lossy(path):
        raise DataError(f"{path}: a mask saved with lossy (JPEG) compression holds many grey levels, not its "
                        "labels; save masks as PNG or TIFF, or give --threshold T (foreground: value >= T)")
    mask = mask_from_array(read_array(path, palette=True), path)
    return mask >= threshold if threshold is not None else mask


def is_lossy(path: Path) -> bool:
    """Whether an image file's pixels went through lossy compression (JPEG)."""
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return True
    if suffix in TIFF_SUFFIXES and path.is_file():
        try:
            with tifffile.TiffFile(path) as tiff:
                return any(page.compression in (6, 7, 34892, 33007, 34712, 50001) for page in tiff.pages[:1])
        except Exception:   # read_array reports an unreadable file
            return False
    return False


def image_from_array(array: np.ndarray, source: str | Path) -> np.ndarray:
    """A stored (H, W) or channels-last (H, W, C) image as channels-first (C, H, W).

    Grey gives C = 1, colour C = 3; alpha is dropped. The dtype becomes uint8, uint16 or
    float32: unsigned 8/16-bit as they are, other integers whose values fit 16 bits (Pillow
    reads some 16-bit PNGs as int32) as uint8/uint16 by their width, float64 as float32.

    Raises:
        DataError: naming `source`, for a bad shape or pixels that fit none of those dtypes.
    """
    if array.ndim == 3 and array.shape[-1] <= 4:
        # Drop alpha: LA -> L, RGBA -> RGB.
        array = array[..., :1] if array.shape[-1] == 2 else array[..., :3]
        array = np.moveaxis(array, -1, 0)
    elif array.ndim == 2:
        array = array[None]
    else:
        raise DataError(f"{source}: expected an (H, W) or (H, W, C) image with C <= 4, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind == "f" and array.dtype != np.float32:
        array = array.astype(np.float32)
    elif array.dtype.kind in "iu" and array.dtype not in (np.uint8, np.uint16):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if not (0 <= low and high <= np.iinfo(np.uint16).max):
            raise DataError(f"{source}: expected 8- or 16-bit unsigned pixels (or float), got {array.dtype} "
                            f"values in [{low}, {high}]")
        array = array.astype(np.uint8 if array.dtype.itemsize == 1 else np.uint16)
    elif array.dtype.kind not in "uif":
        raise DataError(f"{source}: expected integer or float pixels, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


def mask_from_array(array: np.ndarray, source: str | Path) -> np.ndarray:
    """A stored mask as (H, W); nonzero is foreground and values are kept (instance ids).

    An RGB(A) or grey+alpha mask whose colour channels are all equal becomes one channel
    (alpha is ignored); bool becomes uint8.

    Raises:
        DataError: naming `source`, for colour channels that differ (a colour-coded mask
        is not a binary or label mask) or a bad shape.
    """
    if array.ndim == 3 and array.shape[-1] <= 4:
        colour = array[..., :1] if array.shape[-1] == 2 else array[..., :3]
        if not (colour == colour[..., :1]).all():
            raise DataError(f"{source}: mask has {colour.shape[-1]} colour channels that differ; expected a grey "
                            "binary or instance mask (or RGB with R = G = B)")
        array = colour[..., 0]
    elif array.ndim != 2:
        raise DataError(f"{source}: expected an (H, W) mask (or (H, W, C) with equal channels), "
                        f"got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in "uif":
        raise DataError(f"{source}: expected integer or float mask values, got dtype {array.dtype}")
    return np.ascontiguousarray(array)


# ---------------------------------------------------------------------------------------
# Folders

def list_images(folder: str | Path, argument: str = "folder") -> dict[str, Path]:
    """Image files of a folder by stem (hidden files and other suffixes are skipped).

    Raises:
        DataError: the folder is missing, holds no images, or holds two files with
        one stem (001.png and 001.tif).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{argument} {folder}: " + ("not a folder" if folder.exists() else "no such folder"))
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise DataError(f"{argument} {folder}: two files with stem {path.stem!r} ({files[path.stem].name}, "
                            f"{path.name}); keep one")
        files[path.stem] = path
    if not files:
        raise DataError(f"{argument} {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return files


def find_pairs(images: str | Path, masks: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) file pairs matched by stem (images/001.png with masks/001.tif), sorted.

    Raises:
        DataError: a folder is missing or empty, or an image has no mask (or a mask no
        image); the message names the first such file.
    """
    image_files = list_images(images, "--images")
    mask_files = list_images(masks, "--masks")
    for own, other, what, other_folder in ((image_files, mask_files, "mask", masks),
                                           (mask_files, image_files, "image", images)):
        missing = sorted(set(own) - set(other))
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{own[missing[0]]}: no {what} with stem {missing[0]!r} in {other_folder}{more}")
    return [(image_files[stem], mask_files[stem]) for stem in sorted(image_files)]
