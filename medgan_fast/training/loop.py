"""The training loop shared by every architecture: data -> step -> log -> sample -> checkpoint.

    >>> from medgan_fast.training import load_config, train
    >>> summary = train(load_config("configs/sngan128.yaml"))   # doctest: +SKIP
    >>> print(summary)                                          # doctest: +SKIP

Run directory ``<out>/<run>/`` (rank 0 writes it): config.yaml (the resolved config),
log.jsonl, checkpoints/ (last.pt and step_NNNNNNNN.pt), samples/epoch_NNNN.png (fixed-input
grids), loss.png, evolution.gif, and with ``metrics`` set, metrics.png and metrics.json. A new
run whose directory exists gets a numbered one (<run>_2, ...); ``resume`` continues in the
existing one.

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

import copy
import dataclasses
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import console
from .._version import __version__
from ..errors import Interrupted
from ..data.datasets import ImageDataset
from ..data.grid import save_grid
from ..metrics.comparison import TRAIN_PAIRS_PER_IMAGE, TRAIN_SWD_OPTIONS, compute_metrics, direction
from ..outputs import write_json
from . import gan  # noqa: F401  (registers DCGAN and SNGAN)
from .checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    set_rng_state,
    step_checkpoint_name,
)
from .config import ConfigError, TrainConfig
from .data import build_dataset, build_loader
from .distributed import Distributed, setup
from .plots import evenly_spaced, gif_frame, plot_losses, plot_metrics, save_evolution
from .registry import ARCHITECTURES, Context, Task
from .telemetry import GpuMonitor, JsonlLog, read_log, truncate_log

__all__ = ["RunSummary", "train"]

# Settings that shape the models or the data order: a resumed run must keep them.
RESUME_FIXED = ("arch", "image_size", "latent_vector", "number_channels", "gen_feature_maps", "dis_feature_maps",
                "batch_size", "seed", "data", "path", "sample_crops", "max_images", "flip", "n_critic",
                "loss")


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
        if self.checkpoint is not None:
            lines.append(f"  checkpoints/{self.checkpoint.name}")
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
    checkpoint = _resume_checkpoint(config)
    if checkpoint is not None:
        _check_resumable(config, checkpoint)
    config = _claim_run_dir(config, dist, resuming=checkpoint is not None)
    try:
        run = _Run(config, dist, checkpoint, started)
        for epoch in range(run.position.epoch, run.config.num_epochs):
            run.train_epoch(epoch)
            run.end_epoch(epoch)
        return run.finish()
    except BaseException as error:
        left = _after_a_failed_run(config, dist, resuming=checkpoint is not None)
        if isinstance(error, KeyboardInterrupt):
            raise Interrupted(left)
        raise


def _after_a_failed_run(config: TrainConfig, dist: Distributed, resuming: bool) -> str:
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


class _Run:
    """One process's training run: its data, task, position and (rank 0) files."""

    def __init__(self, config: TrainConfig, dist: Distributed, checkpoint: dict[str, Any] | None, started: float):
        self.started = started
        self.dist = dist
        self.config = config
        self.dataset = build_dataset(config)
        self.loader, self.sampler, steps_per_epoch = build_loader(self.dataset, config, dist.world_size, dist.rank,
                                                                  pin_memory=dist.device.type == "cuda")
        self.task = ARCHITECTURES[config.arch].task(Context(config, dist))
        self.position = _Position(0, steps_per_epoch)
        self.resumed_from = None
        if checkpoint is not None:
            self.resumed_from = self.position.step = _restore(self.task, checkpoint, steps_per_epoch, dist)
        self.metrics: dict[str, torch.Tensor] = {}
        self.monitor = GpuMonitor(dist.device)
        self.checkpoint_path: Path | None = None
        if dist.is_main:
            console.note(f"writing {config.run_dir}/" + (" (resuming)" if checkpoint is not None else ""))
        self.writer = _RunWriter(config, self.task) if dist.is_main else None
        if self.writer is not None:
            self.writer.start(self.position.step, self._notes(), self.resumed_from)

    def _notes(self) -> list[str]:
        config, dist = self.config, self.dist
        notes = [*self.task.notes, f"data: {self.dataset!r}, {self.position.steps_per_epoch} steps per epoch, "
                 f"{dist.world_size} process(es) on {dist.device.type}"
                 + (", bf16 autocast" if self.task.context.amp else "")]
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
                                   desc=f"epoch {epoch + 1}/{config.num_epochs}", total=position.steps_per_epoch,
                                   initial=position.batch, unit="step", leave=False)
        for batch in bar:
            console.check_interrupt()
            self.metrics.update(self.task.train_step(batch, position.step))
            position.step += 1
            end_of_epoch = position.batch == 0
            if position.step % config.log_every == 0 or end_of_epoch:
                self.log(bar)
            if not end_of_epoch and config.checkpoint_every and position.step % config.checkpoint_every == 0:
                self.checkpoint()   # epoch ends have their own
        bar.close()

    def end_epoch(self, epoch: int) -> None:
        """Schedulers, the sample grid and its metrics, plots and a checkpoint."""
        config = self.config
        self.task.on_epoch_end(epoch)
        if self.writer is not None:
            if (epoch + 1) % config.sample_every == 0 or epoch + 1 == config.num_epochs:
                images = self.task.sample()
                self.writer.sample(epoch, images)
                self.writer.measure(images, self.dataset, epoch, self.position.step, self.dist.device)
            self.writer.plot()
        self.checkpoint(numbered=config.checkpoint_every > 0 and self.position.step % config.checkpoint_every == 0)

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
            bar.set_postfix({key: f"{record[key]:.3f}" for key in ("loss_d", "loss_g") if key in record})

    def checkpoint(self, numbered: bool = True) -> None:
        self.checkpoint_path = _checkpoint(self.task, self.position, self.config, self.dist, self.writer, numbered)

    def finish(self) -> RunSummary:
        run_dir = self.config.run_dir
        if self.writer is not None:
            self.writer.close()
        if self.checkpoint_path is None and (run_dir / "checkpoints" / "last.pt").is_file():
            self.checkpoint_path = run_dir / "checkpoints" / "last.pt"   # a resumed run with nothing left to do
        return RunSummary(run_dir=run_dir, arch=self.config.arch, image_size=self.config.image_size,
                          data=repr(self.dataset), epochs=self.config.num_epochs, steps=self.position.step,
                          seconds=time.perf_counter() - self.started, checkpoint=self.checkpoint_path,
                          samples=sorted((run_dir / "samples").glob("epoch_*.png")) if self.dist.is_main else [],
                          resumed_from=self.resumed_from, rank=self.dist.rank,
                          metrics=dict(self.writer.last_metrics) if self.writer is not None else {})


