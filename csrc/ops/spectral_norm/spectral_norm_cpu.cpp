// CPU driver of spectral_norm.h: each pass is one parallel loop over the rows (or column
// blocks) of all layers together, so small layers share threads with large ones.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/spectral_norm/spectral_norm.h"

namespace medgan_fast::spectral_norm {
namespace {

// A run of up to kColumnBlock columns of one layer with the same p, so that each of its
// rows is contiguous in memory.
struct ColumnBlock {
  int layer;
  int64_t begin, end;
};
constexpr int64_t kColumnBlock = 256;

// a . b with independent partial sums: a single running sum is a dependency chain the
// compiler may not reorder (no -ffast-math), so it would not vectorise.
template <typename T>
T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int kLanes = 16;
  T lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += a[i + j] * b[i + j];
  T acc = 0;
  for (; i < n; ++i) acc += a[i] * b[i];
  for (int j = 0; j < kLanes; ++j) acc += lanes[j];
  return acc;
}

// t = W v for every layer.
template <typename T>
void rows_pass(Layer<T>* layers, int count, int64_t total_rows) {
  at::parallel_for(0, total_rows, 16, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const Layer<T>& L = layers[find_layer<T, true>(layers, count, row)];
      const int64_t r = row - L.row_offset;
      T acc = 0;
      for (int64_t p = 0; p < L.P; ++p) acc += dot(L.weight + (p * L.h + r) * L.Q, L.v + p * L.Q, L.Q);
      L.t[r] = acc;
    }
  });
}

template <typename T>
void axpy(T* __restrict y, const T* __restrict x, T a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// s' = W^T t for every layer.
template <typename T>
void columns_pass(Layer<T>* layers, const std::vector<ColumnBlock>& blocks) {
  at::parallel_for(0, static_cast<int64_t>(blocks.size()), 1, [&](int64_t first, int64_t last) {
    T acc[kColumnBlock];
    for (int64_t b = first; b < last; ++b) {
      const Layer<T>& L = layers[blocks[b].layer];
      const int64_t p = blocks[b].begin / L.Q, q0 = blocks[b].begin % L.Q, n = blocks[b].end - blocks[b].begin;
      std::fill(acc, acc + n, T(0));
      for (int64_t r = 0; r < L.h; ++r) axpy(acc, L.weight + (p * L.h + r) * L.Q + q0, L.t[r], n);
      std::copy(acc, acc + n, L.s + blocks[b].begin);
    }
  });
}


template <typename T>
void power_iteration(Layer<T>* layers, int count, int64_t n_iterations, double eps, T* sigmas) {
  const int64_t total_rows = layers[count - 1].row_offset + layers[count - 1].h;
  std::vector<ColumnBlock> blocks;
  for (int k = 0; k < count; ++k) {
    for (int64_t c = 0; c < layers[k].width();) {
      const int64_t end = std::min({c + kColumnBlock, (c / layers[k].Q + 1) * layers[k].Q, layers[k].width()});
      blocks.push_back({k, c, end});
      c = end;
    }
  }
  if (n_iterations == 0) {
    rows_pass(layers, count, total_rows);
    for (int k = 0; k < count; ++k) {
      sigmas[k] = dot(layers[k].u, layers[k].t, layers[k].h);
    }
    return;
  }
  for (int64_t it = 0; it < n_iterations; ++it) {
    rows_pass(layers, count, total_rows);
    columns_pass(layers, blocks);
    at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        const Layer<T>& L = layers[k];
        const Scales<T> scale = finish_scales(dot(L.t, L.t, L.h), dot(L.s, L.s, L.width()), T(eps));
        for (int64_t r = 0; r < L.h; ++r) L.u[r] = L.t[r] * scale.u;
        for (int64_t c = 0; c < L.width(); ++c) L.v[c] = L.s[c] * scale.v;
        sigmas[k] = scale.sigma;
      }
    });
  }
}

}  // namespace

void power_iteration_cpu_f32(Layer<float>* layers, int count, int64_t n_iterations, double eps, float* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

void power_iteration_cpu_f64(Layer<double>* layers, int count, int64_t n_iterations, double eps, double* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

}  // namespace medgan_fast::spectral_norm
