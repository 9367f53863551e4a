"""The HDF5 patch set: the one module that writes and reads its format.

Layout (format_version 1):

- ``images``: (N, C, H, W) patches in the source image dtype (uint8, uint16 or float32).
- ``masks``: (N, 1, H, W) uint8 0/1, each patch's own component.
- ``meta``: (N,) compound table, one row per patch: source (UTF-8 str, the image file
  name), slice (int32, z index in a volume, -1 otherwise), component (int32 label id),
  bbox (int64 x4: min_row, min_col, max_row + 1, max_col + 1 in the source image),
  area (int64 pixels), dilation (int32).
- file attributes: format_version, command, package_version, and the extraction
  settings (mode, size, connectivity, min_area, instances, dilation).

Files are written to a temporary name in the destination folder and renamed only when
complete, so a reader never sees half a patch set.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from .._version import __version__
from ..outputs import AtomicPath

__all__ = ["FORMAT_VERSION", "META_DTYPE", "PatchSet", "PatchSetWriter", "make_meta", "read_patch_set"]

FORMAT_VERSION = 1

META_DTYPE = np.dtype([
    ("source", h5py.string_dtype("utf-8")),
    ("slice", np.int32),
    ("component", np.int32),
    ("bbox", np.int64, (4,)),
    ("area", np.int64),
    ("dilation", np.int32),
])

IMAGE_DTYPES = (np.uint8, np.uint16, np.float32)
CHUNK_BYTES = 1 << 20   # ~1 MiB chunks: big enough to stream, small enough to read a few patches


class PatchSetWriter:
    """Writes a patch set incrementally: datasets grow with each :meth:`append`, so memory
    holds one image's patches at a time. Use as a context manager; the file appears at
    `path` only when the block ends without an error.

    Args:
        path: destination .h5 file; its folder must exist.
        size: patch side H = W.
        attrs: file attributes to store (the extraction settings, command line, ...);
            format_version and package_version are added.
        compression: h5py filter for the image and mask datasets (gzip: readable by any
            HDF5 tool; masked patches are mostly zeros, so it pays).
    """

    def __init__(self, path: str | Path, size: int, attrs: dict | None = None, compression: str | None = "gzip"):
        self.path = Path(path)
        self.size = int(size)
        self.attrs = dict(attrs or {})
        self.compression = compression
        self.count = 0
        self._file: h5py.File | None = None
        # Open handles, kept for the whole write: each handle has its own chunk cache, and
        # reopening a dataset per append would flush (compress) its partly filled last
        # chunk every time, only to read and decompress it again on the next append.
        self._datasets: dict[str, h5py.Dataset] = {}

    def __enter__(self) -> PatchSetWriter:
        self._atomic = AtomicPath(self.path)
        try:
            self._file = h5py.File(self._atomic.tmp, "w")
            self._file.attrs.update({"format_version": FORMAT_VERSION, "package_version": __version__,
                                     **self.attrs})
            self._datasets["meta"] = self._file.create_dataset("meta", shape=(0,), maxshape=(None,), dtype=META_DTYPE,
                                                               chunks=(4096,))
        except BaseException:
            self._close(error=True)
            raise
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self._close(error=kind is not None)

    def _close(self, error: bool) -> None:
        try:
            if self._file is not None:
                if not error and self.layout is None:
                    self._create(1, np.uint8)  # nothing appended: an empty grey set
                self._datasets.clear()
                self._file.close()
        except BaseException:
            self._atomic.discard()
            raise
        finally:
            self._file = None
        if error:
            self._atomic.discard()
        else:
            self._atomic.commit()

    def _create(self, channels: int, dtype: np.dtype) -> None:
        options = dict(compression=self.compression, shuffle=self.compression is not None)
        layouts = (("images", channels, np.dtype(dtype)), ("masks", 1, np.dtype(np.uint8)))
        for name, patch_channels, patch_dtype in layouts:
            patch = (patch_channels, self.size, self.size)
            rows = max(1, CHUNK_BYTES // (np.prod(patch) * patch_dtype.itemsize))
            self._datasets[name] = self._file.create_dataset(name, shape=(0, *patch), maxshape=(None, *patch),
                                                             dtype=patch_dtype, chunks=(rows, *patch), **options)

    @property
    def layout(self) -> tuple[int, np.dtype] | None:
        """(channels, dtype) of the images, fixed by the first append; None before it."""
        images = self._datasets.get("images")
        return None if images is None else (images.shape[1], images.dtype)

    def append(self, images: np.ndarray, masks: np.ndarray, meta: np.ndarray) -> None:
        """Adds K patches.

        Args:
            images: (K, C, size, size) uint8, uint16 or float32; C and dtype must match
                earlier appends (the first append fixes them, even with K = 0).
            masks: (K, 1, size, size), nonzero = the component (stored as uint8 0/1).
            meta: (K,) structured array of :data:`META_DTYPE`.
        """
        if self._file is None:
            raise RuntimeError("PatchSetWriter.append outside its `with` block")
        k = len(images)
        if images.ndim != 4 or images.shape[2:] != (self.size, self.size):
            raise ValueError(f"images must be (K, C, {self.size}, {self.size}), got {images.shape}")
        if images.dtype not in IMAGE_DTYPES:
            raise ValueError(f"images must be uint8, uint16 or float32, got {images.dtype}")
        if masks.shape != (k, 1, self.size, self.size):
            raise ValueError(f"masks must be ({k}, 1, {self.size}, {self.size}), got {masks.shape}")
        if meta.shape != (k,) or meta.dtype != META_DTYPE:
            raise ValueError(f"meta must be ({k},) of META_DTYPE, got {meta.shape} {meta.dtype}")
        if self.layout is None:
            self._create(images.shape[1], images.dtype)
        channels, dtype = self.layout
        if images.shape[1] != channels or images.dtype != dtype:
            raise ValueError(f"images must be {channels}-channel {dtype} like the earlier ones, got "
                             f"{images.shape[1]}-channel {images.dtype}")
        if k == 0:
            return
        # bool masks are already 0/1 bytes: view them, don't copy.
        masks = masks.view(np.uint8) if masks.dtype == bool else (masks != 0).astype(np.uint8)
        for name, rows in (("images", images), ("masks", masks), ("meta", meta)):
            dataset = self._datasets[name]
            dataset.resize(self.count + k, axis=0)
            dataset[self.count:] = rows
        self.count += k


def make_meta(k: int, source: str, slice_index: int, component, bbox, area, dilation: int) -> np.ndarray:
    """(k,) :data:`META_DTYPE` rows for k patches of one image (scalars broadcast)."""
    meta = np.zeros(k, META_DTYPE)
    meta["source"] = source
    meta["slice"] = slice_index
    meta["component"] = component
    meta["bbox"] = bbox
    meta["area"] = area
    meta["dilation"] = dilation
    return meta


@dataclass
class PatchSet:
    """A patch set read into memory."""

    images: np.ndarray   # (N, C, H, W) uint8 / uint16 / float32
    masks: np.ndarray    # (N, 1, H, W) uint8 0/1
    meta: dict           # column -> (N,) array: source (str), slice, component, area, dilation; bbox (N, 4)
    attrs: dict          # file attributes

    def __len__(self) -> int:
        return len(self.images)


def read_patch_set(path: str | Path) -> PatchSet:
    """Reads a whole patch set (see this module's docstring for the layout).

    Raises:
        ValueError: not a patch set, or a format_version this reader does not know.
    """
    path = Path(path)
    with h5py.File(path, "r") as file:
        missing = [name for name in ("images", "masks", "meta") if name not in file]
        if missing:
            raise ValueError(f"{path}: not a patch set (no dataset {', '.join(missing)})")
        version = int(file.attrs.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise ValueError(f"{path}: patch-set format_version {version}; this reader knows {FORMAT_VERSION}")
        table = file["meta"][...]
        meta = {name: table[name] for name in META_DTYPE.names}
        meta["source"] = np.array([s.decode() if isinstance(s, bytes) else s for s in table["source"]], dtype=str)
        attrs = {key: value.item() if isinstance(value, np.generic) else value for key, value in file.attrs.items()}
        return PatchSet(file["images"][...], file["masks"][...], meta, attrs)
