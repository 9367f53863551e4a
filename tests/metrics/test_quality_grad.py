"""Gradients of the image-quality metrics (medgan_fast.metrics.quality).

With x or y requiring grad (and grad mode on) the metrics compute through the ops'
plain-PyTorch references (medgan_fast.ops.metrics._kernel), so autograd gives their
backward; otherwise they run the kernels. Checked here: ``gradcheck`` in float64 on small
images with x and y both requiring grad (piq differentiates both), gradients equal to
piq 0.8.0's for the same arguments (data_range, reduction, non-default parameters, complex
SSIM inputs), ``1 - ssim`` as a loss, and that without a gradient the kernels still run.
"""

from __future__ import annotations

import pytest
import torch

from medgan_fast.metrics import quality
from medgan_fast.ops import metrics as mops

from .test_quality import METRICS, call

WEIGHTS_3 = torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)

# (name, kwargs, (H, W)): small enough for a full float64 gradcheck, at least each metric's
# minimum size (SSIM's 11-tap window, MS-GMSD's 17 px, HaarPSI's 16 px).
GRADCHECK_CASES = [
    ("psnr", {}, (6, 7)),
    ("psnr", {"convert_to_greyscale": True}, (6, 7)),
    ("ssim", {}, (12, 13)),
    ("ssim", {"kernel_size": 5, "kernel_sigma": 1.0, "full": True}, (9, 8)),
    ("ms_ssim", {"kernel_size": 3, "scale_weights": WEIGHTS_3}, (10, 9)),  # 3 scales: 2 * 4 + 1 = 9 px
    ("gmsd", {}, (12, 13)),
    ("ms_gmsd", {}, (17, 18)),
    ("ms_gmsd", {"chromatic": True}, (17, 18)),
    ("mdsi", {}, (12, 13)),
    ("mdsi", {"combination": "mult"}, (12, 13)),
    ("haarpsi", {}, (16, 17)),
    ("haarpsi", {"subsample": False}, (16, 17)),
]


def _case_id(name, kwargs, size):
    return "-".join([name, *kwargs]) + f"-{size[0]}x{size[1]}"


def _channels(kwargs):
    return (3,) if kwargs.get("chromatic") else (1, 3)  # chromatic MS-GMSD needs RGB


GRADCHECK_PARAMS = [pytest.param(name, kwargs, size, channels, id=f"{_case_id(name, kwargs, size)}-{channels}ch")
                    for name, kwargs, size in GRADCHECK_CASES for channels in _channels(kwargs)]


def grad_pair(shape, seed=0, data_range=1.0, complex_parts=False):
    """float64 x in [0.1, 0.9] and y = x plus noise in [0.05, 0.95] (times data_range), both
    requiring grad: away from the range's ends, so gradcheck's steps stay valid inputs."""
    g = torch.Generator().manual_seed(seed)
    shape = (*shape, 2) if complex_parts else shape
    x = 0.1 + 0.8 * torch.rand(shape, generator=g, dtype=torch.float64)
    y = (x + 0.05 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0.05, 0.95)
    return (x * data_range).requires_grad_(), (y * data_range).requires_grad_()


def _outputs(value):
    """ssim(full=True) gives [ssim, cs]: gradcheck and the weighted sums take a tuple."""
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def gradients(fn, x, y, weights, **kwargs):
    """d(sum_i weights_i . output_i)/d(x, y) for the metric's outputs."""
    outputs = _outputs(call(fn, x, y, **kwargs))
    total = sum((o * w).sum() for o, w in zip(outputs, weights))
    return torch.autograd.grad(total, (x, y))


@pytest.mark.parametrize("name, kwargs, size, channels", GRADCHECK_PARAMS)
def test_gradcheck(name, kwargs, size, channels):
    x, y = grad_pair((1, channels, *size), seed=1)

    def metric(x, y):
        return _outputs(call(METRICS[name][0], x, y, reduction="none", **kwargs))

    assert torch.autograd.gradcheck(metric, (x, y))


