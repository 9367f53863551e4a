"""Image grids (contact sheets) saved as PNG, for looking at patches and samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from ..outputs import AtomicPath

__all__ = ["make_grid", "save_grid"]


def make_grid(images: np.ndarray, columns: int | None = None, padding: int = 2,
              value_range: tuple[float, float] | None = None, background: int = 128) -> np.ndarray:
    """Tiles images into one uint8 picture.

    Args:
        images: (N, C, H, W) with C = 1 (grey) or 3 (RGB), any real dtype.
        columns: images per row; default the smallest square that holds N.
        padding: grey pixels between and around the tiles.
        value_range: (low, high) mapped to 0..255. Default: uint8 as is; otherwise the
            min and max over all the images (so 16-bit and float patches are visible).
        background: grey level of the padding.

    Returns:
        (rows * (H + padding) + padding, columns * (W + padding) + padding) uint8 for
        C = 1, with a trailing RGB axis of 3 for C = 3. N = 0 gives one padding-sized tile.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, C, H, W) with C 1 or 3, got shape {images.shape}")
    n, c, h, w = images.shape
    if value_range is None and images.dtype != np.uint8:
        value_range = (float(images.min()), float(images.max())) if n else (0.0, 1.0)
    if value_range is not None:
        low, high = value_range
        scaled = (images.astype(np.float64) - low) / max(high - low, 1e-12)
        images = (np.clip(scaled, 0, 1) * 255 + 0.5).astype(np.uint8)
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = np.full((c, rows * (h + padding) + padding, columns * (w + padding) + padding), background, np.uint8)
    for k in range(n):
        top, left = padding + (k // columns) * (h + padding), padding + (k % columns) * (w + padding)
        grid[:, top:top + h, left:left + w] = images[k]
    return grid[0] if c == 1 else np.moveaxis(grid, 0, -1)


def save_grid(images: np.ndarray, path: str | Path, **options) -> Path:
    """Saves :func:`make_grid` (options as there) as a PNG at `path`, atomically."""
    path = Path(path)
    with AtomicPath(path) as tmp:
        Image.fromarray(make_grid(images, **options)).save(tmp, format="PNG")
    return path
