"""Shared test machinery: devices, the dtype tolerance table, RNG seeding.

- ``device``: parametrized over "cpu", "emulated" and "cuda". "emulated" is a CPU device
  with the CUDA emulation on for the whole test (medgan_fast.emulation): our ops then run
  the CUDA drivers' own code on the CPU, so every device test is also a CUDA test without a
  GPU (``pytest -k emulated`` selects them; ``--emulation-seed N`` shuffles their schedule).
  The cuda param carries ``pytest.mark.cuda`` and is skipped unless a GPU is visible AND the
  extension was compiled with CUDA.
- ``gpu``: the CUDA side of a CPU-vs-CUDA test, "emulated" or (marked cuda) "cuda"; see
  :class:`Gpu`.
- ``DTYPE_PRECISIONS`` (kornia ``testing/base.py`` style): dtype -> (rtol, atol). Integer,
  bool and label tensors compare exactly; see :func:`tolerance`.
- ``seeded`` (autouse): seeds torch, numpy and random for every test and restores the
  previous states afterwards; ``rng`` gives a numpy Generator seeded the same way.
"""

from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

import medgan_fast
from medgan_fast import emulation

# ---------------------------------------------------------------------------------------
# Devices

CUDA_AVAILABLE = torch.cuda.is_available() and bool(medgan_fast.build_info()["cuda_compiled"])
CUDA_SKIP_REASON = ("needs a CUDA GPU and CUDA kernels (torch.cuda.is_available()="
                    f"{torch.cuda.is_available()}, cuda_compiled={medgan_fast.build_info()['cuda_compiled']})")

DEVICES = ["cpu", pytest.param("emulated", marks=pytest.mark.emulated), pytest.param("cuda", marks=pytest.mark.cuda)]
GPUS = [pytest.param("emulated", marks=pytest.mark.emulated), pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_addoption(parser):
    parser.addoption("--emulation-seed", type=int, default=int(os.environ.get("MEDGAN_FAST_EMULATION_SEED", "0")),
                     help="schedule seed of the emulated CUDA tests: 0 runs blocks and threads in index order, "
                          "others shuffle them (default: $MEDGAN_FAST_EMULATION_SEED or 0)")


def pytest_collection_modifyitems(config, items):
    """Skip everything marked ``cuda`` when there is no usable GPU (vision's needs_cuda), and
    everything marked ``emulated`` when the build has no CUDA emulation."""
    skips = []
    if not CUDA_AVAILABLE:
        skips.append(("cuda", pytest.mark.skip(reason=CUDA_SKIP_REASON)))
    if not emulation.AVAILABLE:
        skips.append(("emulated", pytest.mark.skip(reason="built without the CUDA emulation (MEDGAN_FAST_EMULATION=0)")))
    for item in items:
        for marker, skip in skips:
            if item.get_closest_marker(marker) is not None:
                item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each test that takes ``device`` runs on CPU, on the emulated CUDA drivers (a CPU device
    with the emulation on for the whole test) and (marked ``cuda``) on CUDA."""
    if request.param == "emulated":
        with emulation.emulated_cuda(seed=request.config.getoption("--emulation-seed")):
            yield torch.device("cpu")
    else:
        yield torch.device(request.param)


class Gpu:
    """The CUDA side of a CPU-vs-CUDA test: a real GPU ("cuda"), or the CUDA drivers run by
    the emulation on CPU tensors ("emulated"). Compute the CPU side outside ``running()``::

        cpu = op(x, impl="kernel")
        with gpu.running():
            out = op(gpu.put(x), impl="kernel")
        assert gpu.holds(out)
    """

    def __init__(self, kind: str, seed: int):
        self.kind, self.seed = kind, seed
        self.device = torch.device("cuda" if kind == "cuda" else "cpu")

    def put(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, copy=True)  # a copy on the CPU too: some ops work in place

    def holds(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == self.device.type

    def running(self):
        return emulation.emulated_cuda(seed=self.seed) if self.kind == "emulated" else contextlib.nullcontext()


@pytest.fixture(params=GPUS)
def gpu(request) -> Gpu:
    return Gpu(request.param, request.config.getoption("--emulation-seed"))


# ---------------------------------------------------------------------------------------
# Tolerances: one table, as kornia's testing/base.py. Morphology and labelling are exact in
# every dtype (max/min/compare only), so the table matters for derived floats (centroids).

DTYPE_PRECISIONS: dict[torch.dtype, tuple[float, float]] = {
    torch.bfloat16: (7.8e-3, 7.8e-3),
    torch.float16: (9.7e-4, 9.7e-4),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-7, 1e-7),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing tensors of ``dtype``: exact for bool, integers and labels."""
    return DTYPE_PRECISIONS.get(dtype, (0.0, 0.0))


@pytest.fixture
def assert_close():
    """``assert_close(actual, expected)``: same dtype, shape and values within the table's
    tolerance for the dtype (exact for integers/bool); NaNs compare equal. Accepts tensors
    or numpy arrays (compared on CPU)."""

    def check(actual, expected, *, msg: str | None = None):
        actual = torch.as_tensor(np.asarray(actual)) if isinstance(actual, np.ndarray) else actual
        expected = torch.as_tensor(np.asarray(expected)) if isinstance(expected, np.ndarray) else expected
        assert actual.dtype == expected.dtype, f"dtype {actual.dtype} != {expected.dtype}. {msg or ''}"
        assert actual.shape == expected.shape, f"shape {tuple(actual.shape)} != {tuple(expected.shape)}. {msg or ''}"
        actual, expected = actual.detach().cpu(), expected.detach().cpu()
        if actual.dtype in DTYPE_PRECISIONS:
            rtol, atol = tolerance(actual.dtype)
            torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, equal_nan=True, msg=msg)
        else:
            # Exact; through numpy because uint16 lacks most CPU ops in torch.
            np.testing.assert_array_equal(actual.numpy(), expected.numpy(), err_msg=msg or "")

    return check


# ---------------------------------------------------------------------------------------
# RNG

SEED = 0


@pytest.fixture(autouse=True)
def seeded():
    """Seeds torch (CPU and CUDA), numpy's global RNG and ``random`` with SEED for the test,
    then restores whatever state they had, so tests are independent of order."""
    py_state, np_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)  # seeds CUDA too
    yield SEED
    random.setstate(py_state)
    np.random.set_state(np_state)
    torch.set_rng_state(torch_state)
    if cuda_states is not None:
        torch.cuda.set_rng_state_all(cuda_states)


@pytest.fixture
def rng(seeded) -> np.random.Generator:
    """A numpy Generator seeded with the test seed."""
    return np.random.default_rng(seeded)


# ---------------------------------------------------------------------------------------
# Hypothesis: modest example counts, no deadline (first calls load kernels / compile); the
# device fixture is function scoped but constant across a test's examples.

settings.register_profile(
    "medgan_fast", max_examples=50, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("medgan_fast")


@pytest.fixture
def num_threads(request):
    """Runs a test with torch's thread count set to the parametrized value (indirect)."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)
