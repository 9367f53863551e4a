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

:func:`predict_tiled_rows` does the same band by band, for images read from and written to
files by rows (:mod:`medgan_fast.data.slides`): it holds only the rows that the tiles being
blended still need, about two tile rows, and :func:`predict_tiled` is that same code run on a
tensor in memory.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import check_integer

__all__ = ["count_tiles", "predict_tiled", "predict_tiled_rows", "tile_edges", "tile_origins"]


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


def count_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """How many tiles :func:`predict_tiled` and :func:`predict_tiled_rows` run on an H x W image."""
    tile = _check_arguments(tile, overlap, multiple, 1)
    return len(tile_origins(max(height, tile), tile, overlap)) * len(tile_origins(max(width, tile), tile, overlap))


def tile_edges(length: int, tile: int, overlap: int) -> list[int]:
    """The lines k (0 <= k < length - 1) where a tile starts at k + 1 or ends at k, inside an
    axis of ``length`` pixels: where a seam would show (:func:`medgan_fast.metrics.seams.seam_ratio`)."""
    origins = tile_origins(length, tile, overlap)
    return sorted({o - 1 for o in origins if o > 0} | {o + tile - 1 for o in origins if o + tile < length})


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


def _pad_mode(height: int, width: int, tile: int) -> str:
    # Reflect needs a pad smaller than the side; a tiny image falls back to replicate.
    return "reflect" if tile - height < height and tile - width < width else "replicate"


def _pad_to(image: Tensor, tile: int) -> Tensor:
    pad_h, pad_w = max(tile - image.shape[1], 0), max(tile - image.shape[2], 0)
    if not pad_h and not pad_w:
        return image
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode=_pad_mode(*image.shape[1:], tile))[0]


def _read_band(read_rows: Callable[[int, int], Any], y0: int, y1: int, shape: tuple[int, int, int],
               tile: int) -> Tensor:
    """Rows [y0, y1) from ``read_rows`` as a (C, y1 - y0, max(W, tile)) tensor: padded on the
    right as :func:`_pad_to` pads the whole image (only called when H >= tile, so no row pad)."""
    band = torch.as_tensor(read_rows(y0, y1))
    channels, height, width = shape
    if band.shape != (channels, y1 - y0, width):
        raise ValueError(f"read_rows: expected ({channels}, {y1 - y0}, {width}) for rows {y0}-{y1}, "
                         f"got {tuple(band.shape)}")
    if width >= tile:
        return band
    return F.pad(band[None], (0, tile - width, 0, 0), mode=_pad_mode(height, width, tile))[0]


def _blend_rows(predict: Callable[[Tensor], Tensor], read_rows: Callable[[int, int], Any],
                shape: tuple[int, int, int], tile: int, overlap: int, batch_size: int,
                progress: Any = None) -> Iterator[tuple[int, Tensor]]:
    """Yields (y0, finished (K, rows, W) float32 rows from y0), top to bottom, every row once.

    Tiles go in row-major order in batches of ``batch_size``; after each batch, the rows
    above the next tile's origin have all their tiles and are divided and yielded. Input rows
    are read once each, in order, at most ``tile`` per call, when a batch first needs them,
    and dropped when no later tile does. Every pixel adds the same terms in the same order as
    one whole-image buffer would, so the result does not depend on the banding."""
    _, height, width = shape
    padded_h, padded_w = max(height, tile), max(width, tile)
    origins = [(y, x) for y in tile_origins(padded_h, tile, overlap) for x in tile_origins(padded_w, tile, overlap)]
    if height < tile:  # one tile row: read all of it, padded in both directions as predict_tiled pads
        band = torch.as_tensor(read_rows(0, height))
        if band.shape != shape:
            raise ValueError(f"read_rows: expected {shape} for rows 0-{height}, got {tuple(band.shape)}")
        image, image_y0, read_to = _pad_to(band, tile), 0, padded_h
    else:
        image, image_y0, read_to = None, 0, 0  # input rows [image_y0, read_to)
    windows: dict[tuple[bool, bool, bool, bool], Tensor] = {}
    out = total = None  # sums of rows [out_y0, out_y0 + out.shape[1])
    out_y0 = 0
    for first in range(0, len(origins), batch_size):
        chunk = origins[first:first + batch_size]
        y_low, y_high = chunk[0][0], chunk[-1][0] + tile
        if y_high > read_to:
            bands = [_read_band(read_rows, y, min(y + tile, y_high), shape, tile) for y in range(read_to, y_high, tile)]
            kept = [image[:, y_low - image_y0:]] if image is not None else []
            image, image_y0, read_to = torch.cat(kept + bands, dim=1), y_low, y_high
        device = image.device
        with torch.no_grad():
            pred = predict(torch.stack([image[:, y - image_y0:y - image_y0 + tile, x:x + tile] for y, x in chunk]))
        if pred.ndim != 4 or pred.shape[0] != len(chunk) or pred.shape[2:] != (tile, tile):
            raise ValueError(f"predict: expected ({len(chunk)}, K, {tile}, {tile}) for a batch of "
                             f"{len(chunk)} tiles, got {tuple(pred.shape)}")
        if out is None:
            out = torch.zeros(pred.shape[1], 0, padded_w, device=device)
            total = torch.zeros(1, 0, padded_w, device=device)
        grow = y_high - out_y0 - out.shape[1]
        if grow > 0:
            out = torch.cat([out, out.new_zeros(out.shape[0], grow, padded_w)], dim=1)
            total = torch.cat([total, total.new_zeros(1, grow, padded_w)], dim=1)
        for (y, x), tile_pred in zip(chunk, pred):
            edges = (y > 0, y + tile < padded_h, x > 0, x + tile < padded_w)
            if edges not in windows:
                windows[edges] = torch.outer(_ramp(tile, overlap, *edges[:2]),
                                             _ramp(tile, overlap, *edges[2:])).to(device)
            window = windows[edges]
            out[:, y - out_y0:y - out_y0 + tile, x:x + tile] += window * tile_pred.to(device, torch.float32)
            total[:, y - out_y0:y - out_y0 + tile, x:x + tile] += window
        if hasattr(progress, "update"):
            progress.update(len(chunk))
        elif progress is not None:
            progress(first + len(chunk), len(origins))
        done = origins[first + batch_size][0] if first + batch_size < len(origins) else padded_h
        finished = min(done, height) - out_y0
        if finished > 0:
            yield out_y0, (out[:, :finished] / total[:, :finished])[:, :, :width]
            out, total, out_y0 = out[:, finished:], total[:, finished:], out_y0 + finished


