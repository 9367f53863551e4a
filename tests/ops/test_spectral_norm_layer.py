"""medgan_fast.ops.spectral_norm.layer (the C++ spectrally normalised Linear/convolution
with its backward) against layer_reference (torch ops through attach_sigma) and against
plain autograd of layer(x, W / (u^T W v))."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medgan_fast.ops.spectral_norm import (
    LINEAR_ARGUMENTS,
    layer,
    layer_reference,
    weight_layout,
)

OP = torch.ops.medgan_fast.spectral_norm_layer.default

# name: (input shape, weight shape, dim, convolution arguments or None for Linear)
CASES = {
    "linear": ((5, 7), (6, 7), 0, None),
    "linear_3d_input": ((2, 3, 7), (6, 7), 0, None),
    "conv2d": ((2, 3, 9, 9), (4, 3, 3, 3), 0, ((2, 2), (1, 1), (1, 1), False, (0, 0), 1)),
    "conv2d_groups_dilation": ((2, 4, 9, 9), (6, 2, 3, 3), 0, ((1, 1), (2, 2), (2, 2), False, (0, 0), 2)),
    "conv_transpose2d": ((2, 4, 5, 5), (4, 3, 4, 4), 1, ((2, 2), (1, 1), (1, 1), True, (1, 1), 1)),
    "conv1d": ((3, 2, 11), (5, 2, 3), 0, ((1,), (0,), (1,), False, (0,), 1)),
}


def make_case(name, dtype=torch.float64, bias=True, seed=0, device="cpu"):
    """(input, weight, bias, sigma, u, v, dim, convolution), input/weight/bias requiring grad;
    sigma = u^T W v as the power iteration would return it."""
    input_shape, weight_shape, dim, convolution = CASES[name]
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(input_shape, generator=g, dtype=torch.float64)
    w = torch.randn(weight_shape, generator=g, dtype=torch.float64)
    p, h, q = weight_layout(weight_shape, dim)
    u = F.normalize(torch.randn(h, generator=g, dtype=torch.float64), dim=0)
    v = F.normalize(torch.randn(p * q, generator=g, dtype=torch.float64), dim=0)
    channels = weight_shape[1] * convolution[5] if convolution and convolution[3] else weight_shape[0]
    b = torch.randn(channels, generator=g, dtype=torch.float64) if bias else None
    sigma = u @ w.movedim(dim, 0).flatten(1) @ v
    to = {"device": device, "dtype": dtype}
    leaf = lambda t: t.to(**to).requires_grad_(True)
    return (leaf(x), leaf(w), None if b is None else leaf(b), sigma.to(**to), u.to(**to), v.to(**to), dim,
            convolution)


def outputs_and_grads(fn, case, scale_weight, seed=1):
    x, w, b, sigma, u, v, dim, convolution = case
    out = fn(x, w, b, sigma, u, v, dim, scale_weight, convolution)
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(out)
    inputs = [t for t in (x, w, b) if t is not None]
    return (out, *torch.autograd.grad(out, inputs, upstream))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("scale_weight", [True, False], ids=["weight_scaled", "output_scaled"])
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_matches_reference(name, dtype, scale_weight, bias):
    case = make_case(name, dtype, bias)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    for ours, expected in zip(outputs_and_grads(layer, case, scale_weight),
                              outputs_and_grads(layer_reference, case, scale_weight)):
        torch.testing.assert_close(ours, expected, **tolerance)


def sigma_from_weight(name, scale_weight):
    """The layer as a function of (input, weight, bias) with sigma = u^T W v recomputed from
    the weight (its value only: the op's backward supplies sigma's gradient), so that finite
    differences see sigma move with W."""
    _, _, _, _, u, v, dim, convolution = make_case(name)

    def fn(x, w, b):
        sigma = (u @ w.movedim(dim, 0).flatten(1) @ v).detach()
        return layer(x, w, b, sigma, u, v, dim, scale_weight, convolution)
    return fn


@pytest.mark.parametrize("scale_weight", [True, False], ids=["weight_scaled", "output_scaled"])
@pytest.mark.parametrize("name", ["linear", "conv2d_groups_dilation", "conv_transpose2d"])
def test_gradcheck_and_gradgradcheck(name, scale_weight):
    x, w, b, *_ = make_case(name)
    fn = sigma_from_weight(name, scale_weight)
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


def test_gradient_equals_plain_autograd():
    """Against torch's autograd of layer(x, W / (u^T W v)), written without our code."""
    x, w, b, sigma, u, v, dim, convolution = make_case("conv2d")
    out = layer(x, w, b, sigma, u, v, dim, False, convolution)
    expected = F.conv2d(x, w / (u @ w.flatten(1) @ v), b, stride=2, padding=1)
    torch.testing.assert_close(out, expected)
    ours = torch.autograd.grad(out.square().sum(), (x, w, b))
    theirs = torch.autograd.grad(expected.square().sum(), (x, w, b))
    for a, e in zip(ours, theirs):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_forward_without_autograd(mode):
    x, w, b, sigma, u, v, dim, convolution = make_case("conv_transpose2d")
    expected = layer_reference(x, w, b, sigma, u, v, dim, True, convolution).detach()
    with getattr(torch, mode)():
        for scale_weight in (True, False):
            out = layer(x, w, b, sigma, u, v, dim, scale_weight, convolution)
            assert not out.requires_grad
            torch.testing.assert_close(out, expected)


