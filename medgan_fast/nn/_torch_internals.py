"""The private torch internals our spectral norm relies on, in one place.

nn.Module's attribute dictionaries (read directly: nn.Module.__getattr__ costs more than
the rest of a layer's Python per forward), the convolution modules' padding helpers, and
swapping a module's class. Each is used by torch 2.11 (the GPU machine's) through 2.14.1
(the tested pin); .ci/torch_compat runs the nn tests against 2.11, so a change in torch
shows up here first.
"""

from __future__ import annotations

import torch
from torch import nn


def parametrization_chain(module: nn.Module, name: str):
    """The ParametrizationList of `module.<name>`, or None (plain dictionary lookups)."""
    parametrizations = module._modules.get("parametrizations")
    return parametrizations._modules.get(name) if parametrizations is not None else None


def chain_member(chain, index: int) -> nn.Module:
    return chain._modules[str(index)]


def chain_original(chain) -> torch.Tensor | None:
    """The unparametrised tensor a ParametrizationList holds (parameter or buffer)."""
    original = chain._parameters.get("original")
    return chain._buffers.get("original") if original is None else original


def transposed_output_padding(module: nn.Module, input: torch.Tensor, output_size, spatial: int):
    """A ConvTranspose module's output padding for this input and requested output size."""
    return module._output_padding(input, output_size, module.stride, module.padding, module.kernel_size, spatial,
                                  module.dilation)


def explicit_padding(module: nn.Module):
    """F.pad's argument for a convolution whose padding_mode is not "zeros"."""
    return module._reversed_padding_repeated_twice


def swap_class(module: nn.Module, cls: type) -> None:
    """Gives `module` the class `cls` (a subclass of its own) in place."""
    module.__class__ = cls
