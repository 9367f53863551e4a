"""Image-quality metrics (medgan_fast.metrics.quality) against piq 0.8.0, their peer.

Every metric must give piq's result: within 1e-5 relative in float64 and 1e-4 absolute in
float32, on random images, real EM / dermoscopy / histology images (/work/shared/data),
odd sizes, a batch of one, identical images, grey and RGB, every reduction, non-default
parameters, data_range=255, half precision (computed in float32), images large enough
for SSIM's and MDSI's automatic downsampling, and piq's complex (N, C, H, W, 2) images for
SSIM and MS-SSIM. PSNR is also checked against scikit-image. The input errors and their
documented differences in type from piq's are checked last. piq always runs on the CPU;
ours runs on the ``device`` fixture's device. Gradients: tests/metrics/test_quality_grad.py.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import piq
import pytest
import torch

from medgan_fast.metrics import quality

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

METRICS = {
    "psnr": (quality.psnr, piq.psnr),
    "ssim": (quality.ssim, piq.ssim),
    "ms_ssim": (quality.multi_scale_ssim, piq.multi_scale_ssim),
    "gmsd": (quality.gmsd, piq.gmsd),
    "ms_gmsd": (quality.multi_scale_gmsd, piq.multi_scale_gmsd),
    "mdsi": (quality.mdsi, piq.mdsi),
    "haarpsi": (quality.haarpsi, piq.haarpsi),
}
NAMES = list(METRICS)

# MS-SSIM with 5 scales and an 11-tap window needs (11 - 1) * 2^4 + 1 = 161 px a side.
MS_SSIM_MIN = 161


def size_for(name: str, side: int = 64) -> tuple[int, int]:
    return (MS_SSIM_MIN, MS_SSIM_MIN + 7) if name == "ms_ssim" else (side, side)


def batch_for(name: str, dtype: torch.dtype, n: int = 4) -> int:
    """piq's float64 SSIM runs a grouped float64 conv2d, about 1 s per 2x3x161x168 on 2
    cores: float64 MS-SSIM uses one image so the suite stays fast."""
    return 1 if name == "ms_ssim" and dtype == torch.float64 else n


# value of each metric for x == y (PSNR: -10 log10(0 + 1e-8))
IDENTICAL = {"psnr": 80.0, "ssim": 1.0, "ms_ssim": 1.0, "gmsd": 0.0, "ms_gmsd": 0.0, "mdsi": 0.0, "haarpsi": 1.0}


# ---------------------------------------------------------------------------------------
# Helpers

def image_pair(shape, dtype=torch.float64, noise=0.05, seed=0, data_range=1.0):
    """x: uniform noise mixed with a smooth field, in [0, data_range]; y: x plus Gaussian
    noise and a small shift, clipped. Made in float64, then cast to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    rough = torch.rand(shape, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g, dtype=torch.float64), 5, 1, 2,
                                            count_include_pad=False)
    x = 0.4 * rough + 0.6 * smooth
    y = (x + noise * torch.randn(shape, generator=g, dtype=torch.float64) + 0.01).clamp(0, 1)
    return (x * data_range).to(dtype), (y * data_range).to(dtype)


def tolerance(dtype: torch.dtype) -> dict:
    """piq equality: 1e-5 relative in float64 (1e-8 absolute for values at 0), 1e-4 absolute in float32."""
    if dtype == torch.float64:
        return {"rtol": 1e-5, "atol": 1e-8}
    return {"rtol": 0.0, "atol": 1e-4}


