"""Builds medgan_fast._C, our C++/CUDA kernels, with torch.utils.cpp_extension.

Install with ``pip install --no-build-isolation .`` after torch: the extension must be
compiled against the torch it will run with, and an isolated build would fetch another.

CUDA kernels are compiled when torch is a CUDA build and a CUDA toolkit is found; no GPU
is needed. Environment:
  MEDGAN_FAST_CUDA=0|1     force the CUDA kernels off or on
  MEDGAN_FAST_EMULATION=0|1  also build the CUDA drivers against the CPU emulation, for the
                           tests (default 1; needs no GPU or CUDA toolkit; 0 for release wheels)
  CUDA_HOME                the toolkit (found from nvcc, resolving wrapper scripts, if unset)
  TORCH_CUDA_ARCH_LIST     GPU targets (default: the "archs" line of csrc/sources.txt)
  DEBUG=1                  -O0 -g instead of -O3 -g0
"""

import glob
import os
import shutil
import sys
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def is_cuda_toolkit(path):
    path = Path(path)
    has_runtime = any((path / lib).glob("libcudart.so*") for lib in ("lib64", "lib"))
    return (path / "bin" / "nvcc").is_file() and (path / "include" / "cuda_runtime.h").is_file() and has_runtime


def find_cuda_home():
    """The CUDA toolkit directory, or None.

    torch guesses CUDA_HOME as the parent of the `nvcc` on PATH; where that nvcc is a
    wrapper script (here /usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc) the guess
    has no libcudart and the link fails. So each candidate must look like a toolkit.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent)
        candidates += _exec_targets(nvcc)
    candidates += ["/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"), reverse=True)]
    return next((str(c) for c in candidates if c and is_cuda_toolkit(c)), None)


def _exec_targets(script):
    """Toolkit directories named by a wrapper script's `exec .../bin/nvcc` line."""
    try:
        text = Path(script).read_text(errors="ignore")[:4096]
    except OSError:
        return []
    return [Path(word).parent.parent for word in text.split() if word.endswith("/bin/nvcc")]


def read_build_list():
    """(kind, value) lines of csrc/sources.txt, the list CMakeLists.txt reads too."""
    lines = (line.split("#")[0].split() for line in (ROOT / "csrc" / "sources.txt").read_text().splitlines())
    return [tuple(fields) for fields in lines if len(fields) == 2]


def read_sources(with_cuda):
    sources = []
    for kind, pattern in read_build_list():
        if kind == "all" or (kind == "cuda" and with_cuda):
            sources += sorted(glob.glob(pattern, root_dir=ROOT))
    return sources


def default_cuda_archs():
    return next(value for kind, value in read_build_list() if kind == "archs")


def version():
    namespace = {}
    exec((ROOT / "medgan_fast" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


# torch.utils.cpp_extension reads CUDA_HOME when imported, so resolve it first.
cuda_home = find_cuda_home()
if cuda_home:
    os.environ["CUDA_HOME"] = cuda_home

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

forced = os.environ.get("MEDGAN_FAST_CUDA")
with_cuda = torch.version.cuda is not None and cuda_home is not None
if forced is not None:
    if forced == "1" and not with_cuda:
        sys.exit(f"MEDGAN_FAST_CUDA=1 but CUDA cannot be built: torch.version.cuda={torch.version.cuda}, "
                 f"CUDA toolkit={cuda_home} (set CUDA_HOME to the directory holding bin/nvcc)")
    with_cuda = forced == "1"

if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
    # torch queries the local GPUs for their architectures and fails when there are none.
    os.environ["TORCH_CUDA_ARCH_LIST"] = default_cuda_archs()

# No -std flag: torch adds the standard its headers need (C++20 for 2.14, C++17 before).
debug = os.environ.get("DEBUG", "0") == "1"
# -ffp-contract=off: the x86-64-v3 clones of the CPU loops (csrc/common/cpu_clones.h) must
# not fuse a * b + c, so that every CPU gives the same results. -fno-math-errno: sqrt needs
# no branch to set errno (nothing reads it), so loops with sqrt vectorise. -fno-trapping-math:
# nothing enables floating-point traps, so a product under a condition may be computed either
# way and blended, and loops with such selects vectorise. None of these changes a result.
# -fopenmp: at::parallel_for is inline; compiled without OpenMP it runs on one thread.
# Linked, libgomp.so.1 resolves to the copy torch has already loaded: one thread pool,
# sized by torch.set_num_threads.
openmp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
cxx_flags = [
    *(["-O0", "-g"] if debug else ["-O3", "-g0"]),
    "-ffp-contract=off",
    "-fno-math-errno",
    "-fno-trapping-math",
    *openmp,
]
# --fmad=false: nvcc fuses a * b + c into one FMA by default, the CPU build does not
# (-ffp-contract=off above); several results are exact only with the same rounding (identical
# images give SSIM 1 and GMSD/MDSI 0), and the emulated CUDA tests check the CPU's rounding.
nvcc_flags = [*(["-O0", "-g", "-lineinfo"] if debug else ["-O3"]), "--fmad=false"]
cuda_archs = os.environ.get("TORCH_CUDA_ARCH_LIST", "").replace(";", " ") if with_cuda else ""
macros = [
    ("MEDGAN_FAST_VERSION", f'"{version()}"'),
    ("MEDGAN_FAST_TORCH_VERSION", f'"{torch.__version__}"'),
    ("MEDGAN_FAST_CUDA_ARCHS", f'"{cuda_archs}"'),
]
with_emulation = os.environ.get("MEDGAN_FAST_EMULATION", "1") != "0"
if with_emulation:
    macros += [("MEDGAN_FAST_WITH_EMULATION", None)]
if with_cuda:
    macros += [("MEDGAN_FAST_WITH_CUDA", None), ("MEDGAN_FAST_CUDA_VERSION", f'"{torch.version.cuda}"')]

extension_type = CUDAExtension if with_cuda else CppExtension
extension = extension_type(
    name="medgan_fast._C",
    sources=read_sources(with_cuda),
    include_dirs=[str(ROOT / "csrc")],
    define_macros=macros,
    extra_compile_args={"cxx": cxx_flags, "nvcc": nvcc_flags},
    extra_link_args=openmp,
)

print(f"medgan_fast build: cuda={with_cuda} emulation={with_emulation} cuda_home={cuda_home} archs={cuda_archs or '-'} "
      f"torch={torch.__version__} debug={debug} sources={len(extension.sources)}", flush=True)

setup(
    version=version(),
    packages=find_packages(include=["medgan_fast", "medgan_fast.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension},
)
