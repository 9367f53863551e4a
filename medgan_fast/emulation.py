"""The CUDA emulation: our CUDA kernels' own code run on the CPU, for tests without a GPU.

The extension builds each ``csrc/ops/<family>/<family>_cuda.cu`` a second time with the host
compiler against ``csrc/common/emulation``. Inside :func:`emulated_cuda`, ops on CPU tensors
called from this thread run those emulated CUDA drivers instead of the CPU kernels: each
launch runs its grid block by block, every thread a fiber, with real ``__syncthreads``
barriers, warp shuffles over 32 lanes, atomics and CUDA's launch limits. Results come back
as ordinary CPU tensors, so any test that compares CUDA with the CPU or the reference can
run against it.

What it proves: indexing, bounds (under AddressSanitizer), reductions, barriers, shuffles,
launch shapes and scratch-memory use. What it cannot: memory-model races (fibers switch only
at barriers and warp operations), timing, occupancy, and nvcc's own floating-point
contraction (the emulated code is rounded as the CPU build rounds it).

    >>> import torch
    >>> from medgan_fast.ops import label
    >>> with emulated_cuda(seed=3):
    ...     labels, count = label(torch.eye(4, dtype=torch.bool), 2)
    >>> int(count)
    1
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._ext import _C, build_info

AVAILABLE = bool(build_info().get("emulation_compiled", False))


def _require() -> None:
    if not AVAILABLE:
        raise RuntimeError("medgan_fast was built without the CUDA emulation (MEDGAN_FAST_EMULATION=0); "
                           "reinstall with `pip install --no-build-isolation -e .`")


@contextlib.contextmanager
def emulated_cuda(seed: int = 0, memory_budget: int | None = None) -> Iterator[None]:
    """Runs our ops on CPU tensors through the emulated CUDA drivers while inside.

    Args:
        seed: 0 runs blocks, threads and barrier releases in index order; any other value
            shuffles all three (differently for each launch), so a result that depends on
            the execution order shows up as a difference.
        memory_budget: bytes of scratch ("device") memory the drivers may hold at once;
            None for no limit. Exceeding it raises RuntimeError, as a GPU's allocator would.

    The previous state is restored on exit; the switch is per thread (ops called from other
    threads are unaffected).
    """
    _require()
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if memory_budget is not None and (not isinstance(memory_budget, int) or memory_budget < 0):
        raise ValueError(f"memory_budget must be None or a non-negative int of bytes, got {memory_budget!r}")
    before = (_C.emulation_enabled(), _C.emulation_seed(), _C.emulation_memory_budget())
    _C.set_emulation_enabled(True)
    _C.set_emulation_seed(seed)
    _C.set_emulation_memory_budget(-1 if memory_budget is None else memory_budget)
    try:
        yield
    finally:
        _C.set_emulation_enabled(before[0])
        _C.set_emulation_seed(before[1])
        _C.set_emulation_memory_budget(before[2])


def counters() -> dict[str, int]:
    """Launches, threads and atomic operations run by the emulation so far in this process."""
    _require()
    return dict(_C.emulation_counters())


def peak_memory(reset: bool = False) -> int:
    """The most scratch memory (bytes) the emulated drivers held at once; reset starts over."""
    _require()
    peak = int(_C.emulation_peak_memory())
    if reset:
        _C.reset_emulation_peak_memory()
    return peak
