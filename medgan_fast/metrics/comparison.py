"""Generated images against real ones, as numbers: the paired full-reference metrics and
the set metrics of the ``evaluate`` command and of training's sample grids. Tensors in,
numbers out (the evaluate job, :mod:`medgan_fast.jobs.evaluation`, loads the sets).

**Pairing (paired, full-reference metrics: psnr, ssim, ms_ssim, gmsd, ms_gmsd, mdsi,
haarpsi).** A generated image has no ground-truth twin, so each fake image f_i is compared
with a set R_i of real images: all of them when there are at most ``pairs_per_image`` (K,
default 64; 0 means no limit), else K distinct ones drawn by ``numpy.random.default_rng((seed,
i))`` (fixed by the seed, whatever the batch size). The metric is computed for every pair
(x = f_i, the distorted image in piq's terms; y = r, the reference) and averaged over R_i;
the reported value is the mean of these per-fake means over all fakes (every R_i has the same
size, so it is also the mean over all pairs), and ``std`` the standard deviation of the
per-fake means. A metric whose size limit the images miss (MS-SSIM needs 161 px with its 5
scales, HaarPSI 16 px, MS-GMSD 17 px, SSIM 11 px) is skipped with the reason.

**Set metrics** (:mod:`medgan_fast.metrics.distribution`): swd (sliced Wasserstein distance
between the real and fake sets' Laplacian-pyramid patches; lower is better), ms_ssim_diversity
(mean MS-SSIM between pairs of fake images; lower means more varied output, and the real
set's value is given as the reference), fid and kid (Inception-v3 features; computed only
with a local Inception weights file, never downloaded).

**During training** (:mod:`medgan_fast.training.loop`, config key ``metrics``): the same
computation on the sample grid's images against a fixed batch of real training images, with
:data:`TRAIN_PAIRS_PER_IMAGE` real images per sample image and a cheaper SWD
(:data:`TRAIN_SWD_OPTIONS`); :data:`TRAIN_DEFAULT_METRICS` by default.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import console
from ..errors import DataError
from .quality import HIGHER_IS_BETTER as QUALITY_HIGHER_IS_BETTER
from .quality import QUALITY_METRICS

__all__ = [
    "DEFAULT_METRICS", "HIGHER_IS_BETTER", "METRICS", "PAIRED_METRICS", "SET_METRICS", "TRAIN_DEFAULT_METRICS",
    "TRAIN_METRICS", "TRAIN_PAIRS_PER_IMAGE", "TRAIN_SWD_OPTIONS", "Comparison", "MetricValue", "compute_metrics",
    "direction", "pair_indices", "paired_metrics", "parse_metrics", "set_metrics",
]

PAIRED_METRICS = tuple(QUALITY_METRICS)                      # psnr, ssim, ms_ssim, gmsd, ms_gmsd, mdsi, haarpsi
SET_METRICS = ("swd", "ms_ssim_diversity", "fid", "kid")
METRICS = (*PAIRED_METRICS, *SET_METRICS)
DEFAULT_METRICS = METRICS
# What training can log (fid/kid need Inception weights: use the evaluate command), and its
# cheap default: about 0.1-0.5 s for 64 sample images of 64 px on a 2-core CPU.
TRAIN_METRICS = (*PAIRED_METRICS, "swd", "ms_ssim_diversity")
TRAIN_DEFAULT_METRICS = ("ssim", "ms_gmsd", "haarpsi", "swd")
TRAIN_PAIRS_PER_IMAGE = 4   # each sample image against 4 of the fixed real images
# SWD during training: 32 patches per image and level, 128 directions (the paper's 128 and 512
# cost 16x more, mostly sorting); an estimate to follow within a run, not to compare with
# evaluate's values.
TRAIN_SWD_OPTIONS = {"nhoods_per_image": 32, "dir_repeats": 1}
DIVERSITY_PAIRS = 100       # random image pairs of ms_ssim_diversity
HIGHER_IS_BETTER = {**QUALITY_HIGHER_IS_BETTER, "swd": False, "ms_ssim_diversity": False, "fid": False,
                    "kid": False}


def direction(name: str) -> str:
    """'higher is better' or 'lower is better' for metric `name`."""
    return "higher is better" if HIGHER_IS_BETTER[name] else "lower is better"


def parse_metrics(value: str | list[str] | tuple[str, ...] | None, argument: str = "--metrics",
                  valid: tuple[str, ...] = METRICS) -> tuple[str, ...]:
    """Metric names from a comma list (or a list): lower case, '-' read as '_', duplicates
    dropped, order kept. None gives every metric of `valid`; '' gives none.

    Raises:
        DataError: an unknown name; the message lists the valid ones and the closest match.
    """
    if value is None:
        return tuple(valid)
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    names: list[str] = []
    for item in items:
        name = item.strip().lower().replace("-", "_")
        if not name:
            continue
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{argument}: unknown metric {item.strip()!r}{hint} Valid metrics: {', '.join(valid)}")
        if name not in names:
            names.append(name)
    return tuple(names)


@dataclass
class MetricValue:
    """One metric's result: the value and what else is known (std over fakes, pairs, levels, ...)."""

    name: str
    value: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.name]

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "higher_is_better": self.higher_is_better, "direction": direction(self.name),
                **self.details}


