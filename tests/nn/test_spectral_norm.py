"""medgan_fast.nn.spectral_norm against torch.nn.utils.parametrizations.spectral_norm.

Both draw u and v the same way, so the same ``torch.manual_seed`` gives the same initial
buffers; every test builds the two from one seed and compares, step by step, what a GAN
discriminator sees: outputs of a real and a fake batch, the sigma each forward used, the
gradients of one backward through both, and the u/v buffers (SGD, lr 1e-3).

Our layers scale either the output or the weight by 1/sigma; ``path`` tests force each one
(monkeypatching the size estimate) and a spy on ``_scales_weight`` records which ran.

Run as a script (``python tests/nn/test_spectral_norm.py --ddp OUT``), this file is the DDP
worker of :func:`test_ddp_two_processes_match_torch`.
"""

from __future__ import annotations

import copy
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

from medgan_fast.nn import SpectralNorm, fuse_spectral_norm, spectral_norm

# The module itself (medgan_fast.nn's attribute `spectral_norm` is the function).
sn_module = importlib.import_module("medgan_fast.nn.spectral_norm")

REPO = Path(__file__).resolve().parents[2]
DTYPES = [torch.float32, torch.float64]

# Tolerances. The issue asks for torch's results within 1e-5 in float32 (the table's float32
# rtol, 1e-4, is looser) and to rounding in float64 (1e-12). "Relative" is to the tensor's
# largest magnitude, with two allowances for what is float rounding and not a difference:
# - float32: plus twice torch's own float32 error, measured against a float64 copy of torch's
#   model trained on the same data. A bias gradient sums thousands of cancelling terms, so
#   torch's float32 result is itself off by more than 1e-5 of its size (ours is nearer float64).
# - gradients: at least REL x the model's largest gradient that step. A conv bias followed by
#   BatchNorm has a gradient of exactly 0 in exact arithmetic: both sides are rounding noise.
REL = {torch.float32: 1e-5, torch.float64: 1e-12}


def max_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    if expected.numel() == 0:
        return 0.0
    return (actual.detach().cpu().double() - expected.detach().cpu().double()).abs().max().item()


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, msg: str = "", rel: float | None = None,
                     floor: float = 0.0, slack: float = 0.0):
    """max|actual - expected| <= rel * max(max|expected|, floor) + slack; integers exactly."""
    assert actual.shape == expected.shape, f"{msg}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{msg}: dtype {actual.dtype} != {expected.dtype}"
    if not expected.is_floating_point():
        assert torch.equal(actual.cpu(), expected.cpu()), msg
        return
    rel = REL[expected.dtype] if rel is None else rel
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    err = max_error(actual, expected)
    bound = rel * max(scale, floor) + slack
    assert math.isfinite(err) and err <= bound, (f"{msg}: max error {err:.3g} > {bound:.3g} "
                                                 f"(rel {rel:g}, scale {scale:.3g}, floor {floor:.3g}, slack {slack:.3g})")


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: with several threads, OpenMP barriers dominate (10x slower
    on a busy 2-core machine). tests/ops/test_spectral_norm.py tests the kernel's thread counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------
# Helpers

def make_pair(factory, dtype=torch.float32, device="cpu", apply=None, **kwargs):
    """(ours, torch's) from one module initialisation and one seed for u, v."""
    torch.manual_seed(0)
    base = factory().to(device, dtype)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    apply = apply or (lambda model, sn: sn(model, **kwargs))
    torch.manual_seed(1)
    ours = apply(ours, spectral_norm)
    torch.manual_seed(1)
    theirs = apply(theirs, torch_spectral_norm)
    return ours, theirs


def sn_layers(model: nn.Module):
    """The parametrization lists of every spectrally normalised tensor with u/v buffers."""
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for chain in module.parametrizations.values():
                if hasattr(chain[0], "_u"):
                    yield chain


def as_matrix(weight: torch.Tensor, dim: int) -> torch.Tensor:
    others = [d for d in range(weight.dim()) if d != dim]
    return weight.permute(dim, *others).reshape(weight.shape[dim], -1)


@torch.no_grad()
def sigmas_from_buffers(model: nn.Module) -> list[torch.Tensor]:
    """torch's sigma = vdot(u, mv(W_mat, v)) from the current buffers: what the last forward used."""
    return [torch.vdot(chain[0]._u, torch.mv(as_matrix(chain.original, chain[0].dim), chain[0]._v))
            for chain in sn_layers(model)]


def make_batches(shape, steps, dtype, device, seed=10):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype),
             torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)) for _ in range(steps)]


def gan_loss(out_real, out_fake):
    return F.softplus(-out_real).mean() + F.softplus(out_fake).mean()


