"""Our kernels' Python faces. Each op checks its inputs, runs the compiled kernel for the
tensor's device, and falls back (warning once) to its `<op>_reference`."""

from .components import (
    ComponentPatches,
    ComponentStats,
    component_masks,
    component_stats,
    crop_components,
    crop_windows,
    label,
    label_batch,
)
from .modconv import modulated_conv2d
from .morphology import ball, cube, dilate, disk, erode, square

__all__ = [
    "ComponentPatches", "ComponentStats", "ball", "component_masks", "component_stats", "crop_components",
    "crop_windows", "cube", "dilate", "disk", "erode", "label", "label_batch", "modulated_conv2d", "square",
]
