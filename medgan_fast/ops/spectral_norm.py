"""Spectral normalisation: the power iteration of many weights in one call, and the
backward through sigma completed in one pass over a layer's weight gradient.

Kernels: csrc/ops/spectral_norm (power iteration, CUDA: three launches per iteration for
all weights together; CPU: one parallel pass over all weights' rows. Weight gradient: a
dot product and one pass over the gradient, CUDA: two launches). :func:`layer` is a whole
normalised Linear/convolution with its backward in C++ (aten ops and the weight gradient).
The layer built on them is :func:`medgan_fast.nn.spectral_norm`.
"""

from __future__ import annotations

import numbers

import torch
import torch.nn.functional as F

from .._ext import HAS_CPU_KERNELS, use_kernel

__all__ = ["attach_sigma", "layer", "layer_reference", "power_iteration_", "power_iteration_reference", "weight_grad_",
           "weight_grad_reference", "weight_layout"]

KERNEL_DTYPES = (torch.float32, torch.float64)

# spectral_norm_layer's convolution arguments (stride, padding, dilation, transposed,
# output_padding, groups) for a Linear layer: no stride.
LINEAR_ARGUMENTS = ((), (), (), False, (), 1)


def weight_layout(shape, dim: int) -> tuple[int, int, int]:
    """(P, h, Q): the weight as (P, h, Q) blocks, its matrix h x (P*Q) with column p*Q + q.

    This is torch's ``weight.permute(dim, ...).reshape(h, -1)`` read in place.
    """
    dim = dim % len(shape)
    before, after = 1, 1
    for size in shape[:dim]:
        before *= size
    for size in shape[dim + 1:]:
        after *= size
    return before, shape[dim], after


def _check(weights, us, vs, dims, n_power_iterations, eps):
    if not (isinstance(weights, (list, tuple)) and isinstance(us, (list, tuple)) and isinstance(vs, (list, tuple))):
        raise TypeError("weights, us and vs must be lists of tensors")
    if not weights:
        raise ValueError("weights must not be empty")
    if not isinstance(dims, (list, tuple)) or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"dims must be a list of integers (one per weight), got {dims!r}")
    if not len(weights) == len(us) == len(vs) == len(dims):
        raise ValueError(f"weights, us, vs and dims must have the same length, got {len(weights)}, {len(us)}, "
                         f"{len(vs)}, {len(dims)}")
    if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations < 0:
        raise ValueError(f"n_power_iterations must be an integer >= 0, got {n_power_iterations!r}")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a number > 0, got {eps!r}")
    first = weights[0]
    for k, (w, u, v, dim) in enumerate(zip(weights, us, vs, dims)):
        if not isinstance(w, torch.Tensor) or w.dim() < 2 or w.numel() == 0:
            raise ValueError(f"weights[{k}] must be a non-empty tensor of at least 2 dimensions")
        if w.dtype != first.dtype or w.device != first.device:
            raise ValueError(f"weights must share dtype and device; weights[{k}] is {w.dtype} on {w.device}, "
                             f"weights[0] {first.dtype} on {first.device}")
        if not -w.dim() <= dim < w.dim():
            raise ValueError(f"dims[{k}] = {dim} is out of range for {w.dim()}-D weights[{k}]")
        p, h, q = weight_layout(w.shape, dim)
        for name, x, size in (("us", u, h), ("vs", v, p * q)):
            if (not isinstance(x, torch.Tensor) or x.shape != (size,) or not x.is_contiguous()
                    or x.dtype != w.dtype or x.device != w.device):
                raise ValueError(f"{name}[{k}] must be a contiguous {w.dtype} vector of {size} elements on "
                                 f"{w.device}, got {getattr(x, 'shape', type(x))}")