@pytest.mark.parametrize("name, kwargs, size", [
    ("ssim", {"kernel_size": 5}, (9, 10)),
    ("ms_ssim", {"kernel_size": 3, "scale_weights": WEIGHTS_3}, (10, 9)),
], ids=["ssim", "ms_ssim"])
def test_gradcheck_complex(name, kwargs, size):
    """piq's complex images (N, C, H, W, 2), computed in plain PyTorch."""
    x, y = grad_pair((1, 1, *size), seed=2, complex_parts=True)
    assert torch.autograd.gradcheck(lambda x, y: METRICS[name][0](x, y, reduction="none", **kwargs), (x, y))


# (name, kwargs, channels, (H, W)) against piq: each gradcheck case at 32x33, and more
# non-default parameters.
PIQ_GRAD_CASES = [(name, kwargs, channels, (32, 33)) for name, kwargs, _ in GRADCHECK_CASES
                  if name != "ms_ssim" for channels in _channels(kwargs)]
PIQ_GRAD_CASES += [
    ("ms_ssim", {"kernel_size": 3, "scale_weights": WEIGHTS_3}, 3, (32, 33)),
    ("ms_ssim", {"kernel_size": 7, "kernel_sigma": 1.0, "k1": 0.02, "k2": 0.4}, 1, (97, 100)),  # 5 scales: 97 px
    ("ssim", {"kernel_size": 7, "downsample": False, "k1": 0.02, "k2": 0.05}, 3, (32, 33)),
    ("ms_gmsd", {"t": 100.0, "alpha": 0.3, "scale_weights": torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)},
     3, (32, 33)),
    ("mdsi", {"rho": 0.5, "q": 0.5, "o": 0.5}, 3, (32, 33)),
    ("haarpsi", {"c": 20.0, "alpha": 3.0}, 3, (32, 33)),
]


def check_gradients_match_piq(name, x, y, device, assert_close, **kwargs):
    """Gradients of both inputs equal piq's (piq on the CPU), for a random weighting of the
    metric's values."""
    ours, peer = METRICS[name]
    expected_values = _outputs(call(peer, x, y, **kwargs))
    weights = [torch.rand(v.shape, dtype=torch.float64) + 0.5 for v in expected_values]
    expected = gradients(peer, x, y, weights, **kwargs)
    on_device = [t.detach().to(device).requires_grad_() for t in (x, y)]
    got = gradients(ours, *on_device, [w.to(device) for w in weights], **kwargs)
    data_range = kwargs.get("data_range", 1.0)
    for g, e, which in zip(got, expected, "xy"):
        assert g.device.type == torch.device(device).type
        # Compared as gradients in the images' [0, 1] units (times data_range), whose largest
        # entries are over 100x the table's float64 atol (1e-7), so the comparison bites.
        g, e = g * data_range, e * data_range
        assert e.abs().max() > 1e-5, (name, which, e.abs().max())
        assert_close(g, e, msg=f"d{name}/d{which} {kwargs}")


@pytest.mark.parametrize("reduction, data_range", [("none", 1.0), ("mean", 255.0), ("sum", 1.0)])
@pytest.mark.parametrize("name, kwargs, channels, size", PIQ_GRAD_CASES,
                         ids=[f"{_case_id(n, k, s)}-{c}ch" for n, k, c, s in PIQ_GRAD_CASES])
def test_gradients_match_piq(device, assert_close, name, kwargs, channels, size, reduction, data_range):
    x, y = grad_pair((2, channels, *size), seed=3, data_range=data_range)
    check_gradients_match_piq(name, x, y, device, assert_close, reduction=reduction, data_range=data_range, **kwargs)


@pytest.mark.parametrize("name, kwargs", [
    ("ssim", {"kernel_size": 5, "full": True}),
    ("ssim", {"kernel_size": 3, "data_range": 255.0, "reduction": "sum"}),
    ("ms_ssim", {"kernel_size": 3, "scale_weights": WEIGHTS_3}),
], ids=["ssim-full", "ssim-255-sum", "ms_ssim"])
def test_complex_gradients_match_piq(assert_close, name, kwargs):
    """piq's complex images (N, C, H, W, 2)."""
    x, y = grad_pair((2, 3, 24, 25), seed=4, data_range=kwargs.get("data_range", 1.0), complex_parts=True)
    check_gradients_match_piq(name, x, y, "cpu", assert_close, **kwargs)


