"""power_iteration_ (the fused multi-weight power iteration of spectral normalisation) and
attach_sigma: kernel vs reference vs plain torch.linalg math.

The oracle :func:`torch_math` is written independently of ``power_iteration_reference``:
torch's ``weight.permute(dim, ...).reshape(h, -1)``, ``@`` and ``torch.linalg.vector_norm``
clamped at eps, in float64. The kernel accumulates float32 in float32 (as torch.mv), so float32
results compare with the table's float32 tolerance; float64 with the table's float64 one.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from medgan_fast.ops.spectral_norm import (
    attach_sigma,
    power_iteration_,
    power_iteration_reference,
    weight_grad_,
    weight_grad_reference,
    weight_layout,
)

KERNEL_DTYPES = [torch.float32, torch.float64]
OP = torch.ops.medgan_fast.spectral_norm_power_iteration_


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: with several threads, OpenMP barriers dominate (10x slower
    on a busy 2-core machine). Thread counts are tested in test_independent_of_thread_count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Helpers

def as_matrix(w: torch.Tensor, dim: int) -> torch.Tensor:
    """torch's _SpectralNorm._reshape_weight_to_matrix: rows along `dim`, the other dims
    flattened in order."""
    dim = dim % w.dim()
    others = [d for d in range(w.dim()) if d != dim]
    return w.permute(dim, *others).reshape(w.shape[dim], -1)


def random_uv(w: torch.Tensor, dim: int, generator: torch.Generator | None = None):
    """Unit u (h) and v (P*Q) for `w` as torch draws them (normal, then normalised)."""
    h, width = as_matrix(w, dim).shape
    u = torch.randn(h, dtype=torch.float64, generator=generator)
    v = torch.randn(width, dtype=torch.float64, generator=generator)
    return (F.normalize(u, dim=0).to(w.device, w.dtype), F.normalize(v, dim=0).to(w.device, w.dtype))


def torch_math(w, u, v, dim, n, eps):
    """(u, v, sigma) after n power iterations, in float64 with torch.linalg; returned in w's dtype."""
    m = as_matrix(w.detach().double().cpu(), dim)
    u, v = u.double().cpu().clone(), v.double().cpu().clone()

    def normalize(x):
        return x / torch.clamp(torch.linalg.vector_norm(x), min=eps)

    for _ in range(n):
        u = normalize(m @ v)
        v = normalize(m.T @ u)
    sigma = u @ m @ v
    return u.to(w.device, w.dtype), v.to(w.device, w.dtype), sigma.to(w.device, w.dtype)


def run(impl, weights, us, vs, dims, n=1, eps=1e-12):
    """power_iteration_ (impl "kernel"/"auto") or the reference, on copies of us and vs.
    Returns (sigmas, us, vs)."""
    us, vs = [u.clone() for u in us], [v.clone() for v in vs]
    if impl == "reference":
        sigmas = power_iteration_reference(weights, us, vs, dims, n, eps)
    else:
        sigmas = power_iteration_(weights, us, vs, dims, n, eps, impl=impl)
    return sigmas, us, vs


def check_against_math(assert_close, weights, us, vs, dims, n, eps, sigmas, us_out, vs_out, msg=""):
    assert sigmas.shape == (len(weights),) and sigmas.dtype == weights[0].dtype
    assert sigmas.device == weights[0].device
    for k, (w, u, v, dim) in enumerate(zip(weights, us, vs, dims)):
        eu, ev, es = torch_math(w, u, v, dim, n, eps)
        tag = f"{msg} weight {k} {tuple(w.shape)} dim={dim} n={n} eps={eps}"
        assert_close(us_out[k], eu, msg=f"u: {tag}")
        assert_close(vs_out[k], ev, msg=f"v: {tag}")
        assert_close(sigmas[k], es, msg=f"sigma: {tag}")


# Shapes and dims: 2-D (Linear), 3-D/4-D/5-D (conv), transposed-conv dim 1, middle dims,
# sizes 1, and widths over the CPU kernel's 256-column block (with and without P > 1).
FIXED_CASES = [
    ((7, 5), 0), ((7, 5), 1), ((7, 5), -1), ((5, 7), -2),
    ((1, 9), 0), ((9, 1), 0), ((1, 1), 0), ((1, 1, 1, 1), 1),
    ((6, 4, 3, 3), 0), ((6, 4, 3, 3), 1), ((6, 4, 3, 3), 2), ((6, 4, 3, 3), -1),
    ((3, 5, 2), 1), ((4, 3, 2, 5, 2), 3), ((8, 2, 3, 3, 3), 0),
    ((64, 300), 0), ((300, 64), 0), ((4, 8, 300), 1), ((33, 17, 2), 0), ((2, 600), 1),
]


# ---------------------------------------------------------------------------------------
# Kernel vs reference vs torch.linalg math

@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("shape, dim", FIXED_CASES, ids=str)
def test_fixed_shapes_match_reference_and_math(device, assert_close, shape, dim, n, dtype):
    w = torch.randn(shape, dtype=dtype, device=device)
    u, v = random_uv(w, dim)
    kernel = run("kernel", [w], [u], [v], [dim], n)
    reference = run("reference", [w], [u], [v], [dim], n)
    for got, expected in zip(kernel, reference):
        for a, b in zip(got, expected):
            assert_close(a, b, msg=f"kernel vs reference {shape} dim={dim} n={n}")
    check_against_math(assert_close, [w], [u], [v], [dim], n, 1e-12, *kernel)
    if n > 0:  # unit vectors, and sigma = ||W^T u|| (the power method's estimate)
        assert_close(torch.linalg.vector_norm(kernel[1][0]), torch.ones((), dtype=dtype, device=device))
        assert_close(torch.linalg.vector_norm(kernel[2][0]), torch.ones((), dtype=dtype, device=device))
        m = as_matrix(w, dim)
        assert_close(kernel[0][0], torch.linalg.vector_norm(m.T @ kernel[1][0]))