def call(fn, x, y, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MDSI on grey: piq and ours both warn
        return fn(x, y, **kwargs)


def check_close(got, expected, rtol, atol, msg=""):
    """Same structure (tensor or list of tensors as piq's ssim(full=True)), dtype, shape,
    values within rtol/atol; got may be on any device."""
    if isinstance(expected, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(expected), f"{type(got)} vs {type(expected)}. {msg}"
        for i, (g, e) in enumerate(zip(got, expected)):
            check_close(g, e, rtol, atol, f"{msg} [item {i}]")
        return
    assert isinstance(got, torch.Tensor), f"got {type(got).__name__}. {msg}"
    assert got.dtype == expected.dtype, f"dtype {got.dtype} != piq's {expected.dtype}. {msg}"
    assert got.shape == expected.shape, f"shape {tuple(got.shape)} != piq's {tuple(expected.shape)}. {msg}"
    torch.testing.assert_close(got.detach().cpu(), expected.detach(), rtol=rtol, atol=atol, msg=lambda m: f"{m}\n{msg}")


def matches_piq(name, x, y, device, rtol=None, atol=None, **kwargs):
    """Runs ours on ``device`` and piq on the CPU with the same arguments; checks they agree
    within the dtype's tolerance (or the given one). Returns ours."""
    ours, peer = METRICS[name]
    got = call(ours, x.to(device), y.to(device), **kwargs)
    expected = call(peer, x.cpu(), y.cpu(), **kwargs)
    tol = tolerance(x.dtype)
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    check_close(got, expected, rtol, atol, f"{name} {tuple(x.shape)} {x.dtype} {kwargs}")
    return got


# ---------------------------------------------------------------------------------------
# Random images

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_random_matches_piq(device, name, dtype, channels):
    x, y = image_pair((batch_for(name, dtype), channels, *size_for(name)), dtype)
    got = matches_piq(name, x, y, device)
    assert got.device.type == device.type


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_reductions(device, name, reduction):
    n = 3
    x, y = image_pair((n, 3, *size_for(name)), torch.float32, seed=1)
    got = matches_piq(name, x, y, device, reduction=reduction)
    assert got.shape == ((n,) if reduction == "none" else ())
    per_image = call(METRICS[name][0], x.to(device), y.to(device), reduction="none")
    expected = per_image.mean() if reduction == "mean" else per_image.sum() if reduction == "sum" else per_image
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_noise_level_orders_scores(device, name):
    """Less noise scores better, in the direction HIGHER_IS_BETTER states."""
    x, mild = image_pair((2, 3, *size_for(name)), torch.float32, noise=0.02, seed=2)
    _, strong = image_pair((2, 3, *size_for(name)), torch.float32, noise=0.2, seed=2)
    fn = quality.QUALITY_METRICS[name]
    better = call(fn, x.to(device), mild.to(device), reduction="none")
    worse = call(fn, x.to(device), strong.to(device), reduction="none")
    if quality.HIGHER_IS_BETTER[name]:
        assert (better > worse).all(), (better, worse)
    else:
        assert (better < worse).all(), (better, worse)


def test_metric_tables():
    assert set(quality.QUALITY_METRICS) == set(quality.HIGHER_IS_BETTER) == set(METRICS)
    for name, (ours, _) in METRICS.items():
        assert quality.QUALITY_METRICS[name] is ours
    assert quality.ms_ssim is quality.multi_scale_ssim


# ---------------------------------------------------------------------------------------
# Real images: EMPS (EM, grey), ISIC (dermoscopy, RGB), ANHIR histology tiles (RGB)

REAL_SIDE = 176  # >= 161 so MS-SSIM runs on the same crops


def _centre_crop(a: np.ndarray, side: int) -> np.ndarray:
    top, left = (a.shape[0] - side) // 2, (a.shape[1] - side) // 2
    return a[top:top + side, left:left + side]


def _load(dataset: str) -> np.ndarray:
    """(2, C, 176, 176) float64 in [0, 1] from two files of ``dataset``, or skip."""
    from PIL import Image

    if dataset == "emps":
        files = sorted((DATA / "emps" / "images").glob("*.png"))[:2]
        arrays = [_centre_crop(np.asarray(Image.open(f).convert("L")), REAL_SIDE)[None] for f in files]
    elif dataset == "isic":
        files = sorted((DATA / "isic_uda1_derm" / "images").glob("*.jpg"))[:2]
        arrays = [_centre_crop(np.asarray(Image.open(f).convert("RGB")), REAL_SIDE).transpose(2, 0, 1)
                  for f in files]
    else:  # histology: an H&E tile and an IHC tile, 128 -> 176 px (bicubic)
        tiles = DATA / "histo_anhir_he_ihc" / "tiles128"
        files = sorted((tiles / "trainA_HE").glob("*.png"))[:1] + sorted((tiles / "trainB_IHC").glob("*.png"))[:1]
        arrays = [np.asarray(Image.open(f).convert("RGB").resize((REAL_SIDE, REAL_SIDE), Image.BICUBIC))
                  .transpose(2, 0, 1) for f in files]
    if len(files) < 2:
        pytest.skip(f"needs the {dataset} images under {DATA}")
    return np.stack(arrays).astype(np.float64) / 255.0


@pytest.fixture(scope="module", params=["emps", "isic", "histology"])
def real_pair(request):
    """(name, x, y): x real images, y = x blurred (Gaussian, sigma 1) plus noise, clipped."""
    import scipy.ndimage as ndi

    x = _load(request.param)
    y = ndi.gaussian_filter(x, sigma=(0, 0, 1.0, 1.0))
    y = np.clip(y + np.random.default_rng(3).normal(0, 0.02, y.shape), 0, 1)
    return request.param, torch.from_numpy(x), torch.from_numpy(y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_real_images_match_piq(device, real_pair, name, dtype):
    _, x, y = real_pair
    if dtype == torch.float64 and name in ("ssim", "ms_ssim"):  # piq's float64 SSIM is slow: one 161x161 crop
        x, y = x[:1, :, :MS_SSIM_MIN, :MS_SSIM_MIN], y[:1, :, :MS_SSIM_MIN, :MS_SSIM_MIN]
    matches_piq(name, x.to(dtype), y.to(dtype), device, reduction="none")


@pytest.mark.parametrize("name", NAMES)
def test_real_images_uint8_range(device, real_pair, name):
    """data_range=255 on float images holding the 0..255 values (as read from the files)."""
    _, x, y = real_pair
    x255, y255 = (x[:1] * 255).round().float(), (y[:1] * 255).round().float()
    matches_piq(name, x255, y255, device, data_range=255, reduction="none")


# ---------------------------------------------------------------------------------------
# Odd sizes, batch of one, identical images

ODD_SIZES = [(name, size) for name in NAMES if name != "ms_ssim" for size in [(67, 93), (33, 18)]]
ODD_SIZES += [("ms_ssim", (161, 170)), ("ms_ssim", (175, 161))]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name, size", ODD_SIZES, ids=[f"{n}-{h}x{w}" for n, (h, w) in ODD_SIZES])
def test_odd_sizes_match_piq(device, name, size, channels):
    for dtype in (torch.float64, torch.float32):
        x, y = image_pair((batch_for(name, dtype, 2), channels, *size), dtype, seed=4)
        matches_piq(name, x, y, device, reduction="none")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_batch_of_one(device, name, channels):
    x, y = image_pair((2, channels, *size_for(name)), torch.float32, seed=5)
    batch = call(METRICS[name][0], x.to(device), y.to(device), reduction="none")
    for i in range(2):
        one = matches_piq(name, x[i:i + 1], y[i:i + 1], device, reduction="none")
        assert one.shape == (1,)
        torch.testing.assert_close(one, batch[i:i + 1], rtol=0, atol=1e-4, msg=lambda m, i=i: f"{m}\nimage {i}")
    one = matches_piq(name, x[:1], y[:1], device)  # the mean of one image is that image's value
    torch.testing.assert_close(one, batch[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_identical_images(device, name, channels, dtype):
    x, _ = image_pair((batch_for(name, dtype, 2), channels, *size_for(name)), dtype, seed=6)
    got = matches_piq(name, x, x.clone(), device, reduction="none")
    expected = torch.full_like(got, IDENTICAL[name])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5 if dtype == torch.float32 else 1e-9)


NEAR_IDENTICAL = {  # name -> (noise, shift): small differences where the deviation poolings cancel
    "psnr": (1e-4, 0.0), "ssim": (1e-4, 0.0), "ms_ssim": (1e-4, 0.0), "gmsd": (1e-4, 0.0), "ms_gmsd": (1e-4, 0.0),
    "mdsi": (0.0, 1e-5), "haarpsi": (1e-4, 0.0),
}


@pytest.mark.parametrize("name", NAMES)
def test_near_identical_images_float64(device, name):
    """y = x + 1e-4 noise (MDSI: + 1e-5): GMSD ~1e-7, MDSI ~1e-3. piq's float64 (two-pass
    deviations) is accurate here to ~1e-6 relative (checked against an 80-bit long double
    evaluation); ours must be as accurate: 1e-5 relative, no absolute slack."""
    noise, shift = NEAR_IDENTICAL[name]
    x, _ = image_pair((batch_for(name, torch.float64, 2), 3, *size_for(name)), torch.float64, seed=18)
    x = 0.1 + 0.8 * x  # no clipping at 0 or 1
    y = x + noise * torch.randn(x.shape, dtype=torch.float64) + shift
    matches_piq(name, x, y, device, rtol=1e-5, atol=0.0, reduction="none")


def test_constant_images(device):
    """Flat images (no gradients or variance except at the zero-padded borders), and the
    two ends of the range, give piq's finite values."""
    for name in NAMES:
        shape = (1, 3, *size_for(name))
        x, y = torch.full(shape, 0.25, dtype=torch.float64), torch.full(shape, 0.75, dtype=torch.float64)
        got = matches_piq(name, x, y, device, reduction="none")
        assert torch.isfinite(got).all(), (name, got)
        grey = (1, 1, *size_for(name))
        got = matches_piq(name, torch.zeros(grey, dtype=torch.float64), torch.ones(grey, dtype=torch.float64), device)
        assert torch.isfinite(got).all(), (name, got)


# ---------------------------------------------------------------------------------------
# Non-default parameters, data_range, dtypes

PARAM_CASES = [
    ("psnr", {"convert_to_greyscale": True}, 3, (64, 64)),
    ("psnr", {"convert_to_greyscale": True}, 1, (64, 64)),
    ("ssim", {"downsample": False}, 3, (64, 64)),
    ("ssim", {"downsample": False}, 1, (400, 420)),  # would pool by 2 with downsample=True
    ("ssim", {"kernel_size": 7, "kernel_sigma": 1.0}, 3, (64, 64)),
    ("ssim", {"kernel_size": 3, "kernel_sigma": 0.5}, 1, (33, 18)),
    ("ssim", {"full": True}, 3, (64, 64)),
    ("ssim", {"full": True, "reduction": "none"}, 1, (67, 93)),
    ("ssim", {"k1": 0.02, "k2": 0.05}, 3, (64, 64)),
    ("ms_ssim", {"kernel_size": 7, "kernel_sigma": 1.0}, 3, (97, 100)),  # needs 6 * 16 + 1 = 97
    ("ms_ssim", {"scale_weights": torch.tensor([0.2, 0.3, 0.5])}, 3, (41, 45)),  # 3 scales: 10 * 4 + 1
    ("ms_ssim", {"scale_weights": torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])}, 1, (321, 330)),
    ("ms_ssim", {"k1": 0.02, "k2": 0.4}, 1, (161, 161)),
    ("gmsd", {"t": 0.01}, 3, (64, 64)),
    ("gmsd", {"t": 1e-4}, 1, (67, 93)),
    ("ms_gmsd", {"chromatic": True}, 3, (64, 64)),
    ("ms_gmsd", {"chromatic": True, "beta1": 0.02, "beta2": 0.5, "beta3": 10.0}, 3, (67, 93)),
    ("ms_gmsd", {"t": 100.0, "alpha": 0.3}, 1, (64, 64)),
    ("ms_gmsd", {"scale_weights": torch.tensor([0.5, 0.25, 0.25])}, 3, (33, 18)),
    ("ms_gmsd", {"scale_weights": torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0])}, 3, (64, 70)),
    ("mdsi", {"combination": "mult"}, 3, (64, 64)),
    ("mdsi", {"combination": "mult"}, 1, (67, 93)),
    ("mdsi", {"c1": 100.0, "c2": 40.0, "c3": 400.0, "alpha": 0.5}, 3, (64, 64)),
    ("mdsi", {"rho": 0.5, "q": 0.5, "o": 0.5}, 3, (64, 64)),
    ("mdsi", {"combination": "mult", "beta": 0.2, "gamma": 0.3}, 3, (33, 18)),
    ("haarpsi", {"subsample": False}, 3, (64, 64)),
    ("haarpsi", {"subsample": False}, 1, (67, 93)),
    ("haarpsi", {"c": 20.0, "alpha": 3.0}, 3, (64, 64)),
]




