"""The image-quality ops (medgan_fast.ops.metrics): kernel against reference, opcheck,
CPU against CUDA, torch.compile; inputs requiring grad running the reference (the kernels
have no backward); complex_ssim_means against piq's complex SSIM.

The oracle is each op's ``<op>_reference`` run in float64 and cast to the input dtype
(the kernels accumulate in float64, so a float32 reference would be the less accurate
side); kernel results must match it within the dtype's tolerance (tests/conftest.py).
The metrics built on these ops are compared with piq in tests/metrics/test_quality.py.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from medgan_fast.ops import metrics as mops

DTYPES = [torch.float32, torch.float64]
OPS = ["squared_error", "ssim", "gmsd", "mdsi", "haarpsi"]  # the names use_kernel / warnings use
TORCH_OPS = {"squared_error": "metric_squared_error", "ssim": "metric_ssim", "gmsd": "metric_gmsd",
             "mdsi": "metric_mdsi", "haarpsi": "metric_haarpsi"}
MDSI_DEFAULTS = {"c1": 140.0, "c2": 55.0, "c3": 550.0, "alpha": 0.6, "beta": 0.1, "gamma": 0.2, "q": 0.25, "rho": 1.0}


# ---------------------------------------------------------------------------------------
# Helpers

def image_pair(shape, dtype=torch.float64, seed=0, high=1.0, device="cpu"):
    """x in [0, high] (noise plus a smooth field) and y = x plus noise, clipped."""
    g = torch.Generator().manual_seed(seed)
    rough = torch.rand(shape, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.avg_pool2d(torch.rand(shape, generator=g, dtype=torch.float64), 5, 1, 2,
                                            count_include_pad=False)
    x = 0.4 * rough + 0.6 * smooth
    y = (x + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return (x * high).to(device, dtype), (y * high).to(device, dtype)


def window(size=11, sigma=1.5, dtype=torch.float64, device="cpu"):
    return mops.gaussian_window(size, sigma, dtype, device)


def call(op: str, x, y, impl: str, **p):
    """Runs the public op ``op`` with parameters ``p``; returns a tuple of tensors."""
    if op == "squared_error":
        out = mops.squared_error(x, y, p["scale"], p["greyscale"], impl=impl)
    elif op == "ssim":
        w = window(p["size"], p["sigma"], x.dtype, x.device)
        out = mops.ssim_means(x, y, w, p["scale"], p["pool"], p["c1"], p["c2"], impl=impl)
    elif op == "gmsd":
        out = mops.gmsd_deviation(x, y, p["scale"], p["pool_first"], p["num_scales"], p["t"], p["alpha"], impl=impl)
    elif op == "mdsi":
        m = {**MDSI_DEFAULTS, **p}
        out = mops.mdsi_pooled(x, y, m["scale"], m["pool"], m["c1"], m["c2"], m["c3"], m["alpha"], m["beta"],
                               m["gamma"], m["q"], m["rho"], m["mult"], impl=impl)
    elif op == "haarpsi":
        out = mops.haarpsi_sums(x, y, p["scale"], p["scales"], p["subsample"], p["c"], p["alpha"], impl=impl)
    else:
        raise AssertionError(op)
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def oracle(op: str, x, y, **p):
    """The reference in float64, cast back to x's dtype and device."""
    out = call(op, x.double(), y.double(), "reference", **p)
    return tuple(o.to(x.dtype) for o in out)


def expected_shapes(op: str, x: torch.Tensor, p: dict):
    n, c = x.shape[:2]
    return {"squared_error": [(n,)], "ssim": [(n, c), (n, c)], "gmsd": [(n, p.get("num_scales", 1))],
            "mdsi": [(n,)], "haarpsi": [(n, 2)]}[op]