@settings(max_examples=60)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=5), data=st.data(),
       n=st.sampled_from([0, 1, 3]), dtype=st.sampled_from(KERNEL_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_random_shapes_match_math(device, assert_close, shape, data, n, dtype, seed):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1), label="dim")
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, dtype=torch.float64, generator=g).to(device, dtype)
    u, v = random_uv(w, dim, g)
    kernel = run("kernel", [w], [u], [v], [dim], n)
    check_against_math(assert_close, [w], [u], [v], [dim], n, 1e-12, *kernel)
    reference = run("reference", [w], [u], [v], [dim], n)
    for got, expected in zip(kernel, reference):
        for a, b in zip(got, expected):
            assert_close(a, b)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_converges_to_the_largest_singular_value(device, assert_close, dtype):
    """Enough iterations give torch.linalg.matrix_norm(W, 2) and its singular vectors (up to sign)."""
    # A matrix with a clear spectral gap so that 40 iterations converge to machine precision.
    q1, _ = torch.linalg.qr(torch.randn(20, 20, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(12, 12, dtype=torch.float64))
    s = torch.tensor([5.0, 2.0, 1.5, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.01, 0.0, 0.0], dtype=torch.float64)
    m = (q1[:, :12] * s) @ q2.T
    w = m.reshape(20, 3, 4).to(device, dtype)
    u, v = random_uv(w, 0)
    sigmas, us, vs = run("kernel", [w], [u], [v], [0], 40)
    expected = torch.linalg.matrix_norm(w.reshape(20, 12).double(), 2).to(dtype)
    assert_close(sigmas[0], expected)
    assert_close(sigmas[0], torch.tensor(5.0, dtype=dtype, device=device))
    svd_u, _, svd_vh = torch.linalg.svd(m)
    sign = torch.sign(us[0].double().cpu() @ svd_u[:, 0])
    assert_close(us[0], (sign * svd_u[:, 0]).to(device, dtype))
    assert_close(vs[0], (sign * svd_vh[0]).to(device, dtype))


def test_matches_torch_power_method_with_mv(assert_close):
    """The peer: torch's own _SpectralNorm._power_method loop (torch.mv, F.normalize(out=))."""
    for shape, dim in [((16, 8, 3, 3), 0), ((8, 16, 4, 4), 1), ((40, 30), 0)]:
        w = torch.randn(shape)
        m = as_matrix(w, dim)
        u, v = random_uv(w, dim)
        tu, tv = u.clone(), v.clone()
        for _ in range(2):
            tu = F.normalize(torch.mv(m, tv), dim=0, eps=1e-12, out=tu)
            tv = F.normalize(torch.mv(m.H, tu), dim=0, eps=1e-12, out=tv)
        sigma = torch.vdot(tu, torch.mv(m, tv))
        sigmas, us, vs = run("kernel", [w], [u], [v], [dim], 2)
        torch.testing.assert_close(us[0], tu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vs[0], tv, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(sigmas[0], sigma, rtol=1e-5, atol=0.0)


# ---------------------------------------------------------------------------------------
# In place, n = 0, several weights in one call

def test_updates_us_and_vs_in_place(device, assert_close):
    w = torch.randn(6, 4, 3, 3, device=device)
    u, v = random_uv(w, 1)
    u0, v0 = u.clone(), v.clone()
    ptr_u, ptr_v = u.data_ptr(), v.data_ptr()
    sigmas = power_iteration_([w], [u], [v], [1], 2)
    assert u.data_ptr() == ptr_u and v.data_ptr() == ptr_v
    assert sigmas.data_ptr() not in (ptr_u, ptr_v, w.data_ptr())
    assert not torch.equal(u, u0) and not torch.equal(v, v0)
    expected_sigmas, eu, ev = run("reference", [w], [u0], [v0], [1], 2)
    assert_close(u, eu[0])
    assert_close(v, ev[0])
    assert_close(sigmas, expected_sigmas)
    assert not sigmas.requires_grad


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_no_iterations_is_u_w_v_and_leaves_u_v(device, assert_close, dtype):
    weights = [torch.randn(9, 4, device=device, dtype=dtype), torch.randn(3, 5, 2, 2, device=device, dtype=dtype)]
    dims = [0, 1]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    us, vs = [u.clone() for u, _ in uvs], [v.clone() for _, v in uvs]
    sigmas = power_iteration_(weights, us, vs, dims, 0)
    for k, (w, d) in enumerate(zip(weights, dims)):
        assert torch.equal(us[k], uvs[k][0]) and torch.equal(vs[k], uvs[k][1])
        assert_close(sigmas[k], uvs[k][0] @ as_matrix(w, d) @ uvs[k][1])


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 3])
def test_several_weights_in_one_call_equal_separate_calls(device, assert_close, n, dtype):
    """One fused call over differently shaped weights (a discriminator's worth) gives each
    weight exactly what a call of its own gives: nothing leaks between layers."""
    shapes_dims = [((8, 3, 4, 4), 0), ((16, 8, 4, 4), 0), ((1, 16, 4, 4), 0), ((16, 8, 4, 4), 1),
                   ((40, 300), 0), ((2, 3), 1), ((5, 6, 7), 1), ((1, 1), 0)]
    weights = [torch.randn(s, device=device, dtype=dtype) for s, _ in shapes_dims]
    dims = [d for _, d in shapes_dims]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    sigmas, us, vs = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n)
    assert sigmas.shape == (len(weights),)
    for k, (w, d) in enumerate(zip(weights, dims)):
        s1, u1, v1 = run("kernel", [w], [uvs[k][0]], [uvs[k][1]], [d], n)
        if device.type == "cpu":  # the CPU kernel's per-layer arithmetic does not depend on the batch
            assert torch.equal(sigmas[k], s1[0]) and torch.equal(us[k], u1[0]) and torch.equal(vs[k], v1[0]), k
        else:
            assert_close(sigmas[k], s1[0])
            assert_close(us[k], u1[0])
            assert_close(vs[k], v1[0])
    check_against_math(assert_close, weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, 1e-12, sigmas, us, vs)


