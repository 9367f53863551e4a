// The Python module medgan_fast._C. Kernels are reached through torch.ops.medgan_fast;
// this module only reports what was compiled. It includes pybind11 alone, not torch's
// headers, to keep the build fast.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "common/emulation/control.h"
#include "common/output/output_cache.h"

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
#ifdef MEDGAN_FAST_WITH_EMULATION
    info["emulation_compiled"] = true;
#else
    info["emulation_compiled"] = false;
#endif
    return info;
  }, "What this build of the kernels contains.");
  m.def("cached_output_bytes", &medgan_fast::cached_output_bytes,
        "Bytes of freed large CPU outputs held for reuse by the next op.");
  m.def("release_cached_outputs", &medgan_fast::release_cached_outputs,
        "Returns the held blocks to the system; the bytes freed.");

#ifdef MEDGAN_FAST_WITH_EMULATION
  // The CUDA emulation (medgan_fast/emulation.py is the Python face).
  namespace emulation = medgan_fast::emulation;
  m.def("emulation_enabled", &emulation::enabled);
  m.def("set_emulation_enabled", &emulation::set_enabled, py::arg("on"));
  m.def("emulation_seed", &emulation::schedule_seed);
  m.def("set_emulation_seed", &emulation::set_schedule_seed, py::arg("seed"));
  m.def("emulation_memory_budget", &emulation::memory_budget);
  m.def("set_emulation_memory_budget", &emulation::set_memory_budget, py::arg("bytes"));
  m.def("emulation_peak_memory", &emulation::peak_memory);
  m.def("reset_emulation_peak_memory", &emulation::reset_peak_memory);
  m.def("emulation_counters", [] {
    const emulation::Counters c = emulation::counters();
    py::dict out;
    out["launches"] = c.launches;
    out["threads"] = c.threads;
    out["atomics"] = c.atomics;
    return out;
  });
  m.def("emulation_self_test", &emulation::self_test, py::arg("name"));
#endif
}