def train(model, batches, lr=1e-3):
    """SGD steps of a discriminator: model(real), model(fake), one backward. Per step:
    outputs, the sigmas after each forward, gradients, and the state after the step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    records = []
    for real, fake in batches:
        opt.zero_grad()
        out_real = model(real)
        sigma_real = sigmas_from_buffers(model)
        out_fake = model(fake)
        sigma_fake = sigmas_from_buffers(model)
        gan_loss(out_real, out_fake).backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        opt.step()
        records.append({"out_real": out_real.detach().clone(), "out_fake": out_fake.detach().clone(),
                        "sigma_real": sigma_real, "sigma_fake": sigma_fake, "grads": grads,
                        "state": {k: v.clone() for k, v in model.state_dict().items()}})
    return records


def _flatten(record):
    """(name, tensor, is_gradient) for everything a step recorded."""
    items = [("output (real)", record["out_real"], False), ("output (fake)", record["out_fake"], False)]
    for key in ["sigma_real", "sigma_fake"]:
        items += [(f"{key} layer {k}", x, False) for k, x in enumerate(record[key])]
    items += [(f"grad {name}", g, True) for name, g in record["grads"].items()]
    items += [(f"state {name}", v, False) for name, v in record["state"].items()]
    return items


def compare_records(ours, theirs, msg="", truth=None, rel=None):
    """Step by step, ours within tolerance of torch's; `truth` (torch's model in float64) sets
    the float32 slack."""
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        tag = f"{msg} step {step}"
        items_a, items_b = _flatten(a), _flatten(b)
        assert [n for n, _, _ in items_a] == [n for n, _, _ in items_b], tag
        items_t = _flatten(truth[step]) if truth is not None else [(n, None, g) for n, _, g in items_b]
        grad_scale = max([g.abs().max().item() for _, g, is_grad in items_b if is_grad and g.numel()] or [0.0])
        for (name, x, is_grad), (_, y, _), (_, t, _) in zip(items_a, items_b, items_t):
            slack = 2 * max_error(y, t) if t is not None and y.is_floating_point() else 0.0
            assert_rel_close(x, y, f"{tag} {name}", rel, floor=grad_scale if is_grad else 0.0, slack=slack)


def train_and_compare(ours, theirs, batches, msg=""):
    """Trains both (and, for float32, a float64 copy of torch's as the measure of its rounding)
    on `batches` and compares every step; returns (ours' records, torch's records)."""
    truth = None
    if next(theirs.parameters()).dtype == torch.float32:
        truth_model = copy.deepcopy(theirs).double()
        truth = train(truth_model, [tuple(x.double() if x.is_floating_point() else x for x in pair)
                                    for pair in batches])
    ours_records, theirs_records = train(ours, batches), train(theirs, batches)
    compare_records(ours_records, theirs_records, msg, truth)
    return ours_records, theirs_records


def assert_same_state(ours: nn.Module, theirs: nn.Module, msg="", rel=None):
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b), msg
    for name in b:
        assert_rel_close(a[name], b[name], f"{msg} {name}", rel)


class Spy:
    def __init__(self):
        self.paths: list[str] = []      # per scaled-layer forward: "output" or "weight"
        self.sigmas: list[torch.Tensor] = []  # per SN forward: the sigma our layer used
        self.calls: list[int] = []      # per power_iteration_ call: number of weights


@pytest.fixture
def spy(monkeypatch) -> Spy:
    """Records which scaling path each layer took, the sigma it used, and the power iterations."""
    record = Spy()
    iterate, scales_weight, power = SpectralNorm._iterate, sn_module._scales_weight, sn_module._power_iteration

    def iterate_spy(self, weight):
        sigma, u, v = iterate(self, weight)
        record.sigmas.append(sigma.detach().clone())
        return sigma, u, v

    def scales_weight_spy(module, input, weight):
        chosen = scales_weight(module, input, weight)
        record.paths.append("weight" if chosen else "output")
        return chosen

    def power_spy(weights, *args, **kwargs):
        record.calls.append(len(weights))
        return power(weights, *args, **kwargs)

    monkeypatch.setattr(SpectralNorm, "_iterate", iterate_spy)
    monkeypatch.setattr(sn_module, "_scales_weight", scales_weight_spy)
    monkeypatch.setattr(sn_module, "_power_iteration", power_spy)  # what forwards call
    return record


def force_path(monkeypatch, path: str):
    """Makes every layer scale its output ("output") or its weight ("weight")."""
    estimate = 0.0 if path == "output" else math.inf
    monkeypatch.setattr(sn_module, "_estimated_output_numel", lambda module, input: estimate)


# name: (factory, spectral_norm kwargs, small input (output scaled), large input (weight scaled))
LAYERS = {
    "linear": (lambda: nn.Linear(12, 20), {}, (1, 12), (32, 12)),
    "linear_no_bias": (lambda: nn.Linear(12, 20, bias=False), {}, (1, 12), (32, 12)),
    "linear_sequence_dim1": (lambda: nn.Linear(12, 20), {"dim": 1}, (1, 2, 12), (4, 8, 12)),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1), {}, (1, 4, 6), (8, 4, 16)),
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), {}, (1, 3, 5, 5), (4, 3, 16, 16)),
    "conv2d_groups_reflect": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, groups=2, padding_mode="reflect"),
                              {}, (1, 4, 3, 3), (2, 4, 12, 12)),
    "conv3d_no_bias": (lambda: nn.Conv3d(2, 4, 3, padding=1, bias=False), {}, (1, 2, 3, 3, 3), (2, 2, 6, 6, 6)),
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, padding=1), {}, (1, 2, 3, 3, 3), (2, 2, 6, 6, 6)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), {}, (1, 8, 2, 2), (4, 8, 8, 8)),
    "conv_transpose2d_dim0": (lambda: nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), {"dim": 0},
                              (1, 8, 2, 2), (4, 8, 8, 8)),
    "conv_transpose1d_groups": (lambda: nn.ConvTranspose1d(6, 4, 3, stride=2, groups=2), {}, (1, 6, 2), (4, 6, 16)),
}


# ---------------------------------------------------------------------------------------
# One layer: init, several steps with two forwards each, both scaling paths

def test_same_seed_gives_torch_buffers(device):
    for name, (factory, kwargs, _, _) in LAYERS.items():
        ours, theirs = make_pair(factory, device=device, **kwargs)
        assert list(ours.state_dict()) == list(theirs.state_dict()), name
        assert_same_state(ours, theirs, name)
        assert isinstance(ours.parametrizations.weight[0], SpectralNorm)
        assert isinstance(ours, type(factory()))  # still a Linear / Conv for isinstance checks


@pytest.mark.parametrize("n_power_iterations, dtype", [(1, torch.float32), (2, torch.float32), (1, torch.float64)],
                         ids=["n1-float32", "n2-float32", "n1-float64"])
@pytest.mark.parametrize("path", ["output", "weight"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_training_matches_torch(device, monkeypatch, spy, layer, path, n_power_iterations, dtype):
    factory, kwargs, small, large = LAYERS[layer]
    force_path(monkeypatch, path)
    ours, theirs = make_pair(factory, dtype, device, n_power_iterations=n_power_iterations, **kwargs)
    batches = make_batches(small if path == "output" else large, 3, dtype, device)
    spy.sigmas.clear()
    _, theirs_records = train_and_compare(ours, theirs, batches, f"{layer} {path} n={n_power_iterations}")
    assert spy.paths == [path] * 6
    # The sigma our layer divided by (the kernel's) is torch's u^T W v of the same forward.
    torch_sigmas = [r[key][0] for r in theirs_records for key in ("sigma_real", "sigma_fake")]
    assert len(spy.sigmas) == len(torch_sigmas) == 6
    for k, (a, b) in enumerate(zip(spy.sigmas, torch_sigmas)):
        assert_rel_close(a, b, f"{layer} forward {k}: sigma used")


@pytest.mark.parametrize("layer", list(LAYERS))
def test_layer_scales_the_smaller_of_output_and_weight(device, spy, layer):
    """Without forcing: a batch of one scales the output, a large batch the weight; both match torch."""
    factory, kwargs, small, large = LAYERS[layer]
    for shape, expected in [(small, "output"), (large, "weight")]:
        spy.paths.clear()
        ours, theirs = make_pair(factory, device=device, **kwargs)
        train_and_compare(ours, theirs, make_batches(shape, 2, torch.float32, device), f"{layer} {shape}")
        assert spy.paths == [expected] * 4, (shape, spy.paths)


@pytest.mark.parametrize("clamped", [False, True])
@pytest.mark.parametrize("path", ["output", "weight"])
def test_custom_eps(device, monkeypatch, spy, path, clamped):
    """eps = 1e-3, and eps = 1.2 x sigma(W): above ||W v|| and ||W^T u||, so every normalisation
    divides by eps (u, v shrink each iteration), as torch's do."""
    force_path(monkeypatch, path)
    for layer in ["linear", "conv2d", "conv_transpose2d"]:
        factory, kwargs, small, large = LAYERS[layer]
        eps = 1e-3
        if clamped:
            probe, _ = make_pair(factory, device=device, **kwargs)
            chain = probe.parametrizations.weight
            eps = 1.2 * torch.linalg.matrix_norm(as_matrix(chain.original.detach(), chain[0].dim), 2).item()
        ours, theirs = make_pair(factory, eps=eps, **kwargs, device=device)
        assert ours.parametrizations.weight[0].eps == eps
        u_norm = torch.linalg.vector_norm(ours.parametrizations.weight[0]._u).item()
        assert (u_norm < 0.9) if clamped else u_norm == pytest.approx(1.0, abs=1e-6)
        batches = make_batches(small if path == "output" else large, 3, torch.float32, device)
        train_and_compare(ours, theirs, batches, f"{layer} eps={eps}")
    assert set(spy.paths) == {path}


@pytest.mark.parametrize("path", ["output", "weight"])
@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv2d_groups_reflect", "conv_transpose2d"])
def test_gradient_penalty_matches_torch(device, monkeypatch, spy, layer, path):
    """Double backward (an R1 / WGAN-GP penalty, ||d D(x) / d x||^2, differentiated again):
    input and weight gradients equal torch's."""
    factory, kwargs, small, large = LAYERS[layer]
    force_path(monkeypatch, path)
    ours, theirs = make_pair(factory, torch.float64, device, **kwargs)
    x = torch.randn(small if path == "output" else large, dtype=torch.float64, device=device)
    grads = []
    for model in (ours, theirs):
        real = x.clone().requires_grad_(True)
        out = model(real)
        (grad_real,) = torch.autograd.grad(out.square().sum(), real, create_graph=True)
        penalty = grad_real.square().sum()
        grads.append(torch.autograd.grad(penalty, [p for _, p in sorted(model.named_parameters())]))
    assert spy.paths == [path]
    for a, b in zip(*grads):
        assert_rel_close(a, b, f"{layer} {path} penalty gradient")


def test_conv_transpose_output_size(device, monkeypatch):
    for path in ["output", "weight"]:
        force_path(monkeypatch, path)
        ours, theirs = make_pair(lambda: nn.ConvTranspose2d(4, 3, 3, stride=2), device=device)
        x = torch.randn(2, 4, 5, 5, device=device)
        a, b = ours(x, output_size=[12, 12]), theirs(x, output_size=[12, 12])
        assert a.shape == (2, 3, 12, 12)
        assert_rel_close(a, b, path)


# ---------------------------------------------------------------------------------------
# Unbatched inputs and autocast: torch's layers take both; these fail against
# medgan_fast/nn/spectral_norm.py as of this writing (bugs, not rounding).

@pytest.mark.parametrize("path", ["output", "weight"])
@pytest.mark.parametrize("factory, shape", [
    (lambda: nn.Conv2d(3, 4, 3), (3, 6, 6)),          # output 4 x 4 x 4: bias added along the wrong dim
    (lambda: nn.Conv2d(3, 4, 3), (3, 9, 9)),
    (lambda: nn.Conv1d(3, 5, 3), (3, 7)),
    (lambda: nn.ConvTranspose2d(3, 4, 3), (3, 2, 2)),
], ids=["conv2d_square", "conv2d", "conv1d", "conv_transpose2d"])
def test_unbatched_input_matches_torch(device, monkeypatch, path, factory, shape):
    """Conv layers accept (C, *spatial) inputs; the bias must be added along C, not broadcast as
    (1, C, 1, ...) against an output with no batch dimension."""
    force_path(monkeypatch, path)
    ours, theirs = make_pair(factory, device=device)
    x = torch.randn(shape, device=device)
    assert_rel_close(ours(x), theirs(x), f"unbatched {shape} {path}")


@pytest.mark.parametrize("path", ["output", "weight"])
@pytest.mark.parametrize("layer", ["linear", "conv2d", "linear_no_bias"])
def test_autocast_bf16_matches_torch(device, monkeypatch, path, layer):
    """Under autocast a layer returns the autocast dtype (bf16), as torch's does; adding the
    float32 bias after the bf16 convolution / matmul must not promote the output to float32."""
    factory, kwargs, small, large = LAYERS[layer]
    force_path(monkeypatch, path)
    ours, theirs = make_pair(factory, device=device, **kwargs)
    x = torch.randn(small if path == "output" else large, device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16):
        a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype, f"autocast output dtype {a.dtype}, torch's {b.dtype}"
    assert_rel_close(a.float(), b.float(), layer, rel=2e-2)  # bf16 rounding in different places


# ---------------------------------------------------------------------------------------
# eval mode, module.weight, state_dict

@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv_transpose2d", "conv_transpose1d_groups"])
def test_eval_mode_does_not_iterate(device, layer):
    factory, kwargs, small, large = LAYERS[layer]
    ours, theirs = make_pair(factory, device=device, **kwargs)
    batches = make_batches(large, 1, torch.float32, device)
    train(ours, batches)
    train(theirs, batches)
    ours.eval()
    theirs.eval()
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    for shape in [small, large]:
        x = torch.randn(shape, device=device, requires_grad=True)
        a, b = ours(x), theirs(x)
        assert_rel_close(a, b, f"eval {shape}")
        ga = torch.autograd.grad(a.square().sum(), [x, ours.parametrizations.weight.original])
        gb = torch.autograd.grad(b.square().sum(), [x, theirs.parametrizations.weight.original])
        for g, h in zip(ga, gb):
            assert_rel_close(g, h, f"eval grad {shape}")
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), f"eval forward changed {k}"
    assert_rel_close(ours.weight, theirs.weight, "eval module.weight")
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), f"reading module.weight in eval changed {k}"
    # Back to training: iterations resume, as torch's.
    ours.train()
    theirs.train()
    train_and_compare(ours, theirs, batches, "train again")
    assert not torch.equal(ours.state_dict()["parametrizations.weight.0._u"],
                           before["parametrizations.weight.0._u"])


