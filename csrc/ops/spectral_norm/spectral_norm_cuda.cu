// CUDA drivers of spectral_norm.h. The power iteration: three launches per iteration for all
// layers together (t = W v, s' = W^T t, then per-layer norms, u, v and sigma), where a
// per-layer chain of matrix-vector products and normalisations costs about ten. The weight
// gradient: two launches, where the same math in torch ops costs about seven. Reductions go through shared
// memory in a fixed order (no atomics), so results are the same run to run.
#include "common/cuda_utils.cuh"
#include "ops/spectral_norm/spectral_norm.h"

namespace medgan_fast::spectral_norm {
namespace {

constexpr int kWarp = 32;
constexpr int kRowGroups = 8;  // columns kernel: 32 columns x 8 row groups per block

template <typename T>
__device__ T warp_sum(T value) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) value += __shfl_down_sync(0xffffffffu, value, offset);
  return value;
}

// Sum over the block of `value`; the result is valid in thread 0.
template <typename T>
__device__ T block_sum(T value, T* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

// t = W v: one warp per row of every layer.
template <typename T>
__global__ void rows_kernel(const Layer<T>* layers, int count, int64_t total_rows) {
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * blockDim.x / kWarp;
  for (int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / kWarp; row < total_rows;
       row += warps) {
    const Layer<T>& L = layers[find_layer<T, true>(layers, count, row)];
    const int64_t r = row - L.row_offset;
    T acc = 0;
    for (int64_t c = lane; c < L.width(); c += kWarp) acc += L.at(r, c) * L.v[c];
    acc = warp_sum(acc);
    if (lane == 0) L.t[r] = acc;
  }
}

// s' = W^T t: threadIdx.x picks one of 32 consecutive columns (coalesced reads of a row),
// threadIdx.y one of 8 interleaved row groups, summed in shared memory.
template <typename T>
__global__ void columns_kernel(const Layer<T>* layers, int count, int64_t total_columns) {
  __shared__ T partial[kRowGroups][kWarp];
  const int64_t column = static_cast<int64_t>(blockIdx.x) * kWarp + threadIdx.x;
  T acc = 0;
  const Layer<T>* L = nullptr;
  if (column < total_columns) {
    L = &layers[find_layer<T, false>(layers, count, column)];
    const int64_t c = column - L->column_offset;
    for (int64_t r = threadIdx.y; r < L->h; r += kRowGroups) acc += L->at(r, c) * L->t[r];
  }
  partial[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && L != nullptr) {
    T sum = 0;
    for (int g = 0; g < kRowGroups; ++g) sum += partial[g][threadIdx.x];
    L->s[column - L->column_offset] = sum;
  }
}

// One block per layer: norms of t and s', then u, v and sigma.
template <typename T>
__global__ void finish_kernel(const Layer<T>* layers, T eps, T* sigmas) {
  __shared__ T shared[kThreads];
  const Layer<T>& L = layers[blockIdx.x];
  T t_sq = 0, s_sq = 0;
  for (int64_t r = threadIdx.x; r < L.h; r += blockDim.x) t_sq += L.t[r] * L.t[r];
  for (int64_t c = threadIdx.x; c < L.width(); c += blockDim.x) s_sq += L.s[c] * L.s[c];
  t_sq = block_sum(t_sq, shared);
  s_sq = block_sum(s_sq, shared);
  const Scales<T> scale = finish_scales(t_sq, s_sq, eps);
  for (int64_t r = threadIdx.x; r < L.h; r += blockDim.x) L.u[r] = L.t[r] * scale.u;
  for (int64_t c = threadIdx.x; c < L.width(); c += blockDim.x) L.v[c] = L.s[c] * scale.v;
  if (threadIdx.x == 0) sigmas[blockIdx.x] = scale.sigma;
}

// Eval: sigma = u . t, one block per layer.
template <typename T>
__global__ void sigma_kernel(const Layer<T>* layers, T* sigmas) {
  __shared__ T shared[kThreads];
  const Layer<T>& L = layers[blockIdx.x];
  T acc = 0;
  for (int64_t r = threadIdx.x; r < L.h; r += blockDim.x) acc += L.u[r] * L.t[r];
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) sigmas[blockIdx.x] = acc;
}

