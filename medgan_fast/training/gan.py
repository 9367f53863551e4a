"""DCGAN and SNGAN training: models, Adam optimizers, losses and the step.

One step trains on one batch: a discriminator update, and every ``n_critic``-th step also a
generator update (n_critic = 1: both every step, as DCGAN). As our users' loop (and the
PyTorch DCGAN example), the generator update reuses the fake batch of that step's
discriminator update and scores it with the updated discriminator.

Losses (D returns logits):

- ``bce``: D: BCE(D(x), t) + BCE(D(G(z)), 0) with t = label_smoothing (default 1); G:
  BCE(D(G(z)), 1), the non-saturating loss. BCE with logits is the users' Sigmoid + BCELoss
  computed stably.
- ``hinge``: D: mean(relu(1 - D(x))) + mean(relu(1 + D(G(z)))); G: -mean(D(G(z))).
- ``lsgan`` (least squares, Mao et al. 2017; CycleGAN's default): D: mean((D(x) - t)^2) +
  mean(D(G(z))^2); G: mean((D(G(z)) - 1)^2).

Metrics: loss_d, loss_g, d_x = mean sigmoid(D(x)), d_g_z = mean sigmoid(D(G(z))) before the D
update and d_g_z2 after it (the users' D(x), D(G(z)) printout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..models.dcgan import DCGANDiscriminator, DCGANGenerator, SNGANDiscriminator
from .config import TrainConfig
from .registry import Context, Task, register, unwrap

__all__ = ["GANTask", "build_generator", "discriminator_loss", "generator_loss"]


def build_generator(config: TrainConfig) -> DCGANGenerator:
    """The DCGAN generator a config describes (DCGAN and SNGAN share it)."""
    return DCGANGenerator(config.image_size, config.latent_vector, config.gen_feature_maps, config.number_channels)


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor, loss: str, real_target: float = 1.0) -> torch.Tensor:
    """D's loss from its logits on real (N,) and fake (M,) images (see the module docstring)."""
    real, fake = real.float(), fake.float()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if loss == "lsgan":
        return (real - real_target).square().mean() + fake.square().mean()
    return (F.binary_cross_entropy_with_logits(real, torch.full_like(real, real_target))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))


def generator_loss(fake: torch.Tensor, loss: str) -> torch.Tensor:
    """G's loss from D's logits on its images (M,)."""
    fake = fake.float()
    if loss == "hinge":
        return -fake.mean()
    if loss == "lsgan":
        return (fake - 1).square().mean()
    return F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))


@register("DCGAN", "SNGAN", generator=build_generator)
class GANTask(Task):
    """DCGAN (arch DCGAN) or SNGAN (arch SNGAN: spectral norm on D) with Adam(lr, (beta_adam,
    0.999)) for each network; learning rates from :meth:`TrainConfig.learning_rates`."""

    resume_fixed = ("image_size", "latent_vector", "number_channels", "gen_feature_maps", "dis_feature_maps",
                    "n_critic", "loss")
    progress_metrics = ("loss_d", "loss_g")
    sample_metrics = True

    def __init__(self, context: Context):
        super().__init__(context)
        config = self.config
        discriminator = SNGANDiscriminator if config.arch == "SNGAN" else DCGANDiscriminator
        self.models = {
            "generator": context.place(build_generator(config)),
            "discriminator": context.place(discriminator(config.image_size, config.dis_feature_maps,
                                                         config.number_channels)),
        }
        self.generator = context.parallel(self.models["generator"])
        self.discriminator = context.parallel(self.models["discriminator"])
        g_rate, d_rate, note = config.learning_rates()
        self.notes.append(note)
        betas = (config.beta_adam, 0.999)
        fused = context.device.type == "cuda"  # one kernel per step instead of a few per parameter group
        self.optimizers = {
            "generator": torch.optim.Adam(self.models["generator"].parameters(), g_rate, betas=betas, fused=fused),
            "discriminator": torch.optim.Adam(self.models["discriminator"].parameters(), d_rate, betas=betas,
                                              fused=fused),
        }
        self.real_target = 1.0 if config.label_smoothing is None else config.label_smoothing
        # Fixed noise for the sample grids: a function of the seed alone.
        self.fixed_noise = torch.randn(config.sample_count, config.latent_vector,
                                       generator=torch.Generator().manual_seed(config.seed)).to(context.device)

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        config, context = self.config, self.context
        real = context.to_device(batch)
        z = torch.randn(real.shape[0], config.latent_vector, device=context.device)
        update_generator = (step + 1) % config.n_critic == 0

        # Discriminator: real images vs the generator's, detached.
        with context.autocast():
            with torch.set_grad_enabled(update_generator):   # G's graph is kept only for a G update
                fake = self.generator(z)
            real_logits = self.discriminator(real)
            fake_logits = self.discriminator(fake.detach())
            loss_d = discriminator_loss(real_logits, fake_logits, config.loss, self.real_target)
        optimizer = self.optimizers["discriminator"]
        optimizer.zero_grad(set_to_none=True)
        loss_d.backward()
        optimizer.step()
        metrics = {"loss_d": loss_d.detach(), "d_x": torch.sigmoid(real_logits.detach().float()).mean(),
                   "d_g_z": torch.sigmoid(fake_logits.detach().float()).mean()}
        if not update_generator:
            return metrics

        # Generator: the same fakes through the updated D. The bare D module: a second DDP
        # forward would wait for a D backward that this step never runs (its D gradients are
        # a by-product, cleared before the next D update).
        with context.autocast():
            logits = unwrap(self.discriminator)(fake)
            loss_g = generator_loss(logits, config.loss)
        optimizer = self.optimizers["generator"]
        optimizer.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer.step()
        metrics.update(loss_g=loss_g.detach(), d_g_z2=torch.sigmoid(logits.detach().float()).mean())
        return metrics

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        generator = self.models["generator"]
        generator.eval()   # running batch-norm statistics, as generate uses
        try:
            with self.context.autocast():
                images = generator(self.fixed_noise)
        finally:
            generator.train()
        return images.float().cpu()
