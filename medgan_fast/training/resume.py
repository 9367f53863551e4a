"""A run's folder and its resume: the run name a new run claims, the checkpoint a resume
continues from and whether it fits the config, restoring the task, and what a stopped run
leaves (and how to continue it)."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, load_checkpoint, set_rng_state
from .config import ConfigError, TrainConfig, field_names
from .distributed import Distributed
from .registry import ARCHITECTURES, Task

__all__ = ["RESUME_FIXED", "after_a_failed_run", "check_resumable", "claim_run_dir", "restore", "resume_checkpoint"]

# Settings that fix the data order: a resumed run must keep them, and the keys its
# architecture lists in Task.resume_fixed (those that shape its models).
RESUME_FIXED = ("arch", "batch_size", "seed", "data", "path", "sample_crops", "max_images", "flip")


def claim_run_dir(config: TrainConfig, dist: Distributed, resuming: bool) -> TrainConfig:
    """The config with the run name this run writes to: `run`, or when <out>/<run> already
    holds a run (and this is not a resume), the first free <run>_2, <run>_3, ..."""
    name = config.run
    if dist.is_main and not resuming:
        base, number = name, 1
        while (Path(config.out) / name).exists() and any((Path(config.out) / name).iterdir()):
            number += 1
            name = f"{base}_{number}"
        (Path(config.out) / name).mkdir(parents=True, exist_ok=True)
    name = dist.broadcast(name)
    return dataclasses.replace(config, run=name)


def resume_checkpoint(config: TrainConfig) -> dict[str, Any] | None:
    if config.resume is False:
        return None
    path = config.run_dir / "checkpoints" / "last.pt" if config.resume is True else Path(config.resume)
    if config.resume is True and not path.is_file():
        raise CheckpointError(f"resume: no checkpoint to resume at {path} (run {config.run!r} in {config.out!r}); "
                              "give resume=PATH, or the run and out of the run to continue")
    return load_checkpoint(path)


def check_resumable(config: TrainConfig, checkpoint: dict[str, Any]) -> None:
    # A key the checkpoint's version did not have yet had its default then.
    saved = {**TrainConfig().to_dict(), **checkpoint["config"]}
    keys = (*RESUME_FIXED, *ARCHITECTURES[config.arch].task.resume_fixed)
    changed = [f"{key} {_setting(saved, key)!r} -> {_setting(config.to_dict(), key)!r}" for key in keys
               if _setting(saved, key) != _setting(config.to_dict(), key)]
    if changed:
        raise ConfigError(f"resume: the config differs from the checkpoint's in {', '.join(changed)}; "
                          "a resumed run must keep its models and data")


def _setting(values: dict[str, Any], key: str) -> Any:
    """A common key's value, or an architecture option's."""
    return values.get(key) if key in field_names() else values.get("options", {}).get(key)


def restore(task: Task, checkpoint: dict[str, Any], steps_per_epoch: int, dist: Distributed) -> int:
    if checkpoint.get("steps_per_epoch") != steps_per_epoch or checkpoint.get("world_size") != dist.world_size:
        raise ConfigError(f"resume: the checkpoint was made with {checkpoint.get('world_size')} process(es) and "
                          f"{checkpoint.get('steps_per_epoch')} steps per epoch; this run has {dist.world_size} and "
                          f"{steps_per_epoch} (the data or the process count changed)")
    try:
        task.load_state_dict(checkpoint)
    except (KeyError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"resume: the checkpoint does not fit {task.config.arch} as configured ({error})") \
            from error
    # Last, after every model was built: from here on the RNG streams continue as they were.
    set_rng_state(checkpoint["rng"][dist.rank], dist.device)
    return int(checkpoint["step"])


def after_a_failed_run(config: TrainConfig, dist: Distributed, resuming: bool) -> str:
    """Rank 0 removes a new run's folder that has no checkpoint yet (so it does not take the
    run's name from the next run) and says what is left and how to continue."""
    last = config.run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        if dist.is_main and not resuming:
            shutil.rmtree(config.run_dir, ignore_errors=True)
            return f"stopped before the first checkpoint; nothing kept ({config.run_dir} removed)"
        return f"stopped before the first checkpoint of {config.run_dir}"
    out = "" if config.out == TrainConfig.out else f" --set out={shlex.quote(str(config.out))}"
    return (f"{config.run_dir} keeps its last checkpoint ({last}); continue it with the same command and "
            f"--set run={shlex.quote(config.run)}{out} --set resume=true")
