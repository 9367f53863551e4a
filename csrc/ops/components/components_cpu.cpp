// CPU drivers of components.h.
//
// label: run-length union-find in four passes.
//   1. parallel over blocks of rows: each row's foreground runs; each run united with the
//      runs it touches in earlier rows of the same block (block-local indices);
//   2. parallel: block-local parents and row offsets to global indices;
//   3. serial: unions across block boundaries, then roots numbered in index order (a root
//      is its component's first run in raster order, see components.h);
//   4. parallel over rows: runs written out with their labels.
// Runs, not pixels, are the union-find elements: a 16%-foreground 2048² mask has ~10^5
// runs against 4·10^6 pixels.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/components/components.h"

namespace medgan_fast::components {
namespace {

struct Run {
  int32_t start, end;  // columns, inclusive
};

// Appends the foreground runs of a 0/1 byte row. Skips 8 bytes at a time inside long
// stretches of background and foreground.
void row_runs(const uint8_t* row, int64_t width, std::vector<Run>& runs) {
  constexpr uint64_t kAllOnes = 0x0101010101010101ull;
  int64_t x = 0;
  while (x < width) {
    uint64_t word;
    while (x + 8 <= width && (std::memcpy(&word, row + x, 8), word == 0)) x += 8;
    while (x < width && !row[x]) ++x;
    if (x >= width) break;
    const int64_t start = x;
    while (x + 8 <= width && (std::memcpy(&word, row + x, 8), word == kAllOnes)) x += 8;
    while (x < width && row[x]) ++x;
    runs.push_back({static_cast<int32_t>(start), static_cast<int32_t>(x - 1)});
  }
}

// Unites each run of `a` with the runs of `b` it touches; a's runs are a_index + i.
void unite_touching(int32_t* parent, const Run* a, int32_t a_index, int32_t na, const Run* b, int32_t b_index,
                    int32_t nb, int32_t tolerance) {
  int32_t i = 0, j = 0;
  while (i < na && j < nb) {
    if (a[i].end + tolerance < b[j].start) {
      ++i;
    } else if (b[j].end + tolerance < a[i].start) {
      ++j;
    } else {
      unite(parent, a_index + i, b_index + j);
      // Runs in a row are at least one pixel apart, so the run that ends first touches
      // nothing further in the other row.
      if (a[i].end < b[j].end) ++i; else ++j;
    }
  }
}

struct Block {
  int64_t row_begin, row_end;
  std::vector<Run> runs;
  std::vector<int32_t> parent;      // block-local, then global
  std::vector<int64_t> row_start;   // rows + 1 offsets into runs
  int64_t offset = 0;               // global index of runs[0]
};

}  // namespace

void label_cpu(const uint8_t* mask, int32_t* labels, int64_t* counts, const Volume& volume, int connectivity) {
  const int64_t rows = volume.rows(), width = volume.width;
  RowNeighbour neighbours[4];
  const int num_neighbours = earlier_rows(volume.ndim(), connectivity, neighbours);

  const int64_t num_blocks = std::max<int64_t>(1, std::min<int64_t>(rows, 4 * at::get_num_threads()));
  std::vector<Block> blocks(num_blocks);
  for (int64_t b = 0; b < num_blocks; ++b) {
    blocks[b].row_begin = rows * b / num_blocks;
    blocks[b].row_end = rows * (b + 1) / num_blocks;
  }

  // Pass 1: runs and unions inside each block.
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      Block& block = blocks[b];
      block.row_start.assign(1, 0);
      for (int64_t r = block.row_begin; r < block.row_end; ++r) {
        row_runs(mask + r * width, width, block.runs);
        block.row_start.push_back(static_cast<int64_t>(block.runs.size()));
      }
      block.parent.resize(block.runs.size());
      for (size_t i = 0; i < block.parent.size(); ++i) block.parent[i] = static_cast<int32_t>(i);
      for (int64_t r = block.row_begin; r < block.row_end; ++r) {
        const int64_t lr = r - block.row_begin;
        for (int k = 0; k < num_neighbours; ++k) {
          const int64_t s = neighbour_row(volume, r, neighbours[k].dz, neighbours[k].dy);
          if (s < block.row_begin) continue;  // outside, or another block's: pass 3
          const int64_t ls = s - block.row_begin;
          unite_touching(block.parent.data(), block.runs.data() + block.row_start[lr],
                         static_cast<int32_t>(block.row_start[lr]),
                         static_cast<int32_t>(block.row_start[lr + 1] - block.row_start[lr]),
                         block.runs.data() + block.row_start[ls], static_cast<int32_t>(block.row_start[ls]),
                         static_cast<int32_t>(block.row_start[ls + 1] - block.row_start[ls]), neighbours[k].tolerance);
        }
      }
    }
  });

  // Pass 2: global indices.
  int64_t total = 0;
  for (Block& block : blocks) {
    block.offset = total;
    total += static_cast<int64_t>(block.runs.size());
  }
  std::vector<int32_t> parent(total);
  std::vector<int64_t> row_start(rows + 1);
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const Block& block = blocks[b];
      for (size_t i = 0; i < block.parent.size(); ++i) parent[block.offset + i] = static_cast<int32_t>(block.offset) + block.parent[i];
      for (int64_t r = block.row_begin; r < block.row_end; ++r)
        row_start[r] = block.offset + block.row_start[r - block.row_begin];
    }
  });
  row_start[rows] = total;

  // Pass 3: unions across block boundaries (rows whose earlier neighbours lie in an earlier
  // block), then numbering.
  int64_t reach = 0;  // how many rows back an earlier neighbour row can be
  for (int k = 0; k < num_neighbours; ++k) reach = std::max(reach, -(neighbours[k].dz * volume.height + neighbours[k].dy));
  for (const Block& block : blocks) {
    for (int64_t r = block.row_begin; r < std::min(block.row_end, block.row_begin + reach); ++r) {
      for (int k = 0; k < num_neighbours; ++k) {
        const int64_t s = neighbour_row(volume, r, neighbours[k].dz, neighbours[k].dy);
        if (s < 0 || s >= block.row_begin) continue;
        const Block& other = *std::find_if(blocks.begin(), blocks.end(), [s](const Block& o) { return s < o.row_end; });
        const int64_t lr = r - block.row_begin, ls = s - other.row_begin;
        unite_touching(parent.data(), block.runs.data() + block.row_start[lr], static_cast<int32_t>(row_start[r]),
                       static_cast<int32_t>(block.row_start[lr + 1] - block.row_start[lr]),
                       other.runs.data() + other.row_start[ls], static_cast<int32_t>(row_start[s]),
                       static_cast<int32_t>(other.row_start[ls + 1] - other.row_start[ls]), neighbours[k].tolerance);
      }
    }
  }
  // parent[i] < i or == i, so one pass in index order resolves every run to its root's
  // label. Each image of a batch is numbered from 1.
  std::vector<int32_t> run_label(total);
  const int64_t images = volume.batch ? volume.depth : 1;
  const int64_t rows_per_image = rows / images;
  for (int64_t image = 0; image < images; ++image) {
    int32_t count = 0;
    for (int64_t i = row_start[image * rows_per_image]; i < row_start[(image + 1) * rows_per_image]; ++i)
      run_label[i] = parent[i] == i ? ++count : run_label[parent[i]];
    counts[image] = count;
  }

  // Pass 4: labels.
  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      const Block& block = blocks[b];
      for (int64_t r = block.row_begin; r < block.row_end; ++r) {
        int32_t* out = labels + r * width;
        int64_t x = 0;
        for (int64_t i = row_start[r]; i < row_start[r + 1]; ++i) {
          const Run& run = block.runs[i - block.offset];
          std::fill(out + x, out + run.start, 0);
          std::fill(out + run.start, out + run.end + 1, run_label[i]);
          x = run.end + 1;
        }
        std::fill(out + x, out + width, 0);
      }
    }
  });
}

