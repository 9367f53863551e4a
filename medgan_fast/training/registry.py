"""Architectures plug into the one training loop as a :class:`Task`, registered by name.

The loop (:mod:`medgan_fast.training.loop`) owns everything shared: data and its order,
the process group and DDP, autocast, logging and telemetry, sample grids and plots,
checkpoints and exact resume, validation and the best checkpoint. An architecture brings its
models and its step, and where it differs from a GAN on images, its own parts:

    @register("DCGAN", "SNGAN", generator=build_generator)   # training/gan.py
    class GANTask(Task):
        resume_fixed = ("image_size", "latent_vector", ...)  # keys a resumed run must keep
        progress_metrics = ("loss_d", "loss_g")              # shown on the progress bar
        sample_metrics = True                                # score the sample grid against real images
        def __init__(self, context): ...build models and optimizers into self.models / self.optimizers...
        def train_step(self, batch, step): ...one batch -> {"loss_d": ..., "loss_g": ...}
        def sample(self): ...fixed inputs -> images in [-1, 1] for samples/epoch_NNNN.png

and, as needed:

- ``register(..., options=UNetOptions)``: its own config keys (:mod:`.options`), read by the
  task as ``self.options``; ``resume_fixed`` may name them.
- ``datasets(config)`` (a classmethod): (train, validation or None); items are looked up by
  ``(epoch, index)`` keys (:mod:`.data`) and may be tensors, tuples or dicts of tensors
  (``Context.to_device`` moves the whole tree).
- ``validate(batches)``: named metrics over the validation set (``val_loss``, ``val_dice``, ...,
  listed in ``validation_metrics``), run after every epoch under ``torch.no_grad`` with the
  models in eval mode; the config's ``monitor`` (e.g. ``val_dice max``) picks the epoch that
  checkpoints/best.pt keeps.
- ``sample()`` returning ``{name: Grid(images, value_range, columns)}``: several named grids,
  each written as samples/<name>_epoch_NNNN.png.
- ``step_schedulers``: learning-rate schedulers stepped after every step (``schedulers``
  are stepped after every epoch); both are checkpointed.
- ``context.parallel(module, find_unused_parameters=True)``: DDP options; the wrapped module's
  ``no_sync()`` serves lazy regularisation.

Whatever is in ``models``, ``optimizers`` and the schedulers is checkpointed and restored by
the loop; other state goes through :meth:`Task.extra_state`. How the next architectures fit,
with no copy of the loop:

- **StyleGAN2-ADA** (Karras et al. 2020): models {generator, discriminator, generator_ema};
  train_step runs the phases by step number (G main, D main, lazy R1 every 16 steps, path
  length every 4) and updates the EMA copy after each G step (``torch.no_grad`` lerp); the ADA
  augmentation probability p and its accumulated sign statistic go in extra_state (they must
  resume exactly); sample() draws from generator_ema; its generator builder returns the EMA
  mapping+synthesis network for ``generate`` (truncation psi then maps to w-space).
- **CycleGAN** (Zhu et al. 2017): models {g_ab, g_ba, d_a, d_b}, optimizers {g, d}; the
  dataset yields unpaired (a, b) dicts (two folders or patch sets, indexed independently by
  the same (epoch, index) key); the two 50-image pools live in extra_state; the linear
  learning-rate decay is a LambdaLR in ``schedulers`` stepped by on_epoch_end(); sample() shows
  fixed a -> b -> a and b -> a -> b rows; no generator builder (``translate`` uses g_ab).
- **Conditional mask -> image GAN** (pix2pix/SPADE-like): the dataset yields (mask, image)
  pairs from a patch set's ``masks`` and ``images``; train_step conditions G and D on the
  mask (+ L1 to the image); sample() renders fixed masks from the set with fixed noise; its
  generator builder takes masks as input, so ``generate`` needs a mask source.
- **U-Net segmentation** (Ronneberger et al. 2015): options (depth, width, loss, ...), datasets
  of (image, mask) pairs with a validation split; train_step is one BCE/Dice step and returns
  loss and Dice; validate() returns val_loss, val_dice, val_iou; sample() a grid of validation
  images with the predicted masks overlaid; no generator builder, so ``generate`` refuses its
  checkpoints with a clear message.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .config import ARCH_OPTIONS, TrainConfig
from .data import build_dataset
from .distributed import Distributed

__all__ = ["ARCHITECTURES", "Architecture", "Context", "Grid", "Task", "register", "unwrap"]


@dataclass
class Context:
    """What a task gets from the loop: the config, the process group and device, and helpers
    to place models (device, channels_last, DDP) and to run under autocast."""

    config: TrainConfig
    dist: Distributed = field(default_factory=Distributed)
    # A task whose networks normalise by instance norm after every convolution sets it False:
    # instance norm hands back NCHW, so on the CPU every convolution would convert again.
    channels_last_on_cpu: bool = True

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def amp(self) -> bool:
        """bf16 autocast: config.amp on a CUDA device."""
        return self.config.amp and self.device.type == "cuda"

    @property
    def memory_format(self) -> torch.memory_format:
        # channels_last on CPU too: oneDNN's convolutions run ~18% faster on it here
        # (DCGAN-64 G and D forward+backward, batch 64, 2 threads), cuDNN's on tensor cores.
        if self.device.type == "cpu" and not self.channels_last_on_cpu:
            return torch.contiguous_format
        return torch.channels_last

    def place(self, module: nn.Module) -> nn.Module:
        """`module` on the device in channels_last; not yet DDP-wrapped."""
        return module.to(self.device, memory_format=self.memory_format)

    def parallel(self, module: nn.Module, **ddp_options: Any) -> nn.Module:
        """`module` wrapped for data parallel training (DDP, with `ddp_options` such as
        find_unused_parameters=True) when the run has several processes."""
        return self.dist.wrap(module, **ddp_options)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def to_device(self, batch: Any) -> Any:
        """`batch` on the device: a tensor, or tuples, lists and dicts of them (any depth);
        image batches (4-D floating point) in channels_last, other tensors as they are."""
        if isinstance(batch, torch.Tensor):
            batch = batch.to(self.device, non_blocking=True)
            if batch.ndim == 4 and batch.is_floating_point():
                batch = batch.contiguous(memory_format=self.memory_format)
            return batch
        if isinstance(batch, dict):
            return {key: self.to_device(value) for key, value in batch.items()}
        if isinstance(batch, (tuple, list)):
            return type(batch)(self.to_device(value) for value in batch)
        return batch


@dataclass
class Grid:
    """A sample grid: (N, C, H, W) images on the CPU, the value range they are in, and the
    images per row (None: a square-ish grid)."""

    images: torch.Tensor
    value_range: tuple[float, float] = (-1.0, 1.0)
    columns: int | None = None


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


class Task:
    """One architecture's part of training (see the module docstring).

    Subclasses fill ``models`` (name -> unwrapped nn.Module, on the device), ``optimizers``
    and, optionally, ``schedulers`` (stepped every epoch) and ``step_schedulers`` (every
    step) in __init__, and implement :meth:`train_step` and :meth:`sample`.
    """

    resume_fixed: tuple[str, ...] = ()        # config or option keys a resumed run must keep
    progress_metrics: tuple[str, ...] = ()    # train_step metrics shown on the progress bar
    validation_metrics: tuple[str, ...] = ()  # what validate() returns (``monitor`` may name one)
    sample_metrics: bool = False              # score sample() against real training images (GANs)
    default_monitor: str = ""                 # best.pt's metric when the config sets no monitor
    full_batches: bool = False                # drop each epoch's last, partial batch

    def __init__(self, context: Context):
        self.context = context
        self.config = context.config
        self.options = context.config.arch_options
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.step_schedulers: dict[str, Any] = {}
        self.notes: list[str] = []   # sentences for the start of the log (how settings were read)

    @classmethod
    def datasets(cls, config: TrainConfig) -> tuple[Dataset, Dataset | None]:
        """(training set, validation set or None); items by ``(epoch, index)`` key. Default:
        the images of ``config.data`` (the embedded sample, a folder or a patch set), no
        validation."""
        return build_dataset(config), None

    @classmethod
    def epochs(cls, config: TrainConfig) -> int:
        """How many epochs the run trains (CycleGAN adds its decay epochs)."""
        return config.num_epochs

    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Trains on one batch (`step`: batches trained before it, over the whole run);
        returns 0-d metric tensors (read only at log steps, so the GPU is not synchronised
        every step)."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor | dict[str, Grid]:
        """(N, C, H, W) images in [-1, 1] on the CPU from fixed inputs, for the sample grid; or
        several named grids."""
        raise NotImplementedError

    def validate(self, batches: Iterable[Any]) -> dict[str, float]:
        """The ``validation_metrics`` over the validation set's `batches` (called under
        torch.no_grad, models in eval mode; only when :meth:`datasets` gave a validation set)."""
        raise NotImplementedError

    def on_step_end(self, step: int) -> None:
        """Called after each step; steps the ``step_schedulers``."""
        for scheduler in self.step_schedulers.values():
            scheduler.step()

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch (0-based); steps the ``schedulers``."""
        for scheduler in self.schedulers.values():
            scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {f"lr_{name}": optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()}

    def extra_state(self) -> dict[str, Any]:
        """Architecture state to checkpoint beyond models/optimizers/schedulers (EMA, pools, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def _all_schedulers(self) -> dict[str, Any]:
        both = {**self.schedulers, **self.step_schedulers}
        if len(both) != len(self.schedulers) + len(self.step_schedulers):
            raise KeyError("a scheduler name is both in schedulers and step_schedulers")
        return both

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {name: unwrap(model).state_dict() for name, model in self.models.items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "schedulers": {name: scheduler.state_dict() for name, scheduler in self._all_schedulers().items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        groups = {"models": self.models, "optimizers": self.optimizers, "schedulers": self._all_schedulers()}
        for group, own in groups.items():
            saved = state.get(group, {})
            if set(own) != set(saved):
                raise KeyError(f"{group}: checkpoint has {sorted(saved)}, this architecture {sorted(own)}")
            for name, item in own.items():
                (unwrap(item) if group == "models" else item).load_state_dict(saved[name])
        self.load_extra_state(state.get("extra", {}))


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its task class, and for architectures that make images from
    noise, a builder of the bare generator from a config (used by ``generate``)."""

    name: str
    task: Callable[[Context], Task]
    generator: Callable[[TrainConfig], nn.Module] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(*names: str, generator: Callable[[TrainConfig], nn.Module] | None = None,
             options: type | None = None):
    """Class decorator: registers a Task subclass under each of `names` (the config's arch),
    with the dataclass of its own config keys (:mod:`.options`), if any."""

    def decorate(task: type[Task]) -> type[Task]:
        for name in names:
            ARCHITECTURES[name] = Architecture(name, task, generator)
            ARCH_OPTIONS[name] = options
        return task

    return decorate
