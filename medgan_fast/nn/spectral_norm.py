"""Spectral normalisation (Miyato et al. 2018) as a drop-in for
``torch.nn.utils.parametrizations.spectral_norm``, faster.

Same semantics, state_dict keys and buffers as torch's: ``u = normalize(W v)`` then
``v = normalize(W^T u)``, 15 warm-up iterations at registration, iterations only in
training mode, sigma = u^T W v, gradients through W only, 1-D weights normalised exactly,
``dim`` 1 for transposed convolutions. Two things differ in how it is computed:

- Linear, Conv1/2/3d and ConvTranspose1/2/3d layers scale whichever is smaller by
  1 / sigma: the layer's output (the layer then runs with W, bias added after scaling) or
  its weight (W / sigma is formed). Both give the same result; scaling a large output
  costs several passes over activations (forward and backward), forming W / sigma several
  passes over the weight, so late layers of a discriminator (small outputs, large weights)
  scale outputs and early ones (large outputs, small weights) scale weights. Each such
  layer is one op with its backward in C++ (medgan_fast.ops.spectral_norm.layer), which
  adds sigma's rank-1 share of the weight gradient in place into the layer's own weight
  gradient. Under autocast, with string padding, unbatched input, or weights of a dtype
  or device without our kernels, the module's own forward runs with W / sigma.
  ``module.weight`` returns W / sigma for code that reads it.
- :func:`fuse_spectral_norm` makes one model's spectral-norm layers share a single
  multi-weight power-iteration call per forward (medgan_fast.ops.power_iteration_)
  instead of a chain of small kernels per layer.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from .._ext import has_kernel
from ..ops.spectral_norm import (
    KERNEL_DTYPES,
    LINEAR_ARGUMENTS,
    _power_iteration,
    attach_sigma,
    power_iteration_,
)
from ._torch_internals import (chain_member, chain_original, explicit_padding, parametrization_chain, swap_class,
                              transposed_output_padding)

__all__ = ["SpectralNorm", "fuse_spectral_norm", "spectral_norm"]

TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class SpectralNorm(nn.Module):
    """The parametrization: W -> W / sigma(W). Buffers ``_u`` and ``_v`` as torch's."""

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"dim must be in [-{ndim}, {ndim - 1}] for a {ndim}-D weight, got {dim}")
        if n_power_iterations <= 0:
            raise ValueError(f"n_power_iterations must be positive, got {n_power_iterations}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = eps
        # sigma computed by a fused call for this forward, in a list: nn.Module.__setattr__
        # is slow Python, and this is set and cleared for every layer in every forward.
        self._pending: list[torch.Tensor | None] = [None]
        if ndim > 1:
            self.n_power_iterations = n_power_iterations
            matrix = weight.detach().movedim(self.dim, 0).flatten(1)
            h, w = matrix.shape
            # Drawn as torch draws them, so one seed gives torch's u and v.
            u = matrix.new_empty(h).normal_(0, 1)
            v = matrix.new_empty(w).normal_(0, 1)
            self.register_buffer("_u", F.normalize(u, dim=0, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=0, eps=self.eps))
            power_iteration_([weight.detach()], [self._u], [self._v], [self.dim], 15, self.eps)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """sigma(W), differentiable in W; runs this forward's power iteration (training
        mode) unless a fused call already did."""
        value, u, v = self._snapshot(weight)
        return attach_sigma(weight, value, u.clone(), v.clone(), self.dim)

    def _snapshot(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`_iterate`, out of the graph when torch.compile traces it, where it returns
        copies of u and v (the graph saves those, not the buffers). Eager, it returns the
        buffers: their users copy what their backward needs (spectral_norm_layer does)."""
        if torch.compiler.is_compiling():
            return self._iterate_outside_graph(weight)
        return self._iterate(weight)

    # Eager even under torch.compile: the in-place buffer updates inside a compiled graph
    # let inductor save the buffer itself for backward (eliding our copies) and then reuse
    # its storage as backward scratch, corrupting _v. Out here the graph gets fresh tensors.
    # (Not the decorator on _iterate itself: its wrapper costs more than the layer's own
    # Python in eager mode.)
    @torch.compiler.disable
    def _iterate_outside_graph(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        value, u, v = self._iterate(weight)
        return value, u.clone(), v.clone()

    def _iterate(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """sigma's value and the buffers u and v it was computed with (a later forward
        updates them in place: copy what a backward needs)."""
        pending, u, v = self._pending, self._buffers["_u"], self._buffers["_v"]
        value, pending[0] = pending[0], None
        if value is None:
            with torch.no_grad():
                iterations = self.n_power_iterations if self.training else 0
                value = _power_iteration([weight.detach()], [u], [v], [self.dim], iterations, self.eps)[0]
        return value, u, v

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        return weight / self.sigma(weight)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        # Assigning module.weight = X stores X as the unnormalised weight, as torch does.
        return value


def _our_spectral_norm(module: nn.Module) -> tuple[SpectralNorm, torch.Tensor] | tuple[None, None]:
    """(parametrization, unnormalised weight) if the module's weight parametrization is
    exactly one of ours, on a >= 2-D weight. (Plain dictionary lookups, not nn.Module's
    Python __getattr__: this runs for every layer in every forward.)"""
    chain = parametrization_chain(module, "weight")
    if chain is None or len(chain) != 1:
        return None, None
    sn, original = chain_member(chain, 0), chain_original(chain)
    return (sn, original) if isinstance(sn, SpectralNorm) and original.ndim >= 2 else (None, None)


def _fused_layer_call(module: nn.Module, weight: torch.Tensor, input: torch.Tensor, output_size=None):
    """(input, convolution arguments: stride, padding, dilation, transposed, output_padding,
    groups) for medgan_fast::spectral_norm_layer, reflection/replication/circular padding
    applied to the input; None for what the module's own forward (with W / sigma) handles
    instead: autocast, string padding, unbatched input, weights without our kernels."""
    device = weight.device
    if weight.dtype not in KERNEL_DTYPES or not has_kernel(device) or torch.is_autocast_enabled(device.type):
        return None
    if isinstance(module, nn.Linear):
        return input, LINEAR_ARGUMENTS
    spatial = weight.ndim - 2
    if isinstance(module.padding, str) or input.ndim != spatial + 2:
        return None
    if isinstance(module, TRANSPOSED):
        if module.padding_mode != "zeros":
            return None  # the module's forward raises torch's error
        output_padding = transposed_output_padding(module, input, output_size, spatial)
        return input, (module.stride, module.padding, module.dilation, True, output_padding, module.groups)
    padding = module.padding
    if module.padding_mode != "zeros":
        input = F.pad(input, explicit_padding(module), mode=module.padding_mode)
        padding = (0,) * spatial
    return input, (module.stride, padding, module.dilation, False, (0,) * spatial, module.groups)


def _estimated_output_numel(module: nn.Module, input: torch.Tensor) -> float:
    """About how many elements the layer outputs (exact for Linear; for convolutions
    ignoring borders), to decide what to scale."""
    if isinstance(module, nn.Linear):
        return input.numel() / module.in_features * module.out_features
    ratio = module.out_channels / module.in_channels
    for stride in module.stride:
        ratio = ratio * stride if isinstance(module, TRANSPOSED) else ratio / stride
    return input.numel() * ratio


def _scales_weight(module: nn.Module, input: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether to scale the weight (large outputs) rather than the output by 1 / sigma."""
    return _estimated_output_numel(module, input) >= weight.numel()


def _scaled_forward(self, input, *args, **kwargs):
    """forward of a spectrally normalised Linear/Conv/ConvTranspose: scales the smaller of
    the output and the weight by 1 / sigma."""
    sn, weight = _our_spectral_norm(self)
    call = _fused_layer_call(self, weight, input, *args, **kwargs) if sn is not None else None
    if call is None:  # other or stacked parametrizations, removed, or left to the module: W / sigma
        return self._medgan_fast_base.forward(self, input, *args, **kwargs)
    scale_weight = _scales_weight(self, input, weight)
    padded, arguments = call
    sigma, u, v = sn._snapshot(weight)
    return torch.ops.medgan_fast.spectral_norm_layer(padded, weight, self.bias, sigma, u, v, sn.dim, scale_weight,
                                                     *arguments)


_SCALED_CLASSES: dict[type, type] = {}


def _scaled_class(cls: type) -> type:
    """A subclass of a Linear/Conv class whose forward scales the output by 1 / sigma."""
    if getattr(cls, "_medgan_fast_base", None) is not None:
        return cls
    if cls not in _SCALED_CLASSES:
        _SCALED_CLASSES[cls] = type(f"SpectralNorm{cls.__name__}", (cls,),
                                    {"forward": _scaled_forward, "_medgan_fast_base": cls, "__module__": __name__})
    return _SCALED_CLASSES[cls]


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: int | None = None) -> nn.Module:
    """Applies spectral normalisation to ``module.<name>``; a drop-in for
    ``torch.nn.utils.parametrizations.spectral_norm`` (same arguments, semantics and
    state_dict keys ``parametrizations.weight.original`` / ``...0._u`` / ``...0._v``).

    Args:
        module: the layer (Linear, Conv*, ConvTranspose* take the fast path; any other
            module with a tensor ``name`` works as with torch's, by forming W / sigma).
        name: the parameter to normalise.
        n_power_iterations: power iterations per training-mode forward.
        eps: for numerical stability of the normalisations.
        dim: the dimension of the weight's rows; default 0, or 1 for ConvTranspose*.

    Returns:
        The module, normalised in place.

    >>> layer = spectral_norm(torch.nn.Linear(20, 40))
    >>> layer(torch.randn(3, 20)).shape
    torch.Size([3, 40])
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        dim = 1 if isinstance(module, TRANSPOSED) else 0
    parametrization = SpectralNorm(weight, n_power_iterations, dim, eps)  # validates before we touch module
    if name == "weight" and weight.ndim > 1 and isinstance(module, (nn.Linear, *CONVOLUTIONS, *TRANSPOSED)):
        # Before parametrize wraps the class, so its Parametrized subclass inherits the
        # scaled forward and removing the parametrization restores plain behaviour.
        swap_class(module, _scaled_class(type(module)))
    parametrize.register_parametrization(module, name, parametrization)
    return module


# model -> its spectrally normalised layers, found at its first forward.
_FUSED_LAYERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fused_power_iteration(model: nn.Module, args) -> None:
    """Forward pre-hook of :func:`fuse_spectral_norm`: one power-iteration call per group
    of layers with the same dtype, device, iteration count and eps (out of the graph under
    torch.compile, as SpectralNorm._iterate)."""
    if torch.compiler.is_compiling():
        _iterate_all_outside_graph(model)
    else:
        _iterate_all(model)


@torch.compiler.disable
def _iterate_all_outside_graph(model: nn.Module) -> None:
    _iterate_all(model)


def _iterate_all(model: nn.Module) -> None:
    layers = _FUSED_LAYERS.get(model)
    if layers is None:
        layers = [m for m in model.modules() if _our_spectral_norm(m)[0] is not None]
        _FUSED_LAYERS[model] = layers
    groups: dict[tuple, list[tuple[torch.Tensor, SpectralNorm]]] = {}
    for module in layers:
        sn, weight = _our_spectral_norm(module)
        if sn is None:  # its parametrization was removed since
            continue
        iterations = sn.n_power_iterations if sn.training else 0
        groups.setdefault((weight.device, weight.dtype, iterations, sn.eps), []).append((weight.detach(), sn))
    with torch.no_grad():
        for (_, _, iterations, eps), group in groups.items():
            buffers = [sn._buffers for _, sn in group]
            sigmas = _power_iteration([w for w, _ in group], [b["_u"] for b in buffers], [b["_v"] for b in buffers],
                                      [sn.dim for _, sn in group], iterations, eps)
            for (_, sn), sigma in zip(group, sigmas.unbind(0)):
                sn._pending[0] = sigma


def fuse_spectral_norm(model: nn.Module) -> nn.Module:
    """Runs the power iterations of all of `model`'s spectral-norm layers (from
    :func:`spectral_norm`) in one fused call at the start of each ``model(...)``, instead
    of one chain of small kernels per layer. Results are identical when every such layer
    runs once per forward, as in a DCGAN/SNGAN discriminator; a layer that does not run
    still has its power iteration done. The layers are found at the model's first forward:
    call it on a finished model. Returns the model.
    """
    if _fused_power_iteration not in model._forward_pre_hooks.values():
        model.register_forward_pre_hook(_fused_power_iteration)
    return model
