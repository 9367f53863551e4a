// Modulated convolution's epilogue, shared by the CPU driver and the CUDA kernels.
//
// StyleGAN2's modulated convolution (Karras et al. 2020, eq. 1-3) with per-sample styles
// s[n, i] and demodulation coefficients d[n, o] = rsqrt(sum_i s[n, i]^2 sum_k w[o, i, k]^2 + eps)
// is computed here as NVIDIA trains it: y = conv(x * s, w) with the shared weight (ATen's
// convolution, cuDNN / oneDNN), then, per output element of plane (n, o),
//     pre = y * d[n, o] + noise[n, h, w] + bias[o]
//     out = clamp(act(pre) * gain, -clamp, clamp)
// This file is that epilogue and its backward: one pass forward, one pass per plane
// backward (where plain torch ops take four to five passes each way).
//
// The backward reads the output, not the pre-activation: act is monotone and gain > 0, so
// out > 0 exactly where pre > 0, and |out| < clamp exactly where the clamp let it through.
// Per plane it returns grad_y = g * d and the two sums the caller needs,
//     sum(g) (bias) and sum(g * y) (d), with g = d out / d pre * grad_out,
// and per pixel sum over planes of g (noise). Sums accumulate in float for float, half and
// bfloat16 storage, in double for double, in a fixed order (no atomics).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "common/host_device.h"

namespace medgan_fast::modconv {

// The activations StyleGAN2's layers use. The caller folds their default gains (sqrt(2) for
// lrelu) into the gain it passes.
enum Activation : int { kLinear = 0, kLrelu = 1 };

template <typename T>
struct Accumulate {
  using type = float;
};
template <>
struct Accumulate<double> {
  using type = double;
};
template <typename T>
using acc_t = typename Accumulate<T>::type;

// The epilogue's constants, made once on the host: out = clamp(pre * (pre < 0 ? negative_gain
// : positive_gain), -bound, bound). linear: both gains equal; lrelu: negative_gain = alpha *
// gain; no clamp: bound = infinity. Branch-free, so the CPU loops vectorise. double here,
// rounded once per plane or launch to the accumulation type (float64 runs stay exact).
struct Epilogue {
  double positive_gain, negative_gain, bound;
};

template <typename A>
struct Gains {
  A positive, negative, bound;
};

template <typename A>
MF_HD Gains<A> gains_of(const Epilogue& e) {
  return {A(e.positive_gain), A(e.negative_gain), A(e.bound)};
}

template <typename A>
MF_HD A epilogue_value(A pre, const Gains<A>& g) {
  const A out = pre * (pre < A(0) ? g.negative : g.positive);
  return out > g.bound ? g.bound : (out < -g.bound ? -g.bound : out);
}

// d out / d pre, read from the output (see the file comment): pre > 0 exactly where out > 0
// (torch's leaky_relu takes the negative slope at 0), clamped where |out| reached the bound.
template <typename A>
MF_HD A epilogue_slope(A out, const Gains<A>& g) {
  const A slope = out > A(0) ? g.positive : g.negative;
  return out < g.bound && out > -g.bound ? slope : A(0);
}

// The tensors of one call, NCHW contiguous. noise has noise_batch planes of H*W (0: none;
// 1: shared by the batch; N: one per sample), broadcast over the channels.
template <typename T>
struct Planes {
  int64_t n, channels, pixels;  // N, O, H*W
  const T* y;                   // (N, O, H, W)
  const T* dcoefs;              // (N, O) or nullptr (no demodulation: d = 1)
  const T* noise;               // (noise_batch, 1, H, W) or nullptr
  int64_t noise_batch;
  const T* bias;  // (O) or nullptr
  MF_HD int64_t planes() const { return n * channels; }
  MF_HD acc_t<T> d(int64_t plane) const { return dcoefs ? acc_t<T>(dcoefs[plane]) : acc_t<T>(1); }
  MF_HD acc_t<T> b(int64_t plane) const { return bias ? acc_t<T>(bias[plane % channels]) : acc_t<T>(0); }
  MF_HD const T* noise_plane(int64_t plane) const {
    return noise ? noise + (noise_batch == 1 ? 0 : plane / channels) * pixels : nullptr;
  }
};

// One output element; pre = y * d + noise + bias in the accumulation type.
template <typename T>
MF_HD T forward_element(const Planes<T>& p, int64_t plane, int64_t pixel, const Gains<acc_t<T>>& g) {
  using A = acc_t<T>;
  const T* noise = p.noise_plane(plane);
  A pre = A(p.y[plane * p.pixels + pixel]) * p.d(plane);
  if (noise) pre += A(noise[pixel]);
  return T(epilogue_value(pre + p.b(plane), g));
}

template <typename T>
struct Backward {
  Planes<T> in;
  const T* grad;     // (N, O, H, W): the gradient of out
  const T* out;      // (N, O, H, W)
  T* grad_y;         // (N, O, H, W)
  T* sums;           // (2, N, O): sum(g) and sum(g * y) per plane
  T* grad_noise;     // (noise_batch, H, W) or nullptr
};

// g = d out / d pre * grad_out for one element.
template <typename T>
MF_HD acc_t<T> pre_grad(const Backward<T>& b, int64_t index, const Gains<acc_t<T>>& g) {
  using A = acc_t<T>;
  return A(b.grad[index]) * epilogue_slope(A(b.out[index]), g);
}

// The noise gradient of one pixel of noise plane m: g summed over the channels, and over
// the batch when the noise is shared.
template <typename T>
MF_HD acc_t<T> noise_grad_element(const Backward<T>& b, int64_t m, int64_t pixel, const Gains<acc_t<T>>& g) {
  using A = acc_t<T>;
  const int64_t first = b.in.noise_batch == 1 ? 0 : m, last = b.in.noise_batch == 1 ? b.in.n : m + 1;
  A acc = 0;
  for (int64_t n = first; n < last; ++n)
    for (int64_t o = 0; o < b.in.channels; ++o) acc += pre_grad(b, (n * b.in.channels + o) * b.in.pixels + pixel, g);
  return acc;
}

// ---------------------------------------------------------------------------------------
// Drivers, one per storage type (modconv_cpu.cpp; modconv_cuda.cu has the same ones).

template <typename T>
struct Drivers {
  void (*forward)(const Planes<T>&, const Epilogue&, T* out);
  void (*backward)(const Backward<T>&, const Epilogue&);
};

template <typename T>
void forward_cpu(const Planes<T>& p, const Epilogue& e, T* out);
template <typename T>
void backward_cpu(const Backward<T>& b, const Epilogue& e);

struct Backend {
  Drivers<float> f32;
  Drivers<double> f64;
  Drivers<c10::Half> f16;
  Drivers<c10::BFloat16> bf16;
};
extern const Backend cuda_backend;
extern const Backend emulated_backend;

}  // namespace medgan_fast::modconv
