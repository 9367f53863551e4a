// CPU driver of modconv.h: planes split among threads (at::parallel_for), each plane one
// vectorisable pass; the noise gradient in a second pass over pixel blocks.
#include <ATen/Parallel.h>

#include <algorithm>

#include "common/cpu_clones.h"
#include "ops/modconv/modconv.h"

namespace medgan_fast::modconv {
namespace {

// Enough elements per task that a thread's start-up is paid back.
constexpr int64_t kGrainElements = 1 << 14;
constexpr int kLanes = 8;  // independent partial sums: one running sum would not vectorise

int64_t plane_grain(int64_t pixels) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(pixels, 1)); }

// The per-plane constants hoisted, the loop branch-free (with or without noise), so it
// vectorises.
template <typename T>
MF_CPU_CLONES void forward_plane(const Planes<T>& p, const Epilogue& e, int64_t plane, T* out) {
  using A = acc_t<T>;
  const Gains<A> g = gains_of<A>(e);
  const A d = p.d(plane), b = p.b(plane);
  const T* __restrict y = p.y + plane * p.pixels;
  const T* __restrict noise = p.noise_plane(plane);
  T* __restrict o = out + plane * p.pixels;
  if (noise) {
    for (int64_t i = 0; i < p.pixels; ++i) o[i] = T(epilogue_value(A(y[i]) * d + A(noise[i]) + b, g));
  } else {
    for (int64_t i = 0; i < p.pixels; ++i) o[i] = T(epilogue_value(A(y[i]) * d + b, g));
  }
}

template <typename T>
MF_CPU_CLONES void backward_plane(const Backward<T>& b, const Epilogue& e, int64_t plane) {
  using A = acc_t<T>;
  const Gains<A> gains = gains_of<A>(e);
  const int64_t base = plane * b.in.pixels, n = b.in.pixels;
  const A d = b.in.d(plane);
  const T* __restrict grad = b.grad + base;
  const T* __restrict out = b.out + base;
  const T* __restrict y = b.in.y + base;
  T* __restrict grad_y = b.grad_y + base;
  A sum_g[kLanes] = {}, sum_gy[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const A g = A(grad[i + j]) * epilogue_slope(A(out[i + j]), gains);
      grad_y[i + j] = T(g * d);
      sum_g[j] += g;
      sum_gy[j] += g * A(y[i + j]);
    }
  }
  A total_g = 0, total_gy = 0;
  for (; i < n; ++i) {
    const A g = A(grad[i]) * epilogue_slope(A(out[i]), gains);
    grad_y[i] = T(g * d);
    total_g += g;
    total_gy += g * A(y[i]);
  }
  for (int j = 0; j < kLanes; ++j) total_g += sum_g[j], total_gy += sum_gy[j];
  b.sums[plane] = T(total_g);
  b.sums[b.in.planes() + plane] = T(total_gy);
}

// Pixels [first, last) of noise plane m, summed over planes in order, pixels innermost.
template <typename T>
MF_CPU_CLONES void noise_block(const Backward<T>& b, const Epilogue& e, int64_t m, int64_t first, int64_t last,
                               acc_t<T>* __restrict acc) {
  using A = acc_t<T>;
  const Gains<A> gains = gains_of<A>(e);
  std::fill(acc, acc + (last - first), A(0));
  const int64_t n0 = b.in.noise_batch == 1 ? 0 : m, n1 = b.in.noise_batch == 1 ? b.in.n : m + 1;
  for (int64_t plane = n0 * b.in.channels; plane < n1 * b.in.channels; ++plane) {
    const T* __restrict grad = b.grad + plane * b.in.pixels + first;
    const T* __restrict out = b.out + plane * b.in.pixels + first;
    for (int64_t i = 0; i < last - first; ++i) acc[i] += A(grad[i]) * epilogue_slope(A(out[i]), gains);
  }
  for (int64_t i = first; i < last; ++i) b.grad_noise[m * b.in.pixels + i] = T(acc[i - first]);
}

constexpr int64_t kNoisePixels = 1024;

}  // namespace

template <typename T>
void forward_cpu(const Planes<T>& p, const Epilogue& e, T* out) {
  at::parallel_for(0, p.planes(), plane_grain(p.pixels), [&](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) forward_plane(p, e, plane, out);
  });
}

template <typename T>
void backward_cpu(const Backward<T>& b, const Epilogue& e) {
  at::parallel_for(0, b.in.planes(), plane_grain(b.in.pixels), [&](int64_t first, int64_t last) {
    for (int64_t plane = first; plane < last; ++plane) backward_plane(b, e, plane);
  });
  if (b.grad_noise == nullptr) return;
  const int64_t blocks = (b.in.pixels + kNoisePixels - 1) / kNoisePixels;
  const int64_t per_block = kNoisePixels * b.in.planes() / b.in.noise_batch;
  at::parallel_for(0, b.in.noise_batch * blocks, std::max<int64_t>(1, kGrainElements / per_block),
                   [&](int64_t first, int64_t last) {
                     acc_t<T> acc[kNoisePixels];
                     for (int64_t task = first; task < last; ++task) {
                       const int64_t m = task / blocks, start = (task % blocks) * kNoisePixels;
                       noise_block(b, e, m, start, std::min(start + kNoisePixels, b.in.pixels), acc);
                     }
                   });
}

template void forward_cpu<float>(const Planes<float>&, const Epilogue&, float*);
template void forward_cpu<double>(const Planes<double>&, const Epilogue&, double*);
template void forward_cpu<c10::Half>(const Planes<c10::Half>&, const Epilogue&, c10::Half*);
template void forward_cpu<c10::BFloat16>(const Planes<c10::BFloat16>&, const Epilogue&, c10::BFloat16*);
template void backward_cpu<float>(const Backward<float>&, const Epilogue&);
template void backward_cpu<double>(const Backward<double>&, const Epilogue&);
template void backward_cpu<c10::Half>(const Backward<c10::Half>&, const Epilogue&);
template void backward_cpu<c10::BFloat16>(const Backward<c10::BFloat16>&, const Epilogue&);

}  // namespace medgan_fast::modconv
