// CUDA drivers of modconv.h. Forward: one grid-stride pass over the output. Backward: one
// block per (n, o) plane writes grad_y and sums g and g * y through shared memory in a fixed
// order (no atomics: the same sums run to run); the noise gradient is a grid-stride pass over
// noise pixels, each thread summing its pixel over the planes (reads coalesced by pixel).
#include "common/cuda_utils.cuh"
#include "ops/modconv/modconv.h"

namespace medgan_fast::modconv {
namespace {

template <typename T>
__global__ void forward_kernel(Planes<T> p, Epilogue e, T* out) {
  const Gains<acc_t<T>> g = gains_of<acc_t<T>>(e);
  MF_GRID_STRIDE(i, p.planes() * p.pixels) out[i] = forward_element(p, i / p.pixels, i % p.pixels, g);
}

// Sum over the block of two values at once; the results are valid in thread 0.
template <typename A>
__device__ void block_sum2(A& a, A& b, A* shared_a, A* shared_b) {
  shared_a[threadIdx.x] = a;
  shared_b[threadIdx.x] = b;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      shared_a[threadIdx.x] += shared_a[threadIdx.x + stride];
      shared_b[threadIdx.x] += shared_b[threadIdx.x + stride];
    }
    __syncthreads();
  }
  a = shared_a[0];
  b = shared_b[0];
}

template <typename T>
__global__ void backward_planes_kernel(Backward<T> b, Epilogue e) {
  using A = acc_t<T>;
  __shared__ A shared_g[kThreads];
  __shared__ A shared_gy[kThreads];
  const Gains<A> gains = gains_of<A>(e);
  for (int64_t plane = blockIdx.x; plane < b.in.planes(); plane += gridDim.x) {
    const int64_t base = plane * b.in.pixels;
    const A d = b.in.d(plane);
    A sum_g = 0, sum_gy = 0;
    for (int64_t i = threadIdx.x; i < b.in.pixels; i += blockDim.x) {
      const A g = pre_grad(b, base + i, gains);
      b.grad_y[base + i] = T(g * d);
      sum_g += g;
      sum_gy += g * A(b.in.y[base + i]);
    }
    block_sum2(sum_g, sum_gy, shared_g, shared_gy);
    if (threadIdx.x == 0) {
      b.sums[plane] = T(sum_g);
      b.sums[b.in.planes() + plane] = T(sum_gy);
    }
    __syncthreads();  // shared memory is reused by the next plane
  }
}

template <typename T>
__global__ void noise_kernel(Backward<T> b, Epilogue e) {
  const Gains<acc_t<T>> g = gains_of<acc_t<T>>(e);
  MF_GRID_STRIDE(i, b.in.noise_batch * b.in.pixels) {
    b.grad_noise[i] = T(noise_grad_element(b, i / b.in.pixels, i % b.in.pixels, g));
  }
}

constexpr unsigned int kMaxPlaneBlocks = 1 << 16;

template <typename T>
void forward(const Planes<T>& p, const Epilogue& e, T* out) {
  const int64_t n = p.planes() * p.pixels;
  if (n == 0) return;
  MF_LAUNCH(forward_kernel<T>, blocks_for(n), kThreads, 0, current_stream())(p, e, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void backward(const Backward<T>& b, const Epilogue& e) {
  if (b.in.planes() == 0) return;
  const cudaStream_t stream = current_stream();
  const unsigned int plane_blocks = static_cast<unsigned int>(std::min<int64_t>(b.in.planes(), kMaxPlaneBlocks));
  MF_LAUNCH(backward_planes_kernel<T>, plane_blocks, kThreads, 0, stream)(b, e);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (b.grad_noise == nullptr || b.in.pixels == 0) return;
  MF_LAUNCH(noise_kernel<T>, blocks_for(b.in.noise_batch * b.in.pixels), kThreads, 0, stream)(b, e);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
constexpr Drivers<T> kDrivers{forward<T>, backward<T>};

}  // namespace

extern const Backend MF_GPU_BACKEND{kDrivers<float>, kDrivers<double>, kDrivers<c10::Half>, kDrivers<c10::BFloat16>};

}  // namespace medgan_fast::modconv
