"""CycleGAN training (arch 'CycleGAN'): unpaired translation between two image domains,
e.g. H&E to a rare stain (Zhu et al. 2017; keys and defaults as pytorch-CycleGAN-and-pix2pix).

Data: ``data_a`` and ``data_b``, each an image folder (PNG/JPEG/TIFF/NPY, 8- or 16-bit, grey
or RGB) or an .h5 patch set; item i is A's image i (mod its count) and a B image drawn from
the item's key, so both domains are seen in a fresh pairing every epoch. Each image is
resized (shorter side to ``load_size``, if set) and cropped to ``image_size`` at a random
place, and flipped at random (``flip``). The images of a domain must have its channels
(``input_nc`` for A, ``output_nc`` for B) unless ``convert_channels`` is set.

Models (:mod:`medgan_fast.models.cyclegan`): ``g_ab`` (G: A -> B), ``g_ba`` (F: B -> A),
``d_a``, ``d_b``; ``netG``, ``netD``, ``norm``, widths ``gen_feature_maps`` (ngf) and
``dis_feature_maps`` (ndf), initialised by ``init_type`` / ``init_gain``. One Adam
(learning_rate, (beta_adam, 0.999)) for both generators and one for both discriminators;
the rate is constant for ``num_epochs`` and then falls linearly over ``decay_epochs`` more
(the reference's rule: epoch e trains at 1 - max(0, e + 1 - num_epochs) / (decay_epochs + 1)).

One step, as the reference:

- G: ``gan_mode`` loss of D_B(G(a)) and D_A(F(b)) as real, + lambda_A |F(G(a)) - a| +
  lambda_B |G(F(b)) - b| (each cycle term + ``lambda_ssim`` (1 - SSIM) when set), +
  lambda_identity (lambda_B |G(b) - b| + lambda_A |F(a) - a|); the discriminators' weights
  are frozen for it.
- D: for each discriminator, 0.5 * (loss on a real image + loss on a fake drawn from its
  50-image pool of earlier fakes), + r1_gamma / 2 * E|grad_x D(x)|^2 on the real images
  (R1, Mescheder et al. 2018) when ``r1_gamma`` > 0.

Metrics (validation, every epoch, on the first ``metric_images`` of each domain without
augmentation): cycle reconstruction SSIM and PSNR per direction (``val_cycle_ssim_a``: a vs
F(G(a))), the SWD between translated and real images of the target domain (``val_swd_ab``:
G(a) vs b), and a colour check: the mean over channels of |channel mean| and |channel sd|
differences between translated and real target images, in [0, 1] units
(``val_color_mean_ab``, ``val_color_sd_ab``). Sample grids ``a_to_b`` (a | G(a) | F(G(a)))
and ``b_to_a`` (b | F(b) | G(F(b))) of fixed images.

Resume is exact: the four networks, both optimizers and schedules, the counters, the loop's
RNG states and both pools (their images and their own random generator) are checkpointed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import torch
from torch.utils.data import Dataset

from ..data.datasets import HDF5_SUFFIXES, FolderDataset, ImageDataset, PatchSetDataset, item_rng
from ..data.images import DataError, image_channels
from ..metrics.distribution import swd
from ..metrics.quality import psnr, ssim
from ..models.cyclegan import (DISCRIMINATORS, GENERATORS, INITS, NORMS, build_discriminator, build_generator,
                               init_weights)
from .config import ConfigError, TrainConfig
from .gan import discriminator_loss, generator_loss
from .options import option
from .registry import Context, Grid, Task, register, unwrap

__all__ = ["CycleGANOptions", "CycleGANTask", "ImagePool", "UnpairedDataset", "build_translator"]

GAN_MODES = {"lsgan": "lsgan", "vanilla": "bce", "hinge": "hinge"}   # ours -> training/gan.py's names
GRID_IMAGES = 4


@dataclass(frozen=True)
class CycleGANOptions:
    data_a: str = option("", "domain A: an image folder (PNG/JPEG/TIFF/NPY, 8/16-bit, grey or RGB) or an .h5 patch "
                             "set", valid="a folder or .h5 file")
    data_b: str = option("", "domain B, as data_a", valid="a folder or .h5 file")
    input_nc: int = option(3, "channels of domain A", choices=(1, 3))
    output_nc: int = option(3, "channels of domain B", choices=(1, 3))
    convert_channels: bool = option(False, "convert images whose channels differ from their domain's (grey "
                                           "repeated to RGB, RGB to luma); false: refuse them")
    load_size: int = option(0, "shorter side resized to it before the random image_size crop (0: only images "
                               "smaller than image_size are resized)", at_least=0)
    netG: str = option("unet_128", "generator (unet_128: our users' choice)", choices=GENERATORS)
    netD: str = option("vgg", "discriminator: vgg (our users' deeper one), basic (70x70 PatchGAN) or n_layers",
                       choices=DISCRIMINATORS)
    n_layers_D: int = option(3, "PatchGAN layers for netD n_layers", at_least=1)
    norm: str = option("instance", "normalisation in G and D", choices=tuple(NORMS))
    init_type: str = option("normal", "weight initialisation", choices=INITS)
    init_gain: float = option(0.02, "scale of normal, xavier and orthogonal initialisation", at_least=0.0)
    gan_mode: str = option("lsgan", "adversarial loss", choices=tuple(GAN_MODES))
    lambda_A: float = option(10.0, "weight of the A -> B -> A cycle loss", at_least=0.0)
    lambda_B: float = option(10.0, "weight of the B -> A -> B cycle loss", at_least=0.0)
    lambda_identity: float = option(0.5, "identity loss, relative to lambda_A/B (needs input_nc == output_nc; 0: off)",
                                    at_least=0.0)
    lambda_ssim: float = option(0.0, "weight of (1 - SSIM) added to each cycle L1 (0: off)", at_least=0.0)
    r1_gamma: float = option(0.0, "R1 penalty on the discriminators' real images (0: off)", at_least=0.0)
    pool_size: int = option(50, "earlier fakes kept per direction for the discriminators (0: none)", at_least=0)
    decay_epochs: int = option(0, "epochs after num_epochs over which the learning rate falls linearly", at_least=0)
    metric_images: int = option(32, "images per domain scored each epoch (fixed, not augmented)", at_least=1)


def _domain(config: TrainConfig, key: str, channels: int, training: bool) -> ImageDataset:
    """One domain's dataset (see the module docstring)."""
    options = config.arch_options
    source = getattr(options, key)
    if not source:
        raise ConfigError(f"{key}: arch CycleGAN needs two domains, data_a and data_b (image folders or .h5 patch "
                          "sets)")
    common = dict(image_size=config.image_size, channels=channels, flip=config.flip and training,
                  seed=config.seed + (key == "data_b"))
    is_set = Path(source).suffix.lower() in HDF5_SUFFIXES
    try:
        dataset = PatchSetDataset(source, **common) if is_set else FolderDataset(source, **common)
    except DataError as error:
        raise DataError(str(error).replace("data ", f"{key} ", 1)) from error
    if not options.convert_channels:
        found = {_set_channels(dataset)} if is_set else {image_channels(path) for path in dataset.files}
        if found != {channels}:
            nc = "input_nc" if key == "data_a" else "output_nc"
            raise DataError(f"{key} {source}: holds images of {' and '.join(map(str, sorted(found)))} channel(s), "
                            f"{nc} is {channels}; set {nc} to match, or convert_channels: true to convert them")
    dataset.random_crop, dataset.load_size = training, options.load_size
    dataset.max_images = config.max_images if training else 0
    return dataset


