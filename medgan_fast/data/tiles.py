"""Tiled inference: run a per-pixel model over an image too large for one forward (a whole
slide), tile by tile, and blend the tiles back into one (K, H, W) prediction.

Why blend: a fully convolutional model sees less context near a tile's edge (its zero
padding stands where the neighbouring pixels should be), so pasting tiles side by side leaves
visible seams. Neighbouring tiles overlap by ``overlap`` pixels and each tile's weight ramps
linearly from 0 at an edge to 1 at ``overlap`` pixels inside it; in an overlap of exactly
``overlap`` pixels the two ramps sum to 1, so the output crossfades from one tile to the next.
The outermost pixel of an interior edge gets weight 0 (for overlap >= 2), so a model whose
receptive field is 3x3 (one pixel of padding) gives exactly the whole-image result. With
overlap 0 or 1 there is no room for a ramp and overlapping pixels are plainly averaged.

Why edges on the image border keep weight 1: no other tile covers those pixels, so a ramp
there would divide a near-zero weighted sum by a near-zero weight (or by zero) and only add
noise; the model's own padding at the image border is the same whether it sees the whole
image or a tile.

Tile origins are placed every ``tile - overlap`` pixels, with the last tile moved back so it
ends exactly at the border (it may overlap its neighbour by more than ``overlap``). An image
smaller than a tile is reflect-padded (replicate-padded when it is too small to reflect) up to
one tile, and the prediction is cropped back.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check_integer

__all__ = ["predict_tiled", "tile_origins"]


def _check_tile(tile: int, overlap: int) -> None:
    check_integer("tile", tile, 1)
    check_integer("overlap", overlap, 0)
    if overlap >= tile:
        raise ValueError(f"overlap: must be smaller than tile ({tile}), got {overlap}")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` pixels: every ``tile -
    overlap`` pixels, the last one at ``length - tile`` so no tile leaves the image. A length
    of at most one tile gives ``[0]`` (the caller pads up to the tile)."""
    check_integer("length", length, 1)
    _check_tile(tile, overlap)
    if length <= tile:
        return [0]
    return [*range(0, length - tile, tile - overlap), length - tile]


def _ramp(tile: int, overlap: int, start: bool, end: bool) -> Tensor:
    """1-D weights of one tile: ramps at the ``start`` / ``end`` edges that are interior to
    the image, 1 elsewhere."""
    weight = torch.ones(tile)
    if overlap < 2:
        return weight
    ramp = torch.linspace(0.0, 1.0, overlap)
    if start:
        weight[:overlap] = torch.minimum(weight[:overlap], ramp)
    if end:
        weight[-overlap:] = torch.minimum(weight[-overlap:], ramp.flip(0))
    return weight


def _pad_to(image: Tensor, tile: int) -> Tensor:
    pad_h, pad_w = max(tile - image.shape[1], 0), max(tile - image.shape[2], 0)
    if not pad_h and not pad_w:
        return image
    # Reflect needs a pad smaller than the side; a tiny image falls back to replicate.
    mode = "reflect" if pad_h < image.shape[1] and pad_w < image.shape[2] else "replicate"
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode=mode)[0]


def predict_tiled(predict: Callable[[Tensor], Tensor], image: Tensor, tile: int, overlap: int,
                  multiple: int = 1, batch_size: int = 8) -> Tensor:
    """Runs ``predict`` over ``image`` in overlapping tiles and blends the results.

    Args:
        predict: maps a batch (B, C, t, t) to (B, K, t, t), e.g. a model in eval mode.
        image: (C, H, W), any H and W.
        tile: tile side t, rounded up to a multiple of ``multiple``.
        overlap: pixels shared by neighbouring tiles, 0 <= overlap < tile.
        multiple: what the model needs the tile side to be a multiple of (``UNet.multiple``).
        batch_size: tiles per call of ``predict``.

    Returns:
        (K, H, W) float32 on ``image``'s device: sum(weight * tile prediction) / sum(weight).
    """
    if not isinstance(image, Tensor) or image.ndim != 3:
        raise ValueError(f"image: expected a (C, H, W) tensor, got {getattr(image, 'shape', type(image))}")
    _check_tile(tile, overlap)
    check_integer("multiple", multiple, 1)
    check_integer("batch_size", batch_size, 1)
    tile = -(-tile // multiple) * multiple
    height, width = image.shape[1:]
    padded = _pad_to(image, tile)
    padded_h, padded_w = padded.shape[1:]
    origins = [(y, x) for y in tile_origins(padded_h, tile, overlap) for x in tile_origins(padded_w, tile, overlap)]
    device = image.device
    windows: dict[tuple[bool, bool, bool, bool], Tensor] = {}
    total = torch.zeros(1, padded_h, padded_w, device=device)
    out = None
    with torch.no_grad():
        for first in range(0, len(origins), batch_size):
            chunk = origins[first:first + batch_size]
            pred = predict(torch.stack([padded[:, y:y + tile, x:x + tile] for y, x in chunk]))
            if pred.ndim != 4 or pred.shape[0] != len(chunk) or pred.shape[2:] != (tile, tile):
                raise ValueError(f"predict: expected ({len(chunk)}, K, {tile}, {tile}) for a batch of "
                                 f"{len(chunk)} tiles, got {tuple(pred.shape)}")
            if out is None:
                out = torch.zeros(pred.shape[1], padded_h, padded_w, device=device)
            for (y, x), tile_pred in zip(chunk, pred):
                edges = (y > 0, y + tile < padded_h, x > 0, x + tile < padded_w)
                if edges not in windows:
                    windows[edges] = torch.outer(_ramp(tile, overlap, *edges[:2]),
                                                 _ramp(tile, overlap, *edges[2:])).to(device)
                window = windows[edges]
                out[:, y:y + tile, x:x + tile] += window * tile_pred.to(device, torch.float32)
                total[:, y:y + tile, x:x + tile] += window
    return (out / total)[:, :height, :width]
