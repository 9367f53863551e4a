"""Mask -> image GAN training (arch 'Mask2Image'): the second stage of two-stage synthesis.

Data: ``data`` is an (image, mask) patch set made by ``python -m medgan_fast.patches --mode
full`` (or ``sample``: tiles of the embedded sample with its nuclei mask), patches already
``image_size`` on a side; ``val_fraction`` of them (a seeded draw) are held out. Masks are
shown to the networks in [-1, 1] (background -1).

Models (:mod:`medgan_fast.models.mask2image`): generator ``unet`` (pix2pix U-Net with noise
at every decoder level; the default, see that module for the comparison) or ``spade``
(GauGAN-style), width ``gen_feature_maps``;
discriminator: ``dis_scales`` spectral-normalised PatchGANs on (mask, image), width
``dis_feature_maps``. Adam(lr, (beta_adam, 0.999)) each, rates from
:meth:`TrainConfig.learning_rates`.

One step, on one batch of real pairs (x, m):

- D: ``loss`` (bce or hinge) on D(m, x) against D(m, G(m, z)) detached, averaged over scales.
- G (every ``n_critic``-th step), through the updated D: the adversarial loss
  + ``l1_weight`` * |G(m, z) - x| + ``feature_matching_weight`` * pix2pixHD's feature matching
  (L1 between D's intermediate features of the fake and of the real pair, the latter from the
  D step, detached) + ``diversity_weight`` * the diversity-sensitive term of Yang et al. 2019
  (DSGAN): -min(|G(m, z1) - G(m, z2)|, 0.2) for a second noise draw. L1 alone pulls every noise
  draw to the one real image; this term keeps two draws apart, up to a bound, so one mask
  gives several textures.

Validation (each epoch, fixed noise): ``val_l1`` (mean |G(m) - x| in [-1, 1] units),
``val_psnr`` and ``val_ssim`` against the real images, and ``val_pair_ssim``: the SSIM between
two noise draws for the same mask (1: the noise is ignored; lower: more varied textures).

Sample grids: ``pairs`` (mask | generated | real for 8 fixed pairs) and ``noise`` (4 fixed
masks, each with 4 noise draws).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..data.datasets import HDF5_SUFFIXES
from ..data.segmentation import PatchPairDataset, SegmentationDataset, split_pairs
from ..metrics.quality import psnr, ssim
from ..models.mask2image import GENERATORS, MultiScalePatchDiscriminator
from .config import ConfigError, TrainConfig
from .gan import discriminator_loss, generator_loss
from .options import option
from .registry import Context, Grid, Task, register, unwrap
from .segmentation import sample_tiles

__all__ = ["Mask2ImageOptions", "Mask2ImageTask", "build_mask_to_image"]

DIVERSITY_BOUND = 0.2   # mean |G(m, z1) - G(m, z2)| beyond this earns nothing more
PAIR_GRID, NOISE_GRID, NOISE_DRAWS = 8, 4, 4
SMALLEST_PATCH_SIDE = 32  # a PatchGAN's input at its coarsest scale (3 stride-2 convolutions)


@dataclass(frozen=True)
class Mask2ImageOptions:
    generator: str = option("unet", "unet (pix2pix U-Net with noise; better mask fidelity on ssTEM in our "
                                    "comparison) or spade (GauGAN-style)", choices=tuple(GENERATORS))
    gen_depth: int = option(4, "generator down/up-sampling levels (image_size must be a multiple of 2**it)",
                            at_least=1)
    dis_scales: int = option(2, "PatchGAN discriminators, each on the input halved once more (1 to 3)", at_least=1)
    l1_weight: float = option(10.0, "weight of |G(m) - x|", at_least=0.0)
    feature_matching_weight: float = option(10.0, "weight of the discriminator feature-matching loss", at_least=0.0)
    diversity_weight: float = option(1.0, "weight of the term that keeps two noise draws apart (0: off)",
                                     at_least=0.0)
    val_fraction: float = option(0.1, "fraction of the patches held out for validation", valid="in [0, 1)")
    augment: str = option("classical", "none, or classical: flips, 90-degree turns, elastic deformation",
                          choices=("none", "classical"))


def build_mask_to_image(config: TrainConfig) -> torch.nn.Module:
    """The generator a Mask2Image config describes (masks in, images out)."""
    options = config.arch_options
    return GENERATORS[options.generator](config.number_channels, config.gen_feature_maps, options.gen_depth)


@register("Mask2Image", options=Mask2ImageOptions)
class Mask2ImageTask(Task):
    """The conditional GAN from masks to images (see the module docstring)."""

    resume_fixed = ("image_size", "number_channels", "gen_feature_maps", "dis_feature_maps", "n_critic", "loss",
                    "generator", "gen_depth", "dis_scales", "val_fraction", "augment")
    progress_metrics = ("loss_d", "loss_g")
    validation_metrics = ("val_l1", "val_psnr", "val_ssim", "val_pair_ssim")

    @classmethod
    def datasets(cls, config: TrainConfig) -> tuple[Dataset, Dataset | None]:
        options = config.arch_options
        common = dict(image_size=config.image_size, channels=config.number_channels, seed=config.seed)
        if config.is_sample:
            images, masks = sample_tiles(config.number_channels)
            augmented = SegmentationDataset.from_arrays(list(zip(images, masks)), augment=options.augment, **common)
        else:
            if config.data is None or not str(config.data).lower().endswith(HDF5_SUFFIXES):
                raise ConfigError(f"data: arch Mask2Image trains on an (image, mask) patch set (.h5, made by "
                                  f"python -m medgan_fast.patches --mode full), got {config.data!r}")
            augmented = PatchPairDataset(config.data, augment=options.augment, **common)
        return split_pairs(augmented, options.val_fraction, config.seed, config.max_images)

    def __init__(self, context: Context):
        super().__init__(context)
        config, options = self.config, self.options
        if config.image_size % 2**options.gen_depth:
            raise ConfigError(f"image_size {config.image_size}: a generator of gen_depth {options.gen_depth} needs a "
                              f"multiple of {2**options.gen_depth}")
        if options.dis_scales > 3 or config.image_size // 2**(options.dis_scales - 1) < SMALLEST_PATCH_SIDE:
            raise ConfigError(f"dis_scales {options.dis_scales}: expected 1 to 3, and at most "
                              f"{max(1, (config.image_size // SMALLEST_PATCH_SIDE).bit_length())} at image_size "
                              f"{config.image_size} (the coarsest input must keep {SMALLEST_PATCH_SIDE} px)")
        self.models = {
            "generator": context.place(build_mask_to_image(config)),
            "discriminator": context.place(MultiScalePatchDiscriminator(config.number_channels,
                                                                        config.dis_feature_maps, options.dis_scales)),
        }
        self.generator = context.parallel(self.models["generator"])
        self.discriminator = context.parallel(self.models["discriminator"])
        g_rate, d_rate, note = config.learning_rates()
        betas = (config.beta_adam, 0.999)
        fused = context.device.type == "cuda"
        self.optimizers = {name: torch.optim.Adam(self.models[name].parameters(), rate, betas=betas, fused=fused)
                           for name, rate in (("generator", g_rate), ("discriminator", d_rate))}
        self.notes += [note, f"generator {options.generator} (width {config.gen_feature_maps}, depth "
                             f"{options.gen_depth}), {options.dis_scales} PatchGAN scale(s) (width "
                             f"{config.dis_feature_maps}); loss {config.loss} + {options.l1_weight:g} L1 + "
                             f"{options.feature_matching_weight:g} feature matching + {options.diversity_weight:g} "
                             "diversity"]
        self.real_target = 1.0 if config.label_smoothing is None else config.label_smoothing
        self._grid_batch: dict[str, torch.Tensor] | None = None

    def _noise(self, offset: int = 0) -> torch.Generator:
        """A generator of fixed noise (validation and grids): a function of the seed alone."""
        return torch.Generator(self.context.device).manual_seed(self.config.seed + offset)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        config, options, context = self.config, self.options, self.context
        batch = context.to_device(batch)
        real, mask = batch["image"], batch["mask"] * 2 - 1
        update_generator = (step + 1) % config.n_critic == 0

        with context.autocast():
            with torch.set_grad_enabled(update_generator):
                fake = self.generator(mask)
            real_outputs = self.discriminator(mask, real)
            fake_outputs = self.discriminator(mask, fake.detach())
            loss_d = sum(discriminator_loss(r[-1].flatten(), f[-1].flatten(), config.loss, self.real_target)
                         for r, f in zip(real_outputs, fake_outputs)) / len(real_outputs)
        optimizer = self.optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer.step()
        metrics = {"loss_d": loss_d.detach()}
        if not update_generator:
            return metrics

        # G through the updated, bare D (as training/gan.py: no second DDP forward of D).
        with context.autocast():
            outputs = unwrap(self.discriminator)(mask, fake)
            adversarial = sum(generator_loss(o[-1].flatten(), config.loss) for o in outputs) / len(outputs)
            l1 = (fake.float() - real.float()).abs().mean()
            matching = sum(F.l1_loss(f.float(), r.detach().float()) for o, ro in zip(outputs, real_outputs)
                           for f, r in zip(o[:-1], ro[:-1])) / sum(len(o) - 1 for o in outputs)
            loss_g = adversarial + options.l1_weight * l1 + options.feature_matching_weight * matching
            if options.diversity_weight > 0:
                spread = (fake.float() - self.generator(mask).float()).abs().mean()
                loss_g = loss_g - options.diversity_weight * spread.clamp(max=DIVERSITY_BOUND)
                metrics["spread"] = spread.detach()
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer.step()
        metrics.update(loss_g=loss_g.detach(), l1=l1.detach(), feature_matching=matching.detach())
        return metrics

    def validate(self, batches: Iterable[Any]) -> dict[str, float]:
        generator = self.models["generator"]
        draws = (self._noise(1), self._noise(2))
        sums, count = dict.fromkeys(self.validation_metrics, 0.0), 0
        for batch in batches:
            batch = self.context.to_device(batch)
            if self._grid_batch is None:
                self._grid_batch = {key: value[:PAIR_GRID].cpu() for key, value in batch.items()}
            mask, real = batch["mask"] * 2 - 1, batch["image"].float()
            with self.context.autocast():
                first, second = (generator(mask, draw).float() for draw in draws)
            unit = [(x + 1).div(2).clamp(0, 1) for x in (first, second, real)]
            n = len(real)
            sums["val_l1"] += float((first - real).abs().mean((1, 2, 3)).sum())
            sums["val_psnr"] += float(psnr(unit[0], unit[2], reduction="sum"))
            sums["val_ssim"] += float(ssim(unit[0], unit[2], reduction="sum"))
            sums["val_pair_ssim"] += float(ssim(unit[0], unit[1], reduction="sum"))
            count += n
        return {name: value / count for name, value in sums.items()}

    @torch.no_grad()
    def sample(self) -> dict[str, Grid]:
        """Grids ``pairs`` and ``noise`` of fixed validation pairs (training pairs when
        nothing is held out) with fixed noise."""
        if self._grid_batch is None:
            training, _ = type(self).datasets(self.config)
            items = [training[i] for i in range(min(PAIR_GRID, len(training)))]
            self._grid_batch = {key: torch.stack([item[key] for item in items]) for key in ("image", "mask")}
        generator = self.models["generator"]
        mode = generator.training
        generator.eval()
        try:
            batch = self.context.to_device(self._grid_batch)
            mask, real = batch["mask"] * 2 - 1, batch["image"].float()
            with self.context.autocast():
                fake = generator(mask, self._noise(3)).float()
                few = mask[:NOISE_GRID]
                draws = [generator(few, self._noise(10 + k)).float() for k in range(NOISE_DRAWS)]
        finally:
            generator.train(mode)
        shown = mask.expand(-1, real.shape[1], -1, -1)
        pairs = torch.stack([shown, fake, real], 1).flatten(0, 1)
        noise = torch.stack([shown[:NOISE_GRID], *draws], 1).flatten(0, 1)
        return {"pairs": Grid(pairs.cpu(), columns=3), "noise": Grid(noise.cpu(), columns=1 + NOISE_DRAWS)}
