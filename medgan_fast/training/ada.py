"""ADA: adaptive discriminator augmentation (Karras et al. 2020, "Training Generative
Adversarial Networks with Limited Data", arXiv:2006.06676), the part of its pipeline that
small medical sets need: x-flips, 90-degree rotations and integer translations (up to 1/8 of
the side, reflected at the border), then brightness, contrast and saturation. Each is
applied to each image with probability p, on every image D sees (reals and fakes alike) and
differentiably (G learns through it), so D cannot tell the augmentations from the data and
they do not leak into G's images.

p adapts (:class:`AdaptiveProbability`): every ``interval`` steps the overfitting heuristic
r_t = E[sign(D(real))] is compared with a target (0.6); p moves by batch * interval /
(ada_kimg * 1000) towards more augmentation if r_t is above it and less if below, so p can
go from 0 to 1 in ada_kimg thousand images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

__all__ = ["AdaptiveProbability", "augment"]

TRANSLATION = 0.125
BRIGHTNESS_SD, CONTRAST_SD, SATURATION_SD = 0.2, 0.5, 1.0  # NVIDIA's 'bgc' strengths (contrast, saturation: log2)


def _chosen(p: float, n: int, device, generator) -> torch.Tensor:
    """(N,) bool: which images get an augmentation of probability p."""
    return torch.rand(n, device=device, generator=generator) < p


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Indices reflected into [0, size) (no edge repeat, as numpy's 'reflect' pad)."""
    period = 2 * (size - 1) if size > 1 else 1
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def augment(images: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` (N, C, H, W) in [-1, 1], square, each augmentation applied with probability
    ``p`` per image (see the module docstring). p = 0 returns the images themselves."""
    if p <= 0:
        return images
    n, c, h, w = images.shape
    device = images.device
    x = images
    flip = _chosen(p, n, device, generator)
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    turns = torch.randint(0, 4, (n,), device=device, generator=generator) * _chosen(p, n, device, generator)
    if h == w:
        x = torch.stack([torch.rot90(x[k], int(t), dims=(1, 2)) for k, t in enumerate(turns.tolist())]) \
            if bool(turns.any()) else x
    shift = (torch.rand(n, 2, device=device, generator=generator) * 2 - 1) * TRANSLATION
    shift = (shift * torch.tensor([h, w], device=device)).round().long() * _chosen(p, n, device, generator)[:, None]
    if bool(shift.any()):
        rows = _reflect(torch.arange(h, device=device)[None] - shift[:, :1], h)  # [N, H]
        cols = _reflect(torch.arange(w, device=device)[None] - shift[:, 1:], w)  # [N, W]
        x = x.gather(2, rows[:, None, :, None].expand(n, c, h, w))
        x = x.gather(3, cols[:, None, None, :].expand(n, c, h, w))
    # Colour, around the image's mean (brightness adds, contrast and saturation scale).
    brightness = torch.randn(n, device=device, generator=generator) * BRIGHTNESS_SD
    x = x + (brightness * _chosen(p, n, device, generator)).view(n, 1, 1, 1).to(x.dtype)
    contrast = torch.exp2(torch.randn(n, device=device, generator=generator) * CONTRAST_SD)
    contrast = torch.where(_chosen(p, n, device, generator), contrast, torch.ones_like(contrast)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.to(x.dtype) + mean
    if c == 3:
        saturation = torch.exp2(torch.randn(n, device=device, generator=generator) * SATURATION_SD)
        saturation = torch.where(_chosen(p, n, device, generator), saturation,
                                 torch.ones_like(saturation)).view(n, 1, 1, 1)
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * saturation.to(x.dtype) + grey
    return x


class AdaptiveProbability:
    """The augmentation probability p and the statistic that steers it (checkpointed)."""

    def __init__(self, p: float = 0.0, target: float = 0.6, kimg: float = 100.0, interval: int = 4,
                 adaptive: bool = True, reduce: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.p, self.target, self.kimg, self.interval, self.adaptive = float(p), target, kimg, interval, adaptive
        self.reduce = reduce   # sums over the processes, so every one holds the same p and sums
        self.sign_sum, self.count, self.rt = 0.0, 0, math.nan

    def observe(self, real_logits: torch.Tensor) -> None:
        """Adds sign(D(real)) of a batch (of every process's, with `reduce`): one
        synchronisation per call, at D steps only."""
        if self.adaptive:
            logits = real_logits.detach().float()
            totals = torch.stack([torch.sign(logits).sum(), torch.tensor(float(logits.numel()), device=logits.device)])
            sign_sum, count = (self.reduce(totals) if self.reduce else totals).tolist()
            self.sign_sum += sign_sum
            self.count += round(count)

    def update(self, step: int, batch_size: int) -> None:
        """After a step: every ``interval`` steps, move p by the heuristic and reset the sums."""
        if not self.adaptive or (step + 1) % self.interval or self.count == 0:
            return
        self.rt = self.sign_sum / self.count
        direction = (self.rt > self.target) - (self.rt < self.target)
        self.p = min(max(self.p + direction * batch_size * self.interval / (self.kimg * 1000), 0.0), 1.0)
        self.sign_sum, self.count = 0.0, 0

    def state_dict(self) -> dict:
        return {"p": self.p, "sign_sum": self.sign_sum, "count": self.count, "rt": self.rt}

    def load_state_dict(self, state: dict) -> None:
        self.p, self.sign_sum, self.count, self.rt = state["p"], state["sign_sum"], state["count"], state["rt"]

