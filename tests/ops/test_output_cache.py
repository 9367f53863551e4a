"""The output cache (csrc/common/output): large CPU outputs reuse the memory of freed ones,
so that an op called in a pipeline does not fault fresh pages for its output."""

import ctypes
import gc

import numpy as np
import pytest
import torch

import medgan_fast
from medgan_fast import ops

pytestmark = pytest.mark.skipif(not medgan_fast.build_info()["cpu_compiled"], reason="needs the kernels")

MASK = torch.rand(1024, 1024, generator=torch.Generator().manual_seed(0)) > 0.6  # labels: 4 MiB


def _trimmed_temporary():
    """What a pipeline does between two calls: a large temporary freed, and glibc's free
    memory returned to the kernel."""
    np.ones(16 << 17).sum()
    ctypes.CDLL(None).malloc_trim(0)


def test_an_output_reuses_the_freed_outputs_memory_after_other_work():
    medgan_fast.release_cached_outputs()
    labels, _ = ops.label(MASK)
    first = labels.data_ptr()
    del labels
    assert medgan_fast.cached_output_bytes() >= MASK.numel() * 4
    _trimmed_temporary()
    labels, _ = ops.label(MASK)
    assert labels.data_ptr() == first
    assert medgan_fast.cached_output_bytes() == 0


def test_a_kept_output_is_never_handed_out_again():
    medgan_fast.release_cached_outputs()
    kept = [ops.label(MASK)[0] for _ in range(3)]
    assert len({t.data_ptr() for t in kept}) == 3
    assert all(torch.equal(t, kept[0]) for t in kept)


def test_release_returns_the_held_bytes():
    medgan_fast.release_cached_outputs()
    ops.dilate(MASK, torch.ones(3, 3, dtype=torch.bool))  # 1 MiB bool output, freed at once
    held = medgan_fast.cached_output_bytes()
    assert held >= MASK.numel()
    assert medgan_fast.release_cached_outputs() == held
    assert medgan_fast.cached_output_bytes() == 0


def test_the_cache_is_bounded():
    medgan_fast.release_cached_outputs()
    outputs = [ops.label(torch.zeros(4096, 4096 + 64 * i, dtype=torch.bool))[0] for i in range(12)]  # 64+ MiB each
    del outputs
    gc.collect()
    assert 0 < medgan_fast.cached_output_bytes() <= 256 << 20
    medgan_fast.release_cached_outputs()


def test_small_outputs_bypass_the_cache():
    medgan_fast.release_cached_outputs()
    ops.label(MASK[:64, :64])
    assert medgan_fast.cached_output_bytes() == 0


def test_a_cached_output_behaves_as_any_tensor():
    labels, _ = ops.label(MASK)
    expected = labels.clone()
    labels.resize_(2048, 2048)  # the storage grows through the cache's allocator
    assert torch.equal(labels.view(-1)[: expected.numel()], expected.view(-1))
    shared = ops.label(MASK)[0].share_memory_()
    assert torch.equal(shared, expected)
    assert torch.equal(torch.from_numpy(shared.numpy()), expected)
