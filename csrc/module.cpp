// The Python module medgan_fast._C. Kernels are reached through torch.ops.medgan_fast;
// this module only reports what was compiled. It includes pybind11 alone, not torch's
// headers, to keep the build fast.
#include <pybind11/pybind11.h>

#ifndef MEDGAN_FAST_CUDA_VERSION
#define MEDGAN_FAST_CUDA_VERSION ""
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "medgan_fast C++/CUDA kernels (registered as torch.ops.medgan_fast)";
  m.def("build_info", [] {
    py::dict info;
    info["version"] = MEDGAN_FAST_VERSION;
    info["torch_compiled"] = MEDGAN_FAST_TORCH_VERSION;
    info["cpu_compiled"] = true;
#ifdef MEDGAN_FAST_WITH_CUDA
    info["cuda_compiled"] = true;
#else
    info["cuda_compiled"] = false;
#endif
    info["cuda_version"] = MEDGAN_FAST_CUDA_VERSION;
    info["cuda_archs"] = MEDGAN_FAST_CUDA_ARCHS;
    return info;
  }, "What this build of the kernels contains.");
}
