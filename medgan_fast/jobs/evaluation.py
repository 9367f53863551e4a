"""The evaluate job: loads a real and a fake set (folders, patch sets, images, or a
checkpoint's generated images), compares them (:mod:`medgan_fast.metrics.comparison`) and
writes the JSON.

    >>> from medgan_fast.jobs.evaluation import EvaluateConfig, evaluate
    >>> result = evaluate(EvaluateConfig(real="patches.h5",
    ...                                  fake="runs/dcgan64_sample/checkpoints/last.pt"))  # doctest: +SKIP
    >>> print(result.table())                                                              # doctest: +SKIP

**Sets.** Each side is an image folder (PNG, JPEG, TIFF, NPY; searched recursively, hidden
files skipped), an HDF5 patch set (``images`` (N, C, H, W), as ``patches`` and ``generate``
write them), one image file, or, for the fake side only, a training checkpoint: then
``quantity`` images are generated with latent seed ``seed``, exactly the images ``python -m
medgan_fast.generate --seed S --quantity N`` would write (8-bit, so evaluating a checkpoint
equals evaluating the PNG files made from it).

**Scale.** Images become float32 in [0, 1]: 8-bit / 255, 16-bit / 65535, float as it is when
inside [0, 1] (else min-max per image, as training reads it). With ``data_range`` R the stored
values are divided by R instead (piq's data_range: the value of white, e.g. 4095 for 12-bit
data in 16-bit files), on both sides; a value outside [0, R] is an error. Images generated
from a checkpoint are 8-bit / 255 whatever R is. The metrics then run with data_range 1, which
gives piq's results for the stored values with data_range R.

**Size and channels.** All fake images must have one size H x W and one channel count (grey
1 or RGB 3; alpha is dropped). Real images must have the fakes' channel count; each is resized
to cover H x W (bilinear, antialiased when shrinking) and centre-cropped to it (for square
fakes: torchvision's Resize(H) + CenterCrop(H), as training reads images). Fakes are never
changed.

Pairing, the set metrics and what training logs: :mod:`medgan_fast.metrics.comparison`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from .. import console
from .._version import __version__
from ..data.datasets import HDF5_SUFFIXES, find_images, resize_and_crop, to_unit_float
from ..data.images import IMAGE_SUFFIXES, read_image
from ..data.sample import SAMPLE_NAME, sample_image
from ..errors import DataError
from ..metrics.comparison import DEFAULT_METRICS, METRICS, PAIRED_METRICS, Comparison, compute_metrics, direction, \
    parse_metrics
from ..outputs import check_output_file, write_json
from .generation import latent_vectors, load_generator, resolve_device, to_uint8
from ..training.checkpoint import CheckpointError

__all__ = ["CHECKPOINT_SUFFIXES", "DEMO_COUNT", "DEMO_SIZE", "EvaluateConfig", "Evaluation", "ImageSet", "demo_sets",
           "evaluate", "load_set"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")

# The no-argument demo: crops of the embedded sample large enough for MS-SSIM (161 px).
DEMO_COUNT = 12
DEMO_SIZE = 176
DEMO_BLUR_SIGMA = 1.0      # px, Gaussian
DEMO_NOISE_SIGMA = 0.05    # additive Gaussian noise, on the [0, 1] scale


@dataclass
class EvaluateConfig:
    """Settings of one evaluation (the ``evaluate`` command's arguments). With neither `real`
    nor `fake`, the demo on the embedded sample (:func:`demo_sets`)."""

    real: Path | None = None              # folder, .h5 patch set or image file
    fake: Path | None = None              # folder, .h5 set, image file, or a training checkpoint (.pt)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    data_range: float | None = None       # stored value of white (default: by dtype; see the module docstring)
    out: Path | None = Path("evaluation.json")   # JSON results (None: none written)
    quantity: int = 64                    # images generated from a checkpoint
    batch_size: int = 64                  # pairs per metric call, images per forward pass
    seed: int = 0                         # latent seed (as generate's), pairing sample, SWD projections
    pairs_per_image: int = 64             # K real images per fake image (0: all)
    inception: Path | None = None         # local Inception-v3 weights for fid/kid
    device: str = "auto"                  # auto (CUDA when available), cpu, cuda, cuda:N
    progress: bool = True
    overwrite: bool = False                     # replace an existing out; else refuse
    command: str = ""                     # stored in the JSON

    def __post_init__(self):
        for name in ("real", "fake", "out", "inception"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, Path(value))
        self.metrics = parse_metrics(self.metrics)
        if not self.metrics:
            raise DataError("--metrics: no metric given; valid metrics: " + ", ".join(METRICS))
        for name, low in (("quantity", 1), ("batch_size", 1), ("seed", 0), ("pairs_per_image", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise DataError(f"--{name.replace('_', '-')}: expected an integer >= {low}, got {value!r}")
        if self.data_range is not None and not (isinstance(self.data_range, (int, float))
                                                and math.isfinite(self.data_range) and self.data_range > 0):
            raise DataError(f"--data-range: expected a number > 0, got {self.data_range!r}")
        if (self.real is None) != (self.fake is None):
            missing = "--real" if self.real is None else "--fake"
            raise DataError(f"{missing}: missing; give both --real and --fake (or neither, for the demo on the "
                            "embedded sample)")

    @property
    def is_demo(self) -> bool:
        return self.real is None and self.fake is None


@dataclass
class ImageSet:
    """Images of one side, ready for the metrics."""

    images: torch.Tensor       # [N, C, H, W] float32 in [0, 1], on the CPU
    source: str                # the path, or what the demo made
    kind: str                  # folder, patch set, image, checkpoint or demo
    description: str = ""      # how they were made or changed (resized, generated from step ...)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[2:])

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.source, "kind": self.kind, "count": len(self), "description": self.description}


@dataclass
class Evaluation(Comparison):
    """What :func:`evaluate` found: the comparison, the two sets and the settings."""

    real: ImageSet | None = None
    fake: ImageSet | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    out: Path | None = None
    demo: bool = False

    def table(self) -> str:
        """The results as a text table: metric, value, direction (or why skipped)."""
        names = [*self.values, *(name for name in self.skipped if name not in self.values)]
        width = max([len("metric"), *map(len, names)])
        lines = [f"{'metric':<{width}}  {'value':>12}  direction"]
        for name in names:
            if name in self.values:
                result = self.values[name]
                note = ""
                if "real_value" in result.details:
                    note = f" (real images: {result.details['real_value']:.4g})"
                lines.append(f"{name:<{width}}  {_format(result.value):>12}  {direction(name)}{note}")
            else:
                lines.append(f"{name:<{width}}  {'-':>12}  skipped: {self.skipped[name]}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        record = {"package_version": __version__, "command": self.settings.get("command", ""), "demo": self.demo,
                  "real": self.real.to_dict() if self.real is not None else None,
                  "fake": self.fake.to_dict() if self.fake is not None else None}
        if self.fake is not None:
            record.update(image_size=list(self.fake.size), channels=self.fake.channels)
        record.update(settings={key: value for key, value in self.settings.items() if key != "command"},
                      metrics={name: value.to_dict() for name, value in self.values.items()},
                      skipped=dict(self.skipped), seconds=round(self.seconds, 3))
        return record

    def __str__(self) -> str:
        lines = []
        if self.demo:
            lines.append("DEMO on the embedded sample: the 'fake' images are degraded crops, not a generator's")
        if self.real is not None and self.fake is not None:
            height, width = self.fake.size
            colour = "grey" if self.fake.channels == 1 else "RGB"
            lines += [f"fake: {len(self.fake)} {colour} {height}x{width} images from {_where(self.fake)}",
                      f"real: {len(self.real)} images from {_where(self.real)}"]
        pairs = self.settings.get("pairs_per_image_used")
        if pairs and any(name in PAIRED_METRICS for name in (*self.values, *self.skipped)):
            lines.append(f"paired metrics: each fake image against {pairs} real image(s), averaged")
        lines += ["", self.table(), ""]
        if self.out is not None:
            lines.append(f"wrote {self.out}")
        lines.append(f"in {self.seconds:.1f} s")
        return "\n".join(lines)


def _where(images: ImageSet) -> str:
    where = images.source if images.kind == "demo" else f"{images.kind} {images.source}"
    return f"{where}; {images.description}" if images.description else where


def _format(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) >= 1e-3 or value == 0 else f"{value:.4e}"


# ---------------------------------------------------------------------------------------
# Loading sets



def _scale(image: np.ndarray, data_range: float | None, source: str | Path, argument: str) -> torch.Tensor:
    """(C, H, W) stored pixels -> float32 in [0, 1] (see the module docstring)."""
    if data_range is None:
        return to_unit_float(image)
    tensor = torch.from_numpy(np.asarray(image, np.float32)).div_(float(data_range))
    low, high = float(tensor.min()), float(tensor.max())
    if not (0 <= low and high <= 1):
        raise DataError(f"{argument} {source}: values in [{low * data_range:g}, {high * data_range:g}] are outside "
                        f"[0, --data-range {data_range:g}]")
    return tensor


def _fit(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(C, h, w) -> (C, H, W): resized to cover H x W, then centre-cropped."""
    height, width = size
    if tuple(image.shape[1:]) == (height, width):
        return image
    if height == width:
        return resize_and_crop(image, height)
    _, h, w = image.shape
    factor = max(height / h, width / w)
    new_h, new_w = max(height, round(h * factor)), max(width, round(w * factor))
    image = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False,
                          antialias=factor < 1)[0].clamp_(0, 1)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image[:, top:top + height, left:left + width]


