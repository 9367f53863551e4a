"""Layers built on our kernels."""

from .spectral_norm import SpectralNorm, fuse_spectral_norm, spectral_norm

__all__ = ["SpectralNorm", "fuse_spectral_norm", "spectral_norm"]
