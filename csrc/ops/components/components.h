// Connected components: the math shared by the CPU drivers and CUDA kernels.
//
// Connectivity follows scikit-image: offsets d in {-1, 0, 1}^ndim with at most
// `connectivity` nonzero components are neighbours (1: faces; ndim: full).
//
// Numbering: union-find always links the larger root under the smaller, so every root is
// its component's smallest index, i.e. its first pixel (CUDA) or first run (CPU) in raster
// order. Numbering roots in index order gives scikit-image's labels.
#pragma once

#include <cstdint>

#include "common/host_device.h"

namespace medgan_fast::components {

// `depth` planes of height x width. label: a 2-D image is depth 1; label_batch: depth =
// images, never connected across planes (`batch`).
struct Volume {
  int64_t depth, height, width;
  bool batch;
  MF_HD int64_t rows() const { return depth * height; }
  MF_HD int64_t plane() const { return height * width; }
  MF_HD int64_t numel() const { return depth * height * width; }
  MF_HD int ndim() const { return (batch || depth == 1) ? 2 : 3; }
};

// ---------------------------------------------------------------------------------------
// Neighbours

// Offsets (dz, dy, dx) that come before a pixel in raster order and connect to it: the
// half of the neighbourhood a single raster pass must union. At most 13 (3-D, full).
struct Offset {
  int32_t dz, dy, dx;
};

MF_HD int earlier_neighbours(int ndim, int connectivity, Offset* out) {
  int count = 0;
  for (int dz = (ndim == 3 ? -1 : 0); dz <= 0; ++dz)
    for (int dy = -1; dy <= 1; ++dy)
      for (int dx = -1; dx <= 1; ++dx) {
        const bool earlier = dz < 0 || (dz == 0 && (dy < 0 || (dy == 0 && dx < 0)));
        const int hops = (dz != 0) + (dy != 0) + (dx != 0);
        if (earlier && hops <= connectivity) out[count++] = {dz, dy, dx};
      }
  return count;
}

// Earlier rows that connect to a row, for run-length labelling: runs [s1, e1] of this row
// and [s2, e2] of that row connect when s1 <= e2 + tolerance and s2 <= e1 + tolerance
// (tolerance 1 when the diagonal neighbours (.., +-1) count). At most 4 (3-D).
struct RowNeighbour {
  int32_t dz, dy, tolerance;
};

MF_HD int earlier_rows(int ndim, int connectivity, RowNeighbour* out) {
  int count = 0;
  for (int dz = (ndim == 3 ? -1 : 0); dz <= 0; ++dz)
    for (int dy = -1; dy <= 1; ++dy) {
      if (dz == 0 && dy >= 0) continue;
      const int hops = (dz != 0) + (dy != 0);
      if (hops <= connectivity) out[count++] = {dz, dy, hops + 1 <= connectivity ? 1 : 0};
    }
  return count;
}

// The row (z + dz, y + dy) of row r = (z, y), or -1 when outside the volume (or, in a
// batch, in another image).
MF_HD int64_t neighbour_row(const Volume& v, int64_t r, int32_t dz, int32_t dy) {
  const int64_t z = r / v.height + dz, y = r % v.height + dy;
  if (z < 0 || y < 0 || y >= v.height || (v.batch && dz != 0)) return -1;
  return z * v.height + y;
}

// ---------------------------------------------------------------------------------------
// Union-find over an int32 parent array; parent[x] <= x always.

// Root of x, halving the path (CPU: single writer).
inline int32_t find_root_compress(int32_t* parent, int32_t x) {
  while (parent[x] != x) {
    parent[x] = parent[parent[x]];
    x = parent[x];
  }
  return x;
}

inline void unite(int32_t* parent, int32_t a, int32_t b) {
  a = find_root_compress(parent, a);
  b = find_root_compress(parent, b);
  if (a < b) parent[b] = a;
  else if (b < a) parent[a] = b;
}

// ---------------------------------------------------------------------------------------
// Statistics: per component, area, bbox and coordinate sums, accumulated over maximal runs
// of equal labels along a row (one update per run, not per pixel).

struct StatsLayout {
  int ndim;
  // Per component: area, lo[ndim], hi[ndim] (max + 1), sum[ndim]; all int64.
  // 64-bit, so that id * fields (a component's row of the table) cannot overflow for the
  // large label counts the host allows.
  MF_HD int64_t fields() const { return 1 + 3 * ndim; }
};

// Calls emit(label, x0, x1) for each maximal run [x0, x1) of equal nonzero labels in
// row[begin, end).
template <typename Emit>
MF_HD void for_each_label_run(const int32_t* row, int64_t begin, int64_t end, Emit emit) {
  int64_t x = begin;
  while (x < end) {
    const int32_t id = row[x];
    int64_t stop = x + 1;
    while (stop < end && row[stop] == id) ++stop;
    if (id != 0) emit(id, x, stop);
    x = stop;
  }
}

// Coordinates of a run (plane z, row y, columns [x0, x1)) as the per-axis values the
// statistics need: lo/hi per axis and the sum of each coordinate over its pixels.
struct RunCoords {
  int64_t lo[3], hi[3], sum[3];
  int64_t area;
};

MF_HD RunCoords run_coords(int ndim, int64_t z, int64_t y, int64_t x0, int64_t x1) {
  const int64_t n = x1 - x0;
  RunCoords c{};
  c.area = n;
  int a = 0;
  if (ndim == 3) {
    c.lo[a] = z, c.hi[a] = z + 1, c.sum[a] = z * n;
    ++a;
  }
  c.lo[a] = y, c.hi[a] = y + 1, c.sum[a] = y * n;
  ++a;
  c.lo[a] = x0, c.hi[a] = x1, c.sum[a] = (x0 + x1 - 1) * n / 2;
  return c;
}

// Initial accumulator values: lo = the volume's size (an empty bbox), hi = sums = 0.
// Statistics of two runs of one component together; no_run() is the identity.
MF_HD RunCoords no_run() {
  RunCoords c{};
  for (int a = 0; a < 3; ++a) c.lo[a] = INT64_MAX;
  return c;
}

MF_HD void merge_run(RunCoords& into, const RunCoords& c, int ndim) {
  into.area += c.area;
  for (int a = 0; a < ndim; ++a) {
    into.lo[a] = c.lo[a] < into.lo[a] ? c.lo[a] : into.lo[a];
    into.hi[a] = c.hi[a] > into.hi[a] ? c.hi[a] : into.hi[a];
    into.sum[a] += c.sum[a];
  }
}

MF_HD void init_stats(int64_t* acc, int ndim, const int64_t* sizes) {
  acc[0] = 0;
  for (int a = 0; a < ndim; ++a) {
    acc[1 + a] = sizes[a];
    acc[1 + ndim + a] = 0;
    acc[1 + 2 * ndim + a] = 0;
  }
}

// Outputs of component k from its accumulator: area, bbox (lo..., hi...), centroid.
MF_HD void finish_stats(const int64_t* acc, int ndim, int64_t* area, int64_t* bbox, double* centroid) {
  *area = acc[0];
  for (int a = 0; a < ndim; ++a) {
    bbox[a] = acc[1 + a];
    bbox[ndim + a] = acc[1 + ndim + a];
    centroid[a] = static_cast<double>(acc[1 + 2 * ndim + a]) / static_cast<double>(acc[0]);  // 0/0: NaN
  }
}

// ---------------------------------------------------------------------------------------
// Windows: element (k, c, i, j) of a size x size window at corner (r0, c0) of a (C, H, W)
// source, or -1 when past the border.

MF_HD int64_t window_source(int64_t height, int64_t width, int64_t r0, int64_t c0, int64_t channel, int64_t i,
                            int64_t j) {
  const int64_t r = r0 + i, c = c0 + j;
  if (r < 0 || r >= height || c < 0 || c >= width) return -1;
  return (channel * height + r) * width + c;
}

// ---------------------------------------------------------------------------------------
// Drivers. The CPU ones are in components_cpu.cpp; components_cuda.cu has the same
// signatures and exports them as one Backend table (below). All arrays C-contiguous.

// labels[numel] int32 and counts[depth if batch else 1] int64 from a 0/1 byte mask.
void label_cpu(const uint8_t* mask, int32_t* labels, int64_t* counts, const Volume& volume, int connectivity);

// area[count], bbox[count][2 ndim], centroid[count][ndim] of labels 1..count; sizes[ndim]
// is the label image's shape. Labels outside [1, count] are ignored.
void component_stats_cpu(const int32_t* labels, const int64_t* sizes, int ndim, int64_t count, int64_t* area,
                         int64_t* bbox, double* centroid);

// out[k][c][i][j] = source window (zero past the border); element_size bytes per value.
void crop_windows_cpu(const void* source, void* out, int64_t element_size, int64_t channels, int64_t height,
                      int64_t width, const int64_t* corners, int64_t count, int64_t size);

// out[k][i][j] = labels window == ids[k] (false past the border).
void component_masks_cpu(const int32_t* labels, uint8_t* out, int64_t height, int64_t width, const int64_t* corners,
                         const int32_t* ids, int64_t count, int64_t size);

// One backend's drivers. cuda_backend: components_cuda.cu built by nvcc; emulated_backend:
// the same file built against the CPU emulation (components_emulated.cpp).
struct Backend {
  decltype(&label_cpu) label;
  decltype(&component_stats_cpu) stats;
  decltype(&crop_windows_cpu) crop;
  decltype(&component_masks_cpu) masks;
};
extern const Backend cuda_backend;
extern const Backend emulated_backend;

}  // namespace medgan_fast::components
