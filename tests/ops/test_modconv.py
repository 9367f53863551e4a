"""medgan_fast.ops.modulated_conv2d (ATen convolution between our fused epilogue passes)
against modulated_conv2d_reference (one modulated weight per sample, grouped convolution),
against NVIDIA's stylegan2-ada-pytorch (when its checkout is present), and the emulated
CUDA drivers against the CPU ones."""

from __future__ import annotations

import pytest
import torch

from stylegan2_peer import peer_modules

from medgan_fast.ops.modconv import ACTIVATIONS, LRELU_ALPHA, modulated_conv2d, modulated_conv2d_reference

OP = torch.ops.medgan_fast.modulated_conv2d.default
EPILOGUE = torch.ops.medgan_fast.modconv_epilogue.default
EPILOGUE_BACKWARD = torch.ops.medgan_fast.modconv_epilogue_backward.default

# name: (N, I, O, H, k, up, down)
SHAPES = {
    "3x3": (3, 5, 4, 8, 3, 1, 1),
    "1x1": (2, 6, 3, 7, 1, 1, 1),
    "up": (2, 4, 5, 6, 3, 2, 1),
    "down": (2, 4, 3, 9, 3, 1, 2),
    "up_1x1": (1, 3, 2, 5, 1, 2, 1),
    "one_pixel": (1, 2, 3, 1, 3, 1, 1),
}


def output_size(h, up, down):
    return h * 2 if up == 2 else (h // 2 if down == 2 else h)


def make_case(name, dtype=torch.float64, noise="per_sample", bias=True, seed=0, device="cpu"):
    """(x, weight, styles, noise, bias, up, down) as leaves requiring grad."""
    n, i, o, h, k, up, down = SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    ho = output_size(h, up, down)
    tensors = [torch.randn(n, i, h, h, generator=g), torch.randn(o, i, k, k, generator=g),
               torch.randn(n, i, generator=g) + 1.0,
               None if noise is None else torch.randn(n if noise == "per_sample" else 1, 1, ho, ho, generator=g),
               torch.randn(o, generator=g) if bias else None]
    leaf = lambda t: None if t is None else t.to(device=device, dtype=dtype).requires_grad_(True)
    return (*map(leaf, tensors), up, down)


def outputs_and_grads(fn, case, seed=1, **options):
    x, w, s, noise, b, up, down = case
    out = fn(x, w, s, up=up, down=down, noise=noise, bias=b, **options)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out)
    inputs = [t for t in (x, w, s, noise, b) if t is not None]
    return (out, *torch.autograd.grad(out, inputs, upstream))


OPTIONS = {
    "lrelu": {},
    "lrelu_clamp_gain": {"clamp": 0.8, "gain": 0.5},
    "linear_no_demod": {"activation": "linear", "demodulate": False},
    "linear_clamp": {"activation": "linear", "clamp": 1.0},
}


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("noise", ["per_sample", "shared", None])
@pytest.mark.parametrize("name", list(SHAPES))
def test_matches_reference_float64(name, noise, options):
    case = make_case(name, noise=noise, bias=noise != "shared")
    ours = outputs_and_grads(modulated_conv2d, case, **OPTIONS[options])
    reference = outputs_and_grads(modulated_conv2d_reference, case, **OPTIONS[options])
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", ["3x3", "up", "down"])
def test_float32_within_1e4_of_float64_reference(name):
    ours = outputs_and_grads(modulated_conv2d, make_case(name, torch.float32), clamp=2.0)
    reference = outputs_and_grads(modulated_conv2d_reference, make_case(name, torch.float64), clamp=2.0)
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a, b.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_accumulates_in_float(dtype):
    """The kernels store bf16/fp16 but sum in float: the bias gradient (a sum over N*H*W
    elements) stays within the dtype's rounding of the float32 one, as a float sum would."""
    case = make_case("3x3", dtype, noise=None)
    ours = outputs_and_grads(modulated_conv2d, case)
    reference = outputs_and_grads(modulated_conv2d_reference, make_case("3x3", torch.float32, noise=None))
    for a, b in zip(ours, reference):
        assert a.dtype == dtype
        # bf16 keeps 8 significant bits: relative 2^-8 per rounding, a few roundings deep
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


