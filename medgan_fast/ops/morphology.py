"""Binary and grey morphology: footprints, dilation and erosion.

Kernels: csrc/ops/morphology (bit-packed binary, 64 pixels a word; grey on values; both
through a doubling ladder of row planes, so the cost per pixel grows with the number of
footprint rows, not its area).
"""

from __future__ import annotations

import numpy as np
import torch

from .._ext import HAS_CPU_KERNELS, use_kernel

__all__ = [
    "ball", "cube", "dilate", "dilate_reference", "disk", "erode", "erode_reference", "square",
]

GREY_DTYPES = (torch.uint8, torch.uint16, torch.int32, torch.float32, torch.float64)


# ---------------------------------------------------------------------------------------
# Footprints: bool tensors with the same elements as scikit-image's.

def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def disk(radius: int) -> torch.Tensor:
    """Bool (2r+1, 2r+1) disk: x² + y² <= r², as ``skimage.morphology.disk(radius)``.

    >>> disk(1).int().tolist()
    [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    """
    r = _check_size("radius", radius, 0)
    y, x = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    return x * x + y * y <= r * r


def ball(radius: int) -> torch.Tensor:
    """Bool (2r+1, 2r+1, 2r+1) ball: x² + y² + z² <= r², as ``skimage.morphology.ball``."""
    r = _check_size("radius", radius, 0)
    z, y, x = torch.meshgrid(*(torch.arange(-r, r + 1),) * 3, indexing="ij")
    return x * x + y * y + z * z <= r * r


def square(width: int) -> torch.Tensor:
    """Bool (width, width) square of ones, as ``skimage.morphology.square``."""
    return torch.ones((_check_size("width", width, 1),) * 2, dtype=torch.bool)


def cube(width: int) -> torch.Tensor:
    """Bool (width, width, width) cube of ones, as ``skimage.morphology.cube``."""
    return torch.ones((_check_size("width", width, 1),) * 3, dtype=torch.bool)


# ---------------------------------------------------------------------------------------
# dilate / erode

def _check_inputs(op: str, x, footprint) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{op}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.bool and x.dtype not in GREY_DTYPES:
        raise TypeError(f"{op}: x must be bool (binary) or one of uint8, uint16, int32, float32, float64 (grey), "
                        f"got {x.dtype}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{op}: x must be (H, W), (N, H, W) or (D, H, W), got shape {tuple(x.shape)}")
    if not isinstance(footprint, torch.Tensor):
        footprint = torch.as_tensor(np.asarray(footprint))
    if footprint.dtype != torch.bool:
        footprint = footprint != 0
    if footprint.dim() not in (2, 3) or 0 in footprint.shape:
        raise ValueError(f"{op}: footprint must be a non-empty 2-D or 3-D array, got shape {tuple(footprint.shape)}")
    if footprint.dim() > x.dim():
        raise ValueError(f"{op}: a 3-D footprint needs a 3-D (D, H, W) x, got x of shape {tuple(x.shape)}")
    if not bool(footprint.any()):
        raise ValueError(f"{op}: footprint must have at least one true element")
    return x, footprint.cpu().contiguous()


def dilate(x: torch.Tensor, footprint, *, impl: str = "auto") -> torch.Tensor:
    """Dilation of a binary or grey image, batch of images, or volume.

    Args:
        x: bool (binary) or uint8/uint16/int32/float32/float64 (grey) tensor, on CPU or
            CUDA, of shape (H, W); (N, H, W) with a 2-D footprint (each image on its own);
            or (D, H, W) with a 3-D footprint (a volume).
        footprint: bool (or 0/1) 2-D or 3-D array, e.g. ``disk(5)``. Its origin is
            ``size // 2`` along each axis, as in scipy.ndimage.
        impl: "auto" (kernel if built, else reference with a warning), "kernel",
            "reference".

    Returns:
        A tensor of x's shape and dtype: ``out[q] = max over o in footprint of x[q - o]``
        (OR for binary). Pixels outside the image do not contribute. This equals
        ``scipy.ndimage.binary_dilation(x, footprint)`` (border_value=0) and
        ``scipy.ndimage.grey_dilation(x, footprint=footprint, mode="constant",
        cval=<dtype minimum>)``; for footprints that are symmetric and convex along each
        axis (disk, ball, square, cube) also scipy's default ``mode="reflect"``.
        NaN propagates (as ``torch.maximum``): an output pixel whose footprint covers a
        NaN is NaN. scipy skips NaN instead.

    >>> x = torch.zeros(5, 5, dtype=torch.bool); x[2, 2] = True
    >>> dilate(x, disk(1)).int().sum().item()
    5
    """
    x, fp = _check_inputs("dilate", x, footprint)
    if use_kernel("dilate", x.device, impl):
        return torch.ops.medgan_fast.dilate(x, fp)
    return dilate_reference(x, fp)


