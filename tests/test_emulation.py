"""The CUDA emulation itself (csrc/common/emulation, medgan_fast.emulation): the promises the
emulated CUDA tests rest on. Each kernel here (self_test.cpp) would give another answer, or
hang, if barriers, shuffles, launch limits or the schedule were emulated wrongly."""

import pytest
import torch

from medgan_fast import emulation
from medgan_fast._ext import _C
from medgan_fast.ops import dilate, disk, label

pytestmark = pytest.mark.skipif(not emulation.AVAILABLE, reason="built without the CUDA emulation")


def self_test(name, seed=0, budget=None):
    with emulation.emulated_cuda(seed=seed, memory_budget=budget):
        return _C.emulation_self_test(name)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_syncthreads_is_a_barrier(seed):
    out = self_test("barrier", seed)
    assert out == [1000 * (b + 1) + (t + 1) % 256 for b in range(4) for t in range(256)]


@pytest.mark.parametrize("seed", [0, 1])
def test_tree_reduction_with_barriers(seed):
    assert self_test("reduce", seed) == [sum(range(b * 128, (b + 1) * 128)) for b in range(3)]


def test_barrier_not_reached_by_every_thread_is_an_error():
    with pytest.raises(RuntimeError, match=r"missing_barrier_kernel.*__syncthreads is not reached by every thread: "
                                           r"32 of 64 threads exited"):
        self_test("missing_barrier")


@pytest.mark.parametrize("seed", [0, 3])
def test_warp_shuffles_follow_cuda(seed):
    out = self_test("shuffle", seed)
    for t in range(64):
        lane, base = t % 32, t - t % 32
        down = 100 + (t + 1 if lane + 1 < 32 else t)
        up = 100 + (t - 3 if lane >= 3 else t)
        xor = 100 + base + (lane ^ 5)
        broadcast = 100 + base + 7
        ballot = sum(1 << lane_ for lane_ in range(32) if (base + lane_) % 3 == 0)
        assert out[5 * t:5 * t + 5] == [down, up, xor, broadcast, ballot], t


def test_full_mask_in_a_partial_warp_is_an_error():
    with pytest.raises(RuntimeError, match=r"names lane 16 of warp 1, which does not exist \(48 threads per block\)"):
        self_test("partial_warp")


@pytest.mark.parametrize("name, message", [
    ("grid_y_limit", r"gridDim.y and gridDim.z must be at most 65535"),
    ("zero_blocks", r"a grid dimension is 0"),
    ("block_limit", r"more than 1024 threads per block"),
])
def test_launch_limits_are_errors(name, message):
    with pytest.raises(RuntimeError, match=message):
        self_test(name)


def test_seed_zero_runs_in_index_order_and_others_shuffle():
    ordered = self_test("order", 0)
    assert ordered == list(range(8 * 64))
    shuffled = [self_test("order", seed) for seed in (1, 2)]
    for order in shuffled:
        assert sorted(order) == ordered and order != ordered
        # blocks run one after another: each block's threads take consecutive positions
        assert all(max(order[b * 64:(b + 1) * 64]) - min(order[b * 64:(b + 1) * 64]) == 63 for b in range(8))
    assert shuffled[0] != shuffled[1]


def test_scratch_memory_is_poisoned_and_budgeted():
    assert self_test("allocate") == [0xFF] * 16  # NaN floats, -1 integers: unwritten reads show
    with pytest.raises(RuntimeError, match=r"out of device memory: 1048576 bytes requested"):
        self_test("allocate", budget=1000)


def test_ops_run_the_emulated_drivers_only_inside():
    mask = torch.rand(64, 70, generator=torch.Generator().manual_seed(0)) > 0.5
    before = emulation.counters()
    label(mask, 2, impl="kernel")
    assert emulation.counters() == before
    with emulation.emulated_cuda():
        labels, count = label(mask, 2, impl="kernel")
        dilate(mask, disk(2), impl="kernel")
    after = emulation.counters()
    assert after["launches"] > before["launches"] and after["threads"] >= before["threads"] + 64 * 70
    assert torch.equal(labels, label(mask, 2, impl="kernel")[0])
    assert not _C.emulation_enabled()


def test_state_is_restored_after_an_error():
    with pytest.raises(RuntimeError):
        with emulation.emulated_cuda(seed=5, memory_budget=10):
            _C.emulation_self_test("allocate")
    assert not _C.emulation_enabled() and _C.emulation_seed() == 0 and _C.emulation_memory_budget() == -1


@pytest.mark.parametrize("kwargs, message", [
    ({"seed": -1}, "seed must be a non-negative int"),
    ({"seed": 1.5}, "seed must be a non-negative int"),
    ({"memory_budget": -5}, "memory_budget must be None or a non-negative int"),
])
def test_bad_arguments_name_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        with emulation.emulated_cuda(**kwargs):
            pass