@pytest.mark.parametrize("name", ["3x3", "up", "down", "up_1x1"])
def test_gradcheck_and_gradgradcheck(name):
    x, w, s, noise, b, up, down = make_case(name)
    fn = lambda x, w, s, noise, b: modulated_conv2d(x, w, s, up=up, down=down, noise=noise, bias=b, clamp=1.5)
    assert torch.autograd.gradcheck(fn, (x, w, s, noise, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, s, noise, b))


def test_path_length_style_double_backward_matches_reference():
    """Path-length regularisation: grad of (J^T y) with create_graph, then its backward."""
    def penalty(fn):
        x, w, s, noise, b, up, down = make_case("up", seed=3)
        out = fn(x, w, s, up=up, noise=noise, bias=b)
        (grad_s,) = torch.autograd.grad((out * torch.ones_like(out)).sum(), s, create_graph=True)
        return torch.autograd.grad(grad_s.square().sum(), (w, b, s))
    for a, b in zip(penalty(modulated_conv2d), penalty(modulated_conv2d_reference)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_only_needed_gradients():
    x, w, s, noise, b, up, down = make_case("3x3")
    x.requires_grad_(False)
    s.requires_grad_(False)
    out = modulated_conv2d(x, w, s, noise=noise.detach(), bias=b)
    grad_w, grad_b = torch.autograd.grad(out.sum(), (w, b))
    ref = modulated_conv2d_reference(x, w, s, noise=noise.detach(), bias=b)
    expected = torch.autograd.grad(ref.sum(), (w, b))
    torch.testing.assert_close(grad_w, expected[0])
    torch.testing.assert_close(grad_b, expected[1])


def test_no_grad_and_channels_last_input():
    x, w, s, noise, b, up, down = make_case("3x3", torch.float32)
    with torch.no_grad():
        ours = modulated_conv2d(x.contiguous(memory_format=torch.channels_last), w, s, noise=noise, bias=b)
        expected = modulated_conv2d_reference(x, w, s, noise=noise, bias=b)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)
    assert not ours.requires_grad


def test_transposed_view_input():
    x, w, s, noise, b, up, down = make_case("3x3", torch.float32)
    x_t = x.detach().transpose(2, 3).contiguous().transpose(2, 3)  # not contiguous
    torch.testing.assert_close(modulated_conv2d(x_t, w, s), modulated_conv2d_reference(x_t, w, s),
                               rtol=1e-4, atol=1e-5)


def test_empty_batch():
    x, w, s, noise, b, up, down = make_case("3x3", torch.float32)
    out = modulated_conv2d(x[:0], w, s[:0], bias=b)
    assert out.shape == (0, 4, 8, 8)