@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv_transpose2d"])
def test_module_weight_is_w_over_sigma(device, layer):
    factory, kwargs, _, _ = LAYERS[layer]
    ours, theirs = make_pair(factory, device=device, **kwargs)
    for mode in ["train", "eval"]:
        getattr(ours, mode)()
        getattr(theirs, mode)()
        a, b = ours.weight, theirs.weight  # in training mode, one power iteration each
        assert_rel_close(a, b, mode)
        assert_same_state(ours, theirs, mode)
        p = ours.parametrizations.weight
        sigma = torch.vdot(p[0]._u, torch.mv(as_matrix(p.original, p[0].dim), p[0]._v))
        assert_rel_close(a, p.original / sigma, f"{mode}: W / sigma")
        # u^T W v <= ||W||_2, so W / sigma has a spectral norm >= 1; 16 iterations are close.
        assert 1 - 1e-5 <= torch.linalg.matrix_norm(as_matrix(a.detach(), p[0].dim), 2).item() < 1.1


def test_assigning_weight_sets_the_original(device):
    ours, theirs = make_pair(LAYERS["conv2d"][0], device=device)
    new = torch.randn_like(ours.parametrizations.weight.original)
    ours.weight = new.clone()
    theirs.weight = new.clone()
    assert torch.equal(ours.parametrizations.weight.original, new)
    x = torch.randn(2, 3, 8, 8, device=device)
    assert_rel_close(ours(x), theirs(x), "after assignment")
    assert_same_state(ours, theirs)