void component_stats_cpu(const int32_t* labels, const int64_t* sizes, int ndim, int64_t count, int64_t* area,
                         int64_t* bbox, double* centroid) {
  const StatsLayout layout{ndim};
  const int64_t fields = layout.fields();
  const int64_t width = sizes[ndim - 1];
  int64_t rows = 1;
  for (int a = 0; a < ndim - 1; ++a) rows *= sizes[a];
  const int64_t height = sizes[ndim - 2];

  // Each block accumulates into its own table; blocks stay few enough that the tables
  // together fit in a bounded amount of memory.
  constexpr int64_t kTableBudget = int64_t{1} << 27;  // bytes
  const int64_t table_bytes = (count + 1) * fields * static_cast<int64_t>(sizeof(int64_t));
  const int64_t num_blocks = std::max<int64_t>(
      1, std::min<int64_t>({rows, 2 * at::get_num_threads(), kTableBudget / std::max<int64_t>(1, table_bytes)}));
  std::vector<std::vector<int64_t>> tables(num_blocks);

  at::parallel_for(0, num_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t b = first; b < last; ++b) {
      std::vector<int64_t>& table = tables[b];
      table.resize((count + 1) * fields);
      for (int64_t k = 0; k <= count; ++k) init_stats(table.data() + k * fields, ndim, sizes);
      for (int64_t r = rows * b / num_blocks; r < rows * (b + 1) / num_blocks; ++r) {
        for_each_label_run(labels + r * width, 0, width, [&](int32_t id, int64_t x0, int64_t x1) {
          if (id < 1 || id > count) return;
          const RunCoords c = run_coords(ndim, r / height, r % height, x0, x1);
          int64_t* acc = table.data() + id * fields;
          acc[0] += c.area;
          for (int a = 0; a < ndim; ++a) {
            acc[1 + a] = std::min(acc[1 + a], c.lo[a]);
            acc[1 + ndim + a] = std::max(acc[1 + ndim + a], c.hi[a]);
            acc[1 + 2 * ndim + a] += c.sum[a];
          }
        });
      }
    }
  });

  at::parallel_for(1, count + 1, 1024, [&](int64_t first, int64_t last) {
    std::vector<int64_t> acc(fields);
    for (int64_t id = first; id < last; ++id) {
      init_stats(acc.data(), ndim, sizes);
      for (const std::vector<int64_t>& table : tables) {
        const int64_t* t = table.data() + id * fields;
        acc[0] += t[0];
        for (int a = 0; a < ndim; ++a) {
          acc[1 + a] = std::min(acc[1 + a], t[1 + a]);
          acc[1 + ndim + a] = std::max(acc[1 + ndim + a], t[1 + ndim + a]);
          acc[1 + 2 * ndim + a] += t[1 + 2 * ndim + a];
        }
      }
      const int64_t k = id - 1;
      finish_stats(acc.data(), ndim, area + k, bbox + k * 2 * ndim, centroid + k * ndim);
    }
  });
}