@pytest.mark.parametrize("num_threads", [1, 2, 5], indirect=True)
def test_independent_of_thread_count(num_threads):
    g = torch.Generator().manual_seed(3)
    weights = [torch.randn(s, generator=g) for s in [(64, 300), (4, 8, 300), (3, 5, 2, 2), (130, 7)]]
    dims = [0, 1, 2, 0]
    uvs = [random_uv(w, d, g) for w, d in zip(weights, dims)]
    got = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 3)
    torch.set_num_threads(1)
    expected = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 3)
    torch.set_num_threads(num_threads)
    assert torch.equal(got[0], expected[0])
    for a, b in zip(got[1] + got[2], expected[1] + expected[2]):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------
# eps clamp, zero weights, non-contiguous weights, low precision

@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 3])
def test_eps_larger_than_the_norms(device, assert_close, n, dtype):
    """||W v|| and ||W^T u|| below eps: the normalisations divide by eps (u, v not unit)."""
    weights = [torch.randn(6, 5, device=device, dtype=dtype) * 1e-3, torch.randn(4, 3, 2, device=device, dtype=dtype)]
    dims = [0, 1]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    for eps in [1.0, 0.05, 1e-3]:
        got = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, eps)
        check_against_math(assert_close, weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, eps, *got)
        reference = run("reference", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, eps)
        for a, b in zip(got[1] + got[2], reference[1] + reference[2]):
            assert_close(a, b)
        assert_close(got[0], reference[0])
    if n > 0:  # the first weight is clamped at eps = 1: u is far from a unit vector
        _, us, _ = run("kernel", weights[:1], [uvs[0][0]], [uvs[0][1]], [0], n, 1.0)
        assert torch.linalg.vector_norm(us[0]) < 0.1


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_all_zero_weight(device, dtype):
    w = torch.zeros(5, 3, 2, device=device, dtype=dtype)
    other = torch.randn(4, 4, device=device, dtype=dtype)
    u, v = random_uv(w, 0)
    ou, ov = random_uv(other, 0)
    for n in [1, 3]:
        sigmas, us, vs = run("kernel", [w, other], [u, ou], [v, ov], [0, 0], n)
        assert torch.equal(us[0], torch.zeros_like(u)) and torch.equal(vs[0], torch.zeros_like(v))
        assert sigmas[0].item() == 0.0
        assert torch.isfinite(us[1]).all() and sigmas[1].item() > 0  # the other layer is unaffected
        ref = run("reference", [w], [u], [v], [0], n)
        assert torch.equal(ref[1][0], us[0]) and torch.equal(ref[2][0], vs[0]) and ref[0][0].item() == 0.0
    sigmas, us, vs = run("kernel", [w], [u], [v], [0], 0)
    assert sigmas[0].item() == 0.0 and torch.equal(us[0], u) and torch.equal(vs[0], v)


def _non_contiguous_views(device, dtype):
    base2 = torch.randn(9, 14, device=device, dtype=dtype)
    base4 = torch.randn(5, 6, 3, 4, device=device, dtype=dtype)
    return [
        ("transposed", base2.t(), 0),
        ("transposed dim 1", base2.t(), 1),
        ("strided columns", base2[:, ::3], 0),
        ("strided rows", base2[1::2], 1),
        ("permuted 4-D", base4.permute(1, 0, 3, 2), 0),
        ("permuted 4-D middle dim", base4.permute(1, 0, 3, 2), 2),
        ("channels_last", base4.contiguous(memory_format=torch.channels_last), 1),
        ("expanded", torch.randn(1, 7, device=device, dtype=dtype).expand(4, 7), 0),
    ]


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 2])
def test_non_contiguous_weights(device, assert_close, n, dtype):
    views = _non_contiguous_views(device, dtype)
    weights = [w for _, w, _ in views]
    dims = [d for _, _, d in views]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    snapshot = [w.clone() for w in weights]
    got = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n)
    contiguous = run("kernel", [w.contiguous() for w in weights], [u for u, _ in uvs], [v for _, v in uvs], dims, n)
    for a, b in zip([got[0]] + got[1] + got[2], [contiguous[0]] + contiguous[1] + contiguous[2]):
        assert_close(a, b)
    check_against_math(assert_close, weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, 1e-12, *got)
    for w, before in zip(weights, snapshot):
        assert torch.equal(w, before)  # weights are read, never written


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_weights_use_the_reference(assert_close, dtype):
    """bf16/fp16: no kernel (it refuses them), the reference runs, in the weights' dtype."""
    weights = [torch.randn(12, 6, 3).to(dtype), torch.randn(4, 10).to(dtype)]
    dims = [0, 1]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    for impl in ["auto", "kernel"]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            sigmas, us, vs = run(impl, weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 2)
        assert sigmas.dtype == dtype and all(u.dtype == dtype for u in us + vs)
        ref = run("reference", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 2)
        assert torch.equal(sigmas, ref[0])
        for a, b in zip(us + vs, ref[1] + ref[2]):
            assert torch.equal(a, b)
        check_against_math(assert_close, weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 2, 1e-12,
                           sigmas, us, vs)
    with pytest.raises(RuntimeError, match="float32 or float64"):
        OP(weights, [u.clone() for u, _ in uvs], [v.clone() for _, v in uvs], dims, 1, 1e-12)