def erode(x: torch.Tensor, footprint, *, impl: str = "auto") -> torch.Tensor:
    """Erosion of a binary or grey image, batch of images, or volume.

    Shapes, dtypes and footprints as :func:`dilate`. ``out[q] = min over o in footprint
    of x[q + o]`` (AND for binary). Pixels outside the image do not contribute, so an
    object touching the border is not eroded from the border. This equals
    ``scipy.ndimage.binary_erosion(x, footprint, border_value=1)`` and
    ``grey_erosion(x, footprint=footprint, mode="constant", cval=<dtype maximum>)``.
    NaN propagates as in :func:`dilate`.

    Border difference: scipy's default ``binary_erosion(..., border_value=0)`` treats
    outside as background and erodes objects from the image edge; it agrees with this
    function everywhere except within the footprint's reach of the border. For that
    behaviour pad x with zeros first.
    """
    x, fp = _check_inputs("erode", x, footprint)
    if use_kernel("erode", x.device, impl):
        return torch.ops.medgan_fast.erode(x, fp)
    return erode_reference(x, fp)


def _extreme(dtype: torch.dtype, largest: bool):
    if dtype == torch.bool:
        return largest
    if dtype.is_floating_point:
        return float("inf") if largest else float("-inf")
    info = torch.iinfo(dtype)
    return info.max if largest else info.min


def _morphology_reference(x: torch.Tensor, footprint: torch.Tensor, dilation: bool) -> torch.Tensor:
    """Plain PyTorch: for each footprint offset, combine a shifted view into the output."""
    fp = footprint if footprint.dim() == 3 else footprint[None]
    vol = x if x.dim() == 3 else x[None]
    # uint16 lacks maximum/minimum on some builds; compute in int32 and cast back.
    work = vol.to(torch.int32) if vol.dtype == torch.uint16 else vol
    out = torch.full_like(work, _extreme(work.dtype, largest=not dilation))
    centre = [s // 2 for s in fp.shape]
    sign = -1 if dilation else 1
    for index in fp.nonzero().tolist():
        d = [sign * (i - c) for i, c in zip(index, centre)]  # out[q] = op(x[q + d])
        dst, src = [], []
        for offset, size in zip(d, work.shape):
            lo, hi = max(0, -offset), min(size, size - offset)
            if lo >= hi:
                break
            dst.append(slice(lo, hi))
            src.append(slice(lo + offset, hi + offset))
        else:
            target = out[tuple(dst)]
            shifted = work[tuple(src)]
            if work.dtype == torch.bool:
                combined = target | shifted if dilation else target & shifted
            else:
                combined = torch.maximum(target, shifted) if dilation else torch.minimum(target, shifted)
            out[tuple(dst)] = combined
    out = out.to(x.dtype)
    return out if x.dim() == 3 else out[0]


def dilate_reference(x: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """:func:`dilate` in plain PyTorch (the test oracle and the fallback)."""
    x, fp = _check_inputs("dilate_reference", x, footprint)
    return _morphology_reference(x, fp.to(x.device), dilation=True)


def erode_reference(x: torch.Tensor, footprint: torch.Tensor) -> torch.Tensor:
    """:func:`erode` in plain PyTorch (the test oracle and the fallback)."""
    x, fp = _check_inputs("erode_reference", x, footprint)
    return _morphology_reference(x, fp.to(x.device), dilation=False)


# ---------------------------------------------------------------------------------------
# torch.compile support: shapes of the outputs without running the kernels.

if HAS_CPU_KERNELS:
    @torch.library.register_fake("medgan_fast::dilate")
    def _dilate_fake(x, footprint):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    @torch.library.register_fake("medgan_fast::erode")
    def _erode_fake(x, footprint):
        return torch.empty_like(x, memory_format=torch.contiguous_format)