void crop_windows_cpu(const void* source, void* out, int64_t element_size, int64_t channels, int64_t height,
                      int64_t width, const int64_t* corners, int64_t count, int64_t size) {
  const auto* src = static_cast<const uint8_t*>(source);
  auto* dst = static_cast<uint8_t*>(out);
  // One output row (k, c, i) per item: zeros, then the in-image segment copied.
  at::parallel_for(0, count * channels * size, 64, [&](int64_t first, int64_t last) {
    for (int64_t item = first; item < last; ++item) {
      const int64_t i = item % size, c = (item / size) % channels, k = item / (size * channels);
      uint8_t* row = dst + item * size * element_size;
      std::memset(row, 0, size * element_size);
      const int64_t r0 = corners[2 * k], c0 = corners[2 * k + 1];
      const int64_t j0 = std::max<int64_t>(0, -c0), j1 = std::min<int64_t>(size, width - c0);
      if (j0 >= j1 || window_source(height, width, r0, c0, c, i, j0) < 0) continue;
      std::memcpy(row + j0 * element_size, src + window_source(height, width, r0, c0, c, i, j0) * element_size,
                  (j1 - j0) * element_size);
    }
  });
}

void component_masks_cpu(const int32_t* labels, uint8_t* out, int64_t height, int64_t width, const int64_t* corners,
                         const int32_t* ids, int64_t count, int64_t size) {
  at::parallel_for(0, count * size, 64, [&](int64_t first, int64_t last) {
    for (int64_t item = first; item < last; ++item) {
      const int64_t k = item / size, i = item % size;
      uint8_t* row = out + item * size;
      const int64_t r0 = corners[2 * k], c0 = corners[2 * k + 1];
      const int32_t id = ids[k];
      for (int64_t j = 0; j < size; ++j) {
        const int64_t s = window_source(height, width, r0, c0, 0, i, j);
        row[j] = s >= 0 && id != 0 && labels[s] == id;
      }
    }
  });
}

}  // namespace medgan_fast::components