// The weight gradient (spectral_norm.h): one launch for the dot product's partial sums, one
// for the rank-1 pass, each of whose blocks sums the partials itself in the same order.
constexpr int kDotBlocks = kThreads;  // partials of the dot product, at most one per thread
constexpr unsigned int kRankOneBlocks = 1024;

template <typename T>
__global__ void dot_partials_kernel(const T* a, const T* b, int64_t n, double* partials) {
  __shared__ double shared[kThreads];
  double acc = 0;
  MF_GRID_STRIDE(i, n) acc += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  acc = block_sum(acc, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

template <typename T>
__global__ void rank_one_kernel(WeightGrad<T> g, const double* partials, int num_partials) {
  __shared__ double shared[kThreads];
  const double dot = block_sum(static_cast<int>(threadIdx.x) < num_partials ? partials[threadIdx.x] : 0.0, shared);
  const RankOneTerm<T> term = rank_one_term(*g.sigma, dot, g.weight_scaled);
  MF_GRID_STRIDE(i, g.P * g.h * g.Q) {
    const int64_t row = i / g.Q, r = row % g.h, p = row / g.h;
    g.grad[i] = completed_weight_grad(g.grad[i], term.coefficient * g.u[r], g.v[p * g.Q + i % g.Q], term.scale);
  }
}

template <typename T>
void weight_grad(const WeightGrad<T>& g) {
  const cudaStream_t stream = current_stream();
  const unsigned int dot_blocks = std::min<unsigned int>(kDotBlocks, blocks_for(g.n_kept));
  const c10::DataPtr partials = device_buffer(dot_blocks * sizeof(double));
  auto* sums = static_cast<double*>(partials.get());
  MF_LAUNCH(dot_partials_kernel, dot_blocks, kThreads, 0, stream)(g.a, g.kept, g.n_kept, sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const unsigned int blocks = std::min(kRankOneBlocks, blocks_for(g.P * g.h * g.Q));
  MF_LAUNCH(rank_one_kernel, blocks, kThreads, 0, stream)(g, sums, static_cast<int>(dot_blocks));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void power_iteration(Layer<T>* host_layers, int count, int64_t n_iterations, double eps, T* sigmas) {
  const cudaStream_t stream = current_stream();
  const Layer<T>& last = host_layers[count - 1];
  const int64_t total_rows = last.row_offset + last.h, total_columns = last.column_offset + last.width();
  const c10::DataPtr table = device_copy(host_layers, count);
  const auto* layers = static_cast<const Layer<T>*>(table.get());
  const unsigned int row_blocks = blocks_for(total_rows * kWarp);
  const unsigned int column_blocks = static_cast<unsigned int>((total_columns + kWarp - 1) / kWarp);

  if (n_iterations == 0) {
    MF_LAUNCH(rows_kernel, row_blocks, kThreads, 0, stream)(layers, count, total_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    MF_LAUNCH(sigma_kernel, count, kThreads, 0, stream)(layers, sigmas);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  for (int64_t it = 0; it < n_iterations; ++it) {
    MF_LAUNCH(rows_kernel, row_blocks, kThreads, 0, stream)(layers, count, total_rows);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    MF_LAUNCH(columns_kernel, column_blocks, dim3(kWarp, kRowGroups), 0, stream)(layers, count, total_columns);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    MF_LAUNCH(finish_kernel, count, kThreads, 0, stream)(layers, static_cast<T>(eps), sigmas);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void weight_grad_cuda_f32(const WeightGrad<float>& g) { weight_grad(g); }
void weight_grad_cuda_f64(const WeightGrad<double>& g) { weight_grad(g); }

void power_iteration_cuda_f32(Layer<float>* layers, int count, int64_t n_iterations, double eps, float* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

void power_iteration_cuda_f64(Layer<double>* layers, int count, int64_t n_iterations, double eps, double* sigmas) {
  power_iteration(layers, count, n_iterations, eps, sigmas);
}

}  // namespace

extern const Backend MF_GPU_BACKEND{power_iteration_cuda_f32, power_iteration_cuda_f64, weight_grad_cuda_f32,
                                    weight_grad_cuda_f64};

}  // namespace medgan_fast::spectral_norm