def _slow_in_float64(name, size):
    """piq's float64 SSIM on more than ~160x160 px takes seconds: those variants are slow."""
    return name in ("ssim", "ms_ssim") and size[0] * size[1] > 170 * 170


PARAM_PARAMS = [
    pytest.param(name, kwargs, channels, size, dtype,
                 id=f"{name}-{'-'.join(kwargs)}-{channels}ch-{size[0]}x{size[1]}-{str(dtype)[6:]}",
                 marks=[pytest.mark.slow] if dtype == torch.float64 and _slow_in_float64(name, size) else [])
    for name, kwargs, channels, size in PARAM_CASES for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("name, kwargs, channels, size, dtype", PARAM_PARAMS)
def test_non_default_params(device, name, kwargs, channels, size, dtype):
    x, y = image_pair((batch_for(name, dtype, 2), channels, *size), dtype, seed=7)
    matches_piq(name, x, y, device, **kwargs)


@pytest.mark.parametrize("channels", [1, 3])
def test_haarpsi_more_scales(device, channels):
    """scales > 3 (no peer: piq 0.8.0 fails for scales != 3, it hard-codes the coefficient
    slice): the coarsest scale gives the weights, so x == y still scores 1, and noise orders."""
    x, mild = image_pair((2, channels, 64, 64), torch.float64, noise=0.02, seed=17)
    _, strong = image_pair((2, channels, 64, 64), torch.float64, noise=0.2, seed=17)
    x, mild, strong = x.to(device), mild.to(device), strong.to(device)
    for scales in (4, 5):
        same = quality.haarpsi(x, x.clone(), scales=scales, reduction="none")
        torch.testing.assert_close(same, torch.ones_like(same), rtol=1e-9, atol=1e-9)
        better = quality.haarpsi(x, mild, scales=scales, reduction="none")
        worse = quality.haarpsi(x, strong, scales=scales, reduction="none")
        assert ((0 < worse) & (worse < better) & (better < 1)).all(), (scales, better, worse)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", NAMES)
def test_data_range_255(device, name, channels):
    """[0, 255] float inputs with data_range=255 give piq's result, and the same as [0, 1]
    inputs with data_range=1 (up to rounding of the scaling)."""
    x, y = image_pair((2, channels, *size_for(name)), torch.float32, seed=8)
    got = matches_piq(name, x * 255, y * 255, device, data_range=255, reduction="none")
    unit = call(METRICS[name][0], x.to(device), y.to(device), reduction="none")
    torch.testing.assert_close(got, unit, rtol=0, atol=1e-4)
    if name not in ("ssim", "ms_ssim"):  # float64 too, where piq is quick in float64
        matches_piq(name, x.double() * 255, y.double() * 255, device, data_range=255.0, reduction="none")


@pytest.mark.parametrize("name", NAMES)
def test_uint8_inputs(device, name):
    """uint8 images (data_range=255) equal the same values as float32."""
    x, y = image_pair((2, 3, *size_for(name)), torch.float64, seed=9)
    x8, y8 = (x * 255).round().to(torch.uint8), (y * 255).round().to(torch.uint8)
    got = call(METRICS[name][0], x8.to(device), y8.to(device), data_range=255, reduction="none")
    expected = call(METRICS[name][0], x8.float().to(device), y8.float().to(device), data_range=255, reduction="none")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    matches_piq(name, x8.float(), y8.float(), device, data_range=255, reduction="none")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_is_computed_in_float32(device, name, dtype):
    """float16/bfloat16 in: computed in float32, so piq on the float32 copy of the same
    (rounded) values is the reference, with a loose tolerance."""
    x, y = image_pair((2, 3, *size_for(name)), torch.float32, seed=10)
    x, y = x.to(dtype), y.to(dtype)
    got = call(METRICS[name][0], x.to(device), y.to(device), reduction="none")
    expected = call(METRICS[name][1], x.float(), y.float(), reduction="none")
    assert got.is_floating_point() and got.shape == expected.shape
    assert torch.finfo(got.dtype).bits >= 32, f"{name}: computed in {got.dtype}"
    torch.testing.assert_close(got.float().cpu(), expected, rtol=1e-3, atol=1e-3)


# ---------------------------------------------------------------------------------------
# Automatic downsampling of SSIM and MDSI: factor max(1, round(min(H, W) / 256))

DOWNSAMPLE_CASES = [
    ((2, 3, 600, 520), 2),  # 520 / 256 = 2.03
    ((1, 1, 384, 400), 2),  # 1.5 rounds to 2
    ((1, 3, 640, 700), 2),  # 2.5 rounds to 2 (Python rounds halves to even)
    ((1, 1, 383, 390), 1),  # 1.496 -> 1: no pooling
    ((1, 1, 770, 801), 3),  # 3.008
]
DOWNSAMPLE_PARAMS = [
    pytest.param(name, shape, pool, dtype, id=f"{name}-{'x'.join(map(str, shape))}-pool{pool}-{str(dtype)[6:]}",
                 marks=[pytest.mark.slow] if dtype == torch.float64 and name == "ssim"
                 and math.prod(shape) // pool**2 > 50_000 else [])
    for name in ("ssim", "mdsi") for shape, pool in DOWNSAMPLE_CASES for dtype in (torch.float32, torch.float64)]


@pytest.mark.parametrize("name, shape, pool, dtype", DOWNSAMPLE_PARAMS)
def test_auto_downsample_matches_piq(device, name, shape, pool, dtype):
    from medgan_fast.ops.metrics import auto_pool

    assert auto_pool(*shape[-2:]) == pool == max(1, round(min(shape[-2:]) / 256))
    x, y = image_pair(shape, dtype, seed=11)
    matches_piq(name, x, y, device, reduction="none")


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_large_images_match_piq(device, name):
    """Pool factor 3 for SSIM / MDSI (min side 770), and every other metric at that size."""
    x, y = image_pair((1, 3, 770, 801), torch.float32, seed=12)
    matches_piq(name, x, y, device, reduction="none")
    matches_piq(name, x.double(), y.double(), device, reduction="none")


def test_real_em_image_full_size(device):
    """A whole EMPS micrograph (about 512x515, pool 2 for SSIM and MDSI)."""
    from PIL import Image

    files = sorted((DATA / "emps" / "images").glob("*.png"))[:1]
    if not files:
        pytest.skip(f"needs the EMPS images under {DATA}")
    x = torch.from_numpy(np.asarray(Image.open(files[0]).convert("L"), dtype=np.float32) / 255)[None, None]
    y = (x + 0.03 * torch.randn(x.shape)).clamp(0, 1)
    for name in NAMES:
        matches_piq(name, x, y, device)


# ---------------------------------------------------------------------------------------
# PSNR against scikit-image

@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_psnr_matches_skimage(device, dtype, channels):
    from skimage.metrics import peak_signal_noise_ratio

    x, y = image_pair((4, channels, 67, 93), dtype, seed=13)
    got = quality.psnr(x.to(device), y.to(device), reduction="none").cpu().double()
    for i in range(x.shape[0]):
        sk = peak_signal_noise_ratio(x[i].double().numpy(), y[i].double().numpy(), data_range=1.0)
        mse = 10 ** (-sk / 10)
        expected = -10 * math.log10(mse + 1e-8)  # piq's (and our) epsilon
        assert got[i].item() == pytest.approx(expected, rel=1e-5 if dtype == torch.float32 else 1e-9), i
        assert got[i].item() == pytest.approx(sk, abs=1e-3)  # the epsilon moves ~20 dB by < 1e-5 dB


def test_psnr_matches_skimage_255(device):
    from skimage.metrics import peak_signal_noise_ratio

    x, y = image_pair((2, 3, 64, 64), torch.float64, seed=14, data_range=255)
    got = quality.psnr(x.to(device), y.to(device), data_range=255, reduction="none").cpu()
    for i in range(2):
        sk = peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=255)
        assert got[i].item() == pytest.approx(-10 * math.log10(10 ** (-sk / 10) + 1e-8), rel=1e-9)


# ---------------------------------------------------------------------------------------
# Complex images (N, C, H, W, 2): SSIM and MS-SSIM as piq's _ssim_per_channel_complex and
# _multi_scale_ssim_complex (plain PyTorch on our side: the kernel has no complex form)

def complex_pair(shape, dtype=torch.float64, seed=0, data_range=1.0):
    """(N, C, H, W, 2) x and y: real and imaginary parts, each an image_pair, in [0, data_range]."""
    real, imag = image_pair(shape, dtype, seed=seed, data_range=data_range), \
        image_pair(shape, dtype, seed=seed + 1, data_range=data_range)
    return torch.stack([real[0], imag[0]], dim=-1), torch.stack([real[1], imag[1]], dim=-1)


COMPLEX_CASES = [  # (name, kwargs, channels, (H, W))
    ("ssim", {}, 3, (40, 45)),
    ("ssim", {"kernel_size": 3, "kernel_sigma": 0.5}, 1, (33, 18)),
    ("ssim", {"kernel_size": 7, "kernel_sigma": 1.0, "data_range": 255.0}, 3, (40, 45)),
    ("ssim", {"kernel_size": 11, "reduction": "none", "full": True}, 1, (67, 93)),
    ("ssim", {"kernel_size": 5, "reduction": "sum", "full": True, "k1": 0.02, "k2": 0.05}, 3, (24, 25)),
    ("ssim", {"kernel_size": 1}, 1, (8, 9)),
    ("ms_ssim", {"kernel_size": 3, "scale_weights": torch.tensor([0.2, 0.3, 0.5])}, 3, (41, 45)),
    ("ms_ssim", {"kernel_size": 7, "kernel_sigma": 1.0, "reduction": "none", "data_range": 255.0}, 1, (97, 100)),
    ("ms_ssim", {"reduction": "sum"}, 1, (161, 170)),  # the default 5 scales, odd sizes on the way down
    ("ms_ssim", {"kernel_size": 5, "k1": 0.02, "k2": 0.4, "reduction": "none"}, 3, (65, 66)),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name, kwargs, channels, size", COMPLEX_CASES,
                         ids=[f"{n}-{'-'.join(f'{k}{v}' for k, v in kw.items() if k != 'scale_weights')}-{c}ch-"
                              f"{h}x{w}" for n, kw, c, (h, w) in COMPLEX_CASES])
def test_complex_matches_piq(device, name, kwargs, channels, size, dtype):
    data_range = kwargs.get("data_range", 1.0)
    x, y = complex_pair((2, channels, *size), dtype, seed=19, data_range=data_range)
    got = matches_piq(name, x, y, device, **kwargs)
    values = got if isinstance(got, list) else [got]
    per_image = (2, 2) if kwargs.get("reduction") == "none" else (2,)
    assert all(v.shape == per_image for v in values), [v.shape for v in values]  # (real, imaginary)


def test_complex_images_are_never_downsampled(device):
    """piq takes SSIM's pooling factor from the last two sizes, (W, 2) for complex images,
    so large complex images are not pooled; ours neither (and agrees with piq)."""
    x, y = complex_pair((1, 1, 400, 390), torch.float32, seed=20)
    pooled_if_real = quality.ssim(x[..., 0].to(device), y[..., 0].to(device), downsample=False)
    assert not torch.allclose(pooled_if_real, quality.ssim(x[..., 0].to(device), y[..., 0].to(device)))
    got = matches_piq("ssim", x, y, device)
    torch.testing.assert_close(got, quality.ssim(x.to(device), y.to(device), downsample=False), rtol=0, atol=0)


def test_complex_real_part_zero_imaginary():
    """With zero imaginary parts, piq's complex CS has the real images' CS second (piq stacks
    the covariance as (imaginary, real)) and c2 / (sigma_x^2 + sigma_y^2 + c2) first."""
    x, y = image_pair((2, 3, 40, 41), torch.float64, seed=21)
    zero = torch.zeros_like(x)
    _, cs = quality.ssim(torch.stack([x, zero], -1), torch.stack([y, zero], -1), full=True, reduction="none")
    _, real_cs = quality.ssim(x, y, full=True, reduction="none")
    torch.testing.assert_close(cs[:, 1], real_cs, rtol=1e-12, atol=1e-12)
    assert ((0 < cs[:, 0]) & (cs[:, 0] < 1)).all(), cs


COMPLEX_BAD = [  # (name, x, y, kwargs, error, match), from a (1, 1, 40, 41, 2) pair
    ("ssim", lambda x, y: (torch.cat([x, x[..., :1]], -1), torch.cat([y, y[..., :1]], -1)), {}, ValueError,
     re.escape("5-D (N, C, H, W, 2)")),
    ("ms_ssim", lambda x, y: (x[..., :1], y[..., :1]), {}, ValueError, re.escape("5-D (N, C, H, W, 2)")),
    ("ssim", lambda x, y: (x, y[..., 0]), {}, ValueError, "same shape"),
    ("ssim", lambda x, y: (x, y[:, :, :-1]), {}, ValueError, "same shape"),
    ("ssim", lambda x, y: (_with(x, (0, 0, 2, 3, 1), -0.5), y), {}, ValueError,
     re.escape("x must have values in [0, data_range]")),  # imaginary parts too, as piq
    ("ssim", lambda x, y: (x, _with(y, (0, 0, 2, 3, 1), float("nan"))), {}, ValueError, "y contains NaN"),
    ("ssim", lambda x, y: (x[:, :, :10], y[:, :, :10]), {}, ValueError, "kernel_size"),
    ("ssim", lambda x, y: (x, y), {"kernel_size": 4}, ValueError, "kernel_size"),
    ("ms_ssim", lambda x, y: (x, y), {}, ValueError, f"at least {MS_SSIM_MIN}x{MS_SSIM_MIN}"),
    ("ssim", lambda x, y: (torch.cat([x] * 2, 1), torch.cat([y] * 2, 1)), {}, ValueError, "channels"),
] + [(name, lambda x, y: (x, y), {}, ValueError, "4-D") for name in NAMES if name not in ("ssim", "ms_ssim")]


@pytest.mark.parametrize("name, make, kwargs, error, match", COMPLEX_BAD,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(COMPLEX_BAD)])
def test_complex_bad_inputs(name, make, kwargs, error, match):
    """Complex images only for SSIM and MS-SSIM (piq 0.8.0 also computes PSNR on them; we
    refuse), with a last dimension of 2 (piq reads parts 0 and 1 of any longer one)."""
    x, y = make(*complex_pair((1, 1, 40, 41), torch.float32, seed=22))
    with pytest.raises(error, match=match):
        call(METRICS[name][0], x, y, **kwargs)


