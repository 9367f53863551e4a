// Binary and grey dilation/erosion: the math shared by the CPU drivers and CUDA kernels.
//
// Both reduce a footprint to horizontal runs. An output pixel combines (OR for binary,
// max/min for grey) one value per run:
//     out[z, y, x] = op over runs (dz, dy, x0..x1) of  op over dx in [x0, x1] of in[z+dz, y+dy, x+dx]
// The inner "op over a span" comes from a doubling ladder of planes, as in a sparse table:
//     P_1 = in,   P_2h[x] = op(P_h[x], P_h[x + h])      so P_h[x] = op over [x, x + h)
//     span [x0, x1] of length L, have = largest power of two <= L:
//         = op(P_have[x + x0], P_have[x + x1 - have + 1])
// (valid because op is idempotent). So each distinct span costs one pass, each run one
// read per output element, whatever the footprint's size.
//
// Binary images are bit-packed: 64 pixels per uint64 word, bit k of word j = pixel 64j+k,
// bits past the row's end zero. Shifting a packed row by s pixels is two word loads.
// Pixels outside the image never contribute: they read as op's identity (0 / false for
// dilation; erosion is computed as NOT dilate(NOT x), so outside is "true" for it).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <utility>
#include <vector>

#include "common/host_device.h"

namespace medgan_fast::morphology {

// A volume of `depth` planes of `height` rows of `width` pixels. A 2-D image has depth
// 1; a batch of images is a volume whose runs all have dz = 0.
struct Shape {
  int64_t depth, height, width;
  MF_HD int64_t rows() const { return depth * height; }
};

// A horizontal span of footprint offsets, materialised as one plane.
struct Span {
  int32_t x0, x1;    // offsets dx in [x0, x1]
  int32_t level;     // ladder level read: have = 1 << level
  int32_t plane;     // plane the span is written to
};

// One footprint row: combine plane `plane` at row (z + dz, y + dy).
struct RunRef {
  int32_t dz, dy, plane;
};

// Planes: 0 = the input (packed for binary, copied for grey), 1..levels = ladder
// P_2 .. P_(2^levels), then one plane per span that is not already a ladder plane.
// Every row of every plane has margins, so reads never need bounds checks:
//   left:  a span reads its ladder plane at x + x0 (x0 < 0: left of the row, where the
//          window [x + x0, x + x0 + have) can still hold pixels), so ladder planes compute
//          their left margin; plane 0's is op's identity.
//   right: reads reach x + h (ladder) and x + x1 - have + 1 (spans); there every window
//          lies past the row's end, so the right margins hold op's identity.
struct Plan {
  std::vector<Span> spans;
  std::vector<RunRef> runs;
  int32_t levels = 0;
  int32_t planes = 1;
  int32_t left_pixels = 0;   // margins, in pixels
  int32_t right_pixels = 0;
};

// Footprint offsets o = index - size/2 (scipy's centre, also for even sizes). scipy's
// dilation is out[q] = max_o in[q - o] and its erosion out[q] = min_o in[q + o], so the
// dilation's runs use -o. Host-only; footprint is a C-contiguous bool (kd, kh, kw) array.
inline Plan make_plan(const bool* footprint, int64_t kd, int64_t kh, int64_t kw, bool dilation) {
  const int64_t sign = dilation ? -1 : 1;
  struct RawRun { int32_t dz, dy, x0, x1; };
  std::vector<RawRun> raw;
  for (int64_t i = 0; i < kd; ++i) {
    for (int64_t j = 0; j < kh; ++j) {
      const bool* row = footprint + (i * kh + j) * kw;
      for (int64_t k = 0; k < kw; ++k) {
        if (!row[k]) continue;
        int64_t end = k;
        while (end + 1 < kw && row[end + 1]) ++end;
        const int64_t a = sign * (k - kw / 2), b = sign * (end - kw / 2);
        raw.push_back({static_cast<int32_t>(sign * (i - kd / 2)), static_cast<int32_t>(sign * (j - kh / 2)),
                       static_cast<int32_t>(a < b ? a : b), static_cast<int32_t>(a < b ? b : a)});
        k = end;
      }
    }
  }
  auto level_of = [](int32_t length) {
    int32_t level = 0;
    while ((int64_t{2} << level) <= length) ++level;
    return level;
  };
  Plan plan;
  for (const RawRun& r : raw) plan.levels = std::max(plan.levels, level_of(r.x1 - r.x0 + 1));
  std::map<std::pair<int32_t, int32_t>, int32_t> span_planes;  // (x0, x1) -> plane; a footprint can have 10^5
  for (const RawRun& r : raw) {
    const int32_t level = level_of(r.x1 - r.x0 + 1);
    int32_t plane = -1;
    if (r.x0 == 0 && r.x1 + 1 == (1 << level)) plane = level;  // the ladder plane itself
    if (plane < 0) {
      const int32_t next = plan.levels + 1 + static_cast<int32_t>(plan.spans.size());
      const auto [it, added] = span_planes.try_emplace({r.x0, r.x1}, next);
      plane = it->second;
      if (added) plan.spans.push_back({r.x0, r.x1, level, plane});
    }
    plan.runs.push_back({r.dz, r.dy, plane});
    plan.left_pixels = std::max(plan.left_pixels, -r.x0);
    plan.right_pixels = std::max(plan.right_pixels, r.x1 - (1 << level) + 1);
  }
  if (plan.levels > 0) plan.right_pixels = std::max(plan.right_pixels, 1 << (plan.levels - 1));
  plan.planes = plan.levels + 1 + static_cast<int32_t>(plan.spans.size());
  return plan;
}

// ---------------------------------------------------------------------------------------
// Elements. A lane says how to read a row at a pixel offset, and how to combine.

MF_HD int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// A pixel offset split into whole elements and, for packed bits, a bit shift.
struct Shift {
  int64_t elements;
  int bits;
};

// Packed binary rows: an element is a word of 64 pixels.
struct BitLane {
  using T = uint64_t;
  static MF_HD Shift shift(int64_t pixels) {
    const int64_t words = floor_div(pixels, 64);
    return {words, static_cast<int>(pixels - 64 * words)};
  }
  // The 64 pixels starting at pixel 64*j + offset. (hi << 1) << (63 - bits) is
  // hi << (64 - bits) without the undefined shift by 64 when bits = 0.
  static MF_HD T at(const T* row, int64_t j, Shift s) {
    const T* p = row + j + s.elements;
    return (p[0] >> s.bits) | ((p[1] << 1) << (63 - s.bits));
  }
  // Elements of margin that cover reads `pixels` beyond a row (a shifted read spans two words).
  static MF_HD int64_t margin_for(int64_t pixels) { return pixels > 0 ? (pixels + 63) / 64 + 1 : 0; }
  static MF_HD T combine(T a, T b) { return a | b; }
  MF_HD T identity() const { return T{0}; }
};

// NaN propagates, as in torch.maximum / torch.minimum: a NaN in either operand wins.
// (v != v is false for integers, so the compiler drops the test there.)
template <typename Scalar>
MF_HD bool is_nan(Scalar v) {
  return v != v;
}
template <typename Scalar>
struct MaxOp {
  static MF_HD Scalar combine(Scalar a, Scalar b) { return (a < b || is_nan(b)) ? b : a; }
};
template <typename Scalar>
struct MinOp {
  static MF_HD Scalar combine(Scalar a, Scalar b) { return (b < a || is_nan(b)) ? b : a; }
};

// Grey rows: an element is a pixel. `outside` is op's identity (the dtype's lowest value
// for max, highest for min), so pixels outside the image never win.
template <typename Scalar, typename Op>
struct ValueLane {
  using T = Scalar;
  T outside;
  static MF_HD Shift shift(int64_t pixels) { return {pixels, 0}; }
  static MF_HD T at(const T* row, int64_t j, Shift s) { return row[j + s.elements]; }
  static MF_HD int64_t margin_for(int64_t pixels) { return pixels > 0 ? pixels : 0; }
  static MF_HD T combine(T a, T b) { return Op::combine(a, b); }
  MF_HD T identity() const { return outside; }
};

// Where the planes' rows are: all in one buffer, each row `left` + n + `right` elements
// (n = words for binary, pixels for grey); row(plane, r)[j] for j in [-left, n + right).
template <typename T>
// `rows` source rows from `first` on (the CUDA driver keeps a band of rows, not the volume).
struct Planes {
  T* data;
  int64_t rows, n, left, right;
  int64_t first = 0;
  MF_HD int64_t stride() const { return left + n + right; }
  MF_HD T* row(int32_t plane, int64_t r) const { return data + (plane * rows + r - first) * stride() + left; }
};

// Plan or PlanView: anything with planes, left_pixels and right_pixels.
template <typename Lane, typename AnyPlan>
MF_HD Planes<typename Lane::T> make_planes(typename Lane::T* data, const AnyPlan& plan, int64_t rows, int64_t n) {
  return {data, rows, n, Lane::margin_for(plan.left_pixels), Lane::margin_for(plan.right_pixels)};
}

template <typename Lane, typename AnyPlan>
MF_HD int64_t planes_elements(const AnyPlan& plan, int64_t rows, int64_t n) {
  return plan.planes * make_planes<Lane>(nullptr, plan, rows, n).stride() * rows;
}

// Ladder level k from level k-1, for j in [-left, n): P_2h[j] = op(P_h[j], P_h[j + h]).
template <typename Lane>
MF_HD typename Lane::T ladder_element(const typename Lane::T* prev, int64_t j, Shift by_h) {
  return Lane::combine(prev[j], Lane::at(prev, j, by_h));
}

// A span's element from its ladder level, for j in [0, n): op(P[j + x0], P[j + x1 - have + 1]).
template <typename Lane>
MF_HD typename Lane::T span_element(const typename Lane::T* ladder, int64_t j, Shift first, Shift last) {
  return Lane::combine(Lane::at(ladder, j, first), Lane::at(ladder, j, last));
}

template <typename Lane>
MF_HD Shift span_first(const Span& s) { return Lane::shift(s.x0); }
template <typename Lane>
MF_HD Shift span_last(const Span& s) { return Lane::shift(s.x1 - (int64_t{1} << s.level) + 1); }

// The row (z + dz, y + dy) that output row r = (z, y) reads for `run`, or -1 when outside.
// Output row r reads source rows r + lo .. r + hi (flattened z * height + y), within bounds.
struct RowReach {
  int64_t lo = 0, hi = 0;
};

inline RowReach row_reach(const Shape& shape, const RunRef* runs, int32_t num_runs) {
  RowReach reach;
  for (int32_t i = 0; i < num_runs; ++i) {
    const int64_t offset = runs[i].dz * shape.height + runs[i].dy;
    reach.lo = i == 0 ? offset : std::min(reach.lo, offset);
    reach.hi = i == 0 ? offset : std::max(reach.hi, offset);
  }
  return reach;
}

MF_HD int64_t run_source_row(const Shape& shape, const RunRef& run, int64_t r) {
  const int64_t z = r / shape.height + run.dz, y = r % shape.height + run.dy;
  if (z < 0 || z >= shape.depth || y < 0 || y >= shape.height) return -1;
  return z * shape.height + y;
}

// ---------------------------------------------------------------------------------------
// Bit packing. Bytes are 0/1 (bool); little-endian words, as on x86-64, ARM64 and GPUs.

// Eight 0/1 bytes -> eight bits (byte k -> bit k). The multiply moves byte k's bit to
// bit 56 + k without carries (every partial product lands on its own bit).
MF_HD uint64_t pack8(uint64_t bytes) { return (bytes * 0x0102040810204080ull) >> 56; }

// Eight bits -> eight 0/1 bytes: replicate into every byte, keep bit k in byte k, then
// turn each nonzero byte into 1 by carrying into its top bit.
MF_HD uint64_t unpack8(uint64_t bits) {
  const uint64_t spread = (bits * 0x0101010101010101ull) & 0x8040201008040201ull;
  return ((spread + 0x7F7F7F7F7F7F7F7Full) >> 7) & 0x0101010101010101ull;
}

// Word j of a row of `width` 0/1 bytes, inverted (within the row) if `invert`.
MF_HD uint64_t pack_word(const uint8_t* row, int64_t width, int64_t j, bool invert) {
  const int64_t x0 = 64 * j;
  const int count = static_cast<int>(width - x0 < 64 ? width - x0 : 64);
  uint64_t word = 0;
  int k = 0;
  for (; k + 8 <= count; k += 8) {
    uint64_t bytes;
    memcpy(&bytes, row + x0 + k, 8);
    word |= pack8(bytes) << k;
  }
  for (; k < count; ++k) word |= static_cast<uint64_t>(row[x0 + k] != 0) << k;
  if (invert) word = ~word & (count == 64 ? ~0ull : ((1ull << count) - 1));
  return word;
}

// Writes word j's pixels (at most 64, up to `width`) as 0/1 bytes.
MF_HD void unpack_word(uint64_t word, uint8_t* row, int64_t width, int64_t j) {
  const int64_t x0 = 64 * j;
  const int count = static_cast<int>(width - x0 < 64 ? width - x0 : 64);
  int k = 0;
  for (; k + 8 <= count; k += 8) {
    const uint64_t bytes = unpack8((word >> k) & 0xFF);
    memcpy(row + x0 + k, &bytes, 8);
  }
  for (; k < count; ++k) row[x0 + k] = static_cast<uint8_t>((word >> k) & 1);
}

MF_HD int64_t words_per_row(int64_t width) { return (width + 63) / 64; }

// ---------------------------------------------------------------------------------------
// Drivers (morphology_cpu.cpp; morphology_cuda.cu has the same ones, as a Backend table).

// The plan as the kernels read it (the CUDA driver points it at device copies).
struct PlanView {
  const Span* spans;
  int32_t num_spans;
  const RunRef* runs;
  int32_t num_runs;
  int32_t levels, planes, left_pixels, right_pixels;
};

inline PlanView view_of(const Plan& plan, const Span* spans, const RunRef* runs) {
  return {spans, static_cast<int32_t>(plan.spans.size()), runs, static_cast<int32_t>(plan.runs.size()),
          plan.levels, plan.planes, plan.left_pixels, plan.right_pixels};
}

// Binary: input/output are C-contiguous 0/1 bytes; invert = true computes
// NOT(dilate(NOT input)): erosion, with outside = true.
void binary_morphology_cpu(const uint8_t* input, uint8_t* output, const Shape& shape, const Plan& plan, bool invert);

// Grey: input/output are C-contiguous arrays of `dtype`.
enum class Grey { u8, u16, i32, f32, f64 };

// Calls f(lane) with the grey lane of `dtype` and operation: max with the dtype's lowest
// value outside for dilation, min with its highest for erosion.
template <typename F>
void with_grey_lane(Grey dtype, bool dilation, F&& f) {
  auto typed = [&](auto zero) {
    using Scalar = decltype(zero);
    using limits = std::numeric_limits<Scalar>;
    if (dilation) {
      f(ValueLane<Scalar, MaxOp<Scalar>>{limits::has_infinity ? -limits::infinity() : limits::lowest()});
    } else {
      f(ValueLane<Scalar, MinOp<Scalar>>{limits::has_infinity ? limits::infinity() : limits::max()});
    }
  };
  switch (dtype) {
    case Grey::u8: return typed(uint8_t{});
    case Grey::u16: return typed(uint16_t{});
    case Grey::i32: return typed(int32_t{});
    case Grey::f32: return typed(float{});
    case Grey::f64: return typed(double{});
  }
}

void grey_morphology_cpu(Grey dtype, const void* input, void* output, const Shape& shape, const Plan& plan,
                         bool dilation);

// One backend's drivers. cuda_backend: morphology_cuda.cu built by nvcc; emulated_backend:
// the same file built against the CPU emulation (morphology_emulated.cpp).
struct Backend {
  decltype(&binary_morphology_cpu) binary;
  decltype(&grey_morphology_cpu) grey;
};
extern const Backend cuda_backend;
extern const Backend emulated_backend;

}  // namespace medgan_fast::morphology
