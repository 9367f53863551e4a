"""Rank 0's files in a run directory: config.yaml, log.jsonl, the sample grids (and the image
metrics of a GAN's grids: metrics.json, metrics.png), loss.png and evolution.gif. The
checkpoints are the loop's (:mod:`.loop`)."""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._version import __version__
from ..data.grid import save_grid
from ..metrics.comparison import TRAIN_PAIRS_PER_IMAGE, TRAIN_SWD_OPTIONS, compute_metrics, direction
from ..outputs import write_json
from .config import TrainConfig
from .plots import evenly_spaced, gif_frame, plot_losses, plot_metrics, save_evolution
from .registry import Grid, Task
from .telemetry import JsonlLog, read_log, truncate_log

__all__ = ["RunWriter", "fixed_real_images"]


def fixed_real_images(dataset, count: int) -> torch.Tensor:
    """[min(count, len(dataset)), C, S, S] real images in [0, 1] for the metrics: the items
    (epoch 0, i) at `count` evenly spaced indices i, the same in every call and run."""
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    # A copy (an HDF5 set's copy opens its own file handle), so the loader's dataset stays as it was.
    source = copy.copy(dataset)
    return torch.stack([source[(0, int(index))] for index in indices]).add(1).div(2).clamp(0, 1)


class RunWriter:
    """Rank 0's files in the run directory."""

    def __init__(self, config: TrainConfig, task: Task):
        self.run_dir = run_dir = config.run_dir
        self.config, self.task = config, task
        for folder in ("checkpoints", "samples"):
            (run_dir / folder).mkdir(parents=True, exist_ok=True)
        for stale in (run_dir / "checkpoints").glob(".*.tmp"):   # a run killed while writing a checkpoint
            stale.unlink(missing_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())
        self.log_path = run_dir / "log.jsonl"
        self._log: JsonlLog | None = None
        self._frames: dict[Path, Any] = {}   # sample grid -> its GIF frame, each made once
        self._real: torch.Tensor | None = None   # the fixed real images of the metrics, made once
        self._reported: set[str] = set()         # skip and failure notes already printed
        self._grid_prefix = ""                   # the grid evolution.gif shows: the first one
        self.last_metrics: dict[str, float] = {}

    def start(self, step: int, notes: list[str], resumed_from: int | None) -> None:
        if resumed_from is not None:
            truncate_log(self.log_path, resumed_from)   # what followed the checkpoint is trained again
        self._log = JsonlLog(self.log_path)
        for note in notes:
            print(note)
        self._log.write({"step": step, "event": "resume" if resumed_from is not None else "start",
                         "notes": notes})

    def log(self, record: dict[str, Any]) -> None:
        self._log.write(record)

    def sample(self, epoch: int, grids: dict[str, Grid]) -> list[Path]:
        """samples/epoch_NNNN.png for the unnamed grid (a GAN's), samples/<name>_epoch_NNNN.png
        for each named one (what task.sample() returned)."""
        paths = []
        for name, grid in grids.items():
            path = self.run_dir / "samples" / f"{name + '_' if name else ''}epoch_{epoch + 1:04d}.png"
            self._frames.pop(path, None)   # redone after a resume
            paths.append(save_grid(grid.images.numpy(), path, columns=grid.columns, value_range=grid.value_range))
        self._grid_prefix = next(iter(grids), "")
        return paths

    def measure(self, images: torch.Tensor, dataset, epoch: int, step: int,
                device: torch.device) -> None:
        """The image metrics of the sample `images` against the fixed real batch: a log record,
        metrics.json. A metric that fails (e.g. out of memory) is reported and training goes on."""
        names = self.config.metric_names
        if not names:
            return
        started = time.perf_counter()
        if self._real is None:
            self._real = fixed_real_images(dataset, len(images))
        fake = images.float().clamp(-1, 1).add(1).div(2)
        # The metrics draw from their own seeded generators; fork_rng makes sure no training
        # stream moves (exact resume).
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            try:
                result = compute_metrics(self._real, fake, names, pairs_per_image=TRAIN_PAIRS_PER_IMAGE,
                                         seed=self.config.seed, batch_size=64, device=device,
                                         swd_options=TRAIN_SWD_OPTIONS)
            except (RuntimeError, ValueError) as error:
                self._note("error", f"metrics: not computed at epoch {epoch + 1} ({type(error).__name__}: "
                                    f"{str(error).splitlines()[0]}); training goes on")
                return
        seconds = time.perf_counter() - started
        values = {name: value.value for name, value in result.values.items()}
        for name, reason in result.skipped.items():
            self._note(name, f"metrics: {name} skipped: {reason}")
        self.last_metrics = values
        self._log.write({"step": step, "epoch": epoch + 1, "event": "metrics", **values,
                         "metrics_seconds": round(seconds, 3)})
        write_json({"package_version": __version__, "run": self.config.run, "epoch": epoch + 1, "step": step,
                    "metrics": {name: value.to_dict() for name, value in result.values.items()},
                    "skipped": result.skipped, "fake_images": len(fake), "real_images": len(self._real),
                    "pairs_per_image": min(TRAIN_PAIRS_PER_IMAGE, len(self._real)),
                    "directions": {name: direction(name) for name in names}, "seconds": round(seconds, 3)},
                   self.run_dir / "metrics.json")

    def write_metrics(self, record: dict[str, Any]) -> None:
        """metrics.json: `record` (an architecture's validation) with the run's name."""
        write_json({"package_version": __version__, "run": self.config.run, **record}, self.run_dir / "metrics.json")

    def _note(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            print(message, file=sys.stderr)

    def plot(self) -> None:
        records = read_log(self.log_path)
        title = f"{self.config.arch}-{self.config.image_size} {self.config.run}"
        plot_losses(records, self.run_dir / "loss.png", title=title)
        plot_metrics(records, self.run_dir / "metrics.png", title=title)
        prefix = f"{self._grid_prefix}_" if self._grid_prefix else ""
        grids = evenly_spaced(sorted((self.run_dir / "samples").glob(f"{prefix}epoch_*.png")))
        self._frames = {grid: self._frames[grid] if grid in self._frames else gif_frame(grid) for grid in grids}
        save_evolution(list(self._frames.values()), self.run_dir / "evolution.gif")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
