"""Architectures plug into the one training loop as a :class:`Task`, registered by name.

The loop (:mod:`medgan_fast.training.loop`) owns everything shared: data and its order,
the process group and DDP, autocast, logging and telemetry, sample grids and plots,
checkpoints and exact resume. An architecture brings only its models and one training step:

    @register("DCGAN", "SNGAN", generator=build_generator)   # training/gan.py
    class GANTask(Task):
        def __init__(self, context): ...build models and optimizers into self.models / self.optimizers...
        def train_step(self, batch, step): ...one batch -> {"loss_d": ..., "loss_g": ...}
        def sample(self): ...fixed inputs -> images in [-1, 1] for samples/epoch_NNNN.png

Whatever is in ``models``, ``optimizers`` and ``schedulers`` is checkpointed and restored by
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
- **U-Net segmentation** (Ronneberger et al. 2015): models {unet}, optimizers {unet};
  train_step is one Dice + BCE step on (image, mask) batches and returns loss and Dice;
  sample() returns images, predictions and masks side by side; no generator builder, so
  ``generate`` refuses its checkpoints with a clear message.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .config import TrainConfig
from .distributed import Distributed

__all__ = ["ARCHITECTURES", "Architecture", "Context", "Task", "register", "unwrap"]


@dataclass
class Context:
    """What a task gets from the loop: the config, the process group and device, and helpers
    to place models (device, channels_last, DDP) and to run under autocast."""

    config: TrainConfig
    dist: Distributed = field(default_factory=Distributed)

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
        return torch.channels_last

    def place(self, module: nn.Module) -> nn.Module:
        """`module` on the device in channels_last; not yet DDP-wrapped."""
        return module.to(self.device, memory_format=self.memory_format)

    def parallel(self, module: nn.Module) -> nn.Module:
        """`module` wrapped for data parallel training (DDP) when the run has several processes."""
        return self.dist.wrap(module)

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return getattr(module, "module", module)


class Task:
    """One architecture's part of training (see the module docstring).

    Subclasses fill ``models`` (name -> unwrapped nn.Module, on the device), ``optimizers``
    and, optionally, ``schedulers`` in __init__, and implement :meth:`train_step` and
    :meth:`sample`.
    """

    def __init__(self, context: Context):
        self.context = context
        self.config = context.config
        self.models: dict[str, nn.Module] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.notes: list[str] = []   # sentences for the start of the log (how settings were read)

    def train_step(self, batch: Any, step: int) -> dict[str, torch.Tensor]:
        """Trains on one batch (`step`: batches trained before it, over the whole run);
        returns 0-d metric tensors (read only at log steps, so the GPU is not synchronised
        every step)."""
        raise NotImplementedError

    def sample(self) -> torch.Tensor:
        """(N, C, H, W) images in [-1, 1] on the CPU from fixed inputs, for the sample grids."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int) -> None:
        """Called after each epoch (0-based); steps the schedulers."""
        for scheduler in self.schedulers.values():
            scheduler.step()

    def learning_rates(self) -> dict[str, float]:
        return {f"lr_{name}": optimizer.param_groups[0]["lr"] for name, optimizer in self.optimizers.items()}

    def extra_state(self) -> dict[str, Any]:
        """Architecture state to checkpoint beyond models/optimizers/schedulers (EMA, pools, ...)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {
            "models": {name: unwrap(model).state_dict() for name, model in self.models.items()},
            "optimizers": {name: optimizer.state_dict() for name, optimizer in self.optimizers.items()},
            "schedulers": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
            "extra": self.extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for group in ("models", "optimizers", "schedulers"):
            own, saved = getattr(self, group), state.get(group, {})
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


def register(*names: str, generator: Callable[[TrainConfig], nn.Module] | None = None):
    """Class decorator: registers a Task subclass under each of `names` (the config's arch)."""

    def decorate(task: type[Task]) -> type[Task]:
        for name in names:
            ARCHITECTURES[name] = Architecture(name, task, generator)
        return task

    return decorate