# ---------------------------------------------------------------------------------------
# impl

def test_reference_impl_and_auto(assert_close):
    w = torch.randn(10, 4, 3)
    u, v = random_uv(w, 1)
    kernel = run("kernel", [w], [u], [v], [1], 2)
    forced = power_iteration_([w], [u.clone()], [v.clone()], [1], 2, impl="reference")
    assert_close(forced, kernel[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the kernel is built: auto must not warn
        auto = run("auto", [w], [u], [v], [1], 2)
    assert torch.equal(auto[0], kernel[0]) and torch.equal(auto[1][0], kernel[1][0])


def test_fallback_when_no_kernel(monkeypatch, assert_close):
    """Without kernels for the device, "auto" warns once and runs the reference, "kernel" refuses."""
    from medgan_fast import _ext

    w = torch.randn(10, 7)
    u, v = random_uv(w, 0)
    expected = run("kernel", [w], [u], [v], [0], 2)
    monkeypatch.setattr(_ext, "HAS_CPU_KERNELS", False)
    monkeypatch.setattr(_ext, "_warned", set())
    with pytest.warns(RuntimeWarning, match="power_iteration_: using the slow reference"):
        got = run("auto", [w], [u], [v], [0], 2)
    assert_close(got[0], expected[0])
    assert_close(got[1][0], expected[1][0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run("auto", [w], [u], [v], [0], 2)
    with pytest.raises(RuntimeError, match="no compiled kernel"):
        run("kernel", [w], [u], [v], [0], 2)


@pytest.mark.parametrize("impl", ["bogus", "cuda", "", None])
def test_bad_impl(impl):
    w = torch.randn(3, 4)
    u, v = random_uv(w, 0)
    with pytest.raises(ValueError, match="impl"):
        power_iteration_([w], [u], [v], [0], impl=impl)


# ---------------------------------------------------------------------------------------
# Bad inputs

def _valid():
    w0, w1 = torch.randn(4, 6), torch.randn(3, 2, 5)
    return {"weights": [w0, w1], "us": [torch.randn(4), torch.randn(2)], "vs": [torch.randn(6), torch.randn(15)],
            "dims": [0, 1], "n_power_iterations": 1, "eps": 1e-12}


def _set(key, value):
    def change(args):
        args[key] = value(args) if callable(value) else value
    return change


def _set_item(key, k, value):
    def change(args):
        args[key] = list(args[key])
        args[key][k] = value(args) if callable(value) else value
    return change


BAD_INPUTS = {
    "weights not a list": (_set("weights", lambda a: a["weights"][0]), TypeError, "weights"),
    "us not a list": (_set("us", lambda a: a["us"][0]), TypeError, "us"),
    "vs not a list": (_set("vs", None), TypeError, "vs"),
    "empty lists": (lambda a: a.update(weights=[], us=[], vs=[], dims=[]), ValueError, "weights must not be empty"),
    "us shorter": (_set("us", lambda a: a["us"][:1]), ValueError, "same length"),
    "vs longer": (_set("vs", lambda a: a["vs"] + [torch.randn(3)]), ValueError, "same length"),
    "dims shorter": (_set("dims", [0]), ValueError, "same length"),
    "u too short": (_set_item("us", 0, torch.randn(3)), ValueError, r"us\[0\]"),
    "u too long": (_set_item("us", 1, torch.randn(5)), ValueError, r"us\[1\]"),
    "v wrong size": (_set_item("vs", 1, torch.randn(10)), ValueError, r"vs\[1\]"),
    "v 2-D": (_set_item("vs", 0, torch.randn(1, 6)), ValueError, r"vs\[0\]"),
    "u non-contiguous": (_set_item("us", 0, torch.randn(8)[::2]), ValueError, r"us\[0\]"),
    "v non-contiguous": (_set_item("vs", 1, torch.randn(15, 2)[:, 0]), ValueError, r"vs\[1\]"),
    "u float64": (_set_item("us", 1, torch.randn(2, dtype=torch.float64)), ValueError, r"us\[1\]"),
    "v not a tensor": (_set_item("vs", 0, [0.0] * 6), ValueError, r"vs\[0\]"),
    "u on meta": (_set_item("us", 0, torch.empty(4, device="meta")), ValueError, r"us\[0\]"),
    "mixed weight dtypes": (_set_item("weights", 1, torch.randn(3, 2, 5, dtype=torch.float64)), ValueError,
                            r"weights\[1\]"),
    "mixed weight devices": (_set_item("weights", 1, torch.empty(3, 2, 5, device="meta")), ValueError,
                             r"weights\[1\]"),
    "1-D weight": (_set_item("weights", 0, torch.randn(4)), ValueError, r"weights\[0\]"),
    "empty weight": (lambda a: a.update(weights=[torch.randn(0, 6)], us=[torch.randn(0)], vs=[torch.randn(6)],
                                        dims=[0]), ValueError, r"weights\[0\]"),
    "weight not a tensor": (_set_item("weights", 0, [[1.0] * 6] * 4), ValueError, r"weights\[0\]"),
    "dim too large": (_set_item("dims", 0, 2), ValueError, r"dims\[0\]"),
    "dim too small": (_set_item("dims", 1, -4), ValueError, r"dims\[1\]"),
    "negative n": (_set("n_power_iterations", -1), ValueError, "n_power_iterations"),
    "float n": (_set("n_power_iterations", 1.5), ValueError, "n_power_iterations"),
    "bool n": (_set("n_power_iterations", True), ValueError, "n_power_iterations"),
    "zero eps": (_set("eps", 0.0), ValueError, "eps"),
    "negative eps": (_set("eps", -1e-12), ValueError, "eps"),
    "nan eps": (_set("eps", float("nan")), ValueError, "eps"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_inputs(case):
    change, error, match = BAD_INPUTS[case]
    args = _valid()
    change(args)
    us_before = [u.clone() if isinstance(u, torch.Tensor) and u.device.type == "cpu" else None
                 for u in (args["us"] if isinstance(args["us"], (list, tuple)) else [])]
    with pytest.raises(error, match=match):
        power_iteration_(args["weights"], args["us"], args["vs"], args["dims"], args["n_power_iterations"],
                         args["eps"])
    for u, before in zip(args["us"] if isinstance(args["us"], (list, tuple)) else [], us_before):
        if before is not None:
            assert torch.equal(u, before), "a refused call must not touch us"


# Wrong argument types name the argument (DESIGN.md: "input validation that raises
# ValueError/TypeError naming the argument").
TYPE_ERRORS = {
    "dims not a list": (_set("dims", 0), "dims"),
    "float dim": (_set_item("dims", 0, 0.5), "dims"),
    "eps None": (_set("eps", None), "eps"),
}


@pytest.mark.parametrize("case", list(TYPE_ERRORS))
def test_bad_argument_types_name_the_argument(case):
    change, match = TYPE_ERRORS[case]
    args = _valid()
    change(args)
    with pytest.raises((TypeError, ValueError), match=match):
        power_iteration_(args["weights"], args["us"], args["vs"], args["dims"], args["n_power_iterations"],
                         args["eps"])


def test_kernel_checks_its_inputs():
    """The registered op is public too (torch.ops.medgan_fast.*): it refuses bad inputs."""
    args = _valid()
    w, us, vs, dims = args["weights"], args["us"], args["vs"], args["dims"]
    with pytest.raises(RuntimeError):  # the dispatcher has no tensor to dispatch on
        OP([], [], [], [], 1, 1e-12)
    with pytest.raises(RuntimeError, match="same length"):
        OP(w, us[:1], vs, dims, 1, 1e-12)
    with pytest.raises(RuntimeError, match=r"us\[0\] must be a contiguous vector of 4"):
        OP(w, [torch.randn(5), us[1]], vs, dims, 1, 1e-12)
    with pytest.raises(RuntimeError, match=r"vs\[1\] must be a contiguous vector of 15"):
        OP(w, us, [vs[0], torch.randn(30)[::2]], dims, 1, 1e-12)
    with pytest.raises(RuntimeError, match=r"us\[1\] must be Float"):
        OP(w, [us[0], us[1].double()], vs, dims, 1, 1e-12)
    with pytest.raises(RuntimeError, match=r"dims\[1\] = 3 is out of range"):
        OP(w, us, vs, [0, 3], 1, 1e-12)
    with pytest.raises(RuntimeError, match="n_power_iterations"):
        OP(w, us, vs, dims, -1, 1e-12)
    with pytest.raises(RuntimeError, match="eps"):
        OP(w, us, vs, dims, 1, 0.0)
    with pytest.raises(RuntimeError, match=r"weights\[0\] must have at least 2 dimensions"):
        OP([torch.randn(4)], [torch.randn(4)], [torch.randn(1)], [0], 1, 1e-12)
    with pytest.raises(RuntimeError, match=r"share dtype|us\[1\] must be Float|vs\[1\] must be Float"):
        OP([w[0], w[1].double()], us, [vs[0], vs[1].double()], dims, 1, 1e-12)


# ---------------------------------------------------------------------------------------
# opcheck: schema (declared mutation of us/vs only), fake impl, autograd registration, AOT

def _opcheck_samples(device):
    g = torch.Generator().manual_seed(5)
    samples = []
    for dtype in KERNEL_DTYPES:
        for n in [0, 1, 3]:
            weights = [torch.randn(s, generator=g, dtype=torch.float64).to(device, dtype)
                       for s in [(8, 3, 4, 4), (4, 8, 4, 4), (10, 7)]]
            dims = [0, 1, -1]
            uvs = [random_uv(w, d, g) for w, d in zip(weights, dims)]
            samples.append((weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n, 1e-12))
    w = torch.randn(12, 9, device=device).t()  # non-contiguous weight
    samples.append(([w], list(random_uv(w, 0)[:1]), list(random_uv(w, 0)[1:]), [0], 2, 0.5))
    return samples


def test_opcheck(device):
    for args in _opcheck_samples(device):
        result = torch.library.opcheck(OP.default, args)
        assert all(v == "SUCCESS" for v in result.values()), result


def test_fake_impl_shape_and_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        weights = [torch.randn(8, 3, 4, 4, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)]
        us = [torch.randn(8, dtype=torch.float64), torch.randn(5, dtype=torch.float64)]
        vs = [torch.randn(48, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
        sigmas = OP(weights, us, vs, [0, 0], 1, 1e-12)
        assert sigmas.shape == (2,) and sigmas.dtype == torch.float64


def test_compile_fullgraph(assert_close):
    """power_iteration_ traces into one graph (register_fake, declared mutation)."""
    weights = [torch.randn(8, 3, 4, 4), torch.randn(4, 8, 3, 3)]
    dims = [0, 1]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]

    def step(weights, us, vs):
        return power_iteration_(weights, us, vs, dims, 2) * 2

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    us, vs = [u.clone() for u, _ in uvs], [v.clone() for _, v in uvs]
    got = compiled(weights, us, vs)
    expected = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, 2)
    assert_close(got, expected[0] * 2)
    for a, b in zip(us + vs, expected[1] + expected[2]):
        assert_close(a, b)


# ---------------------------------------------------------------------------------------
# attach_sigma: sigma = u^T W v, differentiable in W with u, v constant

def _sigma_of(dim, u, v):
    def f(w):
        sigma = power_iteration_([w.detach()], [u.clone()], [v.clone()], [dim], 0)[0]
        return attach_sigma(w, sigma, u, v, dim)
    return f


@pytest.mark.parametrize("shape, dim", [((5, 4), 0), ((5, 4), 1), ((4, 3, 2, 2), 0), ((4, 3, 2, 2), 1),
                                        ((3, 2, 4, 2), 2), ((3, 2, 4), -1)], ids=str)
def test_attach_sigma_gradcheck(device, shape, dim):
    w = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
    u, v = random_uv(w, dim)
    assert torch.autograd.gradcheck(_sigma_of(dim, u, v), (w,))


@pytest.mark.parametrize("shape, dim", [((6, 5), 0), ((6, 5), 1), ((8, 4, 3, 3), 1), ((3, 4, 5, 2), 2)], ids=str)
def test_attach_sigma_equals_torch_autograd(device, assert_close, shape, dim):
    """Value and gradient of torch's sigma = vdot(u, mv(W_mat, v)), for any upstream grad."""
    w = torch.randn(shape, device=device, requires_grad=True)
    u, v = random_uv(w, dim)
    sigma_value = power_iteration_([w.detach()], [u.clone()], [v.clone()], [dim], 0)[0]
    ours = attach_sigma(w, sigma_value, u, v, dim)
    assert ours.shape == () and ours.requires_grad
    (ours * 3.5).backward()
    grad_ours = w.grad.clone()
    w.grad = None
    theirs = torch.vdot(u, torch.mv(as_matrix(w, dim), v))
    (theirs * 3.5).backward()
    assert_close(ours.detach(), theirs.detach())
    assert_close(grad_ours, w.grad)
    assert grad_ours.shape == w.shape


def test_attach_sigma_passes_no_gradient_to_sigma_u_v():
    w = torch.randn(4, 3, requires_grad=True)
    u, v = random_uv(w, 0)
    u.requires_grad_(True)
    v.requires_grad_(True)
    sigma = torch.tensor(2.0, requires_grad=True)
    out = attach_sigma(w, sigma, u, v, 0)
    assert torch.equal(out.detach(), sigma.detach())
    out.backward()
    assert w.grad is not None and sigma.grad is None and u.grad is None and v.grad is None
    torch.testing.assert_close(w.grad, torch.outer(u, v).detach(), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# weight_layout

@pytest.mark.parametrize("shape, dim, expected", [
    ((7, 5), 0, (1, 7, 5)), ((7, 5), 1, (7, 5, 1)), ((7, 5), -1, (7, 5, 1)),
    ((6, 4, 3, 3), 1, (6, 4, 9)), ((6, 4, 3, 3), 2, (24, 3, 3)), ((6, 4, 3, 3), -4, (1, 6, 36)),
])
def test_weight_layout(shape, dim, expected):
    assert weight_layout(shape, dim) == expected
    # Column p*Q + q of the (P, h, Q) view is torch's permute(dim, ...).reshape(h, -1) column.
    w = torch.arange(torch.Size(shape).numel()).reshape(shape)
    p, h, q = expected
    blocks = w.reshape(p, h, q).permute(1, 0, 2).reshape(h, p * q)
    assert torch.equal(blocks, as_matrix(w, dim))


# ---------------------------------------------------------------------------------------
# weight_grad_: a spectrally normalised layer's weight gradient, completed in place.
# The oracle is autograd through torch's formulas: sigma = u^T M(W) v with u, v constant.

WEIGHT_GRAD_OP = torch.ops.medgan_fast.spectral_norm_weight_grad_
WEIGHT_GRAD_CASES = [((7, 5), 0), ((7, 5), 1), ((6, 4, 3, 3), 0), ((6, 4, 3, 3), 1), ((6, 4, 3, 3), 2),
                     ((3, 5, 2), -1), ((1, 9), 0), ((64, 300), 0), ((4, 8, 300), 1), ((256, 64, 4, 4), 0)]


def assert_close_to(actual, expected, magnitude, msg=""):
    """Equal within the dtype's tolerance, absolute errors measured against `magnitude` (the
    size of the terms that cancel: the rank-1 term and G nearly cancel in some elements)."""
    rtol = 1e-4 if actual.dtype == torch.float32 else 1e-7
    torch.testing.assert_close(actual.cpu(), expected.cpu(), rtol=rtol, atol=rtol * float(magnitude), msg=msg)


def sigma_function(u, v, dim):
    """W -> u^T M(W) v (u, v constant), differentiable: the oracle's sigma."""
    return lambda w: u @ as_matrix(w, dim) @ v


def weight_scaled_case(shape, dim, dtype, device, g):
    """(grad_weight, sigma, u, v, kept, expected) for a layer that ran with kept = W / sigma and
    got G as kept's gradient; expected = autograd's gradient of <G, W / sigma(W)>."""
    w = torch.randn(shape, dtype=torch.float64, generator=g)
    u, v = (x.double() for x in random_uv(w, dim, g))
    upstream = torch.randn(shape, dtype=torch.float64, generator=g)
    w.requires_grad_(True)
    sigma = sigma_function(u, v, dim)(w)
    (upstream * (w / sigma)).sum().backward()
    kept = (w / sigma).detach()
    upstream, sigma, u, v, kept, expected = (x.to(device, dtype) for x in (upstream, sigma.detach(), u, v, kept, w.grad))
    return upstream, sigma, u, v, kept, None, expected


def output_scaled_case(out_features, in_features, dtype, device, g):
    """The same for a Linear that ran kept = x W^T and scaled it by 1 / sigma: grad_weight is
    the gradient of W for the output gradient / sigma; expected = autograd's gradient of
    <upstream, (x W^T) / sigma(W)>."""
    w = torch.randn(out_features, in_features, dtype=torch.float64, generator=g)
    x = torch.randn(5, in_features, dtype=torch.float64, generator=g)
    u, v = (t.double() for t in random_uv(w, 0, g))
    upstream = torch.randn(5, out_features, dtype=torch.float64, generator=g)
    w.requires_grad_(True)
    sigma = sigma_function(u, v, 0)(w)
    (upstream * (F.linear(x, w) / sigma)).sum().backward()
    kept = F.linear(x, w).detach()
    scaled_grad = upstream / sigma.detach()
    grad_weight = scaled_grad.T @ x
    return tuple(t.to(device, dtype) for t in (grad_weight, sigma.detach(), u, v, kept, scaled_grad, w.grad))


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("shape, dim", WEIGHT_GRAD_CASES, ids=str)
def test_weight_grad_weight_scaled_matches_autograd_and_reference(device, assert_close, shape, dim, dtype):
    g = torch.Generator().manual_seed(len(shape) * 10 + dim)
    grad_weight, sigma, u, v, kept, _, expected = weight_scaled_case(shape, dim, dtype, device, g)
    reference = weight_grad_reference(grad_weight.clone(), sigma, u, v, dim, kept)
    got = weight_grad_(grad_weight, sigma, u, v, dim, kept, impl="kernel")
    assert got is grad_weight
    assert_close(got, expected, msg=f"kernel vs autograd {shape} dim={dim}")
    assert_close(reference, expected, msg=f"reference vs autograd {shape} dim={dim}")


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("out_features, in_features", [(7, 5), (1, 9), (9, 1), (64, 300), (300, 64)], ids=str)
def test_weight_grad_output_scaled_matches_autograd_and_reference(device, assert_close, out_features, in_features,
                                                                  dtype):
    g = torch.Generator().manual_seed(out_features * 1000 + in_features)
    grad_weight, sigma, u, v, kept, scaled_grad, expected = output_scaled_case(out_features, in_features, dtype,
                                                                                device, g)
    inputs = [t.clone() for t in (sigma, u, v, kept, scaled_grad)]
    magnitude = grad_weight.abs().max()
    reference = weight_grad_reference(grad_weight.clone(), sigma, u, v, 0, kept, scaled_grad)
    weight_grad_(grad_weight, sigma, u, v, 0, kept, scaled_grad, impl="kernel")
    assert_close_to(grad_weight, expected, magnitude, msg="kernel vs autograd")
    assert_close_to(reference, expected, magnitude, msg="reference vs autograd")
    assert_close(grad_weight, reference)
    assert all(torch.equal(a, b) for a, b in zip(inputs, (sigma, u, v, kept, scaled_grad)))  # only grad_weight changes


@pytest.mark.parametrize("num_threads", [1, 2, 5], indirect=True)
@pytest.mark.parametrize("scaled", [False, True])
def test_weight_grad_independent_of_thread_count(num_threads, scaled):
    """The dot product is summed in fixed chunks (large enough here to run on several threads)."""
    g = torch.Generator().manual_seed(4)
    grad_weight = torch.randn(256, 64, 4, 4, generator=g)
    u, v = random_uv(grad_weight, 1, g)
    kept = torch.randn(70_000 if scaled else grad_weight.numel(), generator=g)
    scaled_grad = torch.randn(70_000, generator=g) if scaled else None
    sigma = torch.tensor([1.7])
    got = weight_grad_(grad_weight.clone(), sigma, u, v, 1, kept, scaled_grad)
    torch.set_num_threads(1)
    expected = weight_grad_(grad_weight.clone(), sigma, u, v, 1, kept, scaled_grad)
    torch.set_num_threads(num_threads)
    assert torch.equal(got, expected)


def test_weight_grad_low_precision_uses_the_reference(assert_close):
    g = torch.Generator().manual_seed(6)
    grad_weight, sigma, u, v, kept, _, expected = weight_scaled_case((6, 4, 3, 3), 1, torch.float64, "cpu", g)
    got = weight_grad_(grad_weight.bfloat16(), sigma.bfloat16(), u.bfloat16(), v.bfloat16(), 1, kept.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), expected, rtol=0.05, atol=0.05)


def _weight_grad_args(**changes):
    args = {"grad_weight": torch.randn(6, 4, 3, 3), "sigma": torch.tensor(2.0), "u": torch.randn(6),
            "v": torch.randn(36), "dim": 0, "kept": torch.randn(6, 4, 3, 3), "scaled_grad": None}
    args.update(changes)
    return args


WEIGHT_GRAD_BAD_INPUTS = {
    "grad_weight 1-D": ({"grad_weight": torch.randn(6)}, "grad_weight must be a non-empty tensor"),
    "grad_weight integer": ({"grad_weight": torch.ones(6, 4, 3, 3, dtype=torch.int64)},
                            "grad_weight must be a floating-point tensor, got torch.int64"),
    "grad_weight not contiguous": ({"grad_weight": torch.randn(4, 6, 3, 3).transpose(0, 1)}, "grad_weight must be contiguous"),
    "dim out of range": ({"dim": 4}, r"dim must be an integer in \[-4, 3\]"),
    "u too short": ({"u": torch.randn(5)}, "u must have 6 elements"),
    "v wrong dtype": ({"v": torch.randn(36, dtype=torch.float64)}, "v must be a torch.float32 tensor"),
    "sigma two values": ({"sigma": torch.ones(2)}, "sigma must hold one value"),
    "kept wrong size": ({"kept": torch.randn(5)}, r"kept must have as many elements as grad_weight \(216\)"),
    "scaled_grad wrong size": ({"scaled_grad": torch.randn(7)}, r"as many elements as scaled_grad \(7\)"),
    "kept not a tensor": ({"kept": [1.0]}, "kept must be a torch.float32 tensor"),
}


@pytest.mark.parametrize("case", list(WEIGHT_GRAD_BAD_INPUTS))
def test_weight_grad_bad_inputs(case):
    changes, message = WEIGHT_GRAD_BAD_INPUTS[case]
    with pytest.raises(ValueError, match=message):
        weight_grad_(**_weight_grad_args(**changes))


def test_weight_grad_kernel_checks_its_inputs():
    """The registered op refuses bad inputs itself (it is public as torch.ops.medgan_fast.*)."""
    WEIGHT_GRAD_OP(*_weight_grad_args().values())
    for changes, message in [({"grad_weight": torch.randn(4, 6, 3, 3).transpose(0, 1)}, "grad_weight must be a"),
                             ({"dim": -5}, "dim = -5 is out of range"),
                             ({"u": torch.randn(5)}, "u must be a contiguous vector of 6"),
                             ({"v": torch.randn(36).double()}, "v must be Float"),
                             ({"sigma": torch.ones(3)}, "sigma must hold one value"),
                             ({"kept": torch.randn(3)}, "kept must have as many elements as grad_weight"),
                             ({"scaled_grad": torch.randn(8, 2)[:, 0]}, "scaled_grad must be a contiguous"),
                             ({"grad_weight": torch.randn(6, 4, 3, 3, dtype=torch.float16)}, "float32 or float64")]:
        with pytest.raises(RuntimeError, match=message):
            WEIGHT_GRAD_OP(*_weight_grad_args(**changes).values())


def test_weight_grad_opcheck(device):
    g = torch.Generator().manual_seed(8)
    for dtype in KERNEL_DTYPES:
        w_case = weight_scaled_case((8, 3, 4, 4), 1, dtype, device, g)
        o_case = output_scaled_case(9, 6, dtype, device, g)
        for grad_weight, sigma, u, v, kept, scaled_grad, _ in (w_case, o_case):
            dim = 1 if scaled_grad is None else 0
            result = torch.library.opcheck(WEIGHT_GRAD_OP.default, (grad_weight, sigma, u, v, dim, kept, scaled_grad))
            assert all(r == "SUCCESS" for r in result.values()), result


# ---------------------------------------------------------------------------------------
# CPU vs CUDA

@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
@pytest.mark.parametrize("n", [0, 1, 3])
def test_cpu_equals_cuda(assert_close, n, dtype, gpu):
    shapes_dims = [((64, 3, 4, 4), 0), ((128, 64, 4, 4), 0), ((64, 32, 4, 4), 1), ((1, 512), 0), ((1000, 3), 0)]
    weights = [torch.randn(s, dtype=dtype) for s, _ in shapes_dims]
    dims = [d for _, d in shapes_dims]
    uvs = [random_uv(w, d) for w, d in zip(weights, dims)]
    cpu = run("kernel", weights, [u for u, _ in uvs], [v for _, v in uvs], dims, n)
    with gpu.running():
        cuda = run("kernel", [gpu.put(w) for w in weights], [gpu.put(u) for u, _ in uvs],
                   [gpu.put(v) for _, v in uvs], dims, n)
    assert gpu.holds(cuda[0])
    for a, b in zip([cuda[0]] + cuda[1] + cuda[2], [cpu[0]] + cpu[1] + cpu[2]):
        assert_close(a.cpu(), b)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_weight_grad_cpu_equals_cuda(assert_close, dtype, gpu):
    g = torch.Generator().manual_seed(9)
    for shape, dim in WEIGHT_GRAD_CASES:
        grad_weight, sigma, u, v, kept, _, _ = weight_scaled_case(shape, dim, dtype, "cpu", g)
        cpu = weight_grad_(grad_weight.clone(), sigma, u, v, dim, kept)
        with gpu.running():
            cuda = weight_grad_(*(gpu.put(t) for t in (grad_weight, sigma, u, v)), dim, gpu.put(kept))
        assert gpu.holds(cuda)
        assert_close(cuda.cpu(), cpu, msg=f"{shape} dim={dim}")
    grad_weight, sigma, u, v, kept, scaled_grad, _ = output_scaled_case(300, 64, dtype, "cpu", g)
    cpu = weight_grad_(grad_weight.clone(), sigma, u, v, 0, kept, scaled_grad)
    with gpu.running():
        cuda = weight_grad_(*(gpu.put(t) for t in (grad_weight, sigma, u, v)), 0, gpu.put(kept), gpu.put(scaled_grad))
    assert_close(cuda.cpu(), cpu)
