// CUDA drivers of components.h.
//
// label: pixel union-find (Playne & Hawick 2018), one thread per pixel:
//   init (parent = own index for foreground), merge (unite with each earlier neighbour;
//   atomicMin links the larger root under the smaller), compress (parent = root), then
//   root flags -> inclusive scan (cub) -> label = rank of the root. Roots are the first
//   pixels of their components in raster order, so ranks are scikit-image's numbers.
//   The labels buffer doubles as the parent array.
#include "common/cuda_utils.cuh"
#ifdef MEDGAN_FAST_EMULATED
#include "common/emulation/cub_scan.h"
#else
#include <cub/device/device_scan.cuh>
#endif
#include "ops/components/components.h"

namespace medgan_fast::components {
namespace {

struct Neighbours {
  Offset offsets[13];
  int count;
};

// Other threads link roots concurrently; volatile loads see their writes. A stale read
// is harmless: unite() re-checks every link with atomicMin.
__device__ int32_t find_root(const int32_t* parent, int32_t x) {
  const volatile int32_t* p = parent;
  int32_t next = p[x];
  while (next != x) {
    x = next;
    next = p[x];
  }
  return x;
}

__device__ void unite_atomic(int32_t* parent, int32_t a, int32_t b) {
  while (true) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a == b) return;
    if (a < b) {
      const int32_t t = a;
      a = b;
      b = t;
    }
    const int32_t old = atomicMin(parent + a, b);
    if (old == a) return;  // a was still a root: now linked under b
    a = old;               // someone linked a meanwhile: retry from its new parent
  }
}

__global__ void init_kernel(const uint8_t* mask, int32_t* parent, int64_t numel) {
  MF_GRID_STRIDE(i, numel) parent[i] = mask[i] ? static_cast<int32_t>(i) : -1;
}

__global__ void merge_kernel(const uint8_t* mask, int32_t* parent, Volume v, Neighbours nb) {
  MF_GRID_STRIDE(i, v.numel()) {
    if (!mask[i]) continue;
    const int64_t x = i % v.width, r = i / v.width;
    for (int k = 0; k < nb.count; ++k) {
      const Offset& d = nb.offsets[k];
      const int64_t s = neighbour_row(v, r, d.dz, d.dy), xx = x + d.dx;
      if (s < 0 || xx < 0 || xx >= v.width) continue;
      const int64_t j = s * v.width + xx;
      if (mask[j]) unite_atomic(parent, static_cast<int32_t>(i), static_cast<int32_t>(j));
    }
  }
}

// parent -> root; rank[i] = 1 for roots (scanned next).
__global__ void compress_kernel(int32_t* parent, int32_t* rank, int64_t numel) {
  MF_GRID_STRIDE(i, numel) {
    const int32_t p = parent[i];
    const int32_t root = p < 0 ? p : find_root(parent, static_cast<int32_t>(i));
    parent[i] = root;
    rank[i] = root == i;
  }
}

// rank is now the inclusive count of roots; each image numbers from 1.
__global__ void finish_kernel(int32_t* labels, const int32_t* rank, int64_t* counts, Volume v) {
  const int64_t image_size = v.batch ? v.plane() : v.numel();
  MF_GRID_STRIDE(i, v.numel()) {
    const int64_t image = i / image_size;
    const int32_t base = image == 0 ? 0 : rank[image * image_size - 1];
    const int32_t root = labels[i];
    labels[i] = root < 0 ? 0 : rank[root] - base;
    if (i % image_size == image_size - 1) counts[image] = rank[i] - base;
  }
}

// ---------------------------------------------------------------------------------------

__global__ void init_stats_kernel(int64_t* table, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t count) {
  const int64_t sizes[3] = {s0, s1, s2};
  const int64_t fields = StatsLayout{ndim}.fields();
  MF_GRID_STRIDE(k, count + 1) init_stats(table + k * fields, ndim, sizes);
}

// Adds a component's run statistics to its row of the table: 1 + 3 ndim atomics.
__device__ void add_to_table(int64_t* table, int64_t fields, int ndim, int32_t id, const RunCoords& c) {
  auto* acc = reinterpret_cast<unsigned long long*>(table + id * fields);
  auto* signed_acc = reinterpret_cast<long long*>(table + id * fields);
  atomicAdd(acc, static_cast<unsigned long long>(c.area));
  for (int axis = 0; axis < ndim; ++axis) {
    atomicMin(signed_acc + 1 + axis, static_cast<long long>(c.lo[axis]));
    atomicMax(signed_acc + 1 + ndim + axis, static_cast<long long>(c.hi[axis]));
    atomicAdd(acc + 1 + 2 * ndim + axis, static_cast<unsigned long long>(c.sum[axis]));
  }
}

