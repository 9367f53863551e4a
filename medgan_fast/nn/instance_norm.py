"""Instance normalisation whose statistics can be fixed for a whole image: seamless tiled
translation of slides.

Why: a generator with instance norm computes each feature map's mean and variance over the
image it is given. Run tile by tile over a slide, every tile gets its own statistics, so the
same tissue comes out brighter in one tile than in the next and the tiles' edges show as
seams that blending the overlaps only blurs. :class:`StatisticsInstanceNorm` can instead
*record* the statistics of one forward pass (of a thumbnail of the whole slide: every layer
then sees the slide's content at a coarser scale, as thumbnail instance normalisation does,
Ho et al. 2022, "URUST") and *reuse* them in every later pass, so all tiles are normalised
alike and a tile's output depends only on the pixels it sees.

Modes (set with :func:`record_statistics` and :func:`reuse_statistics`, context managers
over a whole model): ``None`` (plain instance norm, training), ``"record"`` (normalise with
the batch's own statistics and keep their mean over the batch), ``"reuse"`` (normalise every
image with the kept statistics). The recorded statistics are not parameters or buffers: a
model's state_dict, and so its checkpoints, are those of ``nn.InstanceNorm2d``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["StatisticsInstanceNorm", "record_statistics", "reuse_statistics"]


class StatisticsInstanceNorm(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (no running statistics) that can record and reuse its
    per-channel statistics (see the module docstring)."""

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False):
        super().__init__(num_features, eps=eps, affine=affine, track_running_stats=False)
        self.mode: str | None = None
        self.recorded: tuple[torch.Tensor, torch.Tensor] | None = None   # (mean, var), each (1, C, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            return super().forward(x)
        if self.mode == "record":
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
            self.recorded = (mean.mean(0, keepdim=True), var.mean(0, keepdim=True))
        if self.recorded is None:
            raise RuntimeError("StatisticsInstanceNorm: reuse_statistics before any record_statistics pass")
        mean, var = self.recorded
        y = (x.float() - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def _set_mode(model: nn.Module, mode: str | None) -> list[StatisticsInstanceNorm]:
    layers = [module for module in model.modules() if isinstance(module, StatisticsInstanceNorm)]
    for layer in layers:
        layer.mode = mode
    return layers


@contextlib.contextmanager
def record_statistics(model: nn.Module) -> Iterator[int]:
    """Within it, forward passes of `model` record every StatisticsInstanceNorm's statistics
    (the last pass wins); yields how many such layers the model has."""
    layers = _set_mode(model, "record")
    try:
        yield len(layers)
    finally:
        _set_mode(model, None)


@contextlib.contextmanager
def reuse_statistics(model: nn.Module) -> Iterator[None]:
    """Within it, forward passes of `model` normalise with the recorded statistics; after it
    they are dropped and the layers are plain instance norm again."""
    _set_mode(model, "reuse")
    try:
        yield
    finally:
        for layer in _set_mode(model, None):
            layer.recorded = None
