"""Loads the compiled kernels (medgan_fast._C) and says which devices they cover.

torch must be imported before _C: the extension links against libtorch/libc10 without a
RUNPATH, so their symbols must already be loaded.
"""

import warnings

import torch

try:
    from . import _C
except ImportError as error:  # not built: every op falls back to its reference
    _C = None
    IMPORT_ERROR = error
else:
    IMPORT_ERROR = None

_BUILD = _C.build_info() if _C is not None else {}
HAS_CPU_KERNELS = bool(_BUILD.get("cpu_compiled", False))
HAS_CUDA_KERNELS = bool(_BUILD.get("cuda_compiled", False))

_warned = set()


def has_kernel(device: torch.device) -> bool:
    """Whether the compiled kernels cover tensors on `device`."""
    if device.type == "cpu":
        return HAS_CPU_KERNELS
    if device.type == "cuda":
        return HAS_CUDA_KERNELS
    return False


IMPLS = ("auto", "kernel", "reference")


def use_kernel(op: str, device: torch.device, impl: str) -> bool:
    """Whether `op` runs our kernel on `device`: impl "kernel" requires it, "reference"
    refuses it, "auto" uses it when built and otherwise warns once and falls back."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "reference":
        return False
    if has_kernel(device):
        return True
    if impl == "kernel":
        raise RuntimeError(f"medgan_fast.ops.{op}: no compiled kernel for {device.type} tensors "
                           f"(build_info: {build_info()})")
    warn_fallback(op, device)
    return False


def warn_fallback(op: str, device: torch.device) -> None:
    """Warns once per (op, device type) that the reference implementation is used."""
    key = (op, device.type)
    if key in _warned:
        return
    _warned.add(key)
    reason = f"the extension did not load ({IMPORT_ERROR})" if _C is None else f"it has no {device.type} kernels"
    warnings.warn(f"medgan_fast.ops.{op}: using the slow reference implementation because {reason}; "
                  "reinstall with `pip install --no-build-isolation .`", RuntimeWarning, stacklevel=3)


def build_info() -> dict:
    """What this installation contains.

    Keys: version, torch (the running torch), torch_compiled (the torch the kernels were
    built against), cpu_compiled, cuda_compiled, cuda_version, cuda_archs,
    emulation_compiled (the CUDA drivers built against the CPU emulation, see
    medgan_fast.emulation), and cuda_available (a GPU is usable now), num_threads.
    """
    from ._version import __version__

    info = {
        "version": __version__,
        "torch": torch.__version__,
        "torch_compiled": None,
        "cpu_compiled": False,
        "cuda_compiled": False,
        "cuda_version": None,
        "cuda_archs": "",
        "emulation_compiled": False,
    }
    info.update(_BUILD)
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    info["num_threads"] = torch.get_num_threads()
    if IMPORT_ERROR is not None:
        info["import_error"] = str(IMPORT_ERROR)
    return info


def release_cached_outputs() -> int:
    """Returns to the system the memory of freed large CPU outputs that the ops keep for
    reuse (at most 256 MiB in 8 blocks; it spares the next output its page faults); the
    bytes freed. Like torch.cuda.empty_cache(), only worth calling when memory is tight."""
    return int(_C.release_cached_outputs()) if _C is not None else 0


def cached_output_bytes() -> int:
    """Bytes that the ops' output cache holds now (see release_cached_outputs)."""
    return int(_C.cached_output_bytes()) if _C is not None else 0