@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv_transpose2d", "conv3d"])
def test_state_dict_keys_and_round_trip(device, layer):
    factory, kwargs, _, large = LAYERS[layer]
    ours, theirs = make_pair(factory, device=device, **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert {"parametrizations.weight.original", "parametrizations.weight.0._u",
            "parametrizations.weight.0._v"} <= set(ours.state_dict())
    batches = make_batches(large, 2, torch.float32, device)
    train(ours, batches[:1])
    train(theirs, batches[:1])

    # ours -> torch's and torch's -> ours, into modules built from other seeds.
    torch.manual_seed(5)
    theirs_loaded = torch_spectral_norm(factory().to(device), **kwargs)
    torch.manual_seed(6)
    ours_loaded = spectral_norm(factory().to(device), **kwargs)
    assert not torch.equal(ours_loaded.parametrizations.weight.original, ours.parametrizations.weight.original)
    theirs_loaded.load_state_dict(ours.state_dict())
    ours_loaded.load_state_dict(theirs.state_dict())
    for k, v in ours.state_dict().items():
        assert torch.equal(theirs_loaded.state_dict()[k], v), k
    for k, v in theirs.state_dict().items():
        assert torch.equal(ours_loaded.state_dict()[k], v), k
    # Each loaded copy continues exactly where its source was.
    next_batches = batches[1:]
    train_and_compare(ours_loaded, copy.deepcopy(theirs), next_batches, "torch -> ours")
    train_and_compare(copy.deepcopy(ours), theirs_loaded, next_batches, "ours -> torch")


# ---------------------------------------------------------------------------------------
# 1-D weights and modules without a fast path

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["batchnorm_weight", "linear_bias", "layernorm_weight"])
def test_one_dimensional_weight(device, dtype, case):
    def factory():
        module = {"batchnorm_weight": lambda: nn.BatchNorm1d(6), "linear_bias": lambda: nn.Linear(5, 6),
                  "layernorm_weight": lambda: nn.LayerNorm(6)}[case]()
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(torch.randn_like(p))
        return module

    name = "bias" if case == "linear_bias" else "weight"
    torch.manual_seed(0)
    base = factory().to(device, dtype)
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(1)
    spectral_norm(ours, name=name)
    rng_after_ours = torch.get_rng_state()
    torch.manual_seed(1)
    torch_spectral_norm(theirs, name=name)
    assert torch.equal(rng_after_ours, torch.get_rng_state())  # neither draws u, v for a 1-D weight
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert not any(k.endswith("_u") for k in ours.state_dict())
    shape = (4, 5) if case == "linear_bias" else (4, 6)
    batches = make_batches(shape, 3, dtype, device)
    train_and_compare(ours, theirs, batches, case)
    ours.eval()
    theirs.eval()
    value = getattr(ours, name)
    assert_rel_close(value, getattr(theirs, name), "eval")
    assert_rel_close(value, F.normalize(getattr(ours.parametrizations, name).original, dim=0), "normalised")


