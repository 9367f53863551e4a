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

// t = W v for every layer.
template <typename T>
void rows_pass(Layer<T>* layers, int count, int64_t total_rows) {
  at::parallel_for(0, total_rows, 16, [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row) {
      const Layer<T>& L = layers[find_layer<T, true>(layers, count, row)];
      const int64_t r = row - L.row_offset;
      T acc = 0;
      for (int64_t p = 0; p < L.P; ++p) {
        const T* w = L.weight + (p * L.h + r) * L.Q;
        const T* v = L.v + p * L.Q;
        for (int64_t q = 0; q < L.Q; ++q) acc += w[q] * v[q];
      }
      L.t[r] = acc;
    }
  });
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
      for (int64_t r = 0; r < L.h; ++r) {
        const T* w = L.weight + (p * L.h + r) * L.Q + q0;
        const T t = L.t[r];
        for (int64_t j = 0; j < n; ++j) acc[j] += w[j] * t;
      }
      std::copy(acc, acc + n, L.s + blocks[b].begin);
    }
  });
}

template <typename T>
T sum_of_squares(const T* x, int64_t n) {
  T acc = 0;
  for (int64_t i = 0; i < n; ++i) acc += x[i] * x[i];
  return acc;
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
      T acc = 0;
      for (int64_t r = 0; r < layers[k].h; ++r) acc += layers[k].u[r] * layers[k].t[r];
      sigmas[k] = acc;
    }
    return;
  }
  for (int64_t it = 0; it < n_iterations; ++it) {
    rows_pass(layers, count, total_rows);
    columns_pass(layers, blocks);
    at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
      for (int64_t k = first; k < last; ++k) {
        const Layer<T>& L = layers[k];
        const Scales<T> scale = finish_scales(sum_of_squares(L.t, L.h), sum_of_squares(L.s, L.width()), T(eps));
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