# ---------------------------------------------------------------------------------------
# Run directory and resume

def _claim_run_dir(config: TrainConfig, dist: Distributed, resuming: bool) -> TrainConfig:
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


def _resume_checkpoint(config: TrainConfig) -> dict[str, Any] | None:
    if config.resume is False:
        return None
    path = config.run_dir / "checkpoints" / "last.pt" if config.resume is True else Path(config.resume)
    if config.resume is True and not path.is_file():
        raise CheckpointError(f"resume: no checkpoint to resume at {path} (run {config.run!r} in {config.out!r}); "
                              "give resume=PATH, or the run and out of the run to continue")
    return load_checkpoint(path)


def _check_resumable(config: TrainConfig, checkpoint: dict[str, Any]) -> None:
    # A key the checkpoint's version did not have yet had its default then.
    saved = {**TrainConfig().to_dict(), **checkpoint["config"]}
    changed = [f"{key} {saved.get(key)!r} -> {getattr(config, key)!r}" for key in RESUME_FIXED
               if saved.get(key) != getattr(config, key)]
    if changed:
        raise ConfigError(f"resume: the config differs from the checkpoint's in {', '.join(changed)}; "
                          "a resumed run must keep its models and data")


def _restore(task: Task, checkpoint: dict[str, Any], steps_per_epoch: int, dist: Distributed) -> int:
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


def _checkpoint(task: Task, position: _Position, config: TrainConfig, dist: Distributed,
                writer: _RunWriter | None, numbered: bool = True) -> Path:
    """Writes checkpoints/last.pt (and a step-numbered copy) on rank 0; every rank sends its
    RNG state (a collective: all ranks call this at the same steps)."""
    rng = dist.gather(get_rng_state(dist.device))
    folder = config.run_dir / "checkpoints"
    path = folder / "last.pt"
    if writer is not None:
        payload = {"arch": config.arch, "config": config.to_dict(), "step": position.step,
                   "epoch": position.epoch, "steps_per_epoch": position.steps_per_epoch,
                   "world_size": dist.world_size, "rng": rng, **task.state_dict()}
        save_checkpoint(payload, path, also=folder / step_checkpoint_name(position.step) if numbered else None)
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


def fixed_real_images(dataset: ImageDataset, count: int) -> torch.Tensor:
    """[min(count, len(dataset)), C, S, S] real images in [0, 1] for the metrics: the items
    (epoch 0, i) at `count` evenly spaced indices i, the same in every call and run."""
    indices = np.unique(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int))
    # A copy (an HDF5 set's copy opens its own file handle), so the loader's dataset stays as it was.
    source = copy.copy(dataset)
    return torch.stack([source[(0, int(index))] for index in indices]).add(1).div(2).clamp(0, 1)


class _RunWriter:
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

    def sample(self, epoch: int, images: torch.Tensor) -> Path:
        """samples/epoch_NNNN.png: the grid of `images` ([N, C, H, W] in [-1, 1], from task.sample())."""
        self._frames.pop(self.run_dir / "samples" / f"epoch_{epoch + 1:04d}.png", None)   # redone after a resume
        return save_grid(images.numpy(), self.run_dir / "samples" / f"epoch_{epoch + 1:04d}.png",
                         value_range=(-1.0, 1.0))

    def measure(self, images: torch.Tensor, dataset: ImageDataset, epoch: int, step: int,
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

    def _note(self, key: str, message: str) -> None:
        if key not in self._reported:
            self._reported.add(key)
            print(message, file=sys.stderr)

    def plot(self) -> None:
        records = read_log(self.log_path)
        title = f"{self.config.arch}-{self.config.image_size} {self.config.run}"
        plot_losses(records, self.run_dir / "loss.png", title=title)
        plot_metrics(records, self.run_dir / "metrics.png", title=title)
        grids = evenly_spaced(sorted((self.run_dir / "samples").glob("epoch_*.png")))
        self._frames = {grid: self._frames[grid] if grid in self._frames else gif_frame(grid) for grid in grids}
        save_evolution(list(self._frames.values()), self.run_dir / "evolution.gif")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