@pytest.mark.parametrize("name", ["weight", "bias"])
def test_one_dimensional_weight_below_eps(device, name):
    """||w|| < eps: w / eps, as F.normalize and torch's; a zero weight stays zero."""
    for scale in [1e-3, 0.0]:
        module = nn.BatchNorm1d(5).to(device)
        with torch.no_grad():
            getattr(module, name).copy_(torch.randn(5) * scale)
        ours, theirs = copy.deepcopy(module), copy.deepcopy(module)
        spectral_norm(ours, name=name, eps=0.1)
        torch_spectral_norm(theirs, name=name, eps=0.1)
        expected = getattr(module, name).detach() / 0.1
        assert torch.equal(getattr(ours, name), getattr(theirs, name))
        torch.testing.assert_close(getattr(ours, name).detach(), expected, rtol=1e-6, atol=0.0)


class CustomKernel(nn.Module):
    """A layer whose 3-D parameter is not called ``weight``."""

    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(3, 4, 5))

    def forward(self, x):
        return torch.einsum("ncl,ocl->no", x, self.kernel)


class BilinearPair(nn.Bilinear):
    """nn.Bilinear (3-D weight) taking its two inputs concatenated."""

    def __init__(self):
        super().__init__(3, 4, 5)

    def forward(self, x):
        return super().forward(x[:, :3], x[:, 3:])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("factory, kwargs, make_input", [
    (lambda: nn.Embedding(10, 6), {}, lambda g, dt: torch.randint(0, 10, (4, 3), generator=g)),
    (BilinearPair, {}, lambda g, dt: torch.randn(4, 7, generator=g, dtype=torch.float64).to(dt)),
    (CustomKernel, {"name": "kernel", "dim": 1}, lambda g, dt: torch.randn(2, 4, 5, generator=g,
                                                                          dtype=torch.float64).to(dt)),
], ids=["embedding", "bilinear", "custom_name_dim1"])
def test_modules_without_a_fast_path(device, spy, factory, kwargs, make_input, dtype):
    """Other modules (any parameter name, any dim) form W / sigma exactly as torch's does."""
    ours, theirs = make_pair(factory, dtype, device, **kwargs)
    g = torch.Generator().manual_seed(3)
    batches = [(make_input(g, dtype).to(device), make_input(g, dtype).to(device)) for _ in range(3)]
    train_and_compare(ours, theirs, batches, factory.__name__)
    assert spy.paths == []  # none of these took the Linear/Conv path


