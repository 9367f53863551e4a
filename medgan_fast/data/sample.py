"""Embedded sample data, so every command runs offline with no arguments.

The sample is scikit-image's bundled immunohistochemistry image (``skimage.data.
immunohistochemistry()``: 512 x 512 RGB, colon tissue stained with DAB and hematoxylin;
shipped inside the scikit-image wheel, no download) with a nuclei mask made from its
hematoxylin stain.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi
from skimage import color, data, filters

__all__ = ["SAMPLE_NAME", "SAMPLE_PATCH_SETTINGS", "nuclei_mask", "sample_image", "sample_image_and_mask"]

SAMPLE_NAME = "skimage.data.immunohistochemistry"

# Nuclei are about 10-25 px across: 64 px patches hold one with its surroundings, and a
# 5 px dilation keeps the rim of cytoplasm the texture of a nucleus is judged against.
SAMPLE_PATCH_SETTINGS = {"size": 64, "mode": "texture", "dilation": 5}


def nuclei_mask(rgb: np.ndarray, sigma: float = 2.0, min_area: int = 30) -> np.ndarray:
    """Bool (H, W) nuclei mask of an (H, W, 3) H-DAB stained RGB image.

    Colour deconvolution (``rgb2hed``) gives the hematoxylin stain; smoothing by `sigma`
    merges each nucleus's speckle into one blob. The cut is the upper of two three-class
    Otsu thresholds: a two-class Otsu also takes the faintly hematoxylin-tinted cytoplasm.
    Holes are filled and blobs under `min_area` pixels removed.
    """
    hematoxylin = filters.gaussian(color.rgb2hed(rgb)[..., 0], sigma=sigma)
    mask = hematoxylin > filters.threshold_multiotsu(hematoxylin, classes=3)[1]
    mask = ndi.binary_fill_holes(mask)
    # Small-object removal by hand: skimage renamed remove_small_objects' argument in 0.26.
    blobs, _ = ndi.label(mask)
    large = np.bincount(blobs.ravel()) >= min_area
    large[0] = False
    return large[blobs]


def sample_image() -> np.ndarray:
    """The sample image alone: (3, 512, 512) uint8 RGB, channels first (no mask computed)."""
    return np.ascontiguousarray(np.moveaxis(data.immunohistochemistry(), -1, 0))


def sample_image_and_mask() -> tuple[np.ndarray, np.ndarray]:
    """The sample: (3, 512, 512) uint8 RGB image (channels first) and its (512, 512) bool
    nuclei mask (about 150 nuclei)."""
    image = sample_image()
    return image, nuclei_mask(np.moveaxis(image, 0, -1))
