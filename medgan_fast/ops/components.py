"""Connected components of masks: labelling, per-component statistics and patches.

Kernels: csrc/ops/components (run-length union-find on CPU, pixel union-find on CUDA;
both number components in raster order of their first pixel, as scikit-image does).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.ndimage as ndi
import torch

from .._ext import HAS_CPU_KERNELS, use_kernel
from .morphology import dilate, disk

__all__ = [
    "ComponentPatches", "ComponentStats", "component_masks", "component_masks_reference", "component_stats",
    "component_stats_reference", "crop_components", "crop_windows", "crop_windows_reference", "label",
    "label_batch", "label_batch_reference", "label_reference",
]

CROP_MODES = ("mask", "texture", "full")


class ComponentStats(NamedTuple):
    """Per-component statistics; row k describes label k + 1."""

    area: torch.Tensor       # (K,) int64: pixels (voxels)
    bbox: torch.Tensor       # (K, 2*ndim) int64: min per axis, then max + 1 per axis (regionprops' bbox)
    centroid: torch.Tensor   # (K, ndim) float64: mean coordinate per axis


class ComponentPatches(NamedTuple):
    """Patches around components, one row per kept component."""

    patches: torch.Tensor    # (K, C, size, size): the mask (bool, C=1), texture or full image patch
    masks: torch.Tensor      # (K, 1, size, size) bool: the component's own mask
    ids: torch.Tensor        # (K,) int64: label of the component
    bbox: torch.Tensor       # (K, 4) int64: min_row, min_col, max_row + 1, max_col + 1
    area: torch.Tensor       # (K,) int64
    corners: torch.Tensor    # (K, 2) int64: patch's top-left (row, col) in the image; may be negative


# ---------------------------------------------------------------------------------------
# Checks

def _tensor(name: str, value) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _as_mask(name: str, mask, dims: tuple[int, ...], shape_text: str) -> torch.Tensor:
    mask = _tensor(name, mask)
    if mask.dim() not in dims:
        raise ValueError(f"{name} must be {shape_text}, got shape {tuple(mask.shape)}")
    if mask.is_complex():
        raise TypeError(f"{name} must be bool or real, got {mask.dtype}")
    return mask if mask.dtype == torch.bool else mask != 0


def _connectivity(connectivity, ndim: int) -> int:
    if connectivity is None:
        return ndim
    if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)) or not 1 <= connectivity <= ndim:
        raise ValueError(f"connectivity must be an integer in [1, {ndim}] for {ndim}-D input (1: faces only, "
                         f"{ndim}: full), or None (full), got {connectivity!r}")
    return int(connectivity)


def _check_labels(labels, count: int) -> torch.Tensor:
    labels = _tensor("labels", labels)
    if labels.dtype != torch.int32:
        raise TypeError(f"labels must be int32 (as label() returns), got {labels.dtype}")
    if labels.dim() not in (2, 3):
        raise ValueError(f"labels must be (H, W) or (D, H, W), got shape {tuple(labels.shape)}")
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    if labels.numel():
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high > count:
            raise ValueError(f"labels must lie in [0, count={count}], got values in [{low}, {high}]")
    return labels


# ---------------------------------------------------------------------------------------
# label

def label(mask: torch.Tensor, connectivity: int | None = None, *, impl: str = "auto") -> tuple[torch.Tensor, int]:
    """Labels the connected components of a 2-D or 3-D mask.

    Args:
        mask: (H, W) or (D, H, W) tensor on CPU or CUDA; nonzero is foreground.
        connectivity: neighbours that connect, as scikit-image: 1 = those sharing a face
            (4 in 2-D, 6 in 3-D), up to ndim = all (8 in 2-D, 26 in 3-D; the default).
        impl: "auto", "kernel" or "reference".

    Returns:
        (labels, count): int32 labels of mask's shape, 0 for background and 1..count for
        components numbered in raster order of their first pixel. Identical to
        ``skimage.measure.label(mask, connectivity=connectivity)`` for a binary mask.

    >>> labels, count = label(torch.tensor([[1, 0, 1], [0, 0, 1]]))
    >>> count, labels.tolist()
    (2, [[1, 0, 2], [0, 0, 2]])
    """
    mask = _as_mask("mask", mask, (2, 3), "(H, W) or (D, H, W)")
    conn = _connectivity(connectivity, mask.dim())
    if use_kernel("label", mask.device, impl):
        labels, count = torch.ops.medgan_fast.label(mask, conn)
        return labels, int(count)
    return label_reference(mask, conn)


def label_batch(masks: torch.Tensor, connectivity: int | None = None, *,
                impl: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Labels each (H, W) mask of an (N, H, W) batch on its own.

    Returns (labels, counts): int32 (N, H, W), each image numbered 1..counts[i] as
    :func:`label` numbers it, and int64 (N,) counts. connectivity is 2-D's (1 or 2).
    """
    masks = _as_mask("masks", masks, (3,), "(N, H, W)")
    conn = _connectivity(connectivity, 2)
    if use_kernel("label_batch", masks.device, impl):
        return torch.ops.medgan_fast.label_batch(masks, conn)
    return label_batch_reference(masks, conn)