# ---------------------------------------------------------------------------------------
# Input checks: ValueError / TypeError with a message that says what is wrong

def _valid(name, channels=3, dtype=torch.float32):
    return image_pair((2, channels, *size_for(name)), dtype, seed=15)


def _with(t, index, value):
    t = t.clone()
    t[index] = value
    return t


COMMON_BAD = {
    "3-D": (lambda x, y: (x[0], y[0]), {}, ValueError, "4-D"),
    "5-D": (lambda x, y: (x[None], y[None]), {}, ValueError, "4-D"),
    "shape mismatch": (lambda x, y: (x, y[..., :-1]), {}, ValueError, "same shape"),
    "batch mismatch": (lambda x, y: (x, y[:1]), {}, ValueError, "same shape"),
    "above data_range": (lambda x, y: (_with(x, (0, 0, 3, 3), 1.5), y), {}, ValueError,
                         re.escape("x must have values in [0, data_range]")),
    "negative": (lambda x, y: (x, _with(y, (1, 2, 0, 0), -0.1)), {}, ValueError,
                 re.escape("y must have values in [0, data_range]")),
    "above 255": (lambda x, y: (_with(x * 255, (0, 0, 1, 1), 255.5), y * 255), {"data_range": 255}, ValueError,
                  re.escape("[0, data_range] = [0, 255]")),
    "nan": (lambda x, y: (_with(x, (1, 0, 5, 7), float("nan")), y), {}, ValueError, "x contains NaN"),
    "nan in y": (lambda x, y: (x, _with(y, (0, 1, 2, 2), float("nan"))), {}, ValueError, "y contains NaN"),
    "inf": (lambda x, y: (_with(x, (0, 0, 0, 0), float("inf")), y), {}, ValueError, "data_range"),
    "2 channels": (lambda x, y: (x[:, :2], y[:, :2]), {}, ValueError, "channels"),
    "4 channels": (lambda x, y: (torch.cat([x, x[:, :1]], 1), torch.cat([y, y[:, :1]], 1)), {}, ValueError,
                   "channels"),
    "empty batch": (lambda x, y: (x[:0], y[:0]), {}, ValueError, "empty"),
    "not a tensor": (lambda x, y: (x.numpy(), y), {}, TypeError, "torch.Tensor"),
    "integer dtype": (lambda x, y: ((x * 255).to(torch.int32), (y * 255).to(torch.int32)), {"data_range": 255},
                      TypeError, "floating-point"),
    "complex": (lambda x, y: (x.to(torch.complex64), y.to(torch.complex64)), {}, TypeError, "floating-point"),
    "bad reduction": (lambda x, y: (x, y), {"reduction": "avg"}, ValueError, "reduction"),
    "reduction None": (lambda x, y: (x, y), {"reduction": None}, ValueError, "reduction"),
    "zero data_range": (lambda x, y: (x, y), {"data_range": 0}, ValueError, "data_range"),
    "negative data_range": (lambda x, y: (x, y), {"data_range": -1.0}, ValueError, "data_range"),
}


