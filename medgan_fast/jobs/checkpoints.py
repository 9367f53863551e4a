"""One trained network out of a training checkpoint, for the jobs that use it (segment,
augment): the architecture checked, the model rebuilt from the checkpoint's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..training import CheckpointError, ConfigError, TrainConfig
from ..training.checkpoint import load_checkpoint

__all__ = ["load_trained"]


def load_trained(path: str | Path, arch: str, model: str, build: Callable[[TrainConfig], nn.Module], refusal: str,
                 device: torch.device | str = "cpu") -> tuple[nn.Module, TrainConfig, dict[str, Any]]:
    """``models[model]`` of the arch-`arch` checkpoint at `path`, built by `build` from its
    config, in eval mode and channels_last on `device`; the config; and {"step", "epoch", "best"}.

    Raises:
        CheckpointError: missing or unreadable file; a checkpoint of another architecture
            ("PATH: a 'X' checkpoint <refusal>"); weights this version cannot build.
    """
    path = Path(path)
    checkpoint = load_checkpoint(path)
    if checkpoint["arch"] != arch:
        raise CheckpointError(f"{path}: a {checkpoint['arch']!r} checkpoint {refusal}")
    try:
        config = TrainConfig(**checkpoint["config"])
        network = build(config)
        network.load_state_dict(checkpoint["models"][model])
    except (ConfigError, KeyError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path}: the checkpoint does not hold a {arch} {model} this version can build "
                              f"({error})") from error
    info = {"step": checkpoint["step"], "epoch": checkpoint.get("epoch"), "best": checkpoint.get("best")}
    # channels_last as in training: the same kernels, and on the CPU oneDNN's convolutions and
    # nearest upsampling (torch 2.14: 3-8x faster than on NCHW at the Mask2Image generator's
    # shapes) run faster on it.
    return network.to(device, memory_format=torch.channels_last).eval(), config, info
