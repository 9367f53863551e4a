"""Seeded inputs and helpers shared by the benches (a module, not a conftest, so it
cannot collide with tests/conftest.py)."""

import ctypes
import random
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch

import medgan_fast

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def blob_mask(shape, foreground=0.16, sigma=4.0, seed=0) -> np.ndarray:
    """Smooth random blobs covering `foreground` of the image (a cell- or organelle-like mask)."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), sigma)
    return field > np.quantile(field, 1.0 - foreground)


def emps_masks(count=64, size=512) -> np.ndarray:
    """(count, size, size) bool: the first EMPS instance maps, binarised, top-left crops."""
    from PIL import Image

    folder = SHARED_DATA / "emps" / "segmaps"
    files = sorted(folder.glob("*.png"))[:count]
    if len(files) < count:
        pytest.skip(f"needs {count} EMPS segmaps in {folder}")
    return np.stack([np.asarray(Image.open(f))[:size, :size] > 0 for f in files])


def bench(benchmark, group, entry, fn):
    """Times fn as `entry` of `group`. Entries starting with "medgan_fast" are ours;
    "none" is a baseline without the feature (report.py prints overheads against it)."""
    benchmark.group = group
    benchmark.extra_info["entry"] = entry
    return benchmark(fn)


def bench_interleaved(benchmark, group, entries: dict, rounds=30, warmup=3, between=None):
    """Times several entries round-robin, one call each per round in a shuffled (seeded)
    order, so that drift in the machine's speed (seen here: +-20% over tens of seconds on a
    shared 2-core VM) and whatever the previous call left in the caches hit them alike;
    timed one after another, differences of a few percent are noise. Every entry's median
    and quartiles go into extra_info["interleaved"] (report.py reads them); with an entry
    named "none" (the work without the feature), also each entry's paired overhead: the
    median over rounds of its time / none's time in the same round, minus 1, which cancels
    drift that the ratio of medians keeps. pytest-benchmark also times the first entry on
    its own. `between`, if given, runs untimed before every timed call (other work of a
    pipeline, e.g. pipeline_step)."""
    order = list(entries)
    shuffle = random.Random(0).shuffle
    times = {name: [] for name in entries}
    for round_ in range(warmup + rounds):
        shuffle(order)
        for name in order:
            if between is not None:
                between()
            start = time.perf_counter()
            entries[name]()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    benchmark.group = group
    benchmark.extra_info["entry"] = next(iter(entries))
    summary = {}
    for name, t in times.items():
        summary[name] = {"median": float(np.median(t)), "q1": float(np.percentile(t, 25)),
                         "q3": float(np.percentile(t, 75)), "rounds": len(t)}
        if "none" in times and name != "none":
            ratios = np.asarray(t) / np.asarray(times["none"]) - 1
            summary[name]["paired_overhead"] = {"median": float(np.median(ratios)),
                                                "q1": float(np.percentile(ratios, 25)),
                                                "q3": float(np.percentile(ratios, 75))}
    benchmark.extra_info["interleaved"] = summary
    benchmark.pedantic(next(iter(entries.values())), rounds=3, iterations=1)


def pipeline_step(megabytes=16):
    """What a pipeline does between two calls of an op: builds and frees a large temporary
    (reading the next file, the previous library's output), and the freed memory goes back
    to the kernel (glibc trims its heap or unmaps a large block; here malloc_trim makes it
    happen every time). An output allocated next then faults fresh pages, which on the
    project's VMs (Firecracker guests whose freed pages the host reclaims) cost more than
    on a workstation."""
    np.ones(megabytes << 17).sum()
    _LIBC.malloc_trim(0)


_LIBC = ctypes.CDLL(None)


def synchronised(fn):
    """fn followed by a CUDA synchronise, so the benchmark times the GPU's work."""
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


needs_cuda = pytest.mark.skipif(
    not (torch.cuda.is_available() and medgan_fast.build_info()["cuda_compiled"]),
    reason="needs a CUDA GPU and the CUDA kernels")


def task_steps(task, loader, sampler):
    """A call that runs `task`'s next training step on the next batch of `loader`, starting a
    new epoch (sampler.set_epoch) when one ends: the framework's loop, one step a call."""
    state = {"batches": iter(()), "epoch": 0, "step": 0}

    def step():
        batch = next(state["batches"], None)
        if batch is None:
            sampler.set_epoch(state["epoch"])
            state["epoch"] += 1
            state["batches"] = iter(loader)
            batch = next(state["batches"])
        task.train_step(batch, state["step"])
        state["step"] += 1

    return step
