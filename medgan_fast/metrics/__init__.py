"""Metrics: full-reference image quality (piq-compatible, fused kernels), distribution
metrics over image sets, and segmentation scores.

>>> import torch
>>> from medgan_fast.metrics import ssim, iou
>>> x = torch.rand(4, 3, 64, 64)
>>> float(ssim(x, x))
1.0
"""

from .distribution import (
    fid,
    fid_from_features,
    kid,
    kid_from_features,
    load_inception,
    ms_ssim_diversity,
    swd,
)
from .quality import (
    HIGHER_IS_BETTER,
    QUALITY_METRICS,
    gmsd,
    haarpsi,
    mdsi,
    ms_ssim,
    multi_scale_gmsd,
    multi_scale_ssim,
    psnr,
    ssim,
)
from .segmentation import dice, iou, pixel_accuracy

__all__ = [
    "HIGHER_IS_BETTER", "QUALITY_METRICS", "dice", "fid", "fid_from_features", "gmsd", "haarpsi", "iou", "kid",
    "kid_from_features", "load_inception", "mdsi", "ms_ssim", "ms_ssim_diversity", "multi_scale_gmsd",
    "multi_scale_ssim", "pixel_accuracy", "psnr", "ssim", "swd",
]
