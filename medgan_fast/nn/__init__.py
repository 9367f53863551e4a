"""Layers built on our kernels."""

from .instance_norm import StatisticsInstanceNorm, record_statistics, reuse_statistics
from .spectral_norm import SpectralNorm, fuse_spectral_norm, spectral_norm
from .stylegan2 import ModulatedConv2d

__all__ = ["ModulatedConv2d", "SpectralNorm", "StatisticsInstanceNorm", "fuse_spectral_norm", "record_statistics", "reuse_statistics",
           "spectral_norm"]
