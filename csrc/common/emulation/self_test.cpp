// Kernels that test the emulation itself (tests/test_emulation.py), written as CUDA code:
// each checks one promise of emulation.h, and each would give a different answer (or hang)
// if barriers, shuffles, limits or the schedule were emulated wrongly.
#ifdef MEDGAN_FAST_WITH_EMULATION

#define MEDGAN_FAST_EMULATED
#include "common/cuda_utils.cuh"
#include "common/emulation/control.h"

#include <string>
#include <vector>

namespace medgan_fast::emulation {
namespace {

// out[t] = what thread t reads from its neighbour's slot after a barrier: right only if
// every thread of this block wrote before any read (each block writes other values, so
// what an earlier block left in shared memory does not pass).
__global__ void barrier_kernel(int64_t* out) {
  __shared__ int64_t slots[256];
  const unsigned t = threadIdx.x;
  slots[t] = 1000 * (blockIdx.x + 1) + t;
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = slots[(t + 1) % blockDim.x];
}

// Half the block returns before the barrier: a GPU hangs or misbehaves; we raise.
__global__ void missing_barrier_kernel(int64_t* out) {
  if (threadIdx.x < blockDim.x / 2) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

// Four shuffles and a ballot per lane: down 1, up 3, xor 5, broadcast of lane 7.
__global__ void shuffle_kernel(int64_t* out) {
  const unsigned t = threadIdx.x;
  const int64_t v = 100 + t;
  out[5 * t + 0] = __shfl_down_sync(0xffffffffu, v, 1);
  out[5 * t + 1] = __shfl_up_sync(0xffffffffu, v, 3);
  out[5 * t + 2] = __shfl_xor_sync(0xffffffffu, v, 5);
  out[5 * t + 3] = __shfl_sync(0xffffffffu, v, 7);
  out[5 * t + 4] = __ballot_sync(0xffffffffu, t % 3 == 0);
}

// A full mask in a block whose last warp has 16 lanes.
__global__ void partial_warp_kernel(int64_t* out) { out[threadIdx.x] = __shfl_down_sync(0xffffffffu, 1, 1); }

__global__ void nothing_kernel(int64_t*) {}

// out[block * threads + thread] = the position at which that thread ran.
__global__ void order_kernel(int64_t* out, int64_t* counter) {
  out[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(reinterpret_cast<unsigned long long*>(counter), 1ull);
}

// A tree reduction with barriers, the pattern of metrics_cuda.cu's reduce_kernel.
__global__ void reduce_kernel(const int64_t* in, int64_t* out) {
  __shared__ int64_t partial[128];
  partial[threadIdx.x] = in[blockIdx.x * blockDim.x + threadIdx.x];
  __syncthreads();
  for (unsigned stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = partial[0];
}

}  // namespace

std::vector<int64_t> self_test(const std::string& name) {
  std::vector<int64_t> out;
  if (name == "barrier") {
    out.assign(4 * 256, -1);
    MF_LAUNCH(barrier_kernel, 4, 256, 0, nullptr)(out.data());
  } else if (name == "missing_barrier") {
    out.assign(64, 0);
    MF_LAUNCH(missing_barrier_kernel, 1, 64, 0, nullptr)(out.data());
  } else if (name == "shuffle") {
    out.assign(5 * 64, -1);
    MF_LAUNCH(shuffle_kernel, 1, 64, 0, nullptr)(out.data());
  } else if (name == "partial_warp") {
    out.assign(48, 0);
    MF_LAUNCH(partial_warp_kernel, 1, 48, 0, nullptr)(out.data());
  } else if (name == "grid_y_limit") {
    MF_LAUNCH(nothing_kernel, dim3(1, 70000), 32, 0, nullptr)(out.data());
  } else if (name == "zero_blocks") {
    MF_LAUNCH(nothing_kernel, 0, 32, 0, nullptr)(out.data());
  } else if (name == "block_limit") {
    MF_LAUNCH(nothing_kernel, 1, dim3(64, 32), 0, nullptr)(out.data());
  } else if (name == "order") {
    out.assign(8 * 64, -1);
    int64_t counter = 0;
    MF_LAUNCH(order_kernel, 8, 64, 0, nullptr)(out.data(), &counter);
  } else if (name == "reduce") {
    std::vector<int64_t> in(3 * 128);
    for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<int64_t>(i);
    out.assign(3, -1);
    MF_LAUNCH(reduce_kernel, 3, 128, 0, nullptr)(in.data(), out.data());
  } else if (name == "allocate") {
    const c10::DataPtr buffer = allocate(1 << 20);
    const auto* bytes = static_cast<const unsigned char*>(buffer.get());
    out.assign(bytes, bytes + 16);
  } else {
    TORCH_CHECK(false, "unknown emulation self-test ", name);
  }
  return out;
}

}  // namespace medgan_fast::emulation

#endif  // MEDGAN_FAST_WITH_EMULATION