def check_kernel(op, x, y, assert_close, **p):
    got = call(op, x, y, "kernel", **p)
    expected = oracle(op, x, y, **p)
    shapes = expected_shapes(op, x, p)
    assert [tuple(t.shape) for t in got] == shapes, (op, [t.shape for t in got], shapes)
    for g, e in zip(got, expected):
        assert g.device == x.device
        assert_close(g, e, msg=f"{op} {tuple(x.shape)} {x.dtype} {p}")
    return got


def ssim_fits(shape, p):
    return min(shape[-2:]) // p["pool"] >= p["size"]


# One representative parameter set per op (for the shape / layout tests).
REPRESENTATIVE = {
    "squared_error": {"scale": 1.0, "greyscale": True},
    "ssim": {"size": 11, "sigma": 1.5, "scale": 1.0, "pool": 2, "c1": 1e-4, "c2": 9e-4},
    "gmsd": {"scale": 255.0, "pool_first": False, "num_scales": 3, "t": 170.0, "alpha": 0.5},
    "mdsi": {"scale": 255.0, "pool": 2, "mult": False},
    "haarpsi": {"scale": 255.0, "scales": 3, "subsample": True, "c": 30.0, "alpha": 4.2},
}

SHAPES = [(2, 67, 93), (1, 40, 33), (3, 64, 64)]  # (N, H, W): odd, batch of one, even


# ---------------------------------------------------------------------------------------
# Kernel against reference, every op and its parameters

SQUARED_ERROR_CASES = [{"scale": s, "greyscale": g} for s in (1.0, 1 / 255) for g in (False, True)]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", SQUARED_ERROR_CASES, ids=lambda p: f"scale{p['scale']:.3g}-grey{p['greyscale']}")
def test_squared_error_kernel_matches_reference(device, assert_close, params, dtype, channels):
    high = 1 / params["scale"]
    for i, (n, h, w) in enumerate(SHAPES):
        x, y = image_pair((n, channels, h, w), dtype, seed=i, high=high, device=device)
        check_kernel("squared_error", x, y, assert_close, **params)


SSIM_CASES = [
    {"size": 11, "sigma": 1.5, "scale": 1.0, "pool": 1, "c1": 1e-4, "c2": 9e-4},
    {"size": 11, "sigma": 1.5, "scale": 1.0, "pool": 2, "c1": 1e-4, "c2": 9e-4},
    {"size": 11, "sigma": 1.5, "scale": 1.0, "pool": 3, "c1": 1e-4, "c2": 9e-4},
    {"size": 7, "sigma": 1.0, "scale": 1 / 255, "pool": 1, "c1": 4e-4, "c2": 0.16},
    {"size": 3, "sigma": 0.5, "scale": 1.0, "pool": 2, "c1": 1e-4, "c2": 9e-4},
    {"size": 1, "sigma": 1.5, "scale": 1.0, "pool": 1, "c1": 1e-4, "c2": 9e-4},
]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", SSIM_CASES, ids=lambda p: f"win{p['size']}-pool{p['pool']}-scale{p['scale']:.3g}")
def test_ssim_means_kernel_matches_reference(device, assert_close, params, dtype, channels):
    high = 1 / params["scale"]
    for i, (n, h, w) in enumerate(SHAPES + [(1, 33, 40)]):  # 33 // 3 = 11: a one-pixel-high SSIM map
        if not ssim_fits((h, w), params):
            continue
        x, y = image_pair((n, channels, h, w), dtype, seed=i, high=high, device=device)
        check_kernel("ssim", x, y, assert_close, **params)


GMSD_CASES = [{"pool_first": pf, "num_scales": k, "scale": scale, "t": t, "alpha": alpha}
              for pf in (True, False) for k in (1, 2, 3, 4)
              for scale, t, alpha in [(1.0, 170 / 255**2, 0.0), (255.0, 170.0, 0.5)]]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", GMSD_CASES,
                         ids=lambda p: f"pool_first{p['pool_first']}-scales{p['num_scales']}-alpha{p['alpha']}")
