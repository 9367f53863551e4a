"""Checkpoints: one file holding everything a run needs to continue exactly.

Contents (a dict; loadable with ``torch.load(..., weights_only=True)``, no pickled code):
format, version, package/torch versions, arch, the resolved config (a plain dict), step
(batches trained), steps_per_epoch, world_size, models / optimizers / schedulers (name ->
state_dict), extra (architecture state such as an EMA or image pool), and rng: one entry per
rank with the python, numpy, torch CPU and CUDA generator states.

Files are written to a temporary name and renamed (os.replace), so a run killed at any
moment leaves either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..errors import MedganFastError
from ..outputs import AtomicPath

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "check_checkpoint", "get_rng_state", "load_checkpoint", "load_file",
    "prune_checkpoints", "save_checkpoint", "set_rng_state", "step_checkpoint_name",
]

CHECKPOINT_FORMAT = "medgan_fast.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS = ("format", "version", "arch", "config", "step", "models")


class CheckpointError(MedganFastError):
    """A checkpoint that cannot be used; the message names the file."""


def step_checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


# ---------------------------------------------------------------------------------------
# RNG states, as tensors and plain Python values (weights_only-loadable)

def get_rng_state(device: torch.device) -> dict[str, Any]:
    """This process's python, numpy, torch and (on a CUDA device) CUDA generator states."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restores what :func:`get_rng_state` returned."""
    random.setstate(_tuples(state["python"]))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _tuples(value):
    # random.setstate wants tuples; a round trip may give lists.
    return tuple(_tuples(item) for item in value) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------
# Files

def save_checkpoint(payload: dict[str, Any], path: str | Path,
                    also: str | Path | list[str | Path] | None = None) -> Path:
    """Writes `payload` (format and version added) to `path` atomically; with `also` (a path or
    a list of them), the same file appears there too (a hard link where the file system
    allows, else a copy)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "package_version": __version__,
               "torch_version": str(torch.__version__), **payload}
    with AtomicPath(path) as tmp:
        torch.save(payload, tmp)
    for other in ([] if also is None else [also] if isinstance(also, (str, Path)) else also):
        with AtomicPath(other) as tmp:
            tmp.unlink()
            try:
                os.link(path, tmp)
            except OSError:
                torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, unreadable, or not a medgan_fast training checkpoint
        (wrong format or a missing key); the message names the file.
    """
    return check_checkpoint(load_file(path, map_location), path)


def check_checkpoint(checkpoint: Any, path: str | Path) -> dict[str, Any]:
    """`checkpoint` (a loaded file) if it is a medgan_fast training checkpoint; else
    CheckpointError naming `path` and what is wrong."""
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"not a medgan_fast checkpoint: {path} ({_what_it_is(checkpoint)}; checkpoints are "
                              "made by python -m medgan_fast.train)")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint, missing key(s) {', '.join(missing)}")
    if checkpoint["version"] > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint['version']} is newer than this "
                              f"medgan_fast {__version__} reads ({CHECKPOINT_VERSION})")
    return checkpoint


def load_file(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: " + ("is a folder, not a checkpoint file" if path.is_dir() else "no such file"))
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Unsupported global" not in str(error):   # not a pickle of objects: bytes that are no pickle at all
            raise CheckpointError(f"not a medgan_fast checkpoint: {path} (cannot be read as a torch.save file: "
                                  f"{type(error).__name__})") from error
        # torch's message is advice about weights_only, not ours to give
        raise CheckpointError(f"not a medgan_fast checkpoint: {path} (a pickle of Python objects, such as a whole "
                              "model saved with torch.save(model); a checkpoint holds only tensors and plain "
                              "values)") from error
    except Exception as error:  # zip/pickle errors come as RuntimeError, EOFError, ...
        raise CheckpointError(f"not a medgan_fast checkpoint: {path} (cannot be read as a torch.save file: "
                              f"{type(error).__name__})") from error


def _what_it_is(loaded: Any) -> str:
    if isinstance(loaded, dict) and loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
        return f"a bare state_dict of {len(loaded)} tensors, e.g. {next(iter(loaded))!r}"
    if isinstance(loaded, dict):
        return f"a dict with keys {', '.join(map(repr, list(loaded)[:5]))}" if loaded else "an empty dict"
    return f"a {type(loaded).__name__}"


def prune_checkpoints(folder: str | Path, keep: int) -> None:
    """Deletes all but the newest `keep` step-numbered checkpoints in `folder` (keep 0: none)."""
    if keep <= 0:
        return
    for old in sorted(Path(folder).glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
