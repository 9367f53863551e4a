"""The training loop shared by every architecture: data -> step -> log -> sample -> checkpoint.

    >>> from medgan_fast.training import load_config, train
    >>> summary = train(load_config("configs/sngan128.yaml"))   # doctest: +SKIP
    >>> print(summary)                                          # doctest: +SKIP

Run directory ``<out>/<run>/`` (rank 0 writes it, :mod:`.run_files`): config.yaml (the
resolved config), log.jsonl, checkpoints/ (last.pt and step_NNNNNNNN.pt, and best.pt with
``monitor``), samples/epoch_NNNN.png (fixed-input grids; <name>_epoch_NNNN.png for an
architecture's named grids), loss.png, evolution.gif, and for a GAN with ``metrics`` set,
metrics.png and metrics.json. A new run whose directory exists gets a numbered one (<run>_2,
...); ``resume`` continues in the existing one (:mod:`.resume`).

An epoch ends with validation (when the architecture has a validation set: its metrics in a
log.jsonl record with "event": "validation"; best.pt when the ``monitor``ed one improved),
the epoch's schedulers, the sample grids and a checkpoint.

Image metrics (``metrics``, default ssim, ms_gmsd, haarpsi, swd): with every sample grid, rank 0
compares the grid's images (fixed noise) with a fixed batch of as many real training images
(items (epoch 0, i) at evenly spaced i, so the same ones every time), both mapped from [-1, 1]
to [0, 1], as :mod:`medgan_fast.metrics.comparison` pairs them (each sample image against
``TRAIN_PAIRS_PER_IMAGE`` = 4 of the real ones; SWD with ``TRAIN_SWD_OPTIONS``, a cheaper
estimate than the evaluate command's). It writes a log.jsonl record with "event":
"metrics", metrics.json (the latest values) and metrics.png. No RNG stream of training is
drawn from, so resume stays exact.

Steps count batches over the whole run. Checkpoints are written every ``checkpoint_every``
steps and at each epoch end; resuming from step s trains epoch s // steps_per_epoch from its
(s % steps_per_epoch)-th batch on, with the data order, model, optimizer, scheduler and RNG
states the uninterrupted run had there, so it ends with the same weights (on CPU bit for bit;
on GPU up to the nondeterminism of cuDNN and atomics).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import console
from ..errors import Interrupted
from . import cyclegan, encoder, gan, mask2image, segmentation, stylegan2  # noqa: F401  (register the architectures)
from .checkpoint import get_rng_state, prune_checkpoints, save_checkpoint, step_checkpoint_name
from .config import ConfigError, TrainConfig
from .data import build_loader, build_validation_loader
from .distributed import Distributed, setup
from .registry import ARCHITECTURES, Context, Grid, Task
from .resume import after_a_failed_run, check_resumable, claim_run_dir, restore, resume_checkpoint
from .run_files import RunWriter
from .telemetry import GpuMonitor

__all__ = ["RunSummary", "train"]

@dataclass
class RunSummary:
    """What :func:`train` did."""

    run_dir: Path
    arch: str
    image_size: int
    data: str
    epochs: int
    steps: int
    seconds: float
    checkpoint: Path | None
    samples: list[Path] = field(default_factory=list)
    resumed_from: int | None = None    # the step a resumed run started at
    rank: int = 0                      # the process that returned it (rank 0 wrote the files)
    metrics: dict[str, float] = field(default_factory=dict)   # the last image metrics (rank 0)
    validation: dict[str, float] = field(default_factory=dict)  # the last validation metrics
    best: dict[str, Any] | None = None  # the monitored metric's best: metric, mode, value, epoch, step

    def __str__(self) -> str:
        start = f" (resumed at step {self.resumed_from})" if self.resumed_from is not None else ""
        lines = [f"trained {self.arch}-{self.image_size} on {self.data}: {_plural(self.epochs, 'epoch')}, "
                 f"{_plural(self.steps, 'step')}{start} in {self.seconds:.0f} s",
                 f"run directory: {self.run_dir}",
                 "  config.yaml, log.jsonl, loss.png, evolution.gif"]
        if self.metrics:
            values = ", ".join(f"{name} {value:.4g}" for name, value in self.metrics.items())
            lines.append(f"  metrics.png, metrics.json (last: {values})")
        if self.samples:
            last = f" .. {self.samples[-1].name}" if len(self.samples) > 1 else ""
            lines.append(f"  samples/{self.samples[0].name}{last}")
        if self.validation:
            lines.append("  validation (last epoch): " + ", ".join(f"{name} {value:.4g}"
                                                                  for name, value in self.validation.items()))
        if self.checkpoint is not None:
            lines.append(f"  checkpoints/{self.checkpoint.name}")
        if self.best is not None:
            lines.append(f"  checkpoints/best.pt ({self.best['metric']} {self.best['value']:.4g}, "
                         f"epoch {self.best['epoch']})")
        return "\n".join(lines)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class _Position:
    step: int = 0                 # batches trained, whole run
    steps_per_epoch: int = 1

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def batch(self) -> int:
        return self.step % self.steps_per_epoch


def train(config: TrainConfig) -> RunSummary:
    """Trains ``config.arch`` as the config says and writes the run directory; with torchrun,
    one call per process (DDP). Returns the summary (on every rank; rank 0 wrote the files).

    Raises:
        ConfigError: arch 'Generator' (use :func:`medgan_fast.jobs.generation.generate`)
            or a resume that does not fit the config.
        DataError: missing or unreadable training data.
        CheckpointError: an unreadable checkpoint to resume from.
    """
    if config.is_generate:
        raise ConfigError("arch: 'Generator' writes images from a checkpoint; call generate(), not train()")
    dist = setup(config.n_gpu)
    if dist.device.type == "cuda":
        # Fixed image sizes: let cuDNN pick its fastest convolution algorithms once. (Resume
        # on a GPU is then exact up to cuDNN's nondeterminism; on the CPU it is bit for bit.)
        torch.backends.cudnn.benchmark = True
    try:
        return _train(config, dist)
    finally:
        dist.close()


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)   # CUDA too


def _train(config: TrainConfig, dist: Distributed) -> RunSummary:
    started = time.perf_counter()
    _seed(config.seed + dist.rank)   # each process draws its own noise
    checkpoint = resume_checkpoint(config)
    if checkpoint is not None:
        check_resumable(config, checkpoint)
    config = claim_run_dir(config, dist, resuming=checkpoint is not None)
    try:
        run = _Run(config, dist, checkpoint, started)
        for epoch in range(run.position.epoch, run.epochs):
            run.train_epoch(epoch)
            run.end_epoch(epoch)
        return run.finish()
    except BaseException as error:
        left = after_a_failed_run(config, dist, resuming=checkpoint is not None)
        # A Ctrl-C inside C++ code (matplotlib's pybind11 layer) can come out as another error.
        if isinstance(error, KeyboardInterrupt) or console.interrupted():
            raise Interrupted(left) from error
        raise


class _Run:
    """One process's training run: its data, task, position and (rank 0) files."""

    def __init__(self, config: TrainConfig, dist: Distributed, checkpoint: dict[str, Any] | None, started: float):
        self.started = started
        self.dist = dist
        self.config = config
        task_class = ARCHITECTURES[config.arch].task
        self.dataset, self.validation_set = task_class.datasets(config)
        pin_memory = dist.device.type == "cuda"
        self.loader, self.sampler, steps_per_epoch = build_loader(self.dataset, config, dist.world_size, dist.rank,
                                                                  pin_memory, task_class.full_batches)
        self.validation_loader = (None if self.validation_set is None else
                                  build_validation_loader(self.validation_set, config, pin_memory=pin_memory))
        self.task = task_class(Context(config, dist))
        self.epochs = task_class.epochs(config)
        _check_monitor(config, self.task, self.validation_set is not None)
        default = self.task.default_monitor.split() if self.validation_set is not None else None
        self.monitored = config.monitored or (tuple(default) if default else None)
        self.position = _Position(0, steps_per_epoch)
        self.resumed_from = None
        self.best: dict[str, Any] | None = None
        if checkpoint is not None:
            self.resumed_from = self.position.step = restore(self.task, checkpoint, steps_per_epoch, dist)
            self.best = checkpoint.get("best")
        self.validation: dict[str, float] = {}
        self.metrics: dict[str, torch.Tensor] = {}
        self.monitor = GpuMonitor(dist.device)
        self.checkpoint_path: Path | None = None
        if dist.is_main:
            console.note(f"writing {config.run_dir}/" + (" (resuming)" if checkpoint is not None else ""))
        self.writer = RunWriter(config, self.task) if dist.is_main else None
        if self.writer is not None:
            self.writer.start(self.position.step, self._notes(), self.resumed_from)

    def _notes(self) -> list[str]:
        config, dist = self.config, self.dist
        notes = [*self.task.notes, f"data: {self.dataset!r}, {self.position.steps_per_epoch} steps per epoch, "
                 f"{dist.world_size} process(es) on {dist.device.type}"
                 + (", bf16 autocast" if self.task.context.amp else "")]
        if self.validation_set is not None:
            notes.append(f"validation: {self.validation_set!r}, after every epoch"
                         + (f"; checkpoints/best.pt keeps the best {' '.join(self.monitored)}"
                               if self.monitored else ""))
        if config.n_gpu >= 1 and dist.device.type == "cpu":
            notes.append(f"n_gpu {config.n_gpu}: no CUDA GPU here, so training runs on the CPU (n_gpu: 0 asks for it)")
        if config.amp and dist.device.type != "cuda":
            notes.append("amp: ignored on the CPU (bf16 autocast is for CUDA)")
        if config.n_gpu > 1 and not dist.enabled:
            notes.append(f"n_gpu {config.n_gpu}: this process uses one device; for several GPUs start "
                         f"torchrun --nproc_per_node={config.n_gpu} -m medgan_fast.train ...")
        return notes

    def train_epoch(self, epoch: int) -> None:
        """The epoch's batches (from where a resumed run stopped): step, log, checkpoint."""
        config, position = self.config, self.position
        self.sampler.set_epoch(epoch, position.batch * config.batch_size)
        self.tick = (time.perf_counter(), position.step)
        bar = console.progress_bar(config.progress and self.dist.is_main, self.loader,
                                   desc=f"epoch {epoch + 1}/{self.epochs}", total=position.steps_per_epoch,
                                   initial=position.batch, unit="step", leave=False)
        for batch in bar:
            console.check_interrupt()
            self.metrics.update(self.task.train_step(batch, position.step))
            position.step += 1
            self.task.on_step_end(position.step)
            end_of_epoch = position.batch == 0
            if position.step % config.log_every == 0 or end_of_epoch:
                self.log(bar)
            if not end_of_epoch and config.checkpoint_every and position.step % config.checkpoint_every == 0:
                self.checkpoint()   # epoch ends have their own
        bar.close()

    def end_epoch(self, epoch: int) -> None:
        """Validation, schedulers, the sample grids (and a GAN's image metrics), plots and a
        checkpoint (and best.pt when the monitored metric improved)."""
        config = self.config
        improved = self.validate(epoch)
        self.write_validation(epoch)
        self.task.on_epoch_end(epoch)
        if self.writer is not None:
            if (epoch + 1) % config.sample_every == 0 or epoch + 1 == self.epochs:
                grids = self.task.sample()
                grids = {"": Grid(grids)} if isinstance(grids, torch.Tensor) else grids
                self.writer.sample(epoch, grids)
                if self.task.sample_metrics and "" in grids:
                    self.writer.measure(grids[""].images, self.dataset, epoch, self.position.step, self.dist.device)
            self.writer.plot()
        self.checkpoint(numbered=config.checkpoint_every > 0 and self.position.step % config.checkpoint_every == 0,
                        best=improved)

    def validate(self, epoch: int) -> bool:
        """The task's validation metrics (logged); whether the monitored one improved. Every
        process validates the whole set alike, under its own RNG fork (exact resume)."""
        if self.validation_loader is None:
            return False
        models = list(self.task.models.values())
        modes = [model.training for model in models]
        device = self.dist.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            try:
                for model in models:
                    model.eval()
                values = self.task.validate(self.validation_loader)
            finally:
                for model, mode in zip(models, modes):
                    model.train(mode)
        self.validation = {name: float(value) for name, value in values.items()}
        if self.writer is not None:
            self.writer.log({"step": self.position.step, "epoch": epoch + 1, "event": "validation",
                             **self.validation})
        if self.monitored is None:
            return False
        name, mode = self.monitored
        value = self.validation[name]
        if self.best is not None and not (value < self.best["value"] if mode == "min" else value > self.best["value"]):
            return False
        self.best = {"metric": name, "mode": mode, "value": value, "epoch": epoch + 1, "step": self.position.step}
        return True

    def write_validation(self, epoch: int) -> None:
        """metrics.json: the last validation metrics and the best epoch (rank 0)."""
        if self.writer is not None and self.validation:
            self.writer.write_metrics({"epoch": epoch + 1, "step": self.position.step, "validation": self.validation,
                                       "best": self.best})

    def log(self, bar) -> None:
        """A log.jsonl record: the metrics (mean over processes), learning rates, speed, GPU."""
        position, (then, then_step) = self.position, self.tick
        now = time.perf_counter()
        images = (position.step - then_step) * self.config.batch_size * self.dist.world_size
        record = _log_step(position, self.metrics, self.task, self.dist, self.monitor, images / max(now - then, 1e-9),
                           self.started)
        self.tick = (now, position.step)
        if self.writer is not None:
            self.writer.log(record)
            bar.set_postfix({key: f"{record[key]:.3f}" for key in self.task.progress_metrics if key in record})

    def checkpoint(self, numbered: bool = True, best: bool = False) -> None:
        self.checkpoint_path = _checkpoint(self.task, self.position, self.config, self.dist, self.writer, numbered,
                                           self.best, best)

    def finish(self) -> RunSummary:
        run_dir = self.config.run_dir
        if self.writer is not None:
            self.writer.close()
        if self.checkpoint_path is None and (run_dir / "checkpoints" / "last.pt").is_file():
            self.checkpoint_path = run_dir / "checkpoints" / "last.pt"   # a resumed run with nothing left to do
        return RunSummary(run_dir=run_dir, arch=self.config.arch, image_size=self.config.image_size,
                          data=repr(self.dataset), epochs=self.epochs, steps=self.position.step,
                          seconds=time.perf_counter() - self.started, checkpoint=self.checkpoint_path,
                          samples=sorted((run_dir / "samples").glob("*epoch_*.png")) if self.dist.is_main else [],
                          resumed_from=self.resumed_from, rank=self.dist.rank,
                          metrics=dict(self.writer.last_metrics) if self.writer is not None else {},
                          validation=dict(self.validation), best=self.best)