def test_bf16_weights(device):
    """bf16 layers run the reference power iteration; results within bf16 rounding of torch's."""
    for layer in ["linear", "conv2d"]:
        factory, kwargs, small, large = LAYERS[layer]
        ours, theirs = make_pair(factory, torch.bfloat16, device, **kwargs)
        assert_same_state(ours, theirs, rel=1e-2)
        for shape in [small, large]:
            x = torch.randn(shape, device=device, dtype=torch.bfloat16)
            a, b = ours(x), theirs(x)
            assert a.dtype == torch.bfloat16
            assert_rel_close(a, b, layer, rel=3e-2)  # bf16: 8 bits of mantissa, rounded in different places
        assert_same_state(ours, theirs, rel=1e-2)


# ---------------------------------------------------------------------------------------
# remove_parametrizations, errors

@pytest.mark.parametrize("leave_parametrized", [True, False])
@pytest.mark.parametrize("layer", ["linear", "conv2d", "conv_transpose2d"])
def test_remove_parametrizations_leaves_a_plain_layer(device, layer, leave_parametrized):
    factory, kwargs, small, large = LAYERS[layer]
    ours, theirs = make_pair(factory, device=device, **kwargs)
    batches = make_batches(large, 1, torch.float32, device)
    train(ours, batches)
    train(theirs, batches)
    parametrize.remove_parametrizations(ours, "weight", leave_parametrized=leave_parametrized)
    parametrize.remove_parametrizations(theirs, "weight", leave_parametrized=leave_parametrized)
    assert not parametrize.is_parametrized(ours)
    assert isinstance(ours, type(factory())) and isinstance(ours.weight, nn.Parameter)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert set(ours.state_dict()) == {"weight", "bias"}
    assert_same_state(ours, theirs)
    plain = factory().to(device)
    plain.load_state_dict(ours.state_dict())
    for shape in [small, large]:
        x = torch.randn(shape, device=device)
        out = ours(x)
        assert torch.equal(out, plain(x))  # exactly the plain layer's forward
        assert_rel_close(out, theirs(x), f"removed {shape}")
        out.sum().backward()
        assert ours.weight.grad is not None
    # And spectral norm can be applied again.
    theirs_again = copy.deepcopy(theirs)
    torch.manual_seed(2)
    spectral_norm(ours, **kwargs)
    torch.manual_seed(2)
    torch_spectral_norm(theirs_again, **kwargs)
    train_and_compare(ours, theirs_again, batches, "re-applied")


@pytest.mark.parametrize("factory, kwargs, keyword", [
    (lambda: nn.Linear(3, 4), {"name": "nonexistent"}, "nonexistent"),
    (lambda: nn.Linear(3, 4), {"name": "training"}, "training"),
    (lambda: nn.Linear(3, 4), {"dim": 2}, "dim"),
    (lambda: nn.Linear(3, 4), {"dim": -3}, "dim"),
    (lambda: nn.Conv2d(3, 4, 3), {"dim": 4}, "dim"),
    (lambda: nn.BatchNorm1d(3), {"dim": 1}, "dim"),
    (lambda: nn.Linear(3, 4), {"n_power_iterations": 0}, "n_power_iterations"),
    (lambda: nn.Conv2d(3, 4, 3), {"n_power_iterations": -1}, "n_power_iterations"),
])
def test_errors_match_torch(factory, kwargs, keyword):
    with pytest.raises(Exception) as theirs:
        torch_spectral_norm(factory(), **kwargs)
    with pytest.raises(theirs.type, match=keyword):
        spectral_norm(factory(), **kwargs)


# ---------------------------------------------------------------------------------------
# fuse_spectral_norm on a DCGAN-like discriminator