constexpr unsigned int kFullMask = 0xffffffffu;

template <typename T, typename Op>
__device__ T warp_reduce(T value, Op op) {
  for (int offset = 16; offset > 0; offset /= 2) value = op(value, __shfl_xor_sync(kFullMask, value, offset));
  return value;
}

// One thread per 32 pixels of a row. Each thread merges consecutive runs of one component
// (also across its grid-stride steps) before it writes, and each warp merges its lanes'
// last partials when they all belong to one component, so a large component costs one set
// of atomics per warp, not one per 32 pixels (a million atomics serialised on one row of
// the table for a 4096^2 object).
constexpr int64_t kStatsChunk = 32;

__global__ void accumulate_stats_kernel(const int32_t* labels, int64_t* table, int ndim, int64_t rows, int64_t height,
                                        int64_t width, int64_t count) {
  const int64_t fields = StatsLayout{ndim}.fields();
  const int64_t chunks = (width + kStatsChunk - 1) / kStatsChunk;
  int32_t pending = 0;  // the component of `partial`; 0: none
  RunCoords partial = no_run();
  MF_GRID_STRIDE(t, rows * chunks) {
    const int64_t r = t / chunks, x0 = (t % chunks) * kStatsChunk;
    const int64_t x1 = x0 + kStatsChunk < width ? x0 + kStatsChunk : width;
    for_each_label_run(labels + r * width, x0, x1, [&](int32_t id, int64_t a, int64_t b) {
      if (id < 1 || id > count) return;
      const RunCoords c = run_coords(ndim, r / height, r % height, a, b);
      if (id != pending) {
        if (pending != 0) add_to_table(table, fields, ndim, pending, partial);
        pending = id, partial = no_run();
      }
      merge_run(partial, c, ndim);
    });
  }
  // The loop has no barrier and blockDim.x is a multiple of 32, so every lane gets here.
  const auto max = [](auto p, auto q) { return p > q ? p : q; };
  const auto min = [](auto p, auto q) { return p < q ? p : q; };
  const auto sum = [](auto p, auto q) { return p + q; };
  const int32_t lead = warp_reduce(pending, max);
  const bool one_component = __ballot_sync(kFullMask, pending == lead || pending == 0) == kFullMask;
  if (!one_component) {
    if (pending != 0) add_to_table(table, fields, ndim, pending, partial);
    return;
  }
  if (lead == 0) return;
  RunCoords total = no_run();
  total.area = warp_reduce(partial.area, sum);
  for (int a = 0; a < ndim; ++a) {
    total.lo[a] = warp_reduce(partial.lo[a], min);
    total.hi[a] = warp_reduce(partial.hi[a], max);
    total.sum[a] = warp_reduce(partial.sum[a], sum);
  }
  if (threadIdx.x % 32 == 0) add_to_table(table, fields, ndim, lead, total);
}

__global__ void finish_stats_kernel(const int64_t* table, int ndim, int64_t count, int64_t* area, int64_t* bbox,
                                    double* centroid) {
  const int64_t fields = StatsLayout{ndim}.fields();
  MF_GRID_STRIDE(k, count) finish_stats(table + (k + 1) * fields, ndim, area + k, bbox + k * 2 * ndim, centroid + k * ndim);
}

// ---------------------------------------------------------------------------------------

template <typename T>
__global__ void crop_windows_kernel(const T* source, T* out, int64_t channels, int64_t height, int64_t width,
                                    const int64_t* corners, int64_t count, int64_t size) {
  MF_GRID_STRIDE(e, count * channels * size * size) {
    const int64_t j = e % size, i = (e / size) % size, c = (e / (size * size)) % channels;
    const int64_t k = e / (size * size * channels);
    const int64_t s = window_source(height, width, corners[2 * k], corners[2 * k + 1], c, i, j);
    out[e] = s < 0 ? T{} : source[s];
  }
}

__global__ void component_masks_kernel(const int32_t* labels, uint8_t* out, int64_t height, int64_t width,
                                       const int64_t* corners, const int32_t* ids, int64_t count, int64_t size) {
  MF_GRID_STRIDE(e, count * size * size) {
    const int64_t j = e % size, i = (e / size) % size, k = e / (size * size);
    const int64_t s = window_source(height, width, corners[2 * k], corners[2 * k + 1], 0, i, j);
    out[e] = s >= 0 && ids[k] != 0 && labels[s] == ids[k];
  }
}

