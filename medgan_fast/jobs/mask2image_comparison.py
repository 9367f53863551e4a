"""Which mask -> image generator trains better, and does a generated image respect its
mask? (``python -m medgan_fast.experiment mask2image``)

On an (image, mask) patch set (``data``, made by ``patches --mode full``), one Mask2Image
GAN is trained per generator of ``generators`` (the same data, seed, steps and
discriminator: section ``image_gan``), and a U-Net on the same real training patches
(section ``unet``), the judge of mask fidelity. All are scored on the patches of held-out
images (``test_data``: ``patches --mode full --split`` of the test images), none of which
any network trained on:

- ``psnr``, ``ssim``: G(m, z) against the real image of mask m (means over test patches;
  G is not asked to reproduce the real texture, so these say how close, not how good);
- ``swd``: sliced Wasserstein distance (x 1e3) between the generated and the real test
  images (their patch statistics: texture, sharpness, noise);
- ``pair_ssim``: mean SSIM between two noise draws for the same mask (1: the noise is
  ignored; lower: one mask gives several textures);
- ``mask_dice``: the Dice of the U-Net's prediction on G(m, z) against m, beside
  ``real_dice``, its Dice on the real images against their own masks (the ceiling).

The better generator: the higher ``mask_dice``; within 0.01 of each other, the lower
``swd``. Writes results.md, results.json, config.yaml and, per generator, its grid of test
masks | generated | real (pairs_<generator>.png) and of 4 noise draws per mask
(noise_<generator>.png) into ``out``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import torch
import yaml

from .. import console
from .._version import __version__
from ..data.grid import save_grid
from ..data.datasets import HDF5_SUFFIXES
from ..data.segmentation import PatchPairDataset
from ..errors import DataError, Interrupted
from ..metrics.distribution import swd
from ..metrics.quality import psnr, ssim
from ..metrics.segmentation import dice
from ..models.mask2image import GENERATORS
from ..outputs import AtomicPath, write_json
from ..training import ConfigError
from .augmentation import load_image_gan
from .generation import resolve_device
from .segmentation import load_segmenter
from .stages import claim_work, read_settings, section_overrides, train_stage, training_count

__all__ = ["ComparisonConfig", "compare_generators", "load_comparison"]

IMAGE_GAN_DEFAULTS = {"steps": 1500, "batch_size": 8, "gen_feature_maps": 32, "dis_feature_maps": 32,
                      "gen_depth": 4, "val_fraction": 0.1}
UNET_DEFAULTS = {"steps": 1000, "batch_size": 16, "learning_rate": 0.001, "depth": 3, "width": 16,
                 "segmentation_loss": "bce+dice", "val_fraction": 0.1, "monitor": "val_dice max"}
GRID_PAIRS, NOISE_MASKS, NOISE_DRAWS = 8, 4, 4
TIE = 0.01   # mask Dice this close counts as a tie, broken by SWD


@dataclass
class ComparisonConfig:
    """The keys of a ``mask2image`` experiment file (see the module docstring)."""

    data: str = ""                    # training (image, mask) patch set
    test_data: str = ""               # patch set of held-out images
    out: str = "results/mask2image"
    work: str = "runs/mask2image"
    generators: list[str] = field(default_factory=lambda: list(GENERATORS))
    seed: int = 0
    device: str = "auto"
    image_gan: dict[str, Any] = field(default_factory=dict)
    unet: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for name in ("data", "test_data"):
            if not str(getattr(self, name)).lower().endswith(HDF5_SUFFIXES):
                raise ConfigError(f"{name}: expected an (image, mask) patch set (.h5, made by python -m "
                                  f"medgan_fast.patches --mode full), got {getattr(self, name)!r}")
        if not isinstance(self.generators, list) or not self.generators or \
                any(g not in GENERATORS for g in self.generators) or len(set(self.generators)) != len(self.generators):
            raise ConfigError(f"generators: expected distinct generators of {', '.join(GENERATORS)}, got "
                              f"{self.generators!r}")
        for name, defaults in (("image_gan", IMAGE_GAN_DEFAULTS), ("unet", UNET_DEFAULTS)):
            section = getattr(self, name)
            if not isinstance(section, dict):
                raise ConfigError(f"{name}: expected a mapping of train keys, got {section!r}")
            decided = [key for key in section if key in ("arch", "data", "generator", "seed", "out", "run",
                                                          "image_size", "number_channels", "num_epochs")]
            if decided:
                raise ConfigError(f"{name}.{decided[0]}: set by the experiment")
            setattr(self, name, {**defaults, **section})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_comparison(path: str | Path, overrides: list[str] | None = None) -> ComparisonConfig:
    """The comparison of a YAML file with ``key=value`` overrides (``image_gan.steps=100``)."""
    return read_settings(path, overrides, ComparisonConfig, ("image_gan", "unet"), "the mask2image experiment")


def _patch_layout(path: str, name: str) -> tuple[int, int, int]:
    """(patches, channels, side) of a patch set."""
    try:
        with h5py.File(path, "r") as file:
            count, channels, side, _ = file["images"].shape
    except (OSError, KeyError, ValueError) as error:
        raise DataError(f"{name} {path}: not a readable (image, mask) patch set ({error})") from None
    return count, channels, side


def compare_generators(config: ComparisonConfig, progress: bool = True, overwrite: bool = False,
                       command: str = "") -> dict[str, Any]:
    """Trains and scores (see the module docstring); returns the results record.

    Raises:
        ConfigError, DataError, OutputError: naming the key, file or folder.
        Interrupted: Ctrl-C; the finished trainings stay in ``work``.
    """
    started = time.perf_counter()
    count, channels, side = _patch_layout(config.data, "data")
    test_layout = _patch_layout(config.test_data, "test_data")
    if test_layout[1:] != (channels, side):
        raise DataError(f"test_data {config.test_data}: patches of {test_layout[2]} px with {test_layout[1]} "
                        f"channel(s); data {config.data} has {side} px with {channels}")
    out, work = Path(config.out), Path(config.work)
    common = {"data": config.data, "image_size": side, "number_channels": channels, "seed": config.seed,
              "n_gpu": int(config.device != "cpu" and torch.cuda.is_available())}
    # Each network trains on the patches its val_fraction leaves (the same draw as its task's).
    image_gan_count = training_count(count, config.image_gan["val_fraction"])
    runs = {f"image_gan_{g}": section_overrides("image_gan", config.image_gan, image_gan_count,
                                                {**common, "arch": "Mask2Image", "generator": g})
            for g in config.generators}
    runs["unet"] = section_overrides("unet", config.unet, training_count(count, config.unet["val_fraction"]),
                                     {**common, "arch": "UNet"})
    claim_work(config.to_dict(), out, work, overwrite)
    trained = {}
    try:
        for run, overrides in runs.items():
            console.note(f"training {run} ({work / run})")
            record = train_stage(work, run, overrides, progress)
            trained[run] = {"steps": record["steps"], "seconds": round(record["seconds"], 1)}
        console.check_interrupt()
        result = _score(config, work, out, side, channels)
    except KeyboardInterrupt:
        raise Interrupted(f"finished trainings are kept in {work}/; run the same command again to continue") from None
    result.update(package_version=__version__, command=command, date=time.strftime("%Y-%m-%d"),
                  train_patches=count, test_patches=test_layout[0], trained=trained,
                  seconds=round(time.perf_counter() - started, 1), config=config.to_dict())
    with AtomicPath(out / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump({"experiment": "mask2image", **config.to_dict()}, sort_keys=False))
    with AtomicPath(out / "results.md") as tmp:
        tmp.write_text(_markdown(config, result))
    write_json(result, out / "results.json")
    return result


@torch.no_grad()
def _score(config: ComparisonConfig, work: Path, out: Path, side: int, channels: int) -> dict[str, Any]:
    device = resolve_device(config.device, "device", ConfigError)
    test = PatchPairDataset(config.test_data, image_size=side, channels=channels)
    pairs = [test.pair(i) for i in range(len(test))]
    real = torch.stack([image for image, _ in pairs]).to(device)
    masks = torch.stack([mask for _, mask in pairs]).to(device)
    unet, _, _ = load_segmenter(work / "unet" / "checkpoints" / "best.pt", device)

    def segmented_dice(images: torch.Tensor) -> float:
        logits = torch.cat([unet(chunk) for chunk in images.split(64)])
        return float(dice(logits[:, 0] > 0, masks[:, 0] > 0.5))

    scores: dict[str, dict[str, float]] = {}
    for name in config.generators:
        generator, _, _ = load_image_gan(work / f"image_gan_{name}" / "checkpoints" / "last.pt", device)

        def draw(seed: int) -> torch.Tensor:   # one noise draw per test mask, in chunks
            return torch.cat([generator(chunk * 2 - 1, torch.Generator(device).manual_seed(seed + k))
                              for k, chunk in enumerate(masks.split(64))]).float()

        first, second = draw(config.seed + 1000), draw(config.seed + 2000)
        scores[name] = {
            "psnr": float(psnr(_unit(first), _unit(real))), "ssim": float(ssim(_unit(first), _unit(real))),
            "swd": float(swd(_unit(real), _unit(first), seed=config.seed).mean),
            "pair_ssim": float(ssim(_unit(first), _unit(second))),
            "mask_dice": segmented_dice(first), "real_dice": segmented_dice(real)}
        shown = masks[:GRID_PAIRS].expand(-1, channels, -1, -1) * 2 - 1
        grid = torch.stack([shown, first[:GRID_PAIRS], real[:GRID_PAIRS]], 1).flatten(0, 1)
        save_grid(_unit(grid).cpu().numpy(), out / f"pairs_{name}.png", columns=3, value_range=(0, 1))
        few = masks[:NOISE_MASKS] * 2 - 1
        draws = [generator(few, torch.Generator(device).manual_seed(config.seed + 3000 + k)).float()
                 for k in range(NOISE_DRAWS)]
        noise = torch.stack([few.expand(-1, channels, -1, -1), *draws], 1).flatten(0, 1)
        save_grid(_unit(noise).cpu().numpy(), out / f"noise_{name}.png", columns=1 + NOISE_DRAWS, value_range=(0, 1))
    ranked = sorted(config.generators, key=lambda g: (-round(scores[g]["mask_dice"] / TIE), scores[g]["swd"]))
    return {"scores": scores, "better": ranked[0]}


def _unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1]."""
    return x.add(1).div(2).clamp(0, 1)


