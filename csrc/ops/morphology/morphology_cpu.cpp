// CPU driver of morphology.h. Each thread takes a chunk of output rows in order and
// keeps a ring of the source rows (with all their planes) that the current output row
// can reach, so every source row's planes are built once per chunk and the working set
// stays in cache: no full-image planes, no page faults on large temporaries. The inner
// loops have no bounds checks (plane margins take the out-of-row reads), so they vectorise.
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "ops/morphology/morphology.h"

namespace medgan_fast::morphology {
namespace {

constexpr int64_t kRowGrain = 16;

// Row loops take restrict pointers and a by-value length: with uint8_t rows the compiler
// must otherwise assume a store may change the bound (char aliases everything) and will
// not vectorise.
template <typename Lane>
void ladder_row(typename Lane::T* __restrict dst, const typename Lane::T* __restrict prev, int64_t begin, int64_t end,
                Shift by_h) {
  for (int64_t j = begin; j < end; ++j) dst[j] = ladder_element<Lane>(prev, j, by_h);
}

template <typename Lane>
void span_row(typename Lane::T* __restrict dst, const typename Lane::T* __restrict ladder, int64_t n, Shift first,
              Shift last) {
  for (int64_t j = 0; j < n; ++j) dst[j] = span_element<Lane>(ladder, j, first, last);
}

template <typename Lane>
void combine_row(typename Lane::T* __restrict acc, const typename Lane::T* __restrict src, int64_t n) {
  for (int64_t j = 0; j < n; ++j) acc[j] = Lane::combine(acc[j], src[j]);
}

// fill_row(r, row) writes source row r's plane 0 into row[0, n); write_row(r, acc) takes
// output row r, acc[0, n) = op over runs.
template <typename Lane, typename FillRow, typename WriteRow>
void stream_rows(const Lane& lane, const Shape& shape, const PlanView& plan, int64_t n, FillRow fill_row,
                 WriteRow write_row) {
  using T = typename Lane::T;
  const RowReach reach = row_reach(shape, plan.runs, plan.num_runs);
  const int64_t reach_lo = reach.lo, reach_hi = reach.hi;
  // The rows alive at once are a contiguous range of at most this many, so `source %
  // capacity` keeps them apart; a footprint taller than the image needs no more rows than it has.
  const int64_t capacity = std::min(reach_hi - reach_lo + 1, shape.rows());
  const auto layout = make_planes<Lane>(static_cast<T*>(nullptr), plan, 1, n);

  at::parallel_for(0, shape.rows(), kRowGrain, [&](int64_t begin, int64_t end) {
    std::vector<T> ring(capacity * plan.planes * layout.stride());
    std::vector<T> acc(n);
    auto row = [&](int32_t plane, int64_t source) {
      return ring.data() + ((source % capacity) * plan.planes + plane) * layout.stride() + layout.left;
    };
    auto build_row = [&](int64_t source) {
      T* input = row(0, source);
      std::fill(input - layout.left, input, lane.identity());
      std::fill(input + n, input + n + layout.right, lane.identity());
      fill_row(source, input);
      for (int32_t level = 1; level <= plan.levels; ++level) {
        const T* prev = row(level - 1, source);
        T* dst = row(level, source);
        ladder_row<Lane>(dst, prev, -layout.left, n, Lane::shift(int64_t{1} << (level - 1)));
        std::fill(dst + n, dst + n + layout.right, lane.identity());
      }
      for (int32_t s = 0; s < plan.num_spans; ++s) {
        const Span& span = plan.spans[s];
        const T* ladder = row(span.level, source);
        T* dst = row(span.plane, source);
        span_row<Lane>(dst, ladder, n, span_first<Lane>(span), span_last<Lane>(span));
      }
    };

    int64_t next = std::max<int64_t>(0, begin + reach_lo);
    for (int64_t r = begin; r < end; ++r) {
      for (const int64_t limit = std::min(shape.rows(), r + reach_hi + 1); next < limit; ++next) build_row(next);
      std::fill(acc.begin(), acc.end(), lane.identity());
      for (int32_t i = 0; i < plan.num_runs; ++i) {
        const int64_t source = run_source_row(shape, plan.runs[i], r);
        if (source < 0) continue;
        combine_row<Lane>(acc.data(), row(plan.runs[i].plane, source), n);
      }
      write_row(r, acc.data());
    }
  });
}

}  // namespace

void binary_morphology_cpu(const uint8_t* input, uint8_t* output, const Shape& shape, const Plan& layout,
                           bool invert) {
  const int64_t width = shape.width, n = words_per_row(width);
  stream_rows(
      BitLane{}, shape, view_of(layout, layout.spans.data(), layout.runs.data()), n,
      [&](int64_t r, uint64_t* row) {
        for (int64_t j = 0; j < n; ++j) row[j] = pack_word(input + r * width, width, j, invert);
      },
      [&](int64_t r, const uint64_t* acc) {
        for (int64_t j = 0; j < n; ++j) unpack_word(invert ? ~acc[j] : acc[j], output + r * width, width, j);
      });
}

void grey_morphology_cpu(Grey dtype, const void* input, void* output, const Shape& shape, const Plan& layout,
                         bool dilation) {
  const PlanView plan = view_of(layout, layout.spans.data(), layout.runs.data());
  with_grey_lane(dtype, dilation, [&](auto lane) {
    using T = typename decltype(lane)::T;
    const auto* in = static_cast<const T*>(input);
    auto* out = static_cast<T*>(output);
    const int64_t width = shape.width;
    stream_rows(
        lane, shape, plan, width, [&](int64_t r, T* row) { std::copy(in + r * width, in + (r + 1) * width, row); },
        [&](int64_t r, const T* acc) { std::copy(acc, acc + width, out + r * width); });
  });
}

}  // namespace medgan_fast::morphology