void label_cuda(const uint8_t* mask, int32_t* labels, int64_t* counts, const Volume& volume, int connectivity) {
  const cudaStream_t stream = current_stream();
  const int64_t numel = volume.numel();
  const unsigned int blocks = blocks_for(numel);
  Neighbours nb{};
  nb.count = earlier_neighbours(volume.ndim(), connectivity, nb.offsets);

  MF_LAUNCH(init_kernel, blocks, kThreads, 0, stream)(mask, labels, numel);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  MF_LAUNCH(merge_kernel, blocks, kThreads, 0, stream)(mask, labels, volume, nb);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  c10::DataPtr rank_buffer = device_buffer(numel * sizeof(int32_t));
  auto* rank = static_cast<int32_t*>(rank_buffer.get());
  MF_LAUNCH(compress_kernel, blocks, kThreads, 0, stream)(labels, rank, numel);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  size_t temp_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(nullptr, temp_bytes, rank, rank, static_cast<int>(numel), stream));
  c10::DataPtr temp = device_buffer(temp_bytes);
  C10_CUDA_CHECK(cub::DeviceScan::InclusiveSum(temp.get(), temp_bytes, rank, rank, static_cast<int>(numel), stream));

  MF_LAUNCH(finish_kernel, blocks, kThreads, 0, stream)(labels, rank, counts, volume);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void component_stats_cuda(const int32_t* labels, const int64_t* sizes, int ndim, int64_t count, int64_t* area,
                          int64_t* bbox, double* centroid) {
  const cudaStream_t stream = current_stream();
  const int64_t fields = StatsLayout{ndim}.fields();
  int64_t padded[3] = {0, 0, 0}, rows = 1;
  for (int a = 0; a < ndim; ++a) padded[a] = sizes[a];
  for (int a = 0; a < ndim - 1; ++a) rows *= sizes[a];
  const int64_t height = sizes[ndim - 2], width = sizes[ndim - 1];

  c10::DataPtr table_buffer = device_buffer((count + 1) * fields * sizeof(int64_t));
  auto* table = static_cast<int64_t*>(table_buffer.get());
  MF_LAUNCH(init_stats_kernel, blocks_for(count + 1), kThreads, 0, stream)(table, ndim, padded[0], padded[1], padded[2],
                                                                     count);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  const int64_t chunks = rows * ((width + kStatsChunk - 1) / kStatsChunk);
  if (chunks > 0) {
    MF_LAUNCH(accumulate_stats_kernel, blocks_for(chunks), kThreads, 0, stream)(labels, table, ndim, rows, height, width,
                                                                         count);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (count > 0) {
    MF_LAUNCH(finish_stats_kernel, blocks_for(count), kThreads, 0, stream)(table, ndim, count, area, bbox, centroid);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

void crop_windows_cuda(const void* source, void* out, int64_t element_size, int64_t channels, int64_t height,
                       int64_t width, const int64_t* corners, int64_t count, int64_t size) {
  const cudaStream_t stream = current_stream();
  const unsigned int blocks = blocks_for(count * channels * size * size);
  auto launch = [&](auto zero) {
    using T = decltype(zero);
    MF_LAUNCH(crop_windows_kernel, blocks, kThreads, 0, stream)(static_cast<const T*>(source), static_cast<T*>(out),
                                                         channels, height, width, corners, count, size);
  };
  switch (element_size) {
    case 1: launch(uint8_t{}); break;
    case 2: launch(uint16_t{}); break;
    case 4: launch(uint32_t{}); break;
    case 8: launch(uint64_t{}); break;
    default: TORCH_CHECK(false, "crop_windows: unsupported element size ", element_size);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void component_masks_cuda(const int32_t* labels, uint8_t* out, int64_t height, int64_t width,
                          const int64_t* corners, const int32_t* ids, int64_t count, int64_t size) {
  MF_LAUNCH(component_masks_kernel, blocks_for(count * size * size), kThreads, 0, current_stream())(
      labels, out, height, width, corners, ids, count, size);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

extern const Backend MF_GPU_BACKEND{label_cuda, component_stats_cuda, crop_windows_cuda, component_masks_cuda};

}  // namespace medgan_fast::components