def _set_channels(dataset: PatchSetDataset) -> int:
    with h5py.File(dataset.path, "r") as file:
        return int(file["images"].shape[1])


class UnpairedDataset(Dataset):
    """Items ``{"a": (C_a, S, S), "b": (C_b, S, S)}`` in [-1, 1] by ``(epoch, index)`` key:
    A's image index mod its count and, in training, a B image drawn from the key (fixed: B's
    image index mod its count). ``count``: items per epoch (default: the larger domain)."""

    def __init__(self, a: ImageDataset, b: ImageDataset, seed: int, fixed: bool = False, count: int | None = None):
        self.a, self.b, self.seed, self.fixed = a, b, seed, fixed
        self.count = count or max(len(a), len(b))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.fixed:
            other = index % len(self.b)
        else:
            other = int(item_rng(self.seed + 7, epoch, index).integers(len(self.b)))
        return {"a": self.a[(epoch, index % len(self.a))], "b": self.b[(epoch, other)]}

    def __repr__(self) -> str:
        return f"unpaired A: {self.a!r}, B: {self.b!r}"


class ImagePool:
    """The reference's image buffer (Shrivastava et al. 2017): until it holds `size` fakes
    each new fake is kept and returned; then each is returned with probability 1/2, or else
    swapped for a kept one, which is returned. Draws come from its own generator, so the
    pool (images and generator state) resumes exactly."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self.images: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif float(torch.rand((), generator=self.generator)) > 0.5:
                slot = int(torch.randint(self.size, (), generator=self.generator))
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        images = torch.stack(self.images).cpu() if self.images else None
        return {"images": images, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        images = state["images"]
        self.images = [] if images is None else [image.to(device) for image in images]
        self.generator.set_state(state["generator"])


def build_translator(config: TrainConfig, direction: str) -> torch.nn.Module:
    """The bare generator of a CycleGAN config: ``AtoB`` (g_ab) or ``BtoA`` (g_ba)."""
    options = config.arch_options
    channels = (options.input_nc, options.output_nc)
    source, target = channels if direction == "AtoB" else channels[::-1]
    return build_generator(options.netG, source, target, config.gen_feature_maps, options.norm)


def _decay(num_epochs: int, decay_epochs: int):
    def factor(epoch: int) -> float:
        return 1.0 - max(0, epoch + 1 - num_epochs) / (decay_epochs + 1)
    return factor


@register("CycleGAN", options=CycleGANOptions)
class CycleGANTask(Task):
    """CycleGAN (see the module docstring)."""

    resume_fixed = ("image_size", "gen_feature_maps", "dis_feature_maps", "input_nc", "output_nc", "netG", "netD",
                    "n_layers_D", "norm", "pool_size", "load_size", "convert_channels")
    progress_metrics = ("loss_g", "loss_d", "cycle_a", "cycle_b")
    validation_metrics = ("val_cycle_ssim_a", "val_cycle_psnr_a", "val_cycle_ssim_b", "val_cycle_psnr_b",
                          "val_swd_ab", "val_swd_ba", "val_color_mean_ab", "val_color_sd_ab", "val_color_mean_ba",
                          "val_color_sd_ba")

    @classmethod
    def epochs(cls, config: TrainConfig) -> int:
        return config.num_epochs + config.arch_options.decay_epochs

    @classmethod
    def datasets(cls, config: TrainConfig) -> tuple[Dataset, Dataset | None]:
        options = config.arch_options
        domains = [(key, channels) for key, channels in (("data_a", options.input_nc), ("data_b", options.output_nc))]
        training = UnpairedDataset(*(_domain(config, key, channels, True) for key, channels in domains), config.seed)
        fixed_a, fixed_b = (_domain(config, key, channels, False) for key, channels in domains)
        count = min(options.metric_images, max(len(fixed_a), len(fixed_b)))
        return training, UnpairedDataset(fixed_a, fixed_b, config.seed, fixed=True, count=count)

    def __init__(self, context: Context):
        super().__init__(context)
        # NCHW on the CPU: with instance norm after every convolution, channels_last made the
        # step 0.8x the reference's (AMD EPYC, 2 threads, unet_128 at batch 1); NCHW matches it.
        context.channels_last_on_cpu = False
        config, options = self.config, self.options
        if options.lambda_identity > 0 and options.input_nc != options.output_nc:
            raise ConfigError(f"lambda_identity {options.lambda_identity:g}: the identity loss feeds B images to "
                              f"G: A -> B, so it needs input_nc == output_nc (got {options.input_nc} and "
                              f"{options.output_nc}); set lambda_identity: 0")
        multiple = build_translator(config, "AtoB").multiple
        if config.image_size % multiple:
            raise ConfigError(f"image_size {config.image_size}: netG {options.netG} needs a multiple of {multiple}")
        channels = {"a": options.input_nc, "b": options.output_nc}
        networks = {"g_ab": build_translator(config, "AtoB"), "g_ba": build_translator(config, "BtoA"),
                    **{f"d_{domain}": build_discriminator(options.netD, channels[domain], config.dis_feature_maps,
                                                          options.norm, options.n_layers_D) for domain in "ab"}}
        self.models = {name: context.place(init_weights(net, options.init_type, options.init_gain))
                       for name, net in networks.items()}
        self.nets = {name: context.parallel(model) for name, model in self.models.items()}
        betas, fused = (config.beta_adam, 0.999), context.device.type == "cuda"
        self.optimizers = {
            group: torch.optim.Adam(itertools.chain(*(self.models[name].parameters() for name in names)),
                                    config.learning_rate, betas=betas, fused=fused)
            for group, names in (("g", ("g_ab", "g_ba")), ("d", ("d_a", "d_b")))}
        self.schedulers = {group: torch.optim.lr_scheduler.LambdaLR(optimizer, _decay(config.num_epochs,
                                                                                     options.decay_epochs))
                           for group, optimizer in self.optimizers.items()}
        self.pools = {domain: ImagePool(options.pool_size, config.seed + index) for index, domain in enumerate("ab")}
        self.loss = GAN_MODES[options.gan_mode]
        self.notes.append(
            f"CycleGAN: netG {options.netG} (ngf {config.gen_feature_maps}), netD {options.netD} (ndf "
            f"{config.dis_feature_maps}), norm {options.norm}; {options.gan_mode} + cycle {options.lambda_A:g}/"
            f"{options.lambda_B:g} + identity {options.lambda_identity:g}"
            + (f" + ssim {options.lambda_ssim:g}" if options.lambda_ssim else "")
            + (f" + R1 {options.r1_gamma:g}" if options.r1_gamma else "")
            + f"; lr {config.learning_rate:g} for {config.num_epochs} epochs, then linear decay over "
              f"{options.decay_epochs}")
        self._grid_batch: dict[str, torch.Tensor] | None = None

    # -- the step --------------------------------------------------------------------

    def _cycle(self, rebuilt: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        loss = (rebuilt.float() - real.float()).abs().mean()
        if self.options.lambda_ssim:
            unit = [(x.float() + 1).div(2).clamp(0, 1) for x in (rebuilt, real)]
            loss = loss + self.options.lambda_ssim * (1 - ssim(*unit))
        return loss

    def _discriminator_loss(self, name: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        gamma = self.options.r1_gamma
        if gamma:
            real = real.detach().requires_grad_(True)
        real_logits = self.nets[name](real)
        loss = 0.5 * discriminator_loss(real_logits.flatten(), self.nets[name](fake).flatten(), self.loss)
        if gamma:
            gradient, = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
            loss = loss + gamma / 2 * gradient.float().square().sum((1, 2, 3)).mean()
        return loss

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        options, context = self.options, self.context
        batch = context.to_device(batch)
        a, b = batch["a"], batch["b"]
        g_ab, g_ba = self.nets["g_ab"], self.nets["g_ba"]
        discriminators = [self.models["d_a"], self.models["d_b"]]

        for model in discriminators:
            model.requires_grad_(False)
        with context.autocast():
            fake_b, fake_a = g_ab(a), g_ba(b)
            rebuilt_a, rebuilt_b = g_ba(fake_b), g_ab(fake_a)
            adversarial = (generator_loss(unwrap(self.nets["d_b"])(fake_b).flatten(), self.loss)
                           + generator_loss(unwrap(self.nets["d_a"])(fake_a).flatten(), self.loss))
            cycle_a, cycle_b = self._cycle(rebuilt_a, a), self._cycle(rebuilt_b, b)
            loss_g = adversarial + options.lambda_A * cycle_a + options.lambda_B * cycle_b
            identity = torch.zeros((), device=a.device)
            if options.lambda_identity > 0:
                identity = (options.lambda_B * (g_ab(b).float() - b.float()).abs().mean()
                            + options.lambda_A * (g_ba(a).float() - a.float()).abs().mean())
                loss_g = loss_g + options.lambda_identity * identity
        optimizer = self.optimizers["g"]
        optimizer.zero_grad(set_to_none=True)
        loss_g.backward()
        optimizer.step()

        for model in discriminators:
            model.requires_grad_(True)
        with context.autocast():
            loss_d_b = self._discriminator_loss("d_b", b, self.pools["b"].query(fake_b))
            loss_d_a = self._discriminator_loss("d_a", a, self.pools["a"].query(fake_a))
        optimizer = self.optimizers["d"]
        optimizer.zero_grad(set_to_none=True)
        (loss_d_a + loss_d_b).backward()
        optimizer.step()
        return {"loss_g": loss_g.detach(), "loss_d": (loss_d_a + loss_d_b).detach(), "adversarial": adversarial.detach(),
                "cycle_a": cycle_a.detach(), "cycle_b": cycle_b.detach(), "identity": identity.detach(),
                "loss_d_a": loss_d_a.detach(), "loss_d_b": loss_d_b.detach()}

    # -- metrics and grids -------------------------------------------------------------

    def _translate_all(self, batches: Iterable[Any]) -> dict[str, torch.Tensor]:
        """Real, translated and rebuilt images of both domains, in [0, 1] on the CPU."""
        g_ab, g_ba = self.models["g_ab"], self.models["g_ba"]
        parts: dict[str, list[torch.Tensor]] = {key: [] for key in ("a", "b", "fake_a", "fake_b", "rebuilt_a",
                                                                     "rebuilt_b")}
        for batch in batches:
            batch = self.context.to_device(batch)
            with self.context.autocast():
                fake_b, fake_a = g_ab(batch["a"]), g_ba(batch["b"])
                rebuilt_a, rebuilt_b = g_ba(fake_b), g_ab(fake_a)
            for key, value in (("a", batch["a"]), ("b", batch["b"]), ("fake_a", fake_a), ("fake_b", fake_b),
                               ("rebuilt_a", rebuilt_a), ("rebuilt_b", rebuilt_b)):
                parts[key].append(value.float().add(1).div(2).clamp(0, 1).cpu())
        return {key: torch.cat(values) for key, values in parts.items()}

    def validate(self, batches: Iterable[Any]) -> dict[str, float]:
        images = self._translate_all(batches)
        if self._grid_batch is None:
            self._grid_batch = {key: images[key][:GRID_IMAGES].mul(2).sub(1) for key in "ab"}
        metrics = {}
        for domain, other in (("a", "b"), ("b", "a")):
            real, rebuilt = images[domain], images[f"rebuilt_{domain}"]
            metrics[f"val_cycle_ssim_{domain}"] = float(ssim(rebuilt, real))
            metrics[f"val_cycle_psnr_{domain}"] = float(psnr(rebuilt, real))
            fake, target = images[f"fake_{other}"], images[other]
            direction = f"{domain}{other}"
            metrics[f"val_swd_{direction}"] = swd(target, fake, seed=self.config.seed).mean
            (fake_mean, fake_sd), (target_mean, target_sd) = _channel_stats(fake), _channel_stats(target)
            metrics[f"val_color_mean_{direction}"] = float((fake_mean - target_mean).abs().mean())
            metrics[f"val_color_sd_{direction}"] = float((fake_sd - target_sd).abs().mean())
        return metrics

    @torch.no_grad()
    def sample(self) -> dict[str, Grid]:
        if self._grid_batch is None:
            return {}
        g_ab, g_ba = self.models["g_ab"], self.models["g_ba"]
        modes = g_ab.training, g_ba.training
        g_ab.eval(), g_ba.eval()
        try:
            batch = self.context.to_device(self._grid_batch)
            with self.context.autocast():
                fake_b, fake_a = g_ab(batch["a"]).float(), g_ba(batch["b"]).float()
                rebuilt_a, rebuilt_b = g_ba(fake_b).float(), g_ab(fake_a).float()
        finally:
            g_ab.train(modes[0]), g_ba.train(modes[1])
        rgb = [_rgb(x) for x in (batch["a"], fake_b, rebuilt_a, batch["b"], fake_a, rebuilt_b)]
        return {"a_to_b": Grid(torch.stack(rgb[:3], 1).flatten(0, 1).cpu(), columns=3),
                "b_to_a": Grid(torch.stack(rgb[3:], 1).flatten(0, 1).cpu(), columns=3)}

    def extra_state(self) -> dict[str, Any]:
        return {"pools": {domain: pool.state_dict() for domain, pool in self.pools.items()}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        for domain, pool in self.pools.items():
            pool.load_state_dict(state["pools"][domain], self.context.device)


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and sd over a set's pixels: (C,), (C,)."""
    flat = images.transpose(0, 1).flatten(1).double()
    return flat.mean(1), flat.std(1)


def _rgb(images: torch.Tensor) -> torch.Tensor:
    """Grey images repeated to 3 channels, so grids of both domains can share a row."""
    return images.float().expand(-1, 3, -1, -1) if images.shape[1] == 1 else images.float()

