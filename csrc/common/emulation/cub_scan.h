// The one cub algorithm our kernels use (label's inclusive scan), for the emulation: the
// same two-call protocol (size query, then the scan) as cub::DeviceScan::InclusiveSum.
#pragma once

#include "common/emulation/emulation.h"

namespace cub {

struct DeviceScan {
  template <typename In, typename Out>
  static cudaError_t InclusiveSum(void* temp, size_t& temp_bytes, In in, Out out, int n, cudaStream_t = nullptr) {
    if (temp == nullptr) {
      temp_bytes = 16;  // as cub, a size query asks for scratch the caller must then provide
      return cudaSuccess;
    }
    TORCH_CHECK(temp_bytes >= 16, "emulated cub::DeviceScan::InclusiveSum: temporary storage too small");
    if (n <= 0) return cudaSuccess;
    auto total = in[0];
    out[0] = total;
    for (int i = 1; i < n; ++i) out[i] = total = total + in[i];
    return cudaSuccess;
  }
};

}  // namespace cub