class _Collector:
    """Adds images one at a time, checking one channel count (and, for fakes, one size)."""

    def __init__(self, argument: str, size: tuple[int, int] | None, channels: int | None):
        self.argument, self.size, self.required_channels = argument, size, channels
        self.channels: int | None = None
        self.fixed_size = size is None   # a fake set: its first image fixes the size; others must match
        self.images: list[torch.Tensor] = []
        self.resized = 0

    def add(self, image: torch.Tensor, source: str | Path) -> None:
        channels = image.shape[0]
        if channels not in (1, 3):
            raise DataError(f"{self.argument} {source}: expected a grey or RGB image, got {channels} channels")
        if self.channels is None:
            if self.required_channels is not None and channels != self.required_channels:
                raise DataError(f"{self.argument} {source}: {_colour(channels)}, but the fake images are "
                                f"{_colour(self.required_channels)}; give real and fake images with the same "
                                "channels")
            self.channels = channels
        elif channels != self.channels:
            raise DataError(f"{self.argument} {source}: {_colour(channels)}, but the images before it are "
                            f"{_colour(self.channels)}; every image must have the same channels")
        size = tuple(image.shape[1:])
        if self.size is None:
            self.size = size
        if size != self.size:
            if self.fixed_size:
                raise DataError(f"{self.argument} {source}: {size[0]}x{size[1]}, but the first image is "
                                f"{self.size[0]}x{self.size[1]}; the fake images must all have one size")
            image = _fit(image, self.size)
            self.resized += 1
        self.images.append(image.contiguous())

    def stack(self, source: str | Path) -> torch.Tensor:
        if not self.images:
            raise DataError(f"{self.argument} {source}: no images in it")
        return torch.stack(self.images)