def test_only_needed_gradients():
    """Frozen weight and bias: only the input gets a gradient, and the other way round."""
    x, w, b, sigma, u, v, dim, convolution = make_case("conv2d")
    w.requires_grad_(False), b.requires_grad_(False)
    out = layer(x, w, b, sigma, u, v, dim, False, convolution)
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    expected = layer_reference(x, w, b, sigma, u, v, dim, False, convolution)
    torch.testing.assert_close(grad_x, torch.autograd.grad(expected.sum(), x)[0])
    x.requires_grad_(False), w.requires_grad_(True)
    out = layer(x, w, b, sigma, u, v, dim, True, convolution)
    (grad_w,) = torch.autograd.grad(out.sum(), w)
    torch.testing.assert_close(grad_w, torch.autograd.grad(layer_reference(x, w, b, sigma, u, v, dim, True,
                                                                           convolution).sum(), w)[0])


@pytest.mark.parametrize("name", ["linear", "conv2d", "conv_transpose2d"])
def test_opcheck(name):
    for dtype in (torch.float32, torch.float64):
        x, w, b, sigma, u, v, dim, convolution = make_case(name, dtype)
        arguments = convolution or LINEAR_ARGUMENTS
        for scale_weight in (True, False):
            result = torch.library.opcheck(OP, (x, w, b, sigma, u, v, dim, scale_weight, *arguments))
            assert all(r == "SUCCESS" for r in result.values()), result


@pytest.mark.parametrize("change, message", [
    ({"sigma": torch.ones(2, dtype=torch.float64)}, "sigma must be"),
    ({"u": torch.ones(3, dtype=torch.float64)}, "u must be"),
    ({"v": torch.ones(4, dtype=torch.float32)}, "v must be"),
    ({"dim": 2}, "dim must be"),
    ({"w": torch.ones(6, dtype=torch.float64)}, "weight must be"),
    ({"b": torch.ones(6, dtype=torch.float32)}, "bias must be"),
    ({"convolution": ((), (0,), (1,), False, (0,), 1)}, "stride must not be empty"),
    ({"convolution": ((1,), (0,))}, "convolution must be"),
    ({"x": "input"}, "input must be a tensor"),
])
def test_bad_inputs_name_the_argument(change, message):
    x, w, b, sigma, u, v, dim, convolution = make_case("linear")
    values = {"x": x, "w": w, "b": b, "sigma": sigma, "u": u, "v": v, "dim": dim, "convolution": convolution} | change
    with pytest.raises((ValueError, TypeError), match=message):
        layer(values["x"], values["w"], values["b"], values["sigma"], values["u"], values["v"], values["dim"], True,
              values["convolution"])


@pytest.mark.parametrize("scale_weight", [True, False], ids=["weight_scaled", "output_scaled"])
@pytest.mark.parametrize("name", list(CASES))
def test_cpu_equals_cuda(name, scale_weight, gpu):
    cpu = outputs_and_grads(layer, make_case(name, torch.float32), scale_weight)
    with gpu.running():
        cuda = outputs_and_grads(layer, make_case(name, torch.float32, device=gpu.device), scale_weight)
    for a, b in zip(cpu, cuda):
        torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
