"""StyleGAN2-ADA training (arch 'StyleGAN2'): Karras et al. 2020 (arXiv:1912.04958,
arXiv:2006.06676), as stylegan2-ada-pytorch trains it, in the one training loop.

Data: the common image sources (``data``: a folder, an .h5 patch set, or the embedded
sample), resized and centre-cropped to ``image_size`` (64, 128 or 256) on the fly, grey or RGB
(``number_channels``). Networks: :mod:`medgan_fast.models.stylegan2`; ``learning_rate`` and
``beta_adam`` are Adam's (the paper: 0.0025 and 0; betas (beta_adam, 0.99)).

One step, on one batch of reals, in stylegan2-ada's phase order:

- G: the non-saturating logistic loss softplus(-D(aug(G(z)))), with style mixing (two z's
  and a random crossover layer, with probability ``style_mixing``);
- G, every ``pl_interval`` steps: path-length regularisation on half the batch,
  ``pl_weight`` * (|J_w^T y| - a)^2, a the running mean of the lengths (decay 0.01);
- D: softplus(D(aug(G(z)))) + softplus(-D(aug(x)));
- D, every ``r1_interval`` steps: R1, ``r1_gamma`` / 2 * |grad_x D(aug(x))|^2 (default gamma
  0.0002 * image_size^2 / batch_size, the ADA paper's heuristic).
The lazy terms are multiplied by their interval, and Adam's rate and betas are scaled by
interval / (interval + 1), as the paper does. After the G phases the moving average of G
(``generator_ema``) follows with a half-life of ``ema_kimg`` thousand images.

ADA (:mod:`.ada`): ``augment: ada`` adapts p towards r_t = ``ada_target``; ``fixed`` keeps
``augment_p``; ``none`` turns it off. p, r_t, the path-length mean and the EMA are
checkpointed, so a resumed run continues exactly.

Several processes (torchrun): ``batch_size`` is each process's, and the defaults that depend
on the batch (R1 gamma, the EMA half-life, ADA's step) take the whole batch, batch_size x
processes, as stylegan2-ada does. The networks are not DDP-wrapped: R1 and path length
differentiate twice, which DDP does not support. Instead, as stylegan2-ada does, every
process starts from rank 0's weights and each phase averages its gradients over the
processes in one all-reduce before its optimizer step; ADA's sign sums, the path-length mean
and G's running mean of w are reduced too, so every process holds the same state.

Sample grid: the EMA generator on fixed z with its fixed noise maps.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..models.stylegan2 import Discriminator, Generator
from .ada import AdaptiveProbability, augment
from .config import ConfigError, TrainConfig
from .options import option
from .registry import Context, Task, register

__all__ = ["StyleGAN2Options", "StyleGAN2Task", "build_stylegan2_discriminator", "build_stylegan2_generator"]

PL_DECAY, PL_BATCH_SHRINK = 0.01, 2


@dataclass(frozen=True)
class StyleGAN2Options:
    z_dim: int = option(512, "size of z", at_least=1)
    w_dim: int = option(512, "size of w", at_least=1)
    mapping_layers: int = option(8, "fully connected layers of the mapping network", at_least=1)
    channel_base: int = option(16384, "feature maps at resolution r: min(channel_base / r, channel_max)", at_least=4)
    channel_max: int = option(512, "most feature maps of any layer", at_least=1)
    conv_clamp: float = option(256.0, "clamp of every convolution's output (0: none)", at_least=0.0)
    mbstd_group: int = option(4, "minibatch standard deviation group size (batch_size must be a multiple)",
                              at_least=1)
    r1_gamma: float = option(-1.0, "R1 weight; -1: 0.0002 * image_size^2 / batch_size", valid=">= 0, or -1")
    r1_interval: int = option(16, "steps between R1 terms (lazy regularisation)", at_least=1)
    pl_weight: float = option(2.0, "path-length regularisation weight (0: off)", at_least=0.0)
    pl_interval: int = option(4, "steps between path-length terms", at_least=1)
    style_mixing: float = option(0.9, "probability of mixing two z's in a G batch", valid="in [0, 1]")
    ema_kimg: float = option(-1.0, "half-life of G's moving average in thousands of images; -1: batch_size * 10 / 32",
                             valid="> 0, or -1")
    augment: str = option("ada", "ada (adaptive p), fixed (augment_p) or none", choices=("ada", "fixed", "none"))
    augment_p: float = option(0.0, "initial (ada) or constant (fixed) augmentation probability", valid="in [0, 1]")
    ada_target: float = option(0.6, "ADA's target for r_t = E[sign(D(real))]", valid="in (0, 1)")
    ada_kimg: float = option(100.0, "thousands of images for ADA's p to move from 0 to 1", valid="> 0")
    ada_interval: int = option(4, "steps between ADA's updates of p", at_least=1)


def build_stylegan2_generator(config: TrainConfig) -> Generator:
    """The generator a StyleGAN2 config describes (its EMA copy is what ``generate`` samples)."""
    o = config.arch_options
    return Generator(o.z_dim, o.w_dim, config.image_size, config.number_channels, o.channel_base, o.channel_max,
                     o.mapping_layers, o.conv_clamp or None)


def build_stylegan2_discriminator(config: TrainConfig) -> Discriminator:
    """The discriminator a StyleGAN2 config describes."""
    o = config.arch_options
    return Discriminator(config.image_size, config.number_channels, o.channel_base, o.channel_max, o.mbstd_group,
                         o.conv_clamp or None)


def _check(config: TrainConfig) -> None:
    o = config.arch_options
    if config.batch_size % min(o.mbstd_group, config.batch_size):
        raise ConfigError(f"batch_size {config.batch_size}: must be a multiple of mbstd_group {o.mbstd_group}")
    for name, low, high in (("style_mixing", 0, 1), ("augment_p", 0, 1)):
        if not low <= getattr(o, name) <= high:
            raise ConfigError(f"{name}: expected a number in [{low}, {high}], got {getattr(o, name)!r}")
    if not 0 < o.ada_target < 1:
        raise ConfigError(f"ada_target: expected a number in (0, 1), got {o.ada_target!r}")
    if not o.ada_kimg > 0:
        raise ConfigError(f"ada_kimg: expected a number > 0, got {o.ada_kimg!r}")
    for name in ("r1_gamma", "ema_kimg"):
        value = getattr(o, name)
        if value != -1 and not value >= (0 if name == "r1_gamma" else 1e-9):
            raise ConfigError(f"{name}: expected {'>= 0' if name == 'r1_gamma' else '> 0'} or -1, got {value!r}")


@register("StyleGAN2", generator=build_stylegan2_generator, options=StyleGAN2Options)
class StyleGAN2Task(Task):
    """StyleGAN2 with lazy R1, path length, style mixing, EMA and ADA (module docstring)."""

    resume_fixed = ("image_size", "number_channels", "batch_size", "z_dim", "w_dim", "mapping_layers",
                    "channel_base", "channel_max", "conv_clamp", "mbstd_group")
    progress_metrics = ("loss_d", "loss_g", "augment_p")
    full_batches = True   # minibatch std needs a batch that is a multiple of its group (as NVIDIA's loader gives)
    sample_metrics = True

    def __init__(self, context: Context):
        super().__init__(context)
        config, o = self.config, self.options
        _check(config)
        context.channels_last_on_cpu = False  # our modulated convolutions work in NCHW
        self.batch = config.batch_size
        self.dist = dist = context.dist
        whole_batch = self.batch * dist.world_size
        self.r1_gamma = 0.0002 * config.image_size ** 2 / whole_batch if o.r1_gamma == -1 else o.r1_gamma
        ema_kimg = whole_batch * 10 / 32 if o.ema_kimg == -1 else o.ema_kimg
        self.ema_beta = 0.5 ** (whole_batch / (ema_kimg * 1000))
        generator = build_stylegan2_generator(config)
        self.models = {
            "generator": context.place(generator),
            "discriminator": context.place(build_stylegan2_discriminator(config)),
            "generator_ema": context.place(build_stylegan2_generator(config)),
        }
        for model in ("generator", "discriminator"):
            dist.broadcast_module_(self.models[model])
        self.models["generator_ema"].load_state_dict(self.models["generator"].state_dict())
        self.models["generator_ema"].requires_grad_(False)
        g_rate, d_rate, note = config.learning_rates()
        self.optimizers = {}
        for name, rate, interval in (("generator", g_rate, o.pl_interval if o.pl_weight > 0 else 0),
                                     ("discriminator", d_rate, o.r1_interval if self.r1_gamma > 0 else 0)):
            ratio = interval / (interval + 1) if interval else 1.0   # lazy regularisation's correction
            self.optimizers[name] = torch.optim.Adam(self.models[name].parameters(), rate * ratio,
                                                     betas=(config.beta_adam ** ratio, 0.99 ** ratio))
        self.ada = AdaptiveProbability(o.augment_p if o.augment != "none" else 0.0, o.ada_target, o.ada_kimg,
                                       o.ada_interval, adaptive=o.augment == "ada", reduce=dist.sum_)
        self.pl_mean = torch.zeros([], device=context.device)
        rates = ", ".join(f"{name} {optimizer.param_groups[0]['lr']:g}" for name, optimizer in self.optimizers.items())
        self.notes += [note, f"Adam rates after the lazy-regularisation correction: {rates}",
                       f"R1 gamma {self.r1_gamma:g} every {o.r1_interval} steps, path length {o.pl_weight:g} every "
                       f"{o.pl_interval}, style mixing {o.style_mixing:g}, EMA half-life {ema_kimg:g} kimg, augment "
                       f"{o.augment} (p {self.ada.p:g})"]
        self.fixed_z = torch.randn(config.sample_count, o.z_dim,
                                   generator=torch.Generator().manual_seed(config.seed)).to(context.device)

    # --- the networks as the phases use them

    def _ws(self, z: torch.Tensor) -> torch.Tensor:
        """w for every layer, with style mixing: from a random layer on, the w of a second z."""
        mapping = self.models["generator"].mapping
        ws = mapping(z)
        if self.options.style_mixing > 0 and random.random() < self.options.style_mixing:
            cutoff = random.randrange(1, ws.shape[1])
            ws = torch.cat([ws[:, :cutoff], mapping(torch.randn_like(z), update_w_avg=False)[:, cutoff:]], dim=1)
        return ws

    def _d(self, images: torch.Tensor) -> torch.Tensor:
        return self.models["discriminator"](augment(images, self.ada.p)).flatten()

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.options.z_dim, device=self.context.device)

    def _update(self, name: str, loss: torch.Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.dist.average_gradients_(self.models[name].parameters())
        optimizer.step()

    # --- one step

    def train_step(self, batch: torch.Tensor, step: int) -> dict[str, torch.Tensor]:
        o, context = self.options, self.context
        real = context.to_device(batch)
        generator, discriminator = self.models["generator"], self.models["discriminator"]
        metrics = {}

        generator.requires_grad_(True)
        discriminator.requires_grad_(False)
        with context.autocast():
            loss_g = F.softplus(-self._d(generator.synthesis(self._ws(self._z(self.batch))))).mean()
        self._update("generator", loss_g)
        metrics["loss_g"] = loss_g.detach()
        if o.pl_weight > 0 and step % o.pl_interval == 0:
            metrics["pl_penalty"] = self._path_length_step(o.pl_interval)

        generator.requires_grad_(False)
        discriminator.requires_grad_(True)
        with context.autocast():
            with torch.no_grad():
                fake = generator.synthesis(self._ws(self._z(self.batch)))
            real_logits = self._d(real)
            loss_d = F.softplus(self._d(fake)).mean() + F.softplus(-real_logits).mean()
        self._update("discriminator", loss_d)
        self.ada.observe(real_logits)
        metrics.update(loss_d=loss_d.detach(), d_real=real_logits.detach().float().mean())
        if self.r1_gamma > 0 and step % o.r1_interval == 0:
            metrics["r1_penalty"] = self._r1_step(real, o.r1_interval)

        self._update_ema()
        self.ada.update(step, self.batch * self.dist.world_size)
        metrics["augment_p"] = torch.tensor(self.ada.p)
        return metrics

    def _path_length_step(self, interval: int) -> torch.Tensor:
        generator = self.models["generator"]
        n = max(self.batch // PL_BATCH_SHRINK, 1)
        ws = self._ws(self._z(n))
        images = generator.synthesis(ws)
        noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
        (grads,) = torch.autograd.grad((images * noise).sum(), ws, create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        mean_length = self.dist.sum_(lengths.mean().detach()) / self.dist.world_size
        self.pl_mean.copy_(self.pl_mean.lerp(mean_length, PL_DECAY))
        penalty = (lengths - self.pl_mean).square().mean()
        # images[:, 0, 0, 0] * 0: the graph reaches every parameter (stylegan2-ada's form)
        self._update("generator", (penalty * self.options.pl_weight + images[:, 0, 0, 0].mean() * 0) * interval)
        return penalty.detach()

    def _r1_step(self, real: torch.Tensor, interval: int) -> torch.Tensor:
        real = real.detach().requires_grad_(True)
        logits = self._d(real)
        (grads,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
        penalty = grads.square().sum(dim=(1, 2, 3)).mean()
        self._update("discriminator", (penalty * (self.r1_gamma / 2) + logits.mean() * 0) * interval)
        return penalty.detach()

    @torch.no_grad()
    def _update_ema(self) -> None:
        generator, ema = self.models["generator"], self.models["generator_ema"]
        if self.dist.enabled:   # each process tracked w_avg over its own z's
            w_avg = generator.mapping.w_avg
            w_avg.copy_(self.dist.sum_(w_avg.clone()) / self.dist.world_size)
        for p_ema, p in zip(ema.parameters(), generator.parameters()):
            p_ema.copy_(p.lerp(p_ema, self.ema_beta))
        for b_ema, b in zip(ema.buffers(), generator.buffers()):
            b_ema.copy_(b)

    # --- state beyond models and optimizers, and the grid

    def extra_state(self) -> dict:
        return {"ada": self.ada.state_dict(), "pl_mean": self.pl_mean.cpu()}

    def load_extra_state(self, state: dict) -> None:
        if state:
            self.ada.load_state_dict(state["ada"])
            self.pl_mean.copy_(state["pl_mean"])

    @torch.no_grad()
    def sample(self) -> torch.Tensor:
        ema = self.models["generator_ema"]
        with self.context.autocast():
            images = ema.synthesis(ema.mapping(self.fixed_z, update_w_avg=False), noise_mode="const")
        return images.float().clamp(-1, 1).cpu()
