"""The training data pipeline: the dataset a config names, and a loader whose order is a
function of (seed, epoch) and that can start in the middle of an epoch (for resume).

Order: :class:`EpochSampler` is torch's ``DistributedSampler`` (shuffle seeded with seed +
epoch, one shard per process) that yields ``(epoch, index)`` keys, so every item's random
crop and flips come from its key (:mod:`medgan_fast.data.datasets`), and that skips the first
batches of an epoch when a run resumes mid-epoch. The DataLoader gets its own
``torch.Generator``, so creating an iterator never draws from the global RNG the training
step samples noise from.
"""

from __future__ import annotations

import math
import os
from itertools import islice
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .. import console
from ..data.datasets import HDF5_SUFFIXES, FolderDataset, ImageDataset, PatchSetDataset, SampleDataset
from .config import ConfigError, TrainConfig

__all__ = ["EpochSampler", "build_dataset", "build_loader", "build_validation_loader", "loader_workers"]


def build_dataset(config: TrainConfig) -> ImageDataset:
    """The dataset of ``config.data``: the embedded sample, an .h5 patch set or a folder.

    Raises:
        DataError: the folder or file is missing, empty or unreadable (the message names it).
    """
    options = dict(image_size=config.image_size, channels=config.number_channels, flip=config.flip, seed=config.seed)
    source = config.data
    if config.is_sample:
        dataset = SampleDataset(crops=config.sample_crops, **options)
    elif Path(source).suffix.lower() in HDF5_SUFFIXES:
        dataset = PatchSetDataset(source, **options)
    else:
        dataset = FolderDataset(source, **options)
    dataset.max_images = config.max_images
    return dataset


class EpochSampler(DistributedSampler):
    """``DistributedSampler`` yielding ``(epoch, index)`` keys, resumable mid-epoch.

    Args:
        dataset: any sized dataset.
        num_replicas, rank: the process group (1 and 0 without torch.distributed).
        seed: the shuffle of epoch e is seeded with seed + e (as DistributedSampler).
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Epoch `epoch`, skipping this process's first `start` items (already trained on)."""
        super().set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return ((self.epoch, index) for index in islice(super().__iter__(), self.start, None))

    def __len__(self) -> int:
        return self.num_samples - self.start


def build_loader(dataset: ImageDataset, config: TrainConfig, num_replicas: int = 1, rank: int = 0,
                 pin_memory: bool = False, full_batches: bool = False) -> tuple[DataLoader, EpochSampler, int]:
    """(loader, its sampler, steps per epoch) for one process of `num_replicas`; with
    `full_batches` an epoch's last, partial batch is dropped (its images come again, shuffled
    elsewhere, in later epochs)."""
    sampler = EpochSampler(dataset, num_replicas, rank, config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                        num_workers=loader_workers(config, say=rank == 0), pin_memory=pin_memory,
                        drop_last=full_batches, generator=torch.Generator().manual_seed(config.seed))
    steps = (sampler.num_samples // config.batch_size if full_batches
             else math.ceil(sampler.num_samples / config.batch_size))
    if steps == 0:
        raise ConfigError(f"batch_size {config.batch_size}: more than the {sampler.num_samples} training images of "
                          f"each process ({config.data or 'the sample'}); arch {config.arch} trains on full "
                          "batches only, so give a smaller batch_size")
    return loader, sampler, steps


def build_validation_loader(dataset, config: TrainConfig, pin_memory: bool = False) -> DataLoader:
    """The validation set in order, as the keys (0, index): the same batches every epoch and
    in every process (each validates the whole set)."""
    return DataLoader(dataset, batch_size=config.batch_size, sampler=[(0, index) for index in range(len(dataset))],
                      num_workers=loader_workers(config, say=False), pin_memory=pin_memory, drop_last=False)


def loader_workers(config: TrainConfig, say: bool = True) -> int:
    """``loader_workers``, clamped to the machine's cores (with a note when `say`)."""
    workers = config.loader_workers
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers > cores:   # torch would warn (twice) and run them time-sliced; items do not depend on it
        if say:
            console.note(f"loader_workers {workers}: this machine has {cores} cores; using {cores} workers")
        workers = cores
    return workers