def label_reference(mask: torch.Tensor, connectivity: int | None = None) -> tuple[torch.Tensor, int]:
    """:func:`label` through scipy.ndimage.label (the test oracle and the fallback)."""
    mask = _as_mask("mask", mask, (2, 3), "(H, W) or (D, H, W)")
    conn = _connectivity(connectivity, mask.dim())
    array = mask.cpu().numpy()
    labels, count = ndi.label(array, ndi.generate_binary_structure(array.ndim, conn), output=np.int32)
    # scipy numbers in raster order of the first pixel already; renumber to be explicit.
    if count:
        flat = labels.ravel()
        ids, first = np.unique(flat[flat != 0], return_index=True)
        renumber = np.zeros(count + 1, np.int32)
        renumber[ids[np.argsort(first)]] = np.arange(1, count + 1, dtype=np.int32)
        labels = renumber[labels]
    return torch.from_numpy(labels).to(mask.device), int(count)


def label_batch_reference(masks: torch.Tensor, connectivity: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`label_batch` as a loop over :func:`label_reference`."""
    masks = _as_mask("masks", masks, (3,), "(N, H, W)")
    results = [label_reference(m, connectivity) for m in masks]
    labels = torch.stack([r[0] for r in results]) if results else torch.zeros(masks.shape, dtype=torch.int32)
    counts = torch.tensor([r[1] for r in results], dtype=torch.int64)
    return labels.to(masks.device), counts.to(masks.device)


# ---------------------------------------------------------------------------------------
# component_stats

def component_stats(labels: torch.Tensor, count: int, *, impl: str = "auto") -> ComponentStats:
    """Area, bounding box and centroid of components 1..count of a label image.

    Args:
        labels: int32 (H, W) or (D, H, W) with values in [0, count], as :func:`label`
            returns; 0 is background.
        count: number of components.

    Returns:
        :class:`ComponentStats`; row k is label k + 1 and equals scikit-image's
        ``regionprops`` area, bbox and centroid. A label with no pixels has area 0, bbox
        rows (size, ..., 0, ...) (empty) and centroid NaN.
    """
    return _component_stats(_check_labels(labels, count), count, impl)


def _component_stats(labels: torch.Tensor, count: int, impl: str) -> ComponentStats:
    if use_kernel("component_stats", labels.device, impl):
        return ComponentStats(*torch.ops.medgan_fast.component_stats(labels, int(count)))
    return component_stats_reference(labels, count)


def component_stats_reference(labels: torch.Tensor, count: int) -> ComponentStats:
    """:func:`component_stats` in NumPy (the test oracle and the fallback)."""
    labels = _check_labels(labels, count)
    array = labels.cpu().numpy().astype(np.int64)
    ndim = array.ndim
    flat = array.ravel()
    area = np.bincount(flat, minlength=count + 1)[1:count + 1]
    lo = np.tile(np.asarray(array.shape, np.int64), (count + 1, 1))
    hi = np.zeros((count + 1, ndim), np.int64)
    sums = np.zeros((count + 1, ndim), np.float64)
    coords = np.indices(array.shape).reshape(ndim, -1)
    for axis in range(ndim):
        np.minimum.at(lo[:, axis], flat, coords[axis])
        np.maximum.at(hi[:, axis], flat, coords[axis] + 1)
        sums[:, axis] = np.bincount(flat, weights=coords[axis], minlength=count + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid = sums[1:] / area[:, None]
    bbox = np.concatenate([lo[1:], hi[1:]], axis=1)
    device = labels.device
    return ComponentStats(torch.from_numpy(area.astype(np.int64)).to(device), torch.from_numpy(bbox).to(device),
                          torch.from_numpy(centroid).to(device))


# ---------------------------------------------------------------------------------------
# windows around components

def _check_windows(op: str, source_name: str, source: torch.Tensor, corners, size: int) -> torch.Tensor:
    corners = _tensor("corners", corners)
    if corners.dtype != torch.int64 or corners.dim() != 2 or corners.shape[1] != 2:
        raise ValueError(f"{op}: corners must be int64 (K, 2) (row, col), got {corners.dtype} {tuple(corners.shape)}")
    if corners.device != source.device:
        raise ValueError(f"{op}: corners must be on {source_name}'s device {source.device}, got {corners.device}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{op}: size must be a positive integer, got {size!r}")
    return corners


def crop_windows(source: torch.Tensor, corners: torch.Tensor, size: int, *, impl: str = "auto") -> torch.Tensor:
    """size x size windows of a (C, H, W) image, zero past its border.

    corners: int64 (K, 2) top-left (row, col) of each window, may be negative.
    Returns (K, C, size, size) of source's dtype.
    """
    source = _tensor("source", source)
    if source.dim() != 3:
        raise ValueError(f"crop_windows: source must be (C, H, W), got shape {tuple(source.shape)}")
    corners = _check_windows("crop_windows", "source", source, corners, size)
    if use_kernel("crop_windows", source.device, impl):
        return torch.ops.medgan_fast.crop_windows(source, corners, int(size))
    return crop_windows_reference(source, corners, size)


def component_masks(labels: torch.Tensor, corners: torch.Tensor, ids: torch.Tensor, size: int, *,
                    impl: str = "auto") -> torch.Tensor:
    """size x size bool masks ``labels == ids[k]`` in the window at corners[k] (False past the border).

    labels: int32 (H, W); corners: int64 (K, 2); ids: int32 (K,). Returns (K, size, size) bool.
    """
    labels = _tensor("labels", labels)
    if labels.dtype != torch.int32 or labels.dim() != 2:
        raise ValueError(f"component_masks: labels must be int32 (H, W), got {labels.dtype} {tuple(labels.shape)}")
    corners = _check_windows("component_masks", "labels", labels, corners, size)
    ids = _tensor("ids", ids)
    if ids.dtype != torch.int32 or ids.shape != (corners.shape[0],) or ids.device != labels.device:
        raise ValueError(f"component_masks: ids must be int32 ({corners.shape[0]},) on {labels.device}, "
                         f"got {ids.dtype} {tuple(ids.shape)} on {ids.device}")
    if use_kernel("component_masks", labels.device, impl):
        return torch.ops.medgan_fast.component_masks(labels, corners, ids, int(size))
    return component_masks_reference(labels, corners, ids, size)


def crop_windows_reference(source: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`crop_windows` by slicing a zero-padded copy."""
    c, h, w = source.shape
    out = torch.zeros((corners.shape[0], c, size, size), dtype=source.dtype, device=source.device)
    for k, (r, q) in enumerate(corners.tolist()):
        r0, r1, q0, q1 = max(r, 0), min(r + size, h), max(q, 0), min(q + size, w)
        if r0 < r1 and q0 < q1:
            out[k, :, r0 - r:r1 - r, q0 - q:q1 - q] = source[:, r0:r1, q0:q1]
    return out


def component_masks_reference(labels: torch.Tensor, corners: torch.Tensor, ids: torch.Tensor,
                              size: int) -> torch.Tensor:
    """:func:`component_masks` through :func:`crop_windows_reference` (background 0 is never an id)."""
    windows = crop_windows_reference(labels[None], corners, size)[:, 0]
    return (windows == ids[:, None, None]) & (ids[:, None, None] != 0)


def crop_components(image: torch.Tensor | None, labels: torch.Tensor, count: int, size: int, mode: str = "mask",
                    dilation: int = 0, min_area: int = 0, *, impl: str = "auto") -> ComponentPatches:
    """A size x size patch centred on each component's bounding-box centre.

    Args:
        image: (H, W) or (C, H, W) tensor (any dtype) on labels' device; may be None in
            mode "mask".
        labels: int32 (H, W) label image, values in [0, count] (see :func:`label`).
        count: number of components.
        size: patch side in pixels. The patch of a component with bbox [r0, r1) x [c0, c1)
            has its top-left at ((r0 + r1) // 2 - size // 2, (c0 + c1) // 2 - size // 2);
            past the image border it is zero.
        mode: "mask": patches are the component's own mask (bool, C = 1);
            "texture": the image seen through the component's mask dilated by `dilation`
            pixels (a disk), zero elsewhere (other components included);
            "full": the image patch, everything in it.
        dilation: disk radius for mode "texture".
        min_area: skip components with fewer pixels.

    Returns:
        :class:`ComponentPatches` for the kept components, in label order. ``masks`` is the
        component's own (undilated) mask in every mode.
    """
    labels = _check_labels(labels, count)
    if labels.dim() != 2:
        raise ValueError(f"labels must be (H, W) for crop_components, got shape {tuple(labels.shape)}")
    if mode not in CROP_MODES:
        raise ValueError(f"mode must be one of {CROP_MODES}, got {mode!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, (int, np.integer)) or dilation < 0:
        raise ValueError(f"dilation must be a non-negative integer, got {dilation!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    if image is None:
        if mode != "mask":
            raise ValueError(f"image is required in mode {mode!r}")
    else:
        image = _tensor("image", image)
        image = image[None] if image.dim() == 2 else image
        if image.dim() != 3 or image.shape[-2:] != labels.shape:
            raise ValueError(f"image must be (H, W) or (C, H, W) with (H, W) = labels' {tuple(labels.shape)}, "
                             f"got shape {tuple(image.shape)}")
        if image.device != labels.device:
            raise ValueError(f"image must be on labels' device {labels.device}, got {image.device}")

    stats = _component_stats(labels, count, impl)  # labels checked above
    keep = (stats.area >= max(min_area, 1)).nonzero()[:, 0]
    ids, bbox, area = keep + 1, stats.bbox[keep], stats.area[keep]
    corners = (bbox[:, :2] + bbox[:, 2:]) // 2 - size // 2

    # Masks in a window widened by the dilation, so pixels of the component just outside
    # the patch still dilate into it.
    grow = dilation if mode == "texture" else 0
    wide = component_masks(labels, corners - grow, ids.to(torch.int32), size + 2 * grow, impl=impl)
    masks = wide[:, grow:grow + size, grow:grow + size]
    if mode == "mask":
        patches = masks[:, None]
    else:
        patches = crop_windows(image, corners, size, impl=impl)
        if mode == "texture":
            seen = dilate(wide, disk(dilation), impl=impl)[:, grow:grow + size, grow:grow + size] if grow else masks
            patches = _zero_outside(patches, seen[:, None])
    return ComponentPatches(patches.contiguous(), masks[:, None].contiguous(), ids, bbox, area, corners)


# torch 2.11 (the GPU machine's) has no torch.where for uint16/32/64; the same bits viewed as
# the signed type of that width select alike.
_SIGNED_TWIN = {torch.uint16: torch.int16, torch.uint32: torch.int32, torch.uint64: torch.int64}


def _zero_outside(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """values where keep, else 0 (keep broadcasts)."""
    twin = _SIGNED_TWIN.get(values.dtype, values.dtype)
    view = values.view(twin)
    return torch.where(keep, view, torch.zeros((), dtype=twin, device=values.device)).view(values.dtype)


# ---------------------------------------------------------------------------------------
# torch.compile support: output shapes without running the kernels. label's outputs have
# static shapes (the count is a 0-d tensor); component_stats takes the count as an int.

if HAS_CPU_KERNELS:
    @torch.library.register_fake("medgan_fast::label")
    def _label_fake(mask, connectivity):
        return (torch.empty(mask.shape, dtype=torch.int32, device=mask.device),
                torch.empty((), dtype=torch.int64, device=mask.device))

    @torch.library.register_fake("medgan_fast::label_batch")
    def _label_batch_fake(masks, connectivity):
        return (torch.empty(masks.shape, dtype=torch.int32, device=masks.device),
                torch.empty((masks.shape[0],), dtype=torch.int64, device=masks.device))

    @torch.library.register_fake("medgan_fast::component_stats")
    def _component_stats_fake(labels, count):
        ndim = labels.dim()
        return (torch.empty((count,), dtype=torch.int64, device=labels.device),
                torch.empty((count, 2 * ndim), dtype=torch.int64, device=labels.device),
                torch.empty((count, ndim), dtype=torch.float64, device=labels.device))

    @torch.library.register_fake("medgan_fast::crop_windows")
    def _crop_windows_fake(source, corners, size):
        return source.new_empty((corners.shape[0], source.shape[0], size, size))

    @torch.library.register_fake("medgan_fast::component_masks")
    def _component_masks_fake(labels, corners, ids, size):
        return torch.empty((corners.shape[0], size, size), dtype=torch.bool, device=labels.device)