def test_gmsd_deviation_kernel_matches_reference(device, assert_close, params, dtype, channels):
    for i, (n, h, w) in enumerate(SHAPES + [(1, 17, 18)]):
        x, y = image_pair((n, channels, h, w), dtype, seed=i, device=device)
        check_kernel("gmsd", x, y, assert_close, **params)


MDSI_CASES = [{"scale": 255.0, "pool": pool, "mult": mult} for pool in (1, 2, 3) for mult in (False, True)]
MDSI_CASES += [{"scale": 1.0, "pool": 2, "mult": False, "rho": 0.5, "q": 0.5, "c1": 100.0, "c2": 40.0, "c3": 400.0},
               {"scale": 255.0, "pool": 1, "mult": True, "beta": 0.2, "gamma": 0.3, "alpha": 0.5}]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", MDSI_CASES, ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()))
def test_mdsi_pooled_kernel_matches_reference(device, assert_close, params, dtype, channels):
    high = 255.0 / params["scale"]  # images on [0, 255] after scaling
    for i, (n, h, w) in enumerate(SHAPES):
        x, y = image_pair((n, channels, h, w), dtype, seed=i, high=high, device=device)
        check_kernel("mdsi", x, y, assert_close, **params)


HAARPSI_CASES = [{"scale": 255.0, "scales": s, "subsample": sub, "c": 30.0, "alpha": 4.2}
                 for s in (3, 4) for sub in (True, False)]
HAARPSI_CASES += [{"scale": 1.0, "scales": 3, "subsample": True, "c": 20.0, "alpha": 3.0}]


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("params", HAARPSI_CASES,
                         ids=lambda p: f"scales{p['scales']}-subsample{p['subsample']}-scale{p['scale']:.3g}")
def test_haarpsi_sums_kernel_matches_reference(device, assert_close, params, dtype, channels):
    high = 255.0 / params["scale"]
    for i, (n, h, w) in enumerate(SHAPES):
        x, y = image_pair((n, channels, h, w), dtype, seed=i, high=high, device=device)
        check_kernel("haarpsi", x, y, assert_close, **params)


@pytest.mark.parametrize("op", OPS)
def test_identical_images(device, assert_close, op):
    """x == y: zero error / deviation, SSIM and CS of exactly 1, bit for bit: the CPU build
    does not contract a * b + c and the CUDA build is compiled with --fmad=false, so the
    symmetric formulas cancel exactly on both (and in the emulated CUDA run)."""
    for dtype in DTYPES:
        x, _ = image_pair((2, 3, 48, 50), dtype, seed=3, device=device)
        got = check_kernel(op, x, x.clone(), assert_close, **REPRESENTATIVE[op])
        if op in ("squared_error", "gmsd", "mdsi"):
            assert torch.equal(got[0], torch.zeros_like(got[0])), got[0]
        elif op == "ssim":
            for t in got:
                assert torch.equal(t, torch.ones_like(t)), t


@pytest.mark.parametrize("op", OPS)
def test_extreme_values(device, assert_close, op):
    """Flat images and the range's ends (zero gradients, zero variance inside)."""
    for dtype in DTYPES:
        for xv, yv in [(0.0, 1.0), (0.25, 0.25), (1.0, 1.0), (0.0, 0.0)]:
            x = torch.full((1, 3, 40, 41), xv, dtype=dtype, device=device)
            y = torch.full((1, 3, 40, 41), yv, dtype=dtype, device=device)
            got = check_kernel(op, x, y, assert_close, **REPRESENTATIVE[op])
            assert all(torch.isfinite(t).all() for t in got), (op, xv, yv, got)


# ---------------------------------------------------------------------------------------
# Layouts, batches, threads