def test_one_minus_ssim_is_a_loss(device):
    """(1 - ssim(x, y)).backward() fills x.grad (not zero, finite); y needs no gradient."""
    x = torch.rand(2, 3, 32, 32, device=device, requires_grad=True)
    y = (x.detach() + 0.1 * torch.randn_like(x)).clamp(0, 1)
    loss = 1 - quality.ssim(x, y)
    loss.backward()
    assert x.grad is not None and x.grad.shape == x.shape and x.grad.device.type == device.type
    assert torch.isfinite(x.grad).all() and x.grad.abs().max() > 0
    assert y.grad is None
    # a gradient step on x raises SSIM
    with torch.no_grad():
        better = quality.ssim((x - 100 * x.grad).clamp(0, 1), y)
    assert better > 1 - loss.item()


def test_float16_input_gets_a_float16_gradient():
    """Half inputs are computed in float32; the cast is differentiable."""
    x = torch.rand(1, 1, 32, 32).half().requires_grad_()
    y = torch.rand(1, 1, 32, 32).half()
    (1 - quality.ssim(x, y)).backward()
    assert x.grad.dtype == torch.float16 and x.grad.abs().max() > 0


# metric -> the kernel (torch.ops.medgan_fast.*) and the reference it uses instead
OPS_OF = {"psnr": ("metric_squared_error", "squared_error_reference"), "ssim": ("metric_ssim", "ssim_means_reference"),
          "ms_ssim": ("metric_ssim", "ssim_means_reference"), "gmsd": ("metric_gmsd", "gmsd_deviation_reference"),
          "ms_gmsd": ("metric_gmsd", "gmsd_deviation_reference"), "mdsi": ("metric_mdsi", "mdsi_pooled_reference"),
          "haarpsi": ("metric_haarpsi", "haarpsi_sums_reference")}


class Calls:
    """Counts the calls of one kernel op and one reference function (monkeypatched)."""

    def __init__(self, monkeypatch, name):
        self.kernel = self.reference = 0
        kernel_name, reference_name = OPS_OF[name]
        kernel, reference = getattr(torch.ops.medgan_fast, kernel_name), getattr(mops, reference_name)

        def counted_kernel(*args):
            self.kernel += 1
            return kernel(*args)

        def counted_reference(*args):
            self.reference += 1
            return reference(*args)

        monkeypatch.setattr(torch.ops.medgan_fast, kernel_name, counted_kernel)
        monkeypatch.setattr(mops, reference_name, counted_reference)

    def take(self):
        counts, self.kernel, self.reference = (self.kernel, self.reference), 0, 0
        return counts


@pytest.mark.parametrize("name", list(METRICS))
def test_kernel_runs_unless_a_gradient_is_needed(device, monkeypatch, assert_close, name):
    """No input requiring grad, or grad mode off: the kernel (once per scale for MS-SSIM), no
    reference. x or y requiring grad: the reference, no kernel, and the same value."""
    size = (161, 161) if name == "ms_ssim" else (32, 33)
    x, y = (t.detach().to(device) for t in grad_pair((2, 3, *size), seed=5))
    fn, kernel_runs = METRICS[name][0], 5 if name == "ms_ssim" else 1
    calls = Calls(monkeypatch, name)
    value = call(fn, x, y, reduction="none")
    assert calls.take() == (kernel_runs, 0)
    assert not value.requires_grad
    with torch.no_grad():
        call(fn, x.clone().requires_grad_(), y.clone().requires_grad_(), reduction="none")
    assert calls.take() == (kernel_runs, 0)
    for needs in ("x", "y"):
        differentiable = call(fn, x.clone().requires_grad_(needs == "x"), y.clone().requires_grad_(needs == "y"),
                              reduction="none")
        kernel_calls, reference_calls = calls.take()
        assert kernel_calls == 0 and reference_calls >= 1, (needs, kernel_calls, reference_calls)
        assert differentiable.requires_grad
        assert_close(differentiable.detach(), value, msg=f"{name}: reference path with {needs} requiring grad")