def _check_monitor(config: TrainConfig, task: Task, validates: bool) -> None:
    if config.monitored is None:
        return
    name = config.monitored[0]
    if not validates:
        raise ConfigError(f"monitor: arch {config.arch} has no validation set here, so {name} cannot be monitored; "
                          "leave monitor empty")
    if name not in task.validation_metrics:
        raise ConfigError(f"monitor: {name} is not a validation metric of arch {config.arch}; it has "
                          f"{', '.join(task.validation_metrics)}")


def _checkpoint(task: Task, position: _Position, config: TrainConfig, dist: Distributed,
                writer: RunWriter | None, numbered: bool = True, best: dict[str, Any] | None = None,
                is_best: bool = False) -> Path:
    """Writes checkpoints/last.pt (and a step-numbered copy, and best.pt when `is_best`) on
    rank 0; every rank sends its RNG state (a collective: all ranks call this at the same
    steps)."""
    rng = dist.gather(get_rng_state(dist.device))
    folder = config.run_dir / "checkpoints"
    path = folder / "last.pt"
    if writer is not None:
        payload = {"arch": config.arch, "config": config.to_dict(), "step": position.step,
                   "epoch": position.epoch, "steps_per_epoch": position.steps_per_epoch,
                   "world_size": dist.world_size, "rng": rng, "best": best, **task.state_dict()}
        also = [folder / step_checkpoint_name(position.step)] if numbered else []
        save_checkpoint(payload, path, also=also + ([folder / "best.pt"] if is_best else []))
        prune_checkpoints(folder, config.keep_checkpoints)
    return path


# ---------------------------------------------------------------------------------------
# Logging, samples, plots

def _log_step(position: _Position, metrics: dict[str, torch.Tensor], task: Task, dist: Distributed,
              monitor: GpuMonitor, speed: float, started: float) -> dict[str, Any]:
    values = dist.mean({key: float(value) for key, value in metrics.items()})
    return {"step": position.step, "epoch": (position.step - 1) // position.steps_per_epoch + 1,
            "time": round(time.perf_counter() - started, 3), **values, **task.learning_rates(),
            "images_per_second": round(speed, 2), **monitor.read()}
