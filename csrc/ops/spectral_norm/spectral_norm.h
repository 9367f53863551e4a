// Spectral normalisation: the power iteration of many weights at once, shared by the
// CPU driver and the CUDA kernels.
//
// Each weight is a matrix W (h x w) read in place from its contiguous tensor, viewed as
// (P, h, Q): row r, column c = p*Q + q is element (p, r, q). dim = 0 gives P = 1; a
// transposed convolution's dim = 1 gives P = in_channels. This is the column order of
// torch's weight.permute(dim, ...).reshape(h, -1), so u and v are torch's.
//
// One iteration, as torch.nn.utils.parametrizations.spectral_norm's _power_method, with
// normalize(x) = x / max(||x||, eps):
//     t  = W v                        (pass 1 over W)
//     s' = W^T t                      (pass 2 over W; W^T u = s' / max(||t||, eps))
//     u  = t / max(||t||, eps),  s = s' / max(||t||, eps),  v = s / max(||s||, eps)
//     sigma = u^T W v = s . v = ||s||^2 / max(||s||, eps)
// so sigma needs no third pass. With no iterations (eval), sigma = u . (W v).
#pragma once

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace medgan_fast::spectral_norm {

template <typename T>
struct Layer {
  const T* weight;  // (P, h, Q), contiguous
  T* u;             // (h), updated in place
  T* v;             // (P*Q), updated in place
  T* t;             // scratch (h): W v
  T* s;             // scratch (P*Q): W^T t
  int64_t P, h, Q;
  int64_t row_offset;     // first row / column of this layer in the flattened lists of all
  int64_t column_offset;  // layers' rows / columns (the kernels' task indices)
  MF_HD int64_t width() const { return P * Q; }
  MF_HD T at(int64_t r, int64_t c) const { return weight[((c / Q) * h + r) * Q + c % Q]; }
};

// The layer whose [offset, offset + size) range of rows (or columns) holds `index`.
template <typename T, bool rows>
MF_HD int find_layer(const Layer<T>* layers, int count, int64_t index) {
  int k = 0;
  while (k + 1 < count && (rows ? layers[k + 1].row_offset : layers[k + 1].column_offset) <= index) ++k;
  return k;
}

// Per layer, after t and s' are complete: normalise u and v, and return sigma.
// t_sq = ||t||^2, s_sq = ||s'||^2.
template <typename T>
struct Scales {
  T u;      // u = t * scales.u
  T v;      // v = s' * scales.v
  T sigma;
};

// Sums accumulate in the weight's dtype (float for float32, as torch's mv does).
template <typename T>
MF_HD Scales<T> finish_scales(T t_sq, T s_sq, T eps) {
  const T t_norm = std::sqrt(t_sq);
  const T t_div = t_norm > eps ? t_norm : eps;
  const T s_norm = std::sqrt(s_sq) / t_div;  // ||s||, s = s' / max(||t||, eps)
  const T s_div = s_norm > eps ? s_norm : eps;
  return {T(1) / t_div, T(1) / (t_div * s_div), s_norm * s_norm / s_div};
}

// ---------------------------------------------------------------------------------------
// The weight gradient of a spectrally normalised layer, completed in place: sigma's share,
// the rank-1 term through sigma = u^T W v (u, v constant), added in one pass over it.
//   weight scaled (the layer ran with kept = W / sigma; grad holds G, the gradient of kept):
//     grad_W = (G - <G, kept> u v^T) / sigma
//   output scaled (the layer ran with W and multiplied its output kept = layer(x, W) by
//   1 / sigma; grad holds G, the gradient of W for the incoming gradient / sigma = a):
//     grad_W = G - (<a, kept> / sigma) u v^T
// Both are grad_W = scale * (G - coefficient * u v^T) with these two numbers (the dot
// product is summed in double):
template <typename T>
struct RankOneTerm {
  T scale;
  T coefficient;
};

template <typename T>
MF_HD RankOneTerm<T> rank_one_term(T sigma, double dot, bool weight_scaled) {
  return weight_scaled ? RankOneTerm<T>{T(1) / sigma, static_cast<T>(dot)}
                       : RankOneTerm<T>{T(1), static_cast<T>(dot / sigma)};
}

// One element of row r, column c; coefficient_u = term.coefficient * u[r].
template <typename T>
MF_HD T completed_weight_grad(T g, T coefficient_u, T v_c, T scale) {
  return scale * (g - coefficient_u * v_c);
}

template <typename T>
struct WeightGrad {
  T* grad;          // (P, h, Q), contiguous, updated in place
  const T* kept;    // n_kept elements
  const T* a;       // n_kept elements: grad itself (weight scaled) or the output gradient / sigma
  int64_t n_kept;
  const T* sigma;   // one value, read on the device
  const T* u;       // (h)
  const T* v;       // (P*Q)
  int64_t P, h, Q;
  bool weight_scaled;
};

// ---------------------------------------------------------------------------------------
// Drivers. `sigmas` gets one value per layer. n_iterations = 0: sigma = u . (W v), u and v
// unchanged.

void power_iteration_cpu_f32(Layer<float>* layers, int count, int64_t n_iterations, double eps, float* sigmas);
void power_iteration_cpu_f64(Layer<double>* layers, int count, int64_t n_iterations, double eps, double* sigmas);
void weight_grad_cpu_f32(const WeightGrad<float>& g);
void weight_grad_cpu_f64(const WeightGrad<double>& g);

// One backend's drivers (spectral_norm_cuda.cu has the same ones as the CPU). cuda_backend:
// that file built by nvcc; emulated_backend: built against the CPU emulation.
struct Backend {
  decltype(&power_iteration_cpu_f32) f32;
  decltype(&power_iteration_cpu_f64) f64;
  decltype(&weight_grad_cpu_f32) weight_grad_f32;
  decltype(&weight_grad_cpu_f64) weight_grad_f64;
};
extern const Backend cuda_backend;
extern const Backend emulated_backend;

}  // namespace medgan_fast::spectral_norm