@pytest.mark.parametrize("case", list(COMMON_BAD))
@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name, case):
    make, kwargs, error, match = COMMON_BAD[case]
    x, y = make(*_valid(name))
    with pytest.raises(error, match=match):
        call(METRICS[name][0], x, y, **kwargs)


SPECIFIC_BAD = [
    ("ms_ssim", (1, 3, 160, 200), {}, f"at least {MS_SSIM_MIN}x{MS_SSIM_MIN}"),
    ("ms_ssim", (1, 3, 200, 160), {}, f"at least {MS_SSIM_MIN}x{MS_SSIM_MIN}"),
    ("ms_ssim", (1, 1, 96, 96), {"kernel_size": 7}, "at least 97x97"),
    ("ms_ssim", (1, 3, 161, 161), {"kernel_size": 10}, "kernel_size"),
    ("ms_ssim", (1, 3, 161, 161), {"scale_weights": torch.ones(2, 3)}, "scale_weights"),
    ("ssim", (1, 3, 64, 64), {"kernel_size": 10}, "kernel_size"),
    ("ssim", (1, 3, 64, 64), {"kernel_size": 0}, "kernel_size"),
    ("ssim", (1, 3, 64, 64), {"kernel_size": 11.0}, "kernel_size"),
    ("ssim", (1, 3, 10, 64), {}, "kernel_size"),  # valid filtering needs 11 px
    ("ms_gmsd", (1, 1, 64, 64), {"chromatic": True}, "chromatic"),
    ("ms_gmsd", (1, 3, 16, 64), {}, "at least 17x17"),
    ("mdsi", (1, 3, 64, 64), {"combination": "avg"}, "combination"),
    ("haarpsi", (1, 3, 64, 64), {"scales": 2}, "scales"),
    ("haarpsi", (1, 3, 15, 64), {}, "at least 16x16"),
    ("haarpsi", (1, 3, 31, 64), {"scales": 4}, "at least 32x32"),
]