def test_opcheck():
    for name in ("3x3", "up", "down"):
        x, w, s, noise, b, up, down = make_case(name, torch.float32)
        fir = torch.ones(4, 4) / 16 if up == 2 or down == 2 else None
        for args in ((x, w, s, noise, b, fir, True, up, down, w.shape[2] // 2, 1, LRELU_ALPHA, 2 ** 0.5, 1.0),
                     (x, w, s, None, None, fir, False, up, down, w.shape[2] // 2, 0, LRELU_ALPHA, 1.0, 0.0)):
            result = torch.library.opcheck(OP, args)
            assert all(r == "SUCCESS" for r in result.values()), result
    y = torch.randn(2, 3, 5, 5)
    d, noise, bias = torch.rand(2, 3) + 0.5, torch.randn(1, 1, 5, 5), torch.randn(3)
    for args in ((y, d, noise, bias, 1, 0.2, 1.4, 0.5), (y, None, None, None, 0, 0.2, 1.0, 0.0)):
        result = torch.library.opcheck(EPILOGUE, args, test_utils=("test_schema", "test_faketensor"))
        assert all(r == "SUCCESS" for r in result.values()), result
    out = EPILOGUE(y, d, noise, bias, 1, 0.2, 1.4, 0.5)
    result = torch.library.opcheck(EPILOGUE_BACKWARD, (torch.randn_like(y), out, y, d, 1, 1, 0.2, 1.4, 0.5),
                                   test_utils=("test_schema", "test_faketensor"))
    assert all(r == "SUCCESS" for r in result.values()), result


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_torch_compile_fullgraph(backend):
    # inductor: the default backend, which generates code around our ops (the x * s scaling
    # and the FIR filters) and calls them through their fake impls and autograd
    torch._dynamo.reset()
    x, w, s, noise, b, up, down = make_case("up", torch.float32)
    fn = torch.compile(lambda x, w, s, n, b: modulated_conv2d(x, w, s, up=2, noise=n, bias=b, clamp=1.0),
                       fullgraph=True, backend=backend)
    ours = outputs_and_grads(lambda x, w, s, up, down, noise, bias: fn(x, w, s, noise, bias),
                             (x, w, s, noise, b, up, down))
    eager = outputs_and_grads(modulated_conv2d, (x, w, s, noise, b, up, down), clamp=1.0)
    for a, e in zip(ours, eager):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("change, message", [
    ({"x": torch.ones(2, 3)}, "x must be a floating-point"),
    ({"w": torch.ones(4, 6, 3, 3, dtype=torch.float64)}, "weight must be"),
    ({"s": torch.ones(3, 4, dtype=torch.float64)}, "styles must be"),
    ({"s": torch.ones(3, 5)}, "styles must be a torch.float64"),
    ({"noise": torch.ones(2, 1, 8, 8, dtype=torch.float64)}, "noise must be"),
    ({"b": torch.ones(5, dtype=torch.float64)}, "bias must be"),
    ({"up": 3}, "up and down must be"),
    ({"up": 2, "down": 2}, "up and down must be"),
    ({"padding": -1}, "padding must be"),
    ({"activation": "relu"}, "activation must be one of"),
    ({"gain": 0}, "gain must be"),
    ({"clamp": float("inf")}, "clamp must be"),
    ({"demodulate": 1}, "demodulate must be"),
    ({"x": "x"}, "x must be a tensor"),
])
def test_bad_inputs_name_the_argument(change, message):
    x, w, s, noise, b, up, down = make_case("3x3")
    v = {"x": x, "w": w, "s": s, "noise": noise, "b": b, "up": 1, "down": 1, "padding": None, "activation": "lrelu",
         "gain": 1.0, "clamp": None, "demodulate": True} | change
    with pytest.raises((ValueError, TypeError), match=message):
        modulated_conv2d(v["x"], v["w"], v["s"], v["demodulate"], v["up"], v["down"], v["padding"], v["noise"], v["b"],
                         v["activation"], v["gain"], v["clamp"])


@pytest.mark.parametrize("noise", ["per_sample", "shared"])
@pytest.mark.parametrize("name", ["3x3", "up", "down", "one_pixel"])
def test_cpu_equals_cuda(name, noise, gpu):
    cpu = outputs_and_grads(modulated_conv2d, make_case(name, torch.float32, noise=noise), clamp=1.0)
    with gpu.running():
        cuda = outputs_and_grads(modulated_conv2d, make_case(name, torch.float32, noise=noise, device=gpu.device),
                                 clamp=1.0)
    for a, b in zip(cpu, cuda):
        assert gpu.holds(b)
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_bfloat16_on_gpu():
    case = make_case("up", torch.bfloat16, device="cuda")
    ours = outputs_and_grads(modulated_conv2d, case)
    reference = outputs_and_grads(modulated_conv2d_reference, make_case("up", torch.float32, device="cuda"))
    for a, b in zip(ours, reference):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)


# ---------------------------------------------------------------------------------------
# The peer: NVIDIA's stylegan2-ada-pytorch (tests/stylegan2_peer.py).


@pytest.mark.parametrize("fused", [True, False], ids=["grouped", "non_fused"])
@pytest.mark.parametrize("name", ["3x3", "1x1", "up", "down", "up_1x1"])
def test_matches_stylegan2_ada(name, fused):
    networks, bias_act, upfirdn2d = peer_modules()
    x, w, s, noise, b, up, down = [t.detach() if isinstance(t, torch.Tensor) else t for t in make_case(name)]
    peer = networks.modulated_conv2d(x=x, weight=w, styles=s, noise=noise, up=up, down=down, padding=w.shape[2] // 2,
                                     resample_filter=upfirdn2d.setup_filter([1, 3, 3, 1]), demodulate=True,
                                     flip_weight=up == 1, fused_modconv=fused)
    peer = bias_act.bias_act(peer, b, act="lrelu", clamp=1.5, impl="ref")
    ours = modulated_conv2d(x, w, s, up=up, down=down, noise=noise, bias=b, clamp=1.5)
    torch.testing.assert_close(ours, peer, rtol=1e-12, atol=1e-12)
    assert ACTIVATIONS["lrelu"][1] == pytest.approx(bias_act.activation_funcs["lrelu"].def_gain)