def _layouts(shape, dtype, device):
    """(name, x, y): the same values as contiguous tensors in other memory layouts."""
    n, c, h, w = shape
    x, y = image_pair(shape, dtype, seed=4, device=device)
    yield "contiguous", x, y
    yield "transposed", x.transpose(-1, -2).contiguous().transpose(-1, -2), y.transpose(-1, -2).contiguous() \
        .transpose(-1, -2)
    yield "channels_last", x.contiguous(memory_format=torch.channels_last), \
        y.contiguous(memory_format=torch.channels_last)
    big_x, big_y = torch.zeros(n, c, 2 * h, 2 * w + 3, dtype=dtype, device=device), torch.zeros(
        n, c, 2 * h, 2 * w + 3, dtype=dtype, device=device)
    big_x[..., ::2, 1:2 * w + 1:2], big_y[..., ::2, 1:2 * w + 1:2] = x, y
    yield "strided", big_x[..., ::2, 1:2 * w + 1:2], big_y[..., ::2, 1:2 * w + 1:2]
    if c == 1:
        yield "expanded", x.expand(n, 3, h, w), y.expand(n, 3, h, w)  # stride 0 over channels


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_non_contiguous_inputs(device, assert_close, op, dtype, channels):
    params = REPRESENTATIVE[op]
    for name, x, y in _layouts((3, channels, 37, 45), dtype, device):
        got = call(op, x, y, "kernel", **params)
        expected = call(op, x.contiguous(), y.contiguous(), "kernel", **params)
        for g, e in zip(got, expected):
            assert_close(g, e, msg=f"{op} {name}")
        for g, e in zip(got, oracle(op, x, y, **params)):
            assert_close(g, e, msg=f"{op} {name} vs reference")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("op", OPS)
def test_batch_of_one_equals_batch(device, assert_close, op, channels):
    """Each image is reduced on its own: a batch of one gives the batch's row."""
    params = REPRESENTATIVE[op]
    for dtype in DTYPES:
        x, y = image_pair((4, channels, 35, 52), dtype, seed=5, device=device)
        batch = call(op, x, y, "kernel", **params)
        for i in range(4):
            one = check_kernel(op, x[i:i + 1], y[i:i + 1], assert_close, **params)
            for o, b in zip(one, batch):
                assert_close(o, b[i:i + 1], msg=f"{op} image {i}")


@pytest.mark.parametrize("num_threads", [1, 3], indirect=True)
@pytest.mark.parametrize("op", OPS)
def test_independent_of_thread_count(device, assert_close, num_threads, op):
    x, y = image_pair((5, 3, 70, 61), torch.float32, seed=6, device=device)
    check_kernel(op, x, y, assert_close, **REPRESENTATIVE[op])


# ---------------------------------------------------------------------------------------
# impl: auto picks the kernel without a warning, fallback, bad arguments

