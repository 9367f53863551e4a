"""NVIDIA's stylegan2-ada-pytorch as the peer of our StyleGAN2 op and networks.

Its code is under NVIDIA's non-commercial licence: the tests run it side by side and never
copy it. :func:`peer_modules` imports training/networks.py and its torch_utils ops (their
"ref" implementations on the CPU) from the checkout named by MEDGAN_PEER_STYLEGAN2 (default
/work/peers/stylegan2-ada-pytorch), or skips the test and says how to get it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
import warnings
from pathlib import Path

import pytest

PEER_URL = "https://github.com/NVlabs/stylegan2-ada-pytorch"
DEFAULT_PEER = Path("/work/peers/stylegan2-ada-pytorch")
MODULE = "stylegan2_ada_networks"


def peer_modules():
    """(networks, bias_act, upfirdn2d) of the peer, imported once."""
    if MODULE in sys.modules:
        from torch_utils.ops import bias_act, upfirdn2d
        return sys.modules[MODULE], bias_act, upfirdn2d
    root = Path(os.environ.get("MEDGAN_PEER_STYLEGAN2") or DEFAULT_PEER)
    if not (root / "training" / "networks.py").is_file():
        pytest.skip(f"the peer stylegan2-ada-pytorch is absent at {root}: git clone {PEER_URL} and set "
                    "MEDGAN_PEER_STYLEGAN2 to that folder")
    sys.path.insert(0, str(root))
    stubbed = "requests" not in sys.modules and importlib.util.find_spec("requests") is None
    if stubbed:  # dnnlib imports it for downloads the tests never make
        sys.modules["requests"] = types.ModuleType("requests")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Under its own name: our tests/training package would shadow its "training".
            spec = importlib.util.spec_from_file_location(MODULE, root / "training" / "networks.py")
            networks = importlib.util.module_from_spec(spec)
            sys.modules[MODULE] = networks  # its persistence decorator looks itself up there
            spec.loader.exec_module(networks)
            from torch_utils.ops import bias_act, upfirdn2d
    finally:
        sys.path.remove(str(root))
        if stubbed:
            del sys.modules["requests"]
    return networks, bias_act, upfirdn2d
