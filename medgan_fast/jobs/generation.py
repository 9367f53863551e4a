"""Images from a trained generator: PNG files or an HDF5 set (the ``generate`` command, and
arch 'Generator' in a train config).

    >>> from medgan_fast.jobs.generation import GenerateConfig, generate
    >>> print(generate(GenerateConfig("runs/dcgan64_sample/checkpoints/last.pt", quantity=16,
    ...                               out="fakes.h5")))                    # doctest: +SKIP

Latent vectors: image i gets z_i ~ N(0, I) from ``numpy.random.default_rng((seed, i))``, so
the same seed gives the same images whatever the batch size, and the first k images of a
larger quantity are the k images of a smaller one. With a truncation T, entries of z_i with
|z| > T are drawn again (from the same generator) until all lie in [-T, T]: the truncation
trick for a Gaussian latent (Brock et al., "Large Scale GAN Training for High Fidelity
Natural Image Synthesis", ICLR 2019). Smaller T trades variety for typical, cleaner images;
T >= 3 changes few entries (0.3% lie beyond 3).

The generator runs in eval mode (batch norm with its running statistics), so an image does
not depend on the others in its batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from .. import console
from ..data.datasets import HDF5_SUFFIXES
from ..data.patchset import PatchSetWriter, make_meta
from ..errors import Interrupted, OutputError
from ..outputs import AtomicPath, check_output_file, check_output_folder, clear_png_folder
from ..training import ARCHITECTURES, CheckpointError, ConfigError, TrainConfig
from ..training.checkpoint import check_checkpoint, load_file
from ..training.config import saved_config

__all__ = ["GenerateConfig", "GenerateSummary", "generate", "latent_vectors", "load_generator"]


@dataclass
class GenerateConfig:
    """Settings of one generation job (the ``generate`` command's arguments)."""

    checkpoint: Path                      # made by `python -m medgan_fast.train` (checkpoints/last.pt)
    quantity: int = 64                    # images to write
    out: Path = Path("generated")         # a folder for PNG files, or FILE.h5 for an HDF5 set
    seed: int = 0
    batch_size: int = 64
    truncation: float | None = None       # resample latent entries with |z| > truncation
    truncation_psi: float | None = None   # StyleGAN2: w = w_avg + psi (w - w_avg)
    device: str = "auto"                  # auto (CUDA if available), cpu, cuda, cuda:N
    progress: bool = True
    overwrite: bool = False               # replace an existing out (a folder's PNG files are deleted first)
    command: str = ""                     # stored in an HDF5 output
    model_config: TrainConfig | None = None  # model sizes for a bare generator state_dict

    def __post_init__(self):
        self.checkpoint, self.out = Path(self.checkpoint), Path(self.out)
        for name in ("quantity", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed: expected an integer >= 0, got {self.seed!r}")
        if self.truncation is not None and not self.truncation > 0:
            raise ConfigError(f"truncation: expected a number > 0, got {self.truncation!r}")
        if self.truncation_psi is not None and not 0 <= self.truncation_psi <= 1:
            raise ConfigError(f"truncation_psi: expected a number in [0, 1], got {self.truncation_psi!r}")

    @property
    def is_hdf5(self) -> bool:
        return self.out.suffix.lower() in HDF5_SUFFIXES

    @classmethod
    def from_train_config(cls, config: TrainConfig, command: str = "") -> GenerateConfig:
        """The users' arch 'Generator' job: `quantity` images from checkpoint `path` into `out`."""
        return cls(checkpoint=Path(config.path), quantity=config.quantity, out=Path(config.out), seed=config.seed,
                   batch_size=config.batch_size, truncation=config.truncation,
                   device="cpu" if config.n_gpu == 0 else "auto", progress=config.progress, overwrite=config.overwrite,
                   command=command,
                   model_config=config)


@dataclass
class GenerateSummary:
    """What :func:`generate` did."""

    quantity: int
    out: Path
    arch: str
    image_size: int
    channels: int
    step: int | None
    seconds: float

    def __str__(self) -> str:
        what = "an HDF5 set" if self.out.suffix.lower() in HDF5_SUFFIXES else "PNG files"
        trained = f" at step {self.step}" if self.step is not None else ""
        colour = "grey" if self.channels == 1 else "RGB"
        return (f"wrote {self.quantity} {colour} {self.image_size}x{self.image_size} images from the {self.arch} "
                f"generator{trained} as {what}: {self.out}\nin {self.seconds:.1f} s")


# ---------------------------------------------------------------------------------------
# Loading

def load_generator(path: str | Path, device: torch.device | str = "cpu",
                   model_config: TrainConfig | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The generator of a training checkpoint, in eval mode on `device`, and what is known of
    it: {"arch", "step", "config"}.

    A bare generator state_dict (our users' own checkpoints: a DCGAN generator's layers in
    ``main``, optionally saved from DataParallel as ``module.main...``) loads too when
    `model_config` gives its sizes.

    Raises:
        CheckpointError: missing or corrupt file, a checkpoint without a generator (another
        architecture) or with a missing key, or weights that do not fit; names the file.
    """
    path = Path(path)
    loaded = load_file(path)
    if isinstance(loaded, Mapping) and "format" in loaded:
        checkpoint = check_checkpoint(loaded, path)
        arch, step = checkpoint["arch"], int(checkpoint["step"])
        architecture = ARCHITECTURES.get(arch)
        if architecture is None or architecture.generator is None:
            makers = ", ".join(name for name, item in ARCHITECTURES.items() if item.generator is not None)
            raise CheckpointError(f"{path}: a {arch!r} checkpoint has no generator to sample from; generate takes "
                                  f"checkpoints of {makers}")
        try:   # keys a newer version added are not needed to build the generator
            config = saved_config(checkpoint["config"])
        except (ConfigError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: the checkpoint's config is not valid here ({error})") from error
        models = checkpoint["models"] if isinstance(checkpoint["models"], Mapping) else {}
        # An architecture that keeps a moving average of its generator (StyleGAN2) samples from it.
        state = models.get("generator_ema", models.get("generator"))
        if state is None:
            raise CheckpointError(f"{path}: incomplete checkpoint, missing key models['generator']")
    elif isinstance(loaded, Mapping) and loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        if model_config is None:
            raise CheckpointError(f"not a medgan_fast checkpoint: {path} (a bare state_dict, so its model sizes are "
                                  "unknown; generate from it with a train config: arch Generator, path this file, "
                                  "and its image_size, latent_vector, gen_feature_maps, number_channels)")
        arch, step, config = "DCGAN", None, model_config
        architecture = ARCHITECTURES[arch]
        state = {key.removeprefix("module."): value for key, value in loaded.items()}
    else:
        check_checkpoint(loaded, path)   # raises, saying what the file holds
    generator = architecture.generator(config)
    try:
        generator.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: the weights do not fit a {arch}-{config.image_size} generator with "
                              f"latent_vector {config.latent_vector}, gen_feature_maps {config.gen_feature_maps}, "
                              f"number_channels {config.number_channels} ({str(error).splitlines()[0]} ...)") \
            from error
    return generator.to(device).eval(), {"arch": arch, "step": step, "config": config}


def latent_vectors(seed: int, start: int, count: int, size: int, truncation: float | None = None) -> torch.Tensor:
    """(count, size) float32 latent vectors of images start .. start + count - 1 (see the
    module docstring: one generator per (seed, image), truncation by resampling)."""
    vectors = np.empty((count, size), np.float32)
    for row in range(count):
        rng = np.random.default_rng((seed, start + row))
        z = rng.standard_normal(size)
        if truncation is not None:
            outside = np.abs(z) > truncation
            while outside.any():
                z[outside] = rng.standard_normal(int(outside.sum()))
                outside = np.abs(z) > truncation
        vectors[row] = z
    return torch.from_numpy(vectors)


def resolve_device(name: str, argument: str = "device", error: type[ValueError] = ConfigError) -> torch.device:
    """The torch.device for "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; a bad
    or unavailable one raises `error` with a message that starts with `argument`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise error(f"{argument}: expected auto, cpu, cuda or cuda:N, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise error(f"{argument} {name}: CUDA is not available here; use cpu")
    return device


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 [0, 255] (rounded, clipped)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


# ---------------------------------------------------------------------------------------
# Writing

def generate(config: GenerateConfig) -> GenerateSummary:
    """Writes ``config.quantity`` images of the checkpoint's generator to ``config.out``: a
    folder of 8-bit PNG files (grey or RGB, NNNNNN.png), or an .h5/.hdf5 file in the patch-set
    layout (images (N, C, S, S) uint8, masks all ones, meta and attributes saying where the
    images came from). Every file is written under a temporary name and renamed when complete.

    Raises:
        CheckpointError: see :func:`load_generator`.
        ConfigError: a bad setting or output path.
    """
    started = time.perf_counter()
    device = resolve_device(config.device)
    if config.is_hdf5:
        check_output_file(config.out, "--out", overwrite=config.overwrite)
    elif config.out.suffix and not config.out.is_dir():
        raise OutputError(f"--out {config.out}: expected a folder for PNG files (a name without a suffix) or an "
                          f"HDF5 file ending in {' or '.join(HDF5_SUFFIXES)}")
    else:
        check_output_folder(config.out, "--out", overwrite=config.overwrite)
    generator, info = load_generator(config.checkpoint, device, config.model_config)
    model = info["config"]
    if config.truncation_psi is not None and not hasattr(generator, "mapping"):
        raise ConfigError(f"truncation_psi: a {info['arch']} generator has no w-space (StyleGAN2's have); "
                          "use truncation, which redraws large entries of z")
    for message in _ignored_control_file_keys(config.model_config, info):
        console.note(message)
    # z's size: the generator's own where it has one (StyleGAN2's z_dim), else latent_vector
    size, channels, nz = model.image_size, model.number_channels, getattr(generator, "z_dim", model.latent_vector)
    console.note(f"writing {config.quantity} images to {config.out}")
    if not config.is_hdf5:
        if config.overwrite:
            clear_png_folder(config.out)
        config.out.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(config.quantity - 1)))
    attrs = {"command": config.command or f"medgan_fast.jobs.generation.generate({config!r})",
             "mode": "generated", "size": size, "checkpoint": str(config.checkpoint), "arch": info["arch"],
             "step": -1 if info["step"] is None else info["step"], "seed": config.seed,
             "truncation": 0.0 if config.truncation is None else config.truncation, "latent_vector": nz,
             "truncation_psi": 1.0 if config.truncation_psi is None else config.truncation_psi}
    try:
        _write(config, generator, device, attrs, size, channels, nz, width)
    except KeyboardInterrupt:
        AtomicPath.discard_leftovers(config.out, None if config.is_hdf5 else "*.png")
        if config.is_hdf5:
            raise Interrupted(f"nothing written: {config.out} was not created or changed")
        written = sum(1 for _ in config.out.glob("*.png"))
        raise Interrupted(f"{written} of {config.quantity} PNG files were written to {config.out}")
    return GenerateSummary(config.quantity, config.out, info["arch"], size, channels, info["step"],
                           time.perf_counter() - started)


def _ignored_control_file_keys(control: TrainConfig | None, info: dict[str, Any]) -> list[str]:
    """Notes on a Generator control file's keys that a medgan_fast checkpoint overrules."""
    if control is None or info["step"] is None:   # no control file, or a bare state_dict (its sizes are used)
        return []
    notes = [f"{key} {getattr(control, key)} in the config is not used: the checkpoint's {getattr(info['config'], key)} "
             "wins (a generator makes what it was trained for)"
             for key in ("image_size", "latent_vector", "number_channels", "gen_feature_maps")
             if getattr(control, key) != getattr(info["config"], key)]
    if control.run:
        notes.append(f"run {control.run!r} in the config is not used: arch Generator writes to out ({control.out})")
    return notes


def _write(config, generator, device, attrs, size, channels, nz, width) -> None:
    # A style-based generator (StyleGAN2) with its fixed noise maps, so an image depends on its
    # z alone (the same seed gives the same images), and truncation psi in w-space.
    style_options = {} if not hasattr(generator, "mapping") else {
        "noise_mode": "const", "truncation_psi": 1.0 if config.truncation_psi is None else config.truncation_psi}
    writer = PatchSetWriter(config.out, size, attrs) if config.is_hdf5 else None
    with writer if writer is not None else contextlib.nullcontext():
        bar = console.progress_bar(config.progress, total=config.quantity, unit="image", desc="generate")
        for start in range(0, config.quantity, config.batch_size):
            console.check_interrupt()
            count = min(config.batch_size, config.quantity - start)
            z = latent_vectors(config.seed, start, count, nz, config.truncation).to(device)
            with torch.no_grad():
                images = to_uint8(generator(z, **style_options))   # [count, C, S, S]
            if writer is not None:
                masks = np.ones((count, 1, size, size), bool)
                meta = make_meta(count, config.checkpoint.name, -1, np.arange(start + 1, start + count + 1),
                                 (0, 0, size, size), size * size, 0)
                writer.append(images, masks, meta)
            else:
                for offset, image in enumerate(images):
                    with AtomicPath(config.out / f"{start + offset:0{width}d}.png") as tmp:
                        Image.fromarray(image[0] if channels == 1 else np.moveaxis(image, 0, -1)).save(tmp, "PNG")
            bar.update(count)
        bar.close()
