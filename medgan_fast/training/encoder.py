"""f-AnoGAN's izi_f encoder training (arch 'Encoder'): Schlegl et al. 2019, for a StyleGAN2
trained with arch 'StyleGAN2'.

``generator_checkpoint`` names that run's checkpoint; its moving-average generator G and its
discriminator D are loaded and frozen. The encoder E (:class:`medgan_fast.models.encoder.
LatentEncoder`, into w-space) trains on the images of ``data`` (normal ones only: nevi) with
the izi_f loss, the batch mean of :func:`medgan_fast.metrics.anomaly.anomaly_scores`:

    MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))),   f = D's penultimate features,

G with its fixed noise maps and f with each image its own minibatch-std group, so that a
reconstruction and a score depend on the image alone. Adam(learning_rate, (beta_adam,
0.999)). The sample grid shows fixed images (top rows) above their reconstructions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..metrics.anomaly import anomaly_scores
from ..models.encoder import LatentEncoder, reconstruct
from ..models.stylegan2 import Discriminator, Generator
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, TrainConfig, saved_config
from .data import build_dataset
from .options import option
from .registry import Context, Grid, Task, register
from .stylegan2 import build_stylegan2_discriminator, build_stylegan2_generator

__all__ = ["EncoderOptions", "EncoderTask", "load_stylegan2"]

GRID_IMAGES = 8


@dataclass(frozen=True)
class EncoderOptions:
    generator_checkpoint: str = option("", "a checkpoint of an arch StyleGAN2 run (its EMA generator and D are "
                                           "frozen)", valid="a file")
    kappa: float = option(1.0, "weight of the discriminator-feature residual in the izi_f loss", at_least=0.0)


def load_stylegan2(path: str | Path, device: torch.device) -> tuple[Generator, Discriminator, TrainConfig]:
    """The frozen EMA generator and discriminator of a StyleGAN2 checkpoint, and its config."""
    checkpoint = load_checkpoint(path)
    if checkpoint.get("config", {}).get("arch") != "StyleGAN2":
        raise CheckpointError(f"{path}: generator_checkpoint must be a checkpoint of an arch StyleGAN2 run, got "
                              f"arch {checkpoint.get('config', {}).get('arch')!r}")
    config = saved_config(checkpoint["config"])
    generator, discriminator = build_stylegan2_generator(config), build_stylegan2_discriminator(config)
    generator.load_state_dict(checkpoint["models"]["generator_ema"])
    discriminator.load_state_dict(checkpoint["models"]["discriminator"])
    for network in (generator, discriminator):
        network.to(device).eval().requires_grad_(False)
    return generator, discriminator, config


@register("Encoder", options=EncoderOptions)
class EncoderTask(Task):
    """The izi_f encoder (see the module docstring)."""

    resume_fixed = ("image_size", "number_channels", "generator_checkpoint", "kappa")
    progress_metrics = ("loss", "pixel_mse")

    def __init__(self, context: Context):
        super().__init__(context)
        config, options = self.config, self.options
        if not options.generator_checkpoint:
            raise ConfigError("generator_checkpoint: arch Encoder needs the checkpoint of a StyleGAN2 run "
                              "(python -m medgan_fast.train --set arch=StyleGAN2 ... makes one)")
        self.generator, self.discriminator, gan = load_stylegan2(options.generator_checkpoint, context.device)
        if (gan.image_size, gan.number_channels) != (config.image_size, config.number_channels):
            raise ConfigError(f"image_size {config.image_size}, number_channels {config.number_channels}: the "
                              f"generator makes {gan.image_size} px images with {gan.number_channels} channel(s); "
                              "set the same")
        o = gan.arch_options
        self.models = {"encoder": context.place(LatentEncoder(config.image_size, config.number_channels,
                                                              self.generator.mapping.w_avg, o.channel_base,
                                                              o.channel_max))}
        g_rate, _, note = config.learning_rates()
        self.optimizers = {"encoder": torch.optim.Adam(self.models["encoder"].parameters(), g_rate,
                                                       betas=(config.beta_adam, 0.999))}
        self.notes += [note, f"izi_f encoder for {options.generator_checkpoint} (kappa {options.kappa:g})"]
        self._grid: torch.Tensor | None = None

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        images = self.context.to_device(batch)
        _, reconstructions = reconstruct(self.models["encoder"], self.generator, images)
        scores = anomaly_scores(images, reconstructions, self.discriminator.features(images),
                                self.discriminator.features(reconstructions), "izif", self.options.kappa)
        loss = scores.mean()
        optimizer = self.optimizers["encoder"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        pixel = anomaly_scores(images.detach(), reconstructions.detach(), distance="mse").mean()
        return {"loss": loss.detach(), "pixel_mse": pixel}

    @torch.no_grad()
    def sample(self) -> dict[str, Grid]:
        if self._grid is None:
            dataset = build_dataset(self.config)
            self._grid = torch.stack([dataset[(0, i)] for i in range(min(GRID_IMAGES, len(dataset)))])
        images = self.context.to_device(self._grid)
        encoder = self.models["encoder"]
        encoder.eval()
        try:
            _, reconstructions = reconstruct(encoder, self.generator, images)
        finally:
            encoder.train()
        return {"reconstructions": Grid(torch.cat([images, reconstructions.clamp(-1, 1)]).float().cpu(),
                                        columns=len(images))}
