"""How visible tile edges are in an image made tile by tile: the mean step across the lines
where tiles meet against the mean step across every other line of the same image (1: edges
are as smooth as the rest; a seam shows as a ratio above 1)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["seam_ratio"]


def _steps(image: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean |difference| between neighbouring lines along `dim` of (C, H, W): entry k is
    line k to line k + 1."""
    other = tuple(d for d in range(3) if d != dim)
    return image.double().diff(dim=dim).abs().mean(other)


def seam_ratio(image: torch.Tensor, row_edges: Iterable[int], column_edges: Iterable[int]) -> float:
    """The larger, over rows and columns, of (mean step across the edges) / (mean step across
    the other lines), for a (C, H, W) image; an edge k is the step from line k to k + 1
    (:func:`medgan_fast.data.tiles.tile_edges` gives them for a tiling)."""
    if image.ndim != 3:
        raise ValueError(f"image: expected (C, H, W), got {tuple(image.shape)}")
    ratios = []
    for dim, edges in ((1, sorted(set(row_edges))), (2, sorted(set(column_edges)))):
        steps = _steps(image, dim)
        if not edges:
            continue
        if edges[0] < 0 or edges[-1] >= len(steps):
            raise ValueError(f"edges: expected lines in [0, {len(steps) - 1}], got {edges[0]} .. {edges[-1]}")
        inside = torch.ones(len(steps), dtype=torch.bool)
        inside[edges] = False
        ratios.append(float(steps[edges].mean() / steps[inside].mean()))
    if not ratios:
        raise ValueError("row_edges, column_edges: no tile edges to measure")
    return max(ratios)