def discriminator():
    """DCGAN discriminator for 32 x 32 images (Radford et al. 2016), narrow."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(8, 16, 4, 2, 1), nn.BatchNorm2d(16), nn.LeakyReLU(0.2),
        nn.Conv2d(16, 32, 4, 2, 1), nn.BatchNorm2d(32), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 1, 4, 1, 0), nn.Flatten(),
    )


def normalise_discriminator(model, sn):
    """Spectral norm on every conv; the last with 2 iterations (a second fused group)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs[:-1]:
        sn(conv)
    sn(convs[-1], n_power_iterations=2)
    return model


def discriminator_trio(device, dtype=torch.float32):
    """(ours fused, ours unfused, torch's) from one initialisation and seed."""
    fused, theirs = make_pair(discriminator, dtype, device, apply=normalise_discriminator)
    unfused = copy.deepcopy(fused)
    assert fuse_spectral_norm(fused) is fused
    return fused, unfused, theirs


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fused_equals_unfused_equals_torch(device, spy, dtype):
    fused, unfused, theirs = discriminator_trio(device, dtype)
    batches = make_batches((4, 3, 32, 32), 2, dtype, device)
    spy.calls.clear()
    fused_records, _ = train_and_compare(fused, copy.deepcopy(theirs), batches, "fused vs torch")
    # One call per group (3 convs with 1 iteration, 1 with 2) per forward, none by the layers.
    assert spy.calls == [3, 1] * 4
    assert spy.paths == ["weight", "weight", "output", "output"] * 4  # early convs: weight; late: output
    spy.calls.clear()
    unfused_records, _ = train_and_compare(unfused, theirs, batches, "unfused vs torch")
    assert spy.calls == [1] * 4 * 4
    if device.type == "cpu":  # one fused call computes each layer exactly as its own call
        for a, b in zip(fused_records, unfused_records):
            for key in ["out_real", "out_fake"]:
                assert torch.equal(a[key], b[key]), key
            for k in b["state"]:
                assert torch.equal(a["state"][k], b["state"][k]), k
    else:
        compare_records(fused_records, unfused_records, "fused vs unfused")


def test_fused_eval_mode(device, spy):
    fused, _, theirs = discriminator_trio(device)
    batches = make_batches((4, 3, 32, 32), 1, torch.float32, device)
    train(fused, batches)
    train(theirs, batches)
    fused.eval()
    theirs.eval()
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    x = torch.randn(5, 3, 32, 32, device=device)
    spy.calls.clear()
    assert_rel_close(fused(x), theirs(x), "eval")
    assert spy.calls == [4]  # one group: no iterations for anyone
    for k, v in fused.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_fuse_twice_registers_one_hook(device, spy):
    fused, _, theirs = discriminator_trio(device)
    hooks = len(fused._forward_pre_hooks)
    fuse_spectral_norm(fused)
    fuse_spectral_norm(fused)
    assert len(fused._forward_pre_hooks) == hooks == 1
    batches = make_batches((4, 3, 32, 32), 2, torch.float32, device)
    spy.calls.clear()
    train_and_compare(fused, theirs, batches, "fused twice")
    assert spy.calls == [3, 1] * 4  # not twice per forward


def test_shared_layer_called_twice_per_forward(device):
    """A layer used twice in one forward iterates twice, fused or not, as torch's."""
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(6, 6)
            self.b = nn.Linear(6, 1)

        def forward(self, x):
            return self.b(F.leaky_relu(self.a(F.leaky_relu(self.a(x), 0.2)), 0.2))

    def apply(model, sn):
        sn(model.a)
        sn(model.b)
        return model

    ours, theirs = make_pair(Twice, device=device, apply=apply)
    fuse_spectral_norm(ours)
    batches = make_batches((3, 6), 3, torch.float32, device)
    train_and_compare(ours, theirs, batches, "shared layer")


def test_deepcopy_of_fused_model_is_independent(device, spy):
    fused, _, theirs = discriminator_trio(device)
    batches = make_batches((4, 3, 32, 32), 3, torch.float32, device)
    train(fused, batches[:1])
    train(theirs, batches[:1])
    clone, theirs_clone = copy.deepcopy(fused), copy.deepcopy(theirs)
    assert len(clone._forward_pre_hooks) == 1
    fuse_spectral_norm(clone)
    assert len(clone._forward_pre_hooks) == 1
    snapshot = {k: v.clone() for k, v in fused.state_dict().items()}
    spy.calls.clear()
    train_and_compare(clone, theirs_clone, batches[1:], "copy")
    assert spy.calls == [3, 1] * 4  # the copy's forwards are fused too
    for k, v in fused.state_dict().items():
        assert torch.equal(v, snapshot[k]), f"training the copy changed the original's {k}"
    train_and_compare(fused, theirs, batches[1:], "original after the copy trained")


def test_fused_layer_that_does_not_run_still_iterates(device):
    """Documented difference: fused, a layer not called in a forward still gets its iteration."""
    class Branches(nn.Module):
        def __init__(self):
            super().__init__()
            self.used = nn.Linear(5, 3)
            self.unused = nn.Linear(5, 3)

        def forward(self, x):
            return self.used(x)

    ours = Branches()
    spectral_norm(ours.used)
    spectral_norm(ours.unused)
    fuse_spectral_norm(ours)
    u = ours.unused.parametrizations.weight[0]._u.clone()
    ours(torch.randn(2, 5))
    assert not torch.equal(ours.unused.parametrizations.weight[0]._u, u)


