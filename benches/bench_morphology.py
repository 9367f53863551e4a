"""dilate / erode against scipy.ndimage, OpenCV and (on a GPU) kornia, same inputs.

Entries named "medgan_fast*" are ours; report.py divides each peer's median by ours.
"""

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from _inputs import bench, bench_interleaved, blob_mask, needs_cuda, pipeline_step, synchronised

from medgan_fast import ops


@pytest.fixture(scope="module")
def mask():
    return blob_mask((2048, 2048))


@pytest.fixture(scope="module")
def footprint():
    return ops.disk(5).numpy()


@pytest.fixture(scope="module")
def expected_dilation(mask, footprint):
    return ndi.binary_dilation(mask, footprint)


BINARY = "dilate binary 2048x2048, disk(5)"


def test_dilate_binary_medgan_fast(benchmark, mask, footprint, expected_dilation):
    out = bench(benchmark, BINARY, "medgan_fast", lambda: ops.dilate(torch.from_numpy(mask), footprint))
    benchmark.extra_info["equals_scipy"] = bool((out.numpy() == expected_dilation).all())
    assert benchmark.extra_info["equals_scipy"]


def test_dilate_binary_scipy(benchmark, mask, footprint):
    bench(benchmark, BINARY, "scipy", lambda: ndi.binary_dilation(mask, footprint))


def test_dilate_binary_cv2(benchmark, mask, footprint, expected_dilation):
    cv2 = pytest.importorskip("cv2")
    mask_u8, kernel = mask.astype(np.uint8), footprint.astype(np.uint8)
    out = bench(benchmark, BINARY, "cv2", lambda: cv2.dilate(mask_u8, kernel))
    assert (out.astype(bool) == expected_dilation).all()


ERODE = "erode binary 2048x2048, disk(5)"


def test_erode_binary_medgan_fast(benchmark, mask, footprint):
    out = bench(benchmark, ERODE, "medgan_fast", lambda: ops.erode(torch.from_numpy(mask), footprint))
    assert (out.numpy() == ndi.binary_erosion(mask, footprint, border_value=1)).all()


def test_erode_binary_scipy(benchmark, mask, footprint):
    bench(benchmark, ERODE, "scipy", lambda: ndi.binary_erosion(mask, footprint, border_value=1))


def test_erode_binary_cv2(benchmark, mask, footprint):
    cv2 = pytest.importorskip("cv2")
    mask_u8, kernel = mask.astype(np.uint8), footprint.astype(np.uint8)
    bench(benchmark, ERODE, "cv2", lambda: cv2.erode(mask_u8, kernel))


GREY = "dilate grey uint8 2048x2048, disk(5)"


@pytest.fixture(scope="module")
def grey():
    return np.random.default_rng(1).integers(0, 256, (2048, 2048), dtype=np.uint8)


def test_dilate_grey_medgan_fast(benchmark, grey, footprint):
    out = bench(benchmark, GREY, "medgan_fast", lambda: ops.dilate(torch.from_numpy(grey), footprint))
    assert (out.numpy() == ndi.grey_dilation(grey, footprint=footprint, mode="constant", cval=0)).all()


def test_dilate_grey_scipy(benchmark, grey, footprint):
    bench(benchmark, GREY, "scipy", lambda: ndi.grey_dilation(grey, footprint=footprint))


def test_dilate_grey_cv2(benchmark, grey, footprint):
    cv2 = pytest.importorskip("cv2")
    bench(benchmark, GREY, "cv2", lambda: cv2.dilate(grey, footprint.astype(np.uint8)))


@pytest.mark.parametrize("group", [BINARY, ERODE, GREY])
def test_morphology_in_a_pipeline(benchmark, group, mask, grey, footprint):
    """Ours and the peers round-robin, each call after a large temporary was freed (as in a
    pipeline); the groups above time each library back to back."""
    kernel = footprint.astype(np.uint8)
    if group == BINARY:
        image, ours = mask, ops.dilate
        peers = {"scipy": lambda: ndi.binary_dilation(mask, footprint)}
    elif group == ERODE:
        image, ours = mask, ops.erode
        peers = {"scipy": lambda: ndi.binary_erosion(mask, footprint, border_value=1)}
    else:
        image, ours = grey, ops.dilate
        peers = {"scipy": lambda: ndi.grey_dilation(grey, footprint=footprint)}
    try:
        import cv2
        image_u8 = image.astype(np.uint8)
        peers["cv2"] = (lambda: cv2.erode(image_u8, kernel)) if group == ERODE else (lambda: cv2.dilate(image_u8, kernel))
    except ImportError:
        pass
    tensor = torch.from_numpy(image)
    bench_interleaved(benchmark, f"{group} in a pipeline", {"medgan_fast": lambda: ours(tensor, footprint), **peers},
                      rounds=10 if group == GREY else 30, between=pipeline_step)


# ---------------------------------------------------------------------------------------
# GPU: ours on the GPU against kornia on the same GPU (kornia takes float (B, C, H, W)).

GPU = "dilate binary 2048x2048, disk(5): GPU"


@needs_cuda
def test_dilate_binary_medgan_fast_cuda(benchmark, mask, footprint, expected_dilation):
    x = torch.from_numpy(mask).cuda()
    fp = torch.from_numpy(footprint)
    out = bench(benchmark, GPU, "medgan_fast_cuda", synchronised(lambda: ops.dilate(x, fp)))
    assert (out.cpu().numpy() == expected_dilation).all()


@needs_cuda
def test_dilate_binary_kornia_cuda(benchmark, mask, footprint, expected_dilation):
    kornia = pytest.importorskip("kornia")
    x = torch.from_numpy(mask).cuda().float()[None, None]
    kernel = torch.from_numpy(footprint).cuda().float()
    out = bench(benchmark, GPU, "kornia_cuda", synchronised(lambda: kornia.morphology.dilation(x, kernel)))
    assert (out[0, 0].bool().cpu().numpy() == expected_dilation).all()