def _markdown(config: ComparisonConfig, result: dict[str, Any]) -> str:
    section = config.image_gan
    lines = [f"# Mask -> image generators on {config.data}", "",
             f"Trained on {result['train_patches']} patches (at least {section['steps']} steps, whole epochs; batch "
             f"{section['batch_size']}, width {section['gen_feature_maps']}), scored on the {result['test_patches']} patches of held-out images "
             f"in {config.test_data}. Mask fidelity: a U-Net ({result['trained']['unet']['steps']} steps) trained on the real "
             "training patches segments the generated images; its Dice against the masks they were generated from, "
             "beside its Dice on the real test images.", "",
             "| generator | PSNR (dB) | SSIM | SWD x1e3 | pair SSIM | mask Dice (generated) | Dice (real) | "
             "steps | train s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in result["scores"].items():
        trained = result["trained"][f"image_gan_{name}"]
        lines.append(f"| {name} | {s['psnr']:.2f} | {s['ssim']:.4f} | {s['swd']:.1f} | {s['pair_ssim']:.4f} | "
                     f"{s['mask_dice']:.4f} | {s['real_dice']:.4f} | {trained['steps']} | {trained['seconds']:.0f} |")
    lines += ["", f"Better (higher mask Dice; within {TIE} the lower SWD): **{result['better']}**. Grids: "
                  + ", ".join(f"pairs_{g}.png, noise_{g}.png" for g in config.generators) + ".", ""]
    return "\n".join(lines)

