"""medgan_fast: GANs for scarce biomedical images, with our own C++/CUDA kernels.

    >>> import medgan_fast
    >>> medgan_fast.build_info()["cpu_compiled"]
    True
"""

import torch  # noqa: F401  (before _C: see _ext.py)

from ._ext import build_info, cached_output_bytes, release_cached_outputs
from ._version import __version__

__all__ = ["__version__", "build_info", "cached_output_bytes", "release_cached_outputs"]