# ---------------------------------------------------------------------------------------
# DDP: 2 CPU processes (gloo), ours (fused) and torch's from one init and the same shards

def ddp_model():
    return nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(6, 8, 3, 2, 1), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 1))


def ddp_apply(model, sn):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            sn(m)
    return model


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    results = {}
    for kind in ["ours", "torch"]:
        model, other = make_pair(ddp_model, apply=ddp_apply)
        model = model if kind == "ours" else other
        if kind == "ours":
            fuse_spectral_norm(model)
        ddp = DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(100 + rank)  # this rank's shard
        for _ in range(3):
            real, fake = torch.randn(4, 3, 16, 16, generator=g), torch.randn(4, 3, 16, 16, generator=g)
            opt.zero_grad()
            gan_loss(ddp(real), ddp(fake)).backward()
            opt.step()
        results[kind] = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_ddp_two_processes_match_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--ddp", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for rank, result in enumerate(ranks):
        assert list(result["ours"]) == list(result["torch"])
        for k in result["torch"]:
            assert_rel_close(result["ours"][k], result["torch"][k], f"rank {rank} {k}")
    for k in ranks[0]["ours"]:
        assert torch.equal(ranks[0]["ours"][k], ranks[1]["ours"][k]), f"ranks differ in {k}"
    # The ranks' shards differ, so equal ranks mean averaged gradients; and training moved the weights.
    model, _ = make_pair(ddp_model, apply=ddp_apply)
    start = model.state_dict()["0.parametrizations.weight.original"]
    assert not torch.equal(ranks[0]["ours"]["0.parametrizations.weight.original"], start)


# ---------------------------------------------------------------------------------------
# torch.compile (default settings: inductor)

def compile_model():
    return nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(6, 8, 3, 2, 1), nn.LeakyReLU(0.2),
                         nn.Flatten(), nn.Linear(8 * 4 * 4, 1))


def _compile_pair(device):
    eager, _ = make_pair(compile_model, device=device, apply=ddp_apply)
    fuse_spectral_norm(eager)
    model = copy.deepcopy(eager)
    torch._dynamo.reset()
    return eager, model, torch.compile(model)


def _steps(model, forward, batches, forwards_per_step):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    records = []
    for real, fake in batches:
        opt.zero_grad()
        outs = [forward(x) for x in (real, fake)[:forwards_per_step]]
        (gan_loss(outs[0], outs[-1]) if forwards_per_step == 2 else F.softplus(-outs[0]).mean()).backward()
        records.append(([o.detach().clone() for o in outs],
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
        opt.step()
    return records


def _compare_compiled(compiled_records, eager_records, eager, model):
    for step, ((outs_c, grads_c), (outs_e, grads_e)) in enumerate(zip(compiled_records, eager_records)):
        for a, b in zip(outs_c, outs_e):
            assert_rel_close(a, b, f"step {step} output")
        for name in grads_e:
            assert_rel_close(grads_c[name], grads_e[name], f"step {step} grad {name}")
    assert_same_state(model, eager, "after compiled steps")


def test_compile_one_forward_per_step(device):
    eager, model, compiled = _compile_pair(device)
    batches = make_batches((4, 3, 16, 16), 2, torch.float32, device)
    eager_records = _steps(eager, eager, batches, 1)
    _compare_compiled(_steps(model, compiled, batches, 1), eager_records, eager, model)


def test_compile_real_and_fake_forwards_per_step(device):
    """The GAN step, D(real) and D(fake) then one backward, compiled. torch's spectral_norm
    passes this on the same model; ours raises "modified by an inplace operation" in backward,
    and (test_backward_leaves_u_and_v_alone) the compiled backward overwrites v."""
    eager, model, compiled = _compile_pair(device)
    batches = make_batches((4, 3, 16, 16), 2, torch.float32, device)
    eager_records = _steps(eager, eager, batches, 2)
    _compare_compiled(_steps(model, compiled, batches, 2), eager_records, eager, model)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_backward_leaves_u_and_v_alone(device, compiled):
    """Only forwards update u and v. Linear(8, 1), a discriminator's last layer, is the case
    where grad_W has exactly as many elements as v."""
    torch.manual_seed(0)
    layer = spectral_norm(nn.Linear(8, 1)).to(device)
    torch._dynamo.reset()
    forward = torch.compile(layer) if compiled else layer
    out = forward(torch.randn(4, 8, device=device))
    u, v = (layer.parametrizations.weight[0]._u.clone(), layer.parametrizations.weight[0]._v.clone())
    out.sum().backward()
    assert torch.equal(layer.parametrizations.weight[0]._u, u), "backward changed u"
    assert torch.equal(layer.parametrizations.weight[0]._v, v), "backward changed v"


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--ddp":
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "rendezvous"), sys.argv[2]), nprocs=2, join=True)
