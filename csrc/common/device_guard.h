// Device guards for the op registrations: each op family registers the same functions
// for CPU (NoGuard) and CUDA (c10::cuda::CUDAGuard, which makes the input's GPU current).
#pragma once

#include <c10/core/Device.h>

#ifdef MEDGAN_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#endif

namespace medgan_fast {

struct NoGuard {
  explicit NoGuard(const c10::Device&) {}
};

}  // namespace medgan_fast