def power_iteration_(weights: list[torch.Tensor], us: list[torch.Tensor], vs: list[torch.Tensor], dims: list[int],
                     n_power_iterations: int = 1, eps: float = 1e-12, *, impl: str = "auto") -> torch.Tensor:
    """Power iterations of the spectral norm of every weight, in one call.

    For each k, with W = weights[k] as a matrix of size(dims[k]) rows (torch's
    ``weight.permute(dim, ...).flatten(1)``) and normalize(x) = x / max(||x||, eps),
    n_power_iterations times: ``u = normalize(W v)``, ``v = normalize(W^T u)``, updating
    us[k] and vs[k] in place, exactly as torch.nn.utils.parametrizations.spectral_norm.

    Args:
        weights: tensors of at least 2 dimensions, one dtype and device.
        us, vs: contiguous vectors of h and P*Q elements (h = size(dim)), updated in place.
        dims: the row dimension of each weight (0, or 1 for transposed convolutions).
        n_power_iterations: 0 leaves us and vs as they are (evaluation).

    Returns:
        (L,) tensor of sigma_k = u^T W v with the final u, v (not differentiable; see
        :func:`attach_sigma`). Kernels for float32/float64; other dtypes use the reference.
    """
    _check(weights, us, vs, dims, n_power_iterations, eps)
    return _power_iteration([w.detach() for w in weights], list(us), list(vs), [int(d) for d in dims],
                            n_power_iterations, float(eps), impl)


def _power_iteration(weights, us, vs, dims, n_power_iterations, eps, impl="auto") -> torch.Tensor:
    """:func:`power_iteration_` without the checks, for callers whose inputs are known good
    (the spectral-norm layers call it every forward)."""
    device, dtype = weights[0].device, weights[0].dtype
    if dtype in KERNEL_DTYPES and use_kernel("power_iteration_", device, impl):
        return torch.ops.medgan_fast.spectral_norm_power_iteration_(weights, us, vs, dims, n_power_iterations, eps)
    return power_iteration_reference(weights, us, vs, dims, n_power_iterations, eps)


