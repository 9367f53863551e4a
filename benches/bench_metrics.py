"""Image-quality metrics (medgan_fast.metrics.quality) against piq 0.8.0, same inputs.

Each group times ours ("medgan_fast", on the GPU "medgan_fast_cuda") and piq ("piq",
"piq_cuda") round-robin in one run (_inputs.bench_interleaved; on the CPU each call after a
freed large temporary, as in a pipeline), after checking that both
give the same result; report.py divides piq's median by ours. Sizes: a batch of 64 RGB
128x128 images and 256 grey 256x256 images, float32, reduction "mean". MS-SSIM needs at
least 161 px a side (5 scales of an 11-tap window), so its RGB batch is 64x3x192x192.
"""

import time

import piq
import pytest
import torch
from _inputs import bench, bench_interleaved, needs_cuda, pipeline_step, synchronised

from medgan_fast.metrics import quality

METRICS = {
    "psnr": (quality.psnr, piq.psnr),
    "ssim": (quality.ssim, piq.ssim),
    "ms_ssim": (quality.multi_scale_ssim, piq.multi_scale_ssim),
    "gmsd": (quality.gmsd, piq.gmsd),
    "multi_scale_gmsd": (quality.multi_scale_gmsd, piq.multi_scale_gmsd),
    "mdsi": (quality.mdsi, piq.mdsi),
    "haarpsi": (quality.haarpsi, piq.haarpsi),
}
# MDSI on grey input: piq and ours both warn that the channel is used as R, G and B.
pytestmark = pytest.mark.filterwarnings("ignore:.*(RGB images|supports only RGB).*:UserWarning")

RGB, GREY = (64, 3, 128, 128), (256, 1, 256, 256)
MS_SSIM_RGB = (64, 3, 192, 192)  # MS-SSIM needs >= 161 px


def shape_for(name, size):
    if size == "grey":
        return GREY
    return MS_SSIM_RGB if name == "ms_ssim" else RGB


def group_name(name, shape, gpu=False):
    note = " (MS-SSIM needs >= 161 px)" if shape == MS_SSIM_RGB else ""
    return f"{name} {'x'.join(map(str, shape))} float32{note}{': GPU' if gpu else ''}"


_PAIRS = {}


def image_pair(shape):
    """Seeded x (noise mixed with a smooth field) and y = x + noise, in [0, 1], float32."""
    if shape not in _PAIRS:
        _PAIRS.clear()  # keep one shape's pair in memory at a time
        g = torch.Generator().manual_seed(0)
        smooth = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g), 5, 1, 2, count_include_pad=False)
        x = 0.4 * torch.rand(shape, generator=g) + 0.6 * smooth
        y = (x + 0.05 * torch.randn(shape, generator=g)).clamp_(0, 1)
        _PAIRS[shape] = (x, y)
    return _PAIRS[shape]


def rounds_for(entries, budget_s=20.0):
    """Round-robin rounds so that a group takes about budget_s (5 to 30 rounds)."""
    start = time.perf_counter()
    for fn in entries.values():
        fn()
    per_round = time.perf_counter() - start
    return max(5, min(30, int(budget_s / per_round)))


def run_group(benchmark, name, shape, device):
    ours, peer = METRICS[name]
    x, y = image_pair(shape)
    x, y = x.to(device), y.to(device)

    def run_ours():
        return ours(x, y)

    def run_peer():
        return peer(x, y)

    got, expected = run_ours(), run_peer()
    difference = (got.double() - expected.double()).abs().item()
    benchmark.extra_info["abs_diff_vs_piq"] = difference
    assert difference <= 1e-4, f"{name} {shape}: ours {got.item()} piq {expected.item()}"
    gpu = device != "cpu"
    suffix = "_cuda" if gpu else ""
    entries = {f"medgan_fast{suffix}": run_ours, f"piq{suffix}": run_peer}
    if gpu:
        entries = {entry: synchronised(fn) for entry, fn in entries.items()}
    if benchmark.disabled:  # --benchmark-disable (the default): one call of ours as a smoke test
        entry, fn = next(iter(entries.items()))
        bench(benchmark, group_name(name, shape, gpu), entry, fn)
        return
    # On the CPU each call follows a freed large temporary, as in a pipeline (_inputs.pipeline_step).
    bench_interleaved(benchmark, group_name(name, shape, gpu), entries, rounds=rounds_for(entries), warmup=1,
                      between=None if gpu else pipeline_step)


@pytest.mark.parametrize("size", ["rgb", "grey"])
@pytest.mark.parametrize("name", list(METRICS))
def test_metric_cpu(benchmark, name, size):
    with torch.no_grad():
        run_group(benchmark, name, shape_for(name, size), "cpu")


@needs_cuda
@pytest.mark.parametrize("size", ["rgb", "grey"])
@pytest.mark.parametrize("name", list(METRICS))
def test_metric_cuda(benchmark, name, size):
    with torch.no_grad():
        run_group(benchmark, name, shape_for(name, size), "cuda")
