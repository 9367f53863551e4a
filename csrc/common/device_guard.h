// Where an op family's drivers run, for its registrations: Ops<OnCpu<...>> for CPU tensors,
// Ops<OnCuda<...>> for CUDA tensors (with c10::cuda::CUDAGuard making the input's GPU current).
#pragma once

#include <c10/core/Device.h>

#include "common/emulation/control.h"

#ifdef MEDGAN_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#endif

namespace medgan_fast {

struct NoGuard {
  explicit NoGuard(const c10::Device&) {}
};

// CPU tensors: our CPU kernels, or, while the emulation is enabled on this thread, the
// family's CUDA drivers compiled against it (`emulated` is nullptr when the build has none).
template <typename Backend, const Backend& cpu, const Backend* emulated>
struct OnCpu {
  using Guard = NoGuard;
  static const Backend& backend() { return cpu_or_emulated(cpu, emulated); }
};

#ifdef MEDGAN_FAST_WITH_CUDA
template <typename Backend, const Backend& cuda>
struct OnCuda {
  using Guard = c10::cuda::CUDAGuard;
  static const Backend& backend() { return cuda; }
};
#endif

}  // namespace medgan_fast