@torch.no_grad()
def power_iteration_reference(weights, us, vs, dims, n_power_iterations: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """:func:`power_iteration_` one weight at a time with torch.mv, as torch's
    ``_SpectralNorm._power_method`` (the test oracle and the fallback)."""
    sigmas = []
    for w, u, v, dim in zip(weights, us, vs, dims):
        matrix = w.detach().movedim(dim, 0).flatten(1)
        for _ in range(n_power_iterations):
            u.copy_(F.normalize(torch.mv(matrix, v), dim=0, eps=eps))
            v.copy_(F.normalize(torch.mv(matrix.t(), u), dim=0, eps=eps))
        sigmas.append(torch.vdot(u, torch.mv(matrix, v)))
    return torch.stack(sigmas)


def _check_weight_grad(grad_weight, sigma, u, v, dim, kept, scaled_grad):
    if not isinstance(grad_weight, torch.Tensor) or grad_weight.dim() < 2 or grad_weight.numel() == 0:
        raise ValueError("grad_weight must be a non-empty tensor of at least 2 dimensions")
    if not grad_weight.is_floating_point():
        raise ValueError(f"grad_weight must be a floating-point tensor, got {grad_weight.dtype}")
    if not grad_weight.is_contiguous():
        raise ValueError("grad_weight must be contiguous (it is updated in place)")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -grad_weight.dim() <= dim < grad_weight.dim():
        raise ValueError(f"dim must be an integer in [-{grad_weight.dim()}, {grad_weight.dim() - 1}], got {dim!r}")
    p, h, q = weight_layout(grad_weight.shape, dim)
    tensors = [("sigma", sigma, 1, "hold one value"), ("u", u, h, f"have {h} elements"),
               ("v", v, p * q, f"have {p * q} elements"), ("kept", kept, None, "")]
    if scaled_grad is not None:
        tensors.append(("scaled_grad", scaled_grad, None, ""))
    for name, x, numel, expected in tensors:
        if not isinstance(x, torch.Tensor) or x.dtype != grad_weight.dtype or x.device != grad_weight.device:
            raise ValueError(f"{name} must be a {grad_weight.dtype} tensor on {grad_weight.device}, got "
                             f"{getattr(x, 'dtype', type(x))} on {getattr(x, 'device', '-')}")
        if numel is not None and x.numel() != numel:
            raise ValueError(f"{name} must {expected}, got shape {tuple(x.shape)}")
    dotted = grad_weight if scaled_grad is None else scaled_grad
    if kept.numel() != dotted.numel():
        raise ValueError(f"kept must have as many elements as {'grad_weight' if scaled_grad is None else 'scaled_grad'}"
                         f" ({dotted.numel()}), got {kept.numel()}")


def weight_grad_(grad_weight: torch.Tensor, sigma: torch.Tensor, u: torch.Tensor, v: torch.Tensor, dim: int,
                 kept: torch.Tensor, scaled_grad: torch.Tensor | None = None, *, impl: str = "auto") -> torch.Tensor:
    """Completes a spectrally normalised layer's weight gradient in place: adds sigma's
    share, the gradient through sigma = u^T W v with u, v constant, in one pass.

    With W as :func:`power_iteration_`'s matrix (rows along `dim`):

    - the layer scaled its weight (``scaled_grad`` None): it ran with ``kept = W / sigma``
      and grad_weight holds G, the gradient of kept; the result is
      ``(G - <G, kept> u v^T) / sigma``.
    - the layer scaled its output: it ran ``kept = layer(x, W)``, multiplied by 1 / sigma;
      ``scaled_grad`` is the output's gradient / sigma and grad_weight holds G, the gradient
      of W for it; the result is ``G - (<scaled_grad, kept> / sigma) u v^T``.

    Args:
        grad_weight: contiguous, the weight's shape; updated in place.
        sigma: one value (read on the device: no synchronisation).
        u, v: the vectors sigma was computed with (h and P*Q elements).
        kept, scaled_grad: as above; any shape, the same number of elements.

    Returns:
        grad_weight. Kernels for float32/float64; other dtypes use the reference.
    """
    _check_weight_grad(grad_weight, sigma, u, v, dim, kept, scaled_grad)
    _weight_grad(grad_weight, sigma.contiguous(), u.contiguous(), v.contiguous(), int(dim), kept.contiguous(),
                 None if scaled_grad is None else scaled_grad.contiguous(), impl)
    return grad_weight


def _weight_grad(grad_weight, sigma, u, v, dim, kept, scaled_grad=None, impl="auto") -> None:
    """:func:`weight_grad_` without the checks (the layers' backward, inputs known good)."""
    if grad_weight.dtype in KERNEL_DTYPES and use_kernel("weight_grad_", grad_weight.device, impl):
        torch.ops.medgan_fast.spectral_norm_weight_grad_(grad_weight, sigma, u, v, dim, kept, scaled_grad)
    else:
        weight_grad_reference(grad_weight, sigma, u, v, dim, kept, scaled_grad)


@torch.no_grad()
def weight_grad_reference(grad_weight, sigma, u, v, dim, kept, scaled_grad=None) -> torch.Tensor:
    """:func:`weight_grad_` in torch ops (the test oracle and the fallback)."""
    p, h, q = weight_layout(grad_weight.shape, dim)
    sigma = sigma.reshape(())
    dotted = grad_weight if scaled_grad is None else scaled_grad
    dot = torch.vdot(dotted.reshape(-1).double(), kept.reshape(-1).double()).to(grad_weight.dtype)
    rank_one = u.view(1, h, 1) * v.view(p, 1, q)
    blocks = grad_weight.view(p, h, q)
    if scaled_grad is None:
        blocks.sub_(rank_one * dot).div_(sigma)
    else:
        blocks.sub_(rank_one * (dot / sigma))
    return grad_weight


class _AttachSigma(torch.autograd.Function):
    """sigma = u^T W v as a function of W (u, v constants), its value already known.

    The forward costs nothing; the backward is one pass over W: grad_W = g u v^T.
    (Classic forward(ctx, ...): the setup_context style binds arguments through
    inspect.signature on every call, a visible cost per layer per step.)
    """

    @staticmethod
    def forward(ctx, weight, sigma, u, v, dim):
        ctx.save_for_backward(u, v)
        ctx.shape = weight.shape
        ctx.layout = weight_layout(weight.shape, dim)
        return sigma.clone()

    @staticmethod
    def backward(ctx, grad):
        u, v = ctx.saved_tensors
        p, h, q = ctx.layout
        # grad_W[p, r, q] = g u[r] v[p*Q + q]: a batch of rank-1 products. bmm writes it in
        # one BLAS pass; a broadcast multiply of (1, h, 1) by (P, 1, Q) runs several times
        # slower (measured: the largest cost of a DCGAN discriminator's spectral norm).
        grad_weight = torch.bmm((grad * u).view(1, h, 1).expand(p, h, 1), v.view(p, 1, q))
        return grad_weight.view(ctx.shape), None, None, None, None


def attach_sigma(weight: torch.Tensor, sigma: torch.Tensor, u: torch.Tensor, v: torch.Tensor,
                 dim: int) -> torch.Tensor:
    """sigma (0-d, from :func:`power_iteration_`) made differentiable in `weight`: the
    gradient is that of u^T W v with u, v held constant, as in torch's spectral_norm.
    Pass copies of u and v: the backward needs them as they were in this forward."""
    return _AttachSigma.apply(weight, sigma, u, v, dim)


def layer(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, sigma: torch.Tensor, u: torch.Tensor,
          v: torch.Tensor, dim: int, scale_weight: bool, convolution: tuple | None = None) -> torch.Tensor:
    """A spectrally normalised Linear or convolution, bias included, differentiable in
    input, weight and bias, with sigma's share of the weight gradient added in place (by
    :func:`weight_grad_`) in its backward:

    - ``scale_weight``: ``layer(input, W / sigma) + bias``;
    - otherwise: ``layer(input, W) / sigma + bias`` (the same function; cheaper when the
      output is smaller than the weight).

    sigma is ``u^T W v`` with u, v constant: pass sigma from :func:`power_iteration_` and
    its u, v (the op keeps copies for its backward).

    Args:
        convolution: aten.convolution's arguments after input, weight and bias (stride,
            padding, dilation, transposed, output_padding, groups); None for a Linear layer.

    Returns:
        The layer's output. Weights of other dtypes or devices without kernels use
        :func:`layer_reference`.
    """
    arguments = _check_layer(input, weight, bias, sigma, u, v, dim, convolution)
    if weight.dtype in KERNEL_DTYPES and use_kernel("layer", weight.device, "auto"):
        return torch.ops.medgan_fast.spectral_norm_layer(input, weight, bias, sigma.reshape(()), u.contiguous(),
                                                         v.contiguous(), dim % weight.dim(), bool(scale_weight),
                                                         *arguments)
    return layer_reference(input, weight, bias, sigma, u, v, dim, scale_weight, convolution)


def _check_layer(input, weight, bias, sigma, u, v, dim, convolution) -> tuple:
    """The op's convolution arguments (empty stride for a Linear layer) after checking all."""
    for name, x in (("input", input), ("weight", weight), ("sigma", sigma), ("u", u), ("v", v)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    if weight.dim() < 2 or not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor of at least 2 dimensions, got shape "
                         f"{tuple(weight.shape)} {weight.dtype}")
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -weight.dim() <= dim < weight.dim():
        raise ValueError(f"dim must be an integer in [-{weight.dim()}, {weight.dim() - 1}], got {dim!r}")
    p, h, q = weight_layout(weight.shape, dim)
    for name, x, numel in (("sigma", sigma, 1), ("u", u, h), ("v", v, p * q)):
        if x.numel() != numel or x.dtype != weight.dtype or x.device != weight.device or (name != "sigma" and x.dim() != 1):
            raise ValueError(f"{name} must be a {weight.dtype} {'value' if numel == 1 else 'vector'} of {numel} "
                             f"element(s) on {weight.device}, got shape {tuple(x.shape)} {x.dtype} on {x.device}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != weight.dtype):
        raise ValueError(f"bias must be None or a {weight.dtype} tensor, got {getattr(bias, 'dtype', type(bias))}")
    if convolution is None:
        return LINEAR_ARGUMENTS
    if len(convolution) != 6:
        raise ValueError("convolution must be (stride, padding, dilation, transposed, output_padding, groups), got "
                         f"{convolution!r}")
    stride, padding, dilation, transposed, output_padding, groups = convolution
    if not stride:
        raise ValueError("convolution's stride must not be empty (pass convolution=None for a Linear layer)")
    return tuple(stride), tuple(padding), tuple(dilation), bool(transposed), tuple(output_padding), int(groups)


def layer_reference(input, weight, bias, sigma, u, v, dim, scale_weight=True, convolution=None) -> torch.Tensor:
    """:func:`layer` as torch's spectral_norm computes it, ``layer(input, W / sigma(W)) +
    bias`` with :func:`attach_sigma` (the test oracle and the fallback; scale_weight does
    not change the function)."""
    scaled = weight / attach_sigma(weight, sigma.reshape(()), u, v, dim)
    if not convolution:
        return F.linear(input, scaled, bias)
    return torch.ops.aten.convolution(input, scaled, bias, *convolution)


if HAS_CPU_KERNELS:
    @torch.library.register_fake("medgan_fast::spectral_norm_power_iteration_")
    def _power_iteration_fake(weights, us, vs, dims, n_power_iterations, eps):
        return weights[0].new_empty((len(weights),))

    @torch.library.register_fake("medgan_fast::spectral_norm_weight_grad_")
    def _weight_grad_fake(grad_weight, sigma, u, v, dim, kept, scaled_grad):
        return None