@pytest.mark.parametrize("op", OPS)
def test_impl_auto_and_reference(device, assert_close, op):
    x, y = image_pair((2, 3, 40, 44), torch.float32, seed=7, device=device)
    params = REPRESENTATIVE[op]
    kernel = call(op, x, y, "kernel", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kernel is built: auto must not warn
        for a, b in zip(call(op, x, y, "auto", **params), kernel):
            assert_close(a, b)
    reference = getattr(mops, {"squared_error": "squared_error", "ssim": "ssim_means", "gmsd": "gmsd_deviation",
                               "mdsi": "mdsi_pooled", "haarpsi": "haarpsi_sums"}[op] + "_reference")
    assert callable(reference)
    for a, b in zip(call(op, x, y, "reference", **params), kernel):
        assert_close(a, b)


@pytest.mark.parametrize("op", OPS)
def test_fallback_when_no_kernel(monkeypatch, assert_close, op):
    """Without kernels, "auto" warns once and runs the reference, "kernel" refuses."""
    from medgan_fast import _ext

    x, y = image_pair((2, 3, 40, 44), torch.float32, seed=8)
    params = REPRESENTATIVE[op]
    expected = call(op, x, y, "reference", **params)
    monkeypatch.setattr(_ext, "HAS_CPU_KERNELS", False)
    monkeypatch.setattr(_ext, "_warned", set())
    with pytest.warns(RuntimeWarning, match=f"{op}: using the slow reference"):
        got = call(op, x, y, "auto", **params)
    for a, b in zip(got, expected):
        assert_close(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per (op, device type)
        call(op, x, y, "auto", **params)
    with pytest.raises(RuntimeError, match="no compiled kernel"):
        call(op, x, y, "kernel", **params)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad", "requires_grad"])
@pytest.mark.parametrize("impl", ["bogus", "cuda", "", None])
@pytest.mark.parametrize("op", OPS)
def test_bad_impl(op, impl, requires_grad):
    x, y = image_pair((1, 1, 32, 32), torch.float32)
    with pytest.raises(ValueError, match="impl"):
        call(op, x.requires_grad_(requires_grad), y, impl, **REPRESENTATIVE[op])


# ---------------------------------------------------------------------------------------
# Autograd: the kernels have no backward, so inputs that need one run the reference

@pytest.mark.parametrize("op", OPS)
def test_inputs_requiring_grad_run_the_reference(device, assert_close, op):
    """x or y requiring grad: "auto" and "reference" give the reference's differentiable
    result (equal to the kernel's value); "kernel" refuses; under no_grad the kernel runs."""
    params = REPRESENTATIVE[op]
    x, y = image_pair((2, 3, 40, 44), torch.float64, seed=13, device=device)
    kernel = call(op, x, y, "kernel", **params)
    for xg, yg in [(x.clone().requires_grad_(), y), (x, y.clone().requires_grad_())]:
        for impl in ("auto", "reference"):
            got = call(op, xg, yg, impl, **params)
            assert all(t.requires_grad for t in got), (op, impl)
            for g, k in zip(got, kernel):
                assert_close(g.detach(), k)
            inputs = [t for t in (xg, yg) if t.requires_grad]
            grads = torch.autograd.grad(sum(t.sum() for t in got), inputs)
            assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads), op
        with pytest.raises(RuntimeError, match="no backward"):
            call(op, xg, yg, "kernel", **params)
        with torch.no_grad():
            for g, k in zip(call(op, xg, yg, "kernel", **params), kernel):
                assert not g.requires_grad
                assert_close(g, k)


def test_window_requiring_grad_runs_the_reference(assert_close):
    x, y = image_pair((1, 1, 32, 32), torch.float64, seed=14)
    w = window(7, 1.0).requires_grad_()
    ssim, cs = mops.ssim_means(x, y, w, 1.0, 1, 1e-4, 9e-4)
    (grad,) = torch.autograd.grad(ssim.sum() + cs.sum(), [w])
    assert grad.shape == w.shape and grad.abs().max() > 0
    for got, expected in zip((ssim, cs), mops.ssim_means(x, y, w.detach(), 1.0, 1, 1e-4, 9e-4, impl="kernel")):
        assert_close(got.detach(), expected)


# ---------------------------------------------------------------------------------------
# complex_ssim_means: piq's complex SSIM, plain PyTorch (no kernel)

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("size, sigma, scale", [(11, 1.5, 1.0), (7, 1.0, 1 / 255), (3, 0.5, 1.0), (1, 1.5, 1.0)])
def test_complex_ssim_means_matches_piq(device, assert_close, dtype, size, sigma, scale):
    """Against piq's own _ssim_per_channel_complex (on the CPU, in float64) on random parts."""
    from piq.functional import gaussian_filter
    from piq.ssim import _ssim_per_channel_complex

    for i, (n, h, w) in enumerate(SHAPES):
        if min(h, w) < size:
            continue
        parts = [image_pair((n, 3, h, w), torch.float64, seed=15 + i + k, high=1 / scale) for k in range(2)]
        x, y = (torch.stack([parts[0][j], parts[1][j]], dim=-1) for j in range(2))
        kernel = gaussian_filter(size, sigma, dtype=torch.float64).repeat(3, 1, 1, 1)
        expected = _ssim_per_channel_complex(x * scale, y * scale, kernel, k1=0.01, k2=0.03)
        got = mops.complex_ssim_means(x.to(device, dtype), y.to(device, dtype), window(size, sigma, dtype, device),
                                      scale, 1e-4, 9e-4)
        for g, e in zip(got, expected):
            assert g.shape == (n, 3, 2) and g.dtype == dtype and g.device.type == device.type
            assert_close(g.cpu(), e.to(dtype), msg=f"{size} {scale} {(n, h, w)}")


def test_complex_ssim_means_checks_its_pair():
    x, y = image_pair((1, 1, 20, 20), torch.float32)
    complex_x, complex_y = torch.stack([x, y], -1), torch.stack([y, x], -1)
    for bad_x, bad_y in [(x, y), (complex_x, complex_y[..., :1]), (torch.cat([complex_x] * 2, -1), ) * 2,
                         (complex_x, complex_y.double()), (complex_x, complex_y[:, :, 1:])]:
        with pytest.raises(ValueError, match=re.escape("x and y must be (N, C, H, W, 2)")):
            mops.complex_ssim_means(bad_x, bad_y, window(3, 1.0, torch.float32), 1.0, 1e-4, 9e-4)


@pytest.mark.parametrize("op", OPS)
def test_bad_pairs(op):
    x, y = image_pair((2, 3, 32, 32), torch.float32)
    params = REPRESENTATIVE[op]
    for bad_x, bad_y in [(x, y[..., :-1]), (x, y[:1]), (x[0], y[0]), (x, y.double())]:
        with pytest.raises(ValueError, match="x and y must be"):
            call(op, bad_x, bad_y, "auto", **params)


def test_kernels_check_their_inputs():
    """The registered ops are public too (torch.ops.medgan_fast.*): they refuse bad inputs."""
    x, y = image_pair((2, 3, 32, 32), torch.float32)
    ops = torch.ops.medgan_fast
    w = window(11, 1.5, torch.float32)
    bad_pairs = [(x, y[..., :-1]), (x[0], y[0]), (x, y.double()), (x.to(torch.int32), y.to(torch.int32))]
    for bx, by in bad_pairs:
        with pytest.raises(RuntimeError):
            ops.metric_squared_error(bx, by, 1.0, False)
        with pytest.raises(RuntimeError):
            ops.metric_ssim(bx, by, w, 1.0, 1, 1e-4, 9e-4)
        with pytest.raises(RuntimeError):
            ops.metric_gmsd(bx, by, 1.0, True, 1, 0.0026, 0.0)
        with pytest.raises(RuntimeError):
            ops.metric_mdsi(bx, by, 255.0, 1, 140.0, 55.0, 550.0, 0.6, 0.1, 0.2, 0.25, 1.0, False)
        with pytest.raises(RuntimeError):
            ops.metric_haarpsi(bx, by, 255.0, 3, True, 30.0, 4.2)
    with pytest.raises(RuntimeError):  # window longer than the (pooled) image
        ops.metric_ssim(x, y, window(11, 1.5, torch.float32), 1.0, 3, 1e-4, 9e-4)
    with pytest.raises(RuntimeError):  # window must be 1-D
        ops.metric_ssim(x, y, torch.outer(w, w), 1.0, 1, 1e-4, 9e-4)


# ---------------------------------------------------------------------------------------
# Helpers the metrics share with piq

@pytest.mark.parametrize("size, sigma", [(11, 1.5), (7, 1.0), (3, 0.5), (1, 1.5)])
def test_gaussian_window_matches_piq(size, sigma):
    from piq.functional import gaussian_filter

    w = mops.gaussian_window(size, sigma)
    assert w.shape == (size,) and w.dtype == torch.float64
    torch.testing.assert_close(w.sum(), torch.tensor(1.0, dtype=torch.float64))
    for dtype in DTYPES:
        torch.testing.assert_close(torch.outer(w, w).to(dtype), gaussian_filter(size, sigma, dtype=dtype)[0],
                                   rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=1e-15)


def test_auto_pool_is_pythons_round():
    for h in range(1, 1400, 7):
        for w in (h, h + 13, 1023):
            assert mops.auto_pool(h, w) == max(1, round(min(h, w) / 256))
    assert [mops.auto_pool(s, s) for s in (383, 384, 640, 641, 896)] == [1, 2, 2, 3, 4]  # halves to even


# ---------------------------------------------------------------------------------------
# opcheck: schema, fake impl, autograd registration, AOT dispatch

def _opcheck_samples(op: str, device):
    samples = []
    for dtype in DTYPES:
        for shape in [(2, 1, 35, 41), (1, 3, 24, 24)]:
            x, y = image_pair(shape, dtype, seed=9, device=device)
            if op == "metric_squared_error":
                samples += [(x, y, 1.0, False), (x, y, 255.0, True)]
            elif op == "metric_ssim":
                w = window(11, 1.5, dtype, device)
                samples += [(x, y, w, 1.0, 1, 1e-4, 9e-4), (x, y, window(7, 1.0, dtype, device), 1.0, 3, 1e-4, 9e-4)]
            elif op == "metric_gmsd":
                samples += [(x, y, 1.0, True, 1, 170 / 255**2, 0.0), (x, y, 255.0, False, 3, 170.0, 0.5)]
            elif op == "metric_mdsi":
                samples += [(x, y, 255.0, 1, 140.0, 55.0, 550.0, 0.6, 0.1, 0.2, 0.25, 1.0, False),
                            (x, y, 255.0, 2, 140.0, 55.0, 550.0, 0.6, 0.1, 0.2, 0.25, 1.0, True)]
            elif op == "metric_haarpsi":
                samples += [(x, y, 255.0, 3, True, 30.0, 4.2), (x, y, 255.0, 4, False, 30.0, 4.2)]
    return samples


@pytest.mark.parametrize("name", list(TORCH_OPS.values()))
def test_opcheck(device, name):
    op = getattr(torch.ops.medgan_fast, name).default
    for args in _opcheck_samples(name, device):
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (name, result)


def test_fake_impls_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode

    ops = torch.ops.medgan_fast
    with FakeTensorMode():
        x = torch.empty(5, 3, 40, 50, dtype=torch.float64)
        w = torch.empty(11, dtype=torch.float64)
        assert ops.metric_squared_error(x, x, 1.0, True).shape == (5,)
        ssim, cs = ops.metric_ssim(x, x, w, 1.0, 2, 1e-4, 9e-4)
        assert ssim.shape == cs.shape == (5, 3) and ssim.dtype == cs.dtype == torch.float64
        gmsd = ops.metric_gmsd(x, x, 255.0, False, 4, 170.0, 0.5)
        assert gmsd.shape == (5, 4) and gmsd.dtype == torch.float64
        assert ops.metric_mdsi(x, x, 255.0, 1, 140.0, 55.0, 550.0, 0.6, 0.1, 0.2, 0.25, 1.0, False).shape == (5,)
        assert ops.metric_haarpsi(x.float(), x.float(), 255.0, 3, True, 30.0, 4.2).dtype == torch.float32


# ---------------------------------------------------------------------------------------
# torch.compile

def test_compile_metric_smoke(assert_close):
    """A metric under torch.compile (graph breaks allowed: input checks read values)."""
    from medgan_fast.metrics import quality

    x, y = image_pair((2, 3, 64, 64), torch.float32, seed=10)
    compiled = torch.compile(quality.ssim, fullgraph=False, backend="aot_eager")
    assert_close(compiled(x, y, reduction="none"), quality.ssim(x, y, reduction="none"))
    compiled = torch.compile(quality.gmsd, fullgraph=False, backend="aot_eager")
    assert_close(compiled(x, y), quality.gmsd(x, y))


def test_compile_ops_fullgraph(assert_close):
    """The ops themselves trace into one graph (register_fake)."""
    x, y = image_pair((2, 3, 40, 44), torch.float32, seed=11)

    def stats(x, y):
        w = mops.gaussian_window(11, 1.5, x.dtype, x.device)
        ssim, cs = mops.ssim_means(x, y, w, 1.0, 1, 1e-4, 9e-4, impl="kernel")
        return (ssim.mean(1), cs.mean(1), mops.squared_error(x, y, 1.0, False, impl="kernel"),
                mops.gmsd_deviation(x, y, 255.0, False, 2, 170.0, 0.5, impl="kernel"),
                mops.mdsi_pooled(x, y, 255.0, 1, 140.0, 55.0, 550.0, 0.6, 0.1, 0.2, 0.25, 1.0, False, impl="kernel"),
                mops.haarpsi_sums(x, y, 255.0, 3, True, 30.0, 4.2, impl="kernel"))

    compiled = torch.compile(stats, fullgraph=True, backend="aot_eager")
    for got, expected in zip(compiled(x, y), stats(x, y)):
        assert_close(got, expected)


@pytest.mark.slow
def test_compile_metric_inductor(assert_close):
    """The default backend (inductor) around our ops."""
    from medgan_fast.metrics import quality

    x, y = image_pair((2, 3, 64, 64), torch.float32, seed=12)
    compiled = torch.compile(quality.multi_scale_gmsd)
    assert_close(compiled(x, y, reduction="none"), quality.multi_scale_gmsd(x, y, reduction="none"))


# ---------------------------------------------------------------------------------------
# CPU vs CUDA

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("op", OPS)
def test_cpu_equals_cuda(assert_close, op, dtype, gpu):
    cases = {
        "squared_error": SQUARED_ERROR_CASES, "ssim": SSIM_CASES, "gmsd": GMSD_CASES, "mdsi": MDSI_CASES,
        "haarpsi": HAARPSI_CASES,
    }[op]
    for params in cases:
        for channels in (1, 3):
            for i, (n, h, w) in enumerate(SHAPES + [(2, 600, 520)]):
                if op == "ssim" and not ssim_fits((h, w), params):
                    continue
                x, y = image_pair((n, channels, h, w), dtype, seed=i)
                cpu = call(op, x, y, "kernel", **params)
                cpu_transposed = call(op, x.transpose(-1, -2), y.transpose(-1, -2), "kernel", **params)
                with gpu.running():
                    cuda = call(op, gpu.put(x), gpu.put(y), "kernel", **params)
                    transposed = call(op, gpu.put(x).transpose(-1, -2), gpu.put(y).transpose(-1, -2), "kernel",
                                      **params)
                for c, g in zip(cpu, cuda):
                    assert gpu.holds(g)
                    assert_close(g.cpu(), c, msg=f"{op} {params} {tuple(x.shape)}")
                for c, g in zip(cpu_transposed, transposed):
                    assert_close(g.cpu(), c)


def test_haarpsi_many_scales_cpu_equals_cuda(gpu):
    """HaarPSI with 8 scales (Haar boxes up to 128 pixels wide): the CUDA driver reads each
    box from an integral image built with the CPU's additions, as the CPU does, instead of
    summing 4^s pixels, so the two agree to float64 rounding of the final sums."""
    x, y = image_pair((2, 3, 70, 90), torch.float64, seed=11)
    params = dict(scale=255.0, scales=8, subsample=False, c=30.0, alpha=4.2)
    cpu = mops.haarpsi_sums(x, y, **params, impl="kernel")
    with gpu.running():
        cuda = mops.haarpsi_sums(gpu.put(x), gpu.put(y), **params, impl="kernel")
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-12, atol=0)
