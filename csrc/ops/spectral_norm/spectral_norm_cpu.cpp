// CPU driver of spectral_norm.h: one parallel loop over blocks of rows of all layers
// together per iteration (small layers share threads with large ones), reading each
// weight once: t = W v and s' = W^T t come from the same pass over each row.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common/cpu_clones.h"
#include "ops/spectral_norm/spectral_norm.h"

namespace medgan_fast::spectral_norm {
namespace {

// a . b summed in Acc with kLanes independent partial sums: a single running sum is a
// dependency chain the compiler may not reorder (no -ffast-math), so it would not vectorise.
template <typename Acc, int kLanes, typename T>
MF_CPU_INLINE Acc lane_dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  Acc lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<Acc>(a[i + j]) * static_cast<Acc>(b[i + j]);
  Acc acc = 0;
  for (; i < n; ++i) acc += static_cast<Acc>(a[i]) * static_cast<Acc>(b[i]);
  for (int j = 0; j < kLanes; ++j) acc += lanes[j];
  return acc;
}

// The power iteration sums in the weight's dtype, as torch.mv does.
template <typename T>
MF_CPU_INLINE T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  return lane_dot<T, 16>(a, b, n);
}

template <typename T>
MF_CPU_INLINE void axpy(T* __restrict y, const T* __restrict x, T a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a * x[j];
}

// y += a0 x0 + a1 x1 + a2 x2 + a3 x3: one load and store of y for four rows (the single-row
// axpy's stores of y were most of the power iteration's time with the weights in cache).
template <typename T>
MF_CPU_INLINE void axpy4(T* __restrict y, const T* __restrict x0, const T* __restrict x1, const T* __restrict x2,
                         const T* __restrict x3, const T* a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) y[j] += a[0] * x0[j] + a[1] * x1[j] + a[2] * x2[j] + a[3] * x3[j];
}

// A block of up to kRows rows of one layer: one parallel task.
constexpr int64_t kRows = 32;
struct RowBlock {
  int layer;
  int64_t begin, end;
  int64_t partial;  // offset of this block's partial s' (the layer's width) in the scratch
  int64_t work;     // the weights of all blocks before this one: where it starts in the pass
};

// Below this many weights a pass runs on one thread.
constexpr int64_t kGrainWeights = 1 << 15;

// One block of rows, compiled for each CPU (common/cpu_clones.h), four rows at a time:
// t_r = W_r . v for each, then, while the rows are in cache, the block's partial
// s' += t_r W_r (s' = W^T t = sum_r t_r W_r) for the four together.
template <typename T>
MF_CPU_CLONES void row_block(const Layer<T>& L, const RowBlock& block, T* partial, bool columns) {
  if (columns) std::fill(partial, partial + L.width(), T(0));
  const auto row = [&](int64_t p, int64_t r) { return L.weight + (p * L.h + r) * L.Q; };
  for (int64_t first = block.begin; first < block.end; first += 4) {
    const int64_t rows = std::min<int64_t>(4, block.end - first);
    T t[4] = {};
    for (int64_t k = 0; k < rows; ++k) {
      for (int64_t p = 0; p < L.P; ++p) t[k] += dot(row(p, first + k), L.v + p * L.Q, L.Q);
      L.t[first + k] = t[k];
    }
    if (!columns) continue;
    for (int64_t p = 0; p < L.P; ++p) {
      if (rows == 4) {
        axpy4(partial + p * L.Q, row(p, first), row(p, first + 1), row(p, first + 2), row(p, first + 3), t, L.Q);
      } else {
        for (int64_t k = 0; k < rows; ++k) axpy(partial + p * L.Q, row(p, first + k), t[k], L.Q);
      }
    }
  }
}

