"""What the build says about itself: medgan_fast.build_info() and `python -m medgan_fast`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import medgan_fast

REPO = Path(__file__).resolve().parents[1]


def test_build_info_keys_and_types():
    info = medgan_fast.build_info()
    for key in ["version", "torch", "cpu_compiled", "cuda_compiled", "cuda_archs"]:
        assert key in info, f"build_info() lacks {key!r}: {sorted(info)}"
    assert info["version"] == medgan_fast.__version__
    assert info["torch"] == torch.__version__
    assert info["cpu_compiled"] is True, f"the CPU kernels must be built (import error: {info.get('import_error')})"
    assert isinstance(info["cuda_compiled"], bool)
    assert isinstance(info["cuda_archs"], str)
    if info["cuda_compiled"]:
        assert info["cuda_archs"], "a CUDA build names its architectures"


def test_build_info_matches_registered_kernels():
    """cpu_compiled means the ops are registered and dispatch on CPU."""
    for name in ["dilate", "erode", "label", "label_batch", "component_stats", "crop_windows", "component_masks"]:
        assert hasattr(torch.ops.medgan_fast, name), name
    x = torch.zeros(3, 4, dtype=torch.bool)
    x[1, 1] = True
    assert int(torch.ops.medgan_fast.dilate(x, torch.ones(3, 3, dtype=torch.bool)).sum()) == 9


def test_python_m_medgan_fast_prints_build_info():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-m", "medgan_fast"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "cpu_compiled" in result.stdout
    assert medgan_fast.__version__ in result.stdout
