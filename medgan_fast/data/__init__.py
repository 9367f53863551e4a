"""Data: image and mask readers, the HDF5 patch set, patch extraction, sample data, grids."""

from .grid import make_grid, save_grid
from .images import DataError, find_pairs, read_image, read_mask
from .patches import PatchesConfig, PatchesSummary, extract_patches
from .patchset import PatchSet, PatchSetWriter, read_patch_set
from .sample import sample_image_and_mask

__all__ = [
    "DataError", "PatchSet", "PatchSetWriter", "PatchesConfig", "PatchesSummary", "extract_patches", "find_pairs",
    "make_grid", "read_image", "read_mask", "read_patch_set", "sample_image_and_mask", "save_grid",
]