// One pass over W for all layers. The threads split the weights, not the blocks, evenly
// (a block of a wide layer holds hundreds of times the weights of a narrow one): each
// runs the blocks that start in its share. Partials are summed in block order, so the
// result does not depend on scheduling.
template <typename T>
void rows_and_columns_pass(Layer<T>* layers, int count, const std::vector<RowBlock>& blocks, int64_t total_work,
                           T* partials, bool columns) {
  at::parallel_for(0, total_work, kGrainWeights, [&](int64_t first, int64_t last) {
    for (const RowBlock& block : blocks)
      if (block.work >= first && block.work < last)
        row_block(layers[block.layer], block, columns ? partials + block.partial : nullptr, columns);
  });
  if (!columns) return;
  at::parallel_for(0, count, 1, [&](int64_t first, int64_t last) {
    for (int64_t k = first; k < last; ++k) {
      const Layer<T>& L = layers[k];
      std::fill(L.s, L.s + L.width(), T(0));
      for (const RowBlock& block : blocks)
        if (block.layer == k) axpy(L.s, partials + block.partial, T(1), L.width());
    }
  });
}

template <typename T>
void power_iteration(Layer<T>* layers, int count, int64_t n_iterations, double eps, T* sigmas) {
  std::vector<RowBlock> blocks;
  int64_t partial_size = 0, total_work = 0;
  for (int k = 0; k < count; ++k) {
    for (int64_t r = 0; r < layers[k].h; r += kRows) {
      const int64_t end = std::min(r + kRows, layers[k].h);
      blocks.push_back({k, r, end, partial_size, total_work});
      partial_size += layers[k].width();
      total_work += (end - r) * layers[k].width();
    }
  }
  if (n_iterations == 0) {
    rows_and_columns_pass<T>(layers, count, blocks, total_work, nullptr, false);
    for (int k = 0; k < count; ++k) sigmas[k] = dot(layers[k].u, layers[k].t, layers[k].h);
    return;
  }
  std::vector<T> partials(partial_size);
  for (int64_t it = 0; it < n_iterations; ++it) {
    rows_and_columns_pass(layers, count, blocks, total_work, partials.data(), true);
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

// <a, b> in double: fixed chunks, each summed in double lanes, the chunks summed in order,
// so the result does not depend on the number of threads.
template <typename T>
MF_CPU_CLONES double chunk_dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  return lane_dot<double, 8>(a, b, n);
}

template <typename T>
double parallel_dot(const T* a, const T* b, int64_t n) {
  constexpr int64_t kChunk = 1 << 14;
  std::vector<double> partials((n + kChunk - 1) / kChunk);
  at::parallel_for(0, static_cast<int64_t>(partials.size()), 2, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) partials[c] = chunk_dot(a + c * kChunk, b + c * kChunk,
                                                                   std::min(kChunk, n - c * kChunk));
  });
  double total = 0;
  for (double partial : partials) total += partial;
  return total;
}

// Row (p, r) of the weight gradient: Q elements, against v[p*Q:(p+1)*Q].
template <typename T>
MF_CPU_CLONES void rank_one_row(T* __restrict grad, const T* __restrict v, T coefficient_u, T scale, int64_t n) {
  for (int64_t q = 0; q < n; ++q) grad[q] = completed_weight_grad(grad[q], coefficient_u, v[q], scale);
}

// The dot product first (with the weight scaled it reads grad, which the rows then rewrite).
template <typename T>
void weight_grad(const WeightGrad<T>& g) {
  const RankOneTerm<T> term = rank_one_term(*g.sigma, parallel_dot(g.a, g.kept, g.n_kept), g.weight_scaled);
  const int64_t rows = g.P * g.h;
  at::parallel_for(0, rows, std::max<int64_t>(1, kGrainWeights / g.Q), [&](int64_t first, int64_t last) {
    for (int64_t row = first; row < last; ++row)
      rank_one_row(g.grad + row * g.Q, g.v + (row / g.h) * g.Q, term.coefficient * g.u[row % g.h], term.scale, g.Q);
  });
}

}  // namespace

void weight_grad_cpu_f32(const WeightGrad<float>& g) { weight_grad(g); }
void weight_grad_cpu_f64(const WeightGrad<double>& g) { weight_grad(g); }

void power_iteration_cpu_f32(Layer<float>* layers, int count, int64_t n_iterations, double eps, float* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

void power_iteration_cpu_f64(Layer<double>* layers, int count, int64_t n_iterations, double eps, double* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

}  // namespace medgan_fast::spectral_norm
