// Launch helpers for our .cu files. Only CUDA runtime and c10/cuda headers: a .cu that
// includes torch's tensor headers costs ~27 s to compile, this ~1 s.
#pragma once

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace medgan_fast {

constexpr int kThreads = 256;

// Enough blocks to cover n elements, capped; kernels loop with MF_GRID_STRIDE.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 1 << 20)));
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Temporary device memory from torch's caching allocator (freed with the DataPtr).
inline c10::DataPtr device_buffer(size_t bytes) { return c10::cuda::CUDACachingAllocator::get()->allocate(bytes); }

// A device copy of a host array, enqueued on the current stream.
template <typename T>
c10::DataPtr device_copy(const T* host, size_t count) {
  c10::DataPtr buffer = device_buffer(count * sizeof(T));
  if (count > 0) {
    C10_CUDA_CHECK(cudaMemcpyAsync(buffer.get(), host, count * sizeof(T), cudaMemcpyHostToDevice, current_stream()));
  }
  return buffer;
}

}  // namespace medgan_fast

#define MF_GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