@pytest.mark.parametrize("name, shape, kwargs, match", SPECIFIC_BAD,
                         ids=[f"{n}-{'x'.join(map(str, s))}-{'-'.join(kw)}" for n, s, kw, _ in SPECIFIC_BAD])
def test_bad_metric_arguments(name, shape, kwargs, match):
    x, y = image_pair(shape, torch.float32, seed=16)
    with pytest.raises(ValueError, match=match):
        call(METRICS[name][0], x, y, **kwargs)


# The error types the docstrings (module and functions) document as differing from piq's:
# COMMON_BAD case or (name, shape, kwargs) -> piq 0.8.0's exception type (ours: the case's).
PIQ_ERROR_TYPES = {"3-D": AssertionError, "shape mismatch": AssertionError, "batch mismatch": AssertionError,
                   "above data_range": AssertionError, "negative": AssertionError, "nan": AssertionError,
                   "inf": AssertionError, "not a tensor": AssertionError, "empty batch": RuntimeError,
                   "complex": NotImplementedError}
PIQ_SPECIFIC_ERROR_TYPES = [("ssim", {"kernel_size": 10}, 3), ("ms_ssim", {"kernel_size": 10}, 3),
                            ("ms_gmsd", {"chromatic": True}, 1)]


@pytest.mark.parametrize("case", list(PIQ_ERROR_TYPES))
@pytest.mark.parametrize("name", NAMES)
def test_error_types_differ_from_piq_as_documented(name, case):
    make, kwargs, error, _ = COMMON_BAD[case]
    x, y = make(*_valid(name))
    with pytest.raises(error):
        call(METRICS[name][0], x, y, **kwargs)
    with pytest.raises(PIQ_ERROR_TYPES[case]):
        call(METRICS[name][1], x, y, **kwargs)