def _check_arguments(tile: int, overlap: int, multiple: int, batch_size: int) -> int:
    """The tile side rounded up to ``multiple``, after checking the arguments."""
    _check_tile(tile, overlap)
    check_integer("multiple", multiple, 1)
    check_integer("batch_size", batch_size, 1)
    return -(-tile // multiple) * multiple


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
    tile = _check_arguments(tile, overlap, multiple, batch_size)
    result = None
    for y0, rows in _blend_rows(predict, lambda y0, y1: image[:, y0:y1], tuple(image.shape), tile, overlap,
                                batch_size):
        if result is None:
            result = torch.empty(rows.shape[0], *image.shape[1:], device=rows.device)
        result[:, y0:y0 + rows.shape[1]] = rows
    return result


def predict_tiled_rows(predict: Callable[[Tensor], Tensor], read_rows: Callable[[int, int], Any],
                       write_rows: Callable[[np.ndarray], Any], shape: tuple[int, int, int], tile: int,
                       overlap: int, multiple: int = 1, batch_size: int = 8, progress: Any = None) -> None:
    """:func:`predict_tiled` on an image read and written by rows: same tiles, weights and
    result (up to float rounding), holding about two tile rows of input and output.

    Args:
        predict: maps a batch (B, C, t, t) to (B, K, t, t).
        read_rows: ``read_rows(y0, y1)`` gives rows [y0, y1) as a (C, y1 - y0, W) float tensor
            or array; tiles go to ``predict`` on its device, which is also where the blend is
            summed. Called with increasing, adjacent ranges of at most t rows, each row once
            (all H rows at once when H < t).
        write_rows: called with finished (K, rows, W) float32 NumPy arrays, top to bottom,
            every row exactly once.
        shape: the image's (C, H, W).
        tile, overlap, multiple, batch_size: as for :func:`predict_tiled`.
        progress: None, a callable ``progress(done_tiles, total_tiles)`` called after each
            batch, or an object with ``update(n)`` (a tqdm bar; its total is
            :func:`count_tiles`).

    Peak memory: the input rows and sums that one batch spans (t rows; more when a batch
    crosses into later tile rows, as on images narrower than ``batch_size`` tiles), about
    2 (C + K + 1) x those rows x W floats, plus one batch; never the whole image.
    """
    if len(shape) != 3 or not all(isinstance(n, (int, np.integer)) and n >= 1 for n in shape):
        raise ValueError(f"shape: expected (C, H, W) of positive integers, got {shape}")
    tile = _check_arguments(tile, overlap, multiple, batch_size)
    shape = tuple(int(n) for n in shape)
    for _, rows in _blend_rows(predict, read_rows, shape, tile, overlap, batch_size, progress):
        write_rows(np.ascontiguousarray(rows.cpu().numpy()))
