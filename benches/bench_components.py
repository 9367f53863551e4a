"""label / label_batch (+ component_stats) against scipy, scikit-image and OpenCV.

Groups (same seeded inputs for every entry): a 2048x2048 blob mask with 16% foreground;
a 128x256x256 volume; 64 EMPS masks (512x512 crops); with a GPU, 4096x4096 on the GPU
against scipy on the CPU. Entries named "medgan_fast*" are ours; report.py divides each
peer's median by ours.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from _inputs import bench, bench_interleaved, blob_mask, emps_masks, needs_cuda, pipeline_step, synchronised
from skimage import measure

from medgan_fast import ops


# ---------------------------------------------------------------------------------------
# 2-D

@pytest.fixture(scope="module")
def mask_2048():
    return blob_mask((2048, 2048))


@pytest.fixture(scope="module")
def skimage_2048(mask_2048):
    return measure.label(mask_2048)


GROUP_2D = "label 2048x2048 (16% fg, full connectivity)"


def test_label_2d_medgan_fast(benchmark, mask_2048, skimage_2048):
    labels, count = bench(benchmark, GROUP_2D, "medgan_fast", lambda: ops.label(torch.from_numpy(mask_2048)))
    benchmark.extra_info["equals_skimage"] = bool((labels.numpy() == skimage_2048).all())
    assert benchmark.extra_info["equals_skimage"]


def test_label_2d_medgan_fast_with_stats(benchmark, mask_2048, skimage_2048):
    def run():
        labels, count = ops.label(torch.from_numpy(mask_2048))
        return ops.component_stats(labels, count)
    stats = bench(benchmark, GROUP_2D, "medgan_fast_with_stats", run)
    assert stats.area.numel() == skimage_2048.max()


def test_label_2d_scipy(benchmark, mask_2048, skimage_2048):
    structure = ndi.generate_binary_structure(2, 2)
    labels, count = bench(benchmark, GROUP_2D, "scipy", lambda: ndi.label(mask_2048, structure))
    assert count == skimage_2048.max()


GROUP_PIPELINE = f"{GROUP_2D} in a pipeline"


def test_label_2d_in_a_pipeline(benchmark, mask_2048, skimage_2048):
    """Ours and scipy round-robin, each call after a large temporary was freed, as in a
    pipeline; the back-to-back groups above time the hot loop."""
    mask = torch.from_numpy(mask_2048)
    structure = ndi.generate_binary_structure(2, 2)
    assert ops.label(mask)[1] == skimage_2048.max()
    bench_interleaved(benchmark, GROUP_PIPELINE, {
        "medgan_fast": lambda: ops.label(mask),
        "scipy": lambda: ndi.label(mask_2048, structure),
        "skimage": lambda: measure.label(mask_2048),
    }, rounds=40, between=pipeline_step)


def test_label_2d_skimage(benchmark, mask_2048):
    bench(benchmark, GROUP_2D, "skimage", lambda: measure.label(mask_2048))


def test_label_2d_cv2_with_stats(benchmark, mask_2048, skimage_2048):
    cv2 = pytest.importorskip("cv2")
    mask_u8 = mask_2048.astype(np.uint8)
    count, *_ = bench(benchmark, GROUP_2D, "cv2_with_stats",
                      lambda: cv2.connectedComponentsWithStats(mask_u8, connectivity=8, ltype=cv2.CV_32S))
    assert count - 1 == skimage_2048.max()


def test_label_2d_cv2(benchmark, mask_2048, skimage_2048):
    cv2 = pytest.importorskip("cv2")
    mask_u8 = mask_2048.astype(np.uint8)
    count, _ = bench(benchmark, GROUP_2D, "cv2", lambda: cv2.connectedComponents(mask_u8, connectivity=8, ltype=cv2.CV_32S))
    assert count - 1 == skimage_2048.max()


# ---------------------------------------------------------------------------------------
# 3-D

@pytest.fixture(scope="module")
def volume():
    return blob_mask((128, 256, 256), sigma=3.0)


GROUP_3D = "label 128x256x256 volume (16% fg, full connectivity)"


def test_label_3d_medgan_fast(benchmark, volume):
    labels, count = bench(benchmark, GROUP_3D, "medgan_fast", lambda: ops.label(torch.from_numpy(volume)))
    benchmark.extra_info["equals_skimage"] = bool((labels.numpy() == measure.label(volume)).all())
    assert benchmark.extra_info["equals_skimage"]


def test_label_3d_scipy(benchmark, volume):
    structure = ndi.generate_binary_structure(3, 3)
    bench(benchmark, GROUP_3D, "scipy", lambda: ndi.label(volume, structure))


def test_label_3d_skimage(benchmark, volume):
    bench(benchmark, GROUP_3D, "skimage", lambda: measure.label(volume))


def test_label_3d_in_a_pipeline(benchmark, volume):
    mask = torch.from_numpy(volume)
    structure = ndi.generate_binary_structure(3, 3)
    bench_interleaved(benchmark, f"{GROUP_3D} in a pipeline", {
        "medgan_fast": lambda: ops.label(mask),
        "scipy": lambda: ndi.label(volume, structure),
        "skimage": lambda: measure.label(volume),
    }, rounds=15, between=pipeline_step)


# ---------------------------------------------------------------------------------------
# batch

@pytest.fixture(scope="module")
def emps():
    return emps_masks()


GROUP_BATCH = "label_batch 64 EMPS masks 512x512"


def test_label_batch_medgan_fast(benchmark, emps):
    labels, counts = bench(benchmark, GROUP_BATCH, "medgan_fast", lambda: ops.label_batch(torch.from_numpy(emps)))
    expected = [measure.label(m).max() for m in emps]
    assert counts.tolist() == expected


def test_label_batch_scipy_loop(benchmark, emps):
    structure = ndi.generate_binary_structure(2, 2)
    bench(benchmark, GROUP_BATCH, "scipy_loop", lambda: [ndi.label(m, structure) for m in emps])


def test_label_batch_skimage_loop(benchmark, emps):
    bench(benchmark, GROUP_BATCH, "skimage_loop", lambda: [measure.label(m) for m in emps])


def test_label_batch_in_a_pipeline(benchmark, emps):
    masks = torch.from_numpy(emps)
    structure = ndi.generate_binary_structure(2, 2)
    bench_interleaved(benchmark, f"{GROUP_BATCH} in a pipeline", {
        "medgan_fast": lambda: ops.label_batch(masks),
        "scipy_loop": lambda: [ndi.label(m, structure) for m in emps],
        "skimage_loop": lambda: [measure.label(m) for m in emps],
    }, rounds=15, between=pipeline_step)


# ---------------------------------------------------------------------------------------
# GPU

GROUP_GPU = "label 4096x4096 (16% fg): GPU vs CPU peers"


@pytest.fixture(scope="module")
def mask_4096():
    return blob_mask((4096, 4096))


@needs_cuda
def test_label_4096_medgan_fast_cuda(benchmark, mask_4096):
    mask = torch.from_numpy(mask_4096).cuda()
    labels, count = bench(benchmark, GROUP_GPU, "medgan_fast_cuda", synchronised(lambda: torch.ops.medgan_fast.label(mask, 2)))
    expected = measure.label(mask_4096)
    benchmark.extra_info["equals_skimage"] = bool((labels.cpu().numpy() == expected).all())
    assert benchmark.extra_info["equals_skimage"]


@needs_cuda
def test_label_4096_scipy(benchmark, mask_4096):
    bench(benchmark, GROUP_GPU, "scipy", lambda: ndi.label(mask_4096, ndi.generate_binary_structure(2, 2)))


@needs_cuda
def test_label_4096_medgan_fast_cpu(benchmark, mask_4096):
    bench(benchmark, GROUP_GPU, "medgan_fast_cpu", lambda: ops.label(torch.from_numpy(mask_4096)))