@pytest.mark.parametrize("name, kwargs, channels", PIQ_SPECIFIC_ERROR_TYPES, ids=["ssim", "ms_ssim", "ms_gmsd"])
def test_specific_error_types_differ_from_piq_as_documented(name, kwargs, channels):
    x, y = _valid(name, channels)
    with pytest.raises(ValueError):
        call(METRICS[name][0], x, y, **kwargs)
    with pytest.raises(AssertionError):
        call(METRICS[name][1], x, y, **kwargs)


@pytest.mark.parametrize("name", ["ssim", "ms_ssim", "gmsd", "ms_gmsd", "mdsi", "haarpsi"])
def test_dtype_mismatch_casts_y(name):
    """piq's filtering metrics raise RuntimeError on a float32/float64 pair; ours casts y to
    x's dtype (as documented), giving the float32 pair's result exactly."""
    x, y = _valid(name)
    with pytest.raises(RuntimeError):
        call(METRICS[name][1], x, y.double())
    got = call(METRICS[name][0], x, y.double(), reduction="none")
    torch.testing.assert_close(got, call(METRICS[name][0], x, y, reduction="none"), rtol=0, atol=0)


def test_mdsi_warns_on_grey():
    x, y = image_pair((1, 1, 64, 64), torch.float32)
    with pytest.warns(UserWarning, match="RGB"):
        quality.mdsi(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quality.mdsi(x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1))  # RGB: no warning