@dataclass
class Comparison:
    """What :func:`compute_metrics` found."""

    values: dict[str, MetricValue]          # in the order asked
    skipped: dict[str, str]                 # metric -> why it was not computed


# ---------------------------------------------------------------------------------------
# Computing

def pair_indices(n_fake: int, n_real: int, pairs_per_image: int, seed: int = 0) -> torch.Tensor:
    """[n_fake, K] indices of the real images each fake image is compared with: all n_real
    when pairs_per_image is 0 or >= n_real, else K = pairs_per_image distinct ones drawn by
    ``numpy.random.default_rng((seed, i))`` for fake i (sorted)."""
    if pairs_per_image == 0 or pairs_per_image >= n_real:
        return torch.arange(n_real).expand(n_fake, n_real)
    rows = [np.sort(np.random.default_rng((seed, i)).choice(n_real, pairs_per_image, replace=False))
            for i in range(n_fake)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _size_problem(name: str, function: Callable, fake: torch.Tensor, real: torch.Tensor) -> str | None:
    """Why `name` cannot run on these images (its size limits), or None: one pair is tried."""
    try:
        function(fake[:1], real[:1], data_range=1.0, reduction="none")
    except ValueError as error:
        if "at least" in str(error) or "larger than the input" in str(error):
            return f"{error} (images too small)"
        raise
    return None


def paired_metrics(real: torch.Tensor, fake: torch.Tensor, names: tuple[str, ...], *, pairs_per_image: int = 64,
                   seed: int = 0, batch_size: int = 64, device: torch.device | str = "cpu",
                   progress: bool = False) -> tuple[dict[str, MetricValue], dict[str, str]]:
    """The full-reference metrics `names` of each fake image against its real images (the
    pairing of the module docstring). `real`, `fake`: [N, C, H, W] float in [0, 1], same C, H, W.
    Returns ({name: value}, {skipped name: reason})."""
    values: dict[str, MetricValue] = {}
    skipped: dict[str, str] = {}
    functions = {}
    for name in names:
        problem = _size_problem(name, QUALITY_METRICS[name], fake, real)
        if problem is None:
            functions[name] = QUALITY_METRICS[name]
        else:
            skipped[name] = problem
    if not functions:
        return values, skipped
    pairs = pair_indices(len(fake), len(real), pairs_per_image, seed)   # [F, K]
    n_fake, k = pairs.shape
    fake_index = torch.arange(n_fake).repeat_interleave(k)
    real_index = pairs.reshape(-1)
    scores = {name: torch.empty(n_fake * k, dtype=torch.float64) for name in functions}
    bar = console.progress_bar(progress, total=n_fake * k, desc="paired metrics", unit="pair", leave=False)
    for start in range(0, n_fake * k, batch_size):
        console.check_interrupt()
        stop = min(start + batch_size, n_fake * k)
        x = fake[fake_index[start:stop]].to(device)
        y = real[real_index[start:stop]].to(device)
        for name, function in functions.items():
            scores[name][start:stop] = function(x, y, data_range=1.0, reduction="none").double().cpu()
        bar.update(stop - start)
    bar.close()
    for name in functions:
        per_fake = scores[name].view(n_fake, k).mean(1)
        values[name] = MetricValue(name, per_fake.mean().item(), {
            "std": per_fake.std().item() if n_fake > 1 else 0.0, "fake_images": n_fake, "pairs_per_image": k,
            "pairs": n_fake * k})
    return values, skipped


def _distribution():
    # Imported when used: the set metrics are optional for the paired ones.
    from . import distribution
    return distribution


def set_metrics(real: torch.Tensor, fake: torch.Tensor, names: tuple[str, ...], *, seed: int = 0,
                batch_size: int = 64, device: torch.device | str = "cpu", inception: Path | None = None,
                swd_options: dict[str, Any] | None = None,
                progress: bool = False) -> tuple[dict[str, MetricValue], dict[str, str]]:
    """The set metrics `names` (swd, ms_ssim_diversity, fid, kid) of the two sets;
    `swd_options` go to :func:`~medgan_fast.metrics.distribution.swd` (default: its own)."""
    values: dict[str, MetricValue] = {}
    skipped: dict[str, str] = {}
    names = [name for name in names if name in SET_METRICS]
    if not names:
        return values, skipped
    cache: dict[str, Any] = {"swd_options": dict(swd_options or {})}
    bar = console.progress_bar(progress, names, desc="set metrics", unit="metric", leave=False)
    for name in bar:
        console.check_interrupt()
        bar.set_postfix_str(name)
        if name in ("fid", "kid") and inception is None:
            skipped[name] = "needs --inception FILE, local Inception-v3 weights (never downloaded)"
            continue
        try:
            values[name] = _SET_FUNCTIONS[name](real, fake, seed=seed, batch_size=batch_size, device=device,
                                                inception=inception, cache=cache)
        except _Skip as reason:
            skipped[name] = str(reason)
    bar.close()
    return values, skipped


class _Skip(Exception):
    """A set metric that cannot run on these images; the message says why."""


def _swd(real, fake, *, seed, batch_size, device, inception, cache) -> MetricValue:
    if min(fake.shape[-2:]) < _distribution().SWD_MIN_SIZE:
        size = _distribution().SWD_MIN_SIZE
        raise _Skip(f"needs images of at least {size}x{size} px, these are {fake.shape[-2]}x{fake.shape[-1]}")
    options = cache["swd_options"]
    result = _distribution().swd(real.to(device), fake.to(device), seed=seed, **options)
    return MetricValue("swd", result.mean, {
        "levels": {str(resolution): value for resolution, value in zip(result.resolutions, result.levels.tolist())},
        "unit": "SWD x 1e3, the mean over Laplacian-pyramid levels (finest first, by resolution)", **options})


def _ms_ssim_diversity(real, fake, *, seed, batch_size, device, inception, cache) -> MetricValue:
    if len(fake) < 2:
        raise _Skip(f"needs at least 2 fake images, got {len(fake)}")
    if min(fake.shape[-2:]) < 21:
        raise _Skip(f"needs images of at least 21x21 px (MS-SSIM with 2 scales), these are "
                    f"{fake.shape[-2]}x{fake.shape[-1]}")
    function = _distribution().ms_ssim_diversity

    def diversity(images: torch.Tensor) -> tuple[float, int]:
        # Random pairs, at most 100 and at most as many as there are distinct pairs.
        pairs = min(DIVERSITY_PAIRS, len(images) * (len(images) - 1) // 2)
        return function(images.to(device), num_pairs=pairs, seed=seed, batch_size=batch_size), pairs

    value, pairs = diversity(fake)
    details = {"pairs": pairs, "note": "mean MS-SSIM between random pairs of fake images; lower means more varied "
                                       "images (compare with real_value, the same on the real images)"}
    if len(real) >= 2:
        details["real_value"] = diversity(real)[0]
    return MetricValue("ms_ssim_diversity", value, details)


def _fid_kid(name, real, fake, *, seed, batch_size, device, inception, cache) -> MetricValue:
    if min(len(real), len(fake)) < 2:
        raise _Skip(f"needs at least 2 images on each side, got {len(real)} real and {len(fake)} fake")
    distribution = _distribution()
    if "features" not in cache:   # fid and kid share one model and one pass over the images
        try:
            model = distribution.load_inception(inception, device)
        except (OSError, ValueError, RuntimeError) as error:
            raise DataError(f"--inception {inception}: cannot load ({error})") from error
        cache["features"] = [distribution.inception_features(images, model, batch_size=batch_size)
                             for images in (real, fake)]
    features = cache["features"]
    if name == "fid":
        value = distribution.fid_from_features(*features)
    else:
        value = distribution.kid_from_features(*features, seed=seed)
    return MetricValue(name, value, {"features": "Inception-v3 pool features (2048)"})


_SET_FUNCTIONS: dict[str, Callable[..., MetricValue]] = {
    "swd": _swd,
    "ms_ssim_diversity": _ms_ssim_diversity,
    "fid": lambda *args, **kwargs: _fid_kid("fid", *args, **kwargs),
    "kid": lambda *args, **kwargs: _fid_kid("kid", *args, **kwargs),
}


def compute_metrics(real: torch.Tensor, fake: torch.Tensor, names: tuple[str, ...], *, pairs_per_image: int = 64,
                    seed: int = 0, batch_size: int = 64, device: torch.device | str = "cpu",
                    inception: Path | None = None, swd_options: dict[str, Any] | None = None,
                    progress: bool = False) -> Comparison:
    """Paired and set metrics `names` of `fake` against `real` ([N, C, H, W] float in [0, 1],
    same C, H, W), in the order of `names`; see the module docstring."""
    paired, skipped = paired_metrics(real, fake, tuple(name for name in names if name in PAIRED_METRICS),
                                     pairs_per_image=pairs_per_image, seed=seed, batch_size=batch_size,
                                     device=device, progress=progress)
    sets, set_skipped = set_metrics(real, fake, names, seed=seed, batch_size=batch_size, device=device,
                                    inception=inception, swd_options=swd_options, progress=progress)
    found = {**paired, **sets}
    reasons = {**skipped, **set_skipped}
    return Comparison({name: found[name] for name in names if name in found},
                      {name: reasons[name] for name in names if name in reasons})