def _colour(channels: int) -> str:
    return {1: "grey (1 channel)", 3: "RGB (3 channels)"}.get(channels, f"{channels} channels")


def _read_folder(folder: Path, collector: _Collector, data_range: float | None, progress: bool) -> None:
    files = find_images(folder, collector.argument)
    for path in console.progress(files, progress, desc=f"read {collector.argument}", unit="image", leave=False):
        collector.add(_scale(read_image(path), data_range, path, collector.argument), path)


def _read_patch_set(path: Path, collector: _Collector, data_range: float | None, progress: bool) -> None:
    argument = collector.argument
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"{argument} {path}: cannot read as HDF5 ({error})") from error
    with file:
        images = file.get("images")
        shape = images.shape if isinstance(images, h5py.Dataset) else None
        if shape is None or len(shape) != 4:
            raise DataError(f"{argument} {path}: not a patch set (expected a dataset 'images' of shape "
                            f"(N, C, H, W), got {shape if shape is not None else 'none'})")
        if shape[0] == 0:
            raise DataError(f"{argument} {path}: the set is empty (0 images)")
        if images.dtype not in (np.uint8, np.uint16) and images.dtype.kind != "f":
            raise DataError(f"{argument} {path}: expected uint8, uint16 or float images, got {images.dtype}")
        step = max(1, (64 << 20) // (int(np.prod(shape[1:])) * images.dtype.itemsize))   # ~64 MiB a read
        bar = console.progress_bar(progress, total=shape[0], desc=f"read {argument}", unit="image", leave=False)
        for start in range(0, shape[0], step):
            block = images[start:start + step]
            if block.dtype.kind == "f":
                block = block.astype(np.float32)
            for offset, image in enumerate(block):
                source = f"{path}[{start + offset}]"
                collector.add(_scale(image, data_range, source, argument), source)
            bar.update(len(block))
        bar.close()


def _generate(path: Path, argument: str, config: EvaluateConfig, device: torch.device) -> tuple[torch.Tensor, str]:
    """`config.quantity` images of the checkpoint's generator, as `generate` writes them."""
    try:
        generator, info = load_generator(path, device)
    except CheckpointError as error:
        raise DataError(f"{argument}: {error}") from error
    model = info["config"]
    batches = []
    bar = console.progress_bar(config.progress, total=config.quantity, desc="generate", unit="image", leave=False)
    for start in range(0, config.quantity, config.batch_size):
        count = min(config.batch_size, config.quantity - start)
        z = latent_vectors(config.seed, start, count, model.latent_vector).to(device)
        with torch.no_grad():
            batches.append(torch.from_numpy(to_uint8(generator(z))).float().div_(255))
        bar.update(count)
    bar.close()
    step = f" at step {info['step']}" if info["step"] is not None else ""
    return torch.cat(batches), (f"{config.quantity} images generated by the {info['arch']}-{model.image_size} "
                                f"generator{step}, latent seed {config.seed}")


def load_set(path: str | Path, argument: str, config: EvaluateConfig, device: torch.device | None = None,
             size: tuple[int, int] | None = None, channels: int | None = None) -> ImageSet:
    """The images at `path` (see the module docstring) as an :class:`ImageSet`.

    Args:
        path: folder, .h5 patch set, image file or (for `argument` '--fake') checkpoint.
        argument: the command-line argument it came from, for messages ('--real', '--fake').
        config: data_range, and quantity, seed and batch_size for a checkpoint.
        size, channels: the fake set's (H, W) and channel count, for the real set: images
            are resized and centre-cropped to `size`; another channel count is an error.

    Raises:
        DataError: missing or unreadable input, no images, mixed channels or (fakes) sizes.
    """
    path = Path(path)
    collector = _Collector(argument, size, channels)
    description = ""
    if not path.exists():
        raise DataError(f"{argument} {path}: no such file or folder")
    if path.is_dir():
        kind = "folder"
        _read_folder(path, collector, config.data_range, config.progress)
    elif path.suffix.lower() in HDF5_SUFFIXES:
        kind = "patch set"
        _read_patch_set(path, collector, config.data_range, config.progress)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        kind = "image"
        collector.add(_scale(read_image(path), config.data_range, path, argument), path)
    elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if argument == "--real":
            raise DataError(f"{argument} {path}: a checkpoint makes fake images; give real images (a folder or an "
                            "HDF5 patch set) as --real")
        kind = "checkpoint"
        images, description = _generate(path, argument, config, device or torch.device("cpu"))
        for image in images:
            collector.add(image, path)
    else:
        raise DataError(f"{argument} {path}: expected a folder of images, an HDF5 set "
                        f"({', '.join(HDF5_SUFFIXES)}), an image file or a checkpoint "
                        f"({', '.join(CHECKPOINT_SUFFIXES)}); got a {path.suffix or 'suffix-less'} file")
    images = collector.stack(path)
    if collector.resized:
        fitted = f"{collector.resized} of {len(images)} resized and centre-cropped to {size[0]}x{size[1]}"
        description = f"{description}; {fitted}" if description else fitted
    return ImageSet(images, str(path), kind, description)


def demo_sets(seed: int = 0, count: int = DEMO_COUNT, size: int = DEMO_SIZE) -> tuple[ImageSet, ImageSet]:
    """The no-argument demo on the embedded sample: (real, fake). Real: `count` random
    `size` px crops of the sample image; fake: `count` other crops, blurred (Gaussian, sigma
    1 px) and with Gaussian noise (sigma 0.05) added, a stand-in for generated images."""
    image = to_unit_float(sample_image())   # [3, 512, 512]
    _, height, width = image.shape

    def crops(side: int) -> torch.Tensor:
        out = []
        for index in range(count):
            rng = np.random.default_rng((seed, side, index))
            top, left = (int(v) for v in rng.integers(0, (height - size + 1, width - size + 1)))
            out.append(image[:, top:top + size, left:left + size])
        return torch.stack(out)

    real, fake = crops(0), crops(1)
    radius = int(3 * DEMO_BLUR_SIGMA + 0.5)
    coords = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-coords**2 / (2 * DEMO_BLUR_SIGMA**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, -1).expand(3, 1, 1, -1)
    padded = F.pad(fake, (radius, radius, 0, 0), mode="reflect")
    fake = F.conv2d(padded, kernel, groups=3)
    fake = F.conv2d(F.pad(fake, (0, 0, radius, radius), mode="reflect"), kernel.transpose(2, 3), groups=3)
    noise = torch.randn(fake.shape, generator=torch.Generator().manual_seed(seed))
    fake = (fake + DEMO_NOISE_SIGMA * noise).clamp_(0, 1)
    source = f"the embedded sample ({SAMPLE_NAME})"
    return (ImageSet(real, source, "demo", f"{count} random {size}x{size} crops"),
            ImageSet(fake, source, "demo", f"DEMO: {count} other crops, blurred (sigma {DEMO_BLUR_SIGMA:g} px) + "
                                           f"Gaussian noise (sigma {DEMO_NOISE_SIGMA:g}), not generated images"))


def evaluate(config: EvaluateConfig) -> Evaluation:
    """Loads both sets, computes ``config.metrics`` and writes ``config.out`` (JSON, atomically).

    Raises:
        DataError: a bad setting or input (the message names the argument or file).
    """
    started = time.perf_counter()
    device = resolve_device(config.device, "--device", DataError)
    if config.out is not None:
        check_output_file(config.out, "--out", suffixes=(".json",), overwrite=config.overwrite)
    if config.inception is not None and not config.inception.is_file():
        raise DataError(f"--inception {config.inception}: no such file")
    if config.is_demo:
        real, fake = demo_sets(config.seed)
    else:
        fake = load_set(config.fake, "--fake", config, device)
        real = load_set(config.real, "--real", config, device, size=fake.size, channels=fake.channels)
    if config.out is not None:
        console.note(f"writing {config.out}")
    result = compute_metrics(real.images, fake.images, config.metrics, pairs_per_image=config.pairs_per_image,
                             seed=config.seed, batch_size=config.batch_size, device=device,
                             inception=config.inception, progress=config.progress)
    used = min(config.pairs_per_image or len(real), len(real))
    result = Evaluation(
        result.values, result.skipped, real=real, fake=fake, demo=config.is_demo, out=config.out,
        settings={"command": config.command, "metrics": list(config.metrics), "data_range": config.data_range,
                  "pairs_per_image": config.pairs_per_image, "pairs_per_image_used": used, "seed": config.seed,
                  "quantity": config.quantity if fake.kind == "checkpoint" else None,
                  "batch_size": config.batch_size, "inception": str(config.inception) if config.inception else None,
                  "device": str(device)})
    result.seconds = time.perf_counter() - started
    if config.out is not None:
        write_json(result.to_dict(), config.out)
    return result
