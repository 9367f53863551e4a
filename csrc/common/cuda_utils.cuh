// Launch helpers for our .cu files. Only CUDA runtime and c10/cuda headers: a .cu that
// includes torch's tensor headers costs ~27 s to compile, this ~1 s. Compiled against the
// emulation (MEDGAN_FAST_EMULATED, common/emulation/emulation.h), the same helpers use host
// memory and run each launch on the CPU.
#pragma once

#ifdef MEDGAN_FAST_EMULATED
#include "common/emulation/emulation.h"
#else
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#endif

#include <algorithm>
#include <cstdint>

namespace medgan_fast {

constexpr int kThreads = 256;

// Enough blocks to cover n elements, capped; kernels loop with MF_GRID_STRIDE.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min<int64_t>((n + threads - 1) / threads, 1 << 20)));
}

#ifdef MEDGAN_FAST_EMULATED
inline cudaStream_t current_stream() { return nullptr; }
inline c10::DataPtr device_buffer(size_t bytes) { return emulation::allocate(bytes); }
#else
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

// Temporary device memory from torch's caching allocator (freed with the DataPtr).
inline c10::DataPtr device_buffer(size_t bytes) { return c10::cuda::CUDACachingAllocator::get()->allocate(bytes); }
#endif

// Bytes of device memory free now (for drivers that size their scratch to fit).
inline int64_t free_device_memory() {
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return static_cast<int64_t>(free_bytes);
}

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

// Every launch: MF_LAUNCH(kernel, grid, block, shared_bytes, stream)(arguments...). A kernel
// name with a comma in its template arguments goes in parentheses.
#ifdef MEDGAN_FAST_EMULATED
#define MF_LAUNCH(kernel, grid, block, shared_bytes, stream)                   \
  ::medgan_fast::emulation::launch(#kernel, grid, block, shared_bytes,        \
                                   [](auto... arguments) { kernel(arguments...); })
#else
#define MF_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#endif

// Which GPU backend table a .cu defines: the real one, or the emulated build of the same file.
#ifdef MEDGAN_FAST_EMULATED
#define MF_GPU_BACKEND emulated_backend
#else
#define MF_GPU_BACKEND cuda_backend
#endif

#define MF_GRID_STRIDE(i, n)                                                                   \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)
