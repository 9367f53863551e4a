// CPU drivers of metrics.h: one parallel task per image (per image and channel for SSIM),
// each with its own small working planes. SSIM filters separably (a vertical pass over
// the window's rows into five moment rows, then a horizontal pass), so a pixel costs
// 2 * 5 * K multiply-adds instead of 5 * K^2; HaarPSI takes its box sums from a double
// integral image (four reads per box at any scale).
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "common/cpu_clones.h"
#include "ops/metrics/metrics.h"

namespace medgan_fast::metrics {
namespace {

// A working plane with a zero margin of `pad` pixels, so 3x3 filters need no bounds checks.
template <typename T>
struct Plane {
  int64_t height = 0, width = 0, pad = 1;
  std::vector<T> data;

  void resize(int64_t h, int64_t w) {
    height = h, width = w;
    data.assign((h + 2 * pad) * (w + 2 * pad), T(0));
  }
  int64_t stride() const { return width + 2 * pad; }
  T* row(int64_t i) { return data.data() + (i + pad) * stride() + pad; }
  const T* row(int64_t i) const { return data.data() + (i + pad) * stride() + pad; }
  T operator()(int64_t i, int64_t j) const { return data[(i + pad) * stride() + j + pad]; }
  // Reads by a local copy: pointer and stride in registers, so loops over j vectorise.
  struct View {
    const T* origin;
    int64_t stride;
    T operator()(int64_t i, int64_t j) const { return origin[i * stride + j]; }
  };
  View view() const { return {row(0), stride()}; }
};

// Loads `count` planes of one image in one pass: each output row pools the source rows of
// every channel (sums over the pool x pool blocks, zero outside), then mixes the channels.
template <typename T>
MF_CPU_INLINE void load(const Image<T>& image, const Mix<T>* mixes, int count, Pooling pooling, T scale, int64_t height,
          int64_t width, Plane<T>* planes) {
  const int64_t channels = image.channels, pool = pooling.pool;
  std::vector<T> pooled(channels * width);
  const T factor = scale / T(pool * pool);
  for (int m = 0; m < count; ++m) planes[m].resize(height, width);
  for (int64_t i = 0; i < height; ++i) {
    std::fill(pooled.begin(), pooled.end(), T(0));
    for (int64_t a = 0; a < pool; ++a) {
      const int64_t r = i * pool - pooling.offset + a;
      if (r < 0 || r >= image.height) continue;
      for (int64_t c = 0; c < channels; ++c) {
        const T* source = image.data + (c * image.height + r) * image.width;
        T* out = pooled.data() + c * width;
        if (pool == 1) {
          for (int64_t j = 0; j < width; ++j) out[j] += source[j];
          continue;
        }
        // Columns whose block lies inside the source row need no bounds check (and for
        // the 2x pools, no inner loop), so that loop vectorises; the rest check.
        const int64_t inner_begin = std::min(width, (pooling.offset + pool - 1) / pool);
        const int64_t inner_end = std::max(inner_begin, std::min(width, (image.width + pooling.offset) / pool));
        auto checked = [&](int64_t j) {
          for (int64_t b = 0; b < pool; ++b) {
            const int64_t col = j * pool - pooling.offset + b;
            if (col >= 0 && col < image.width) out[j] += source[col];
          }
        };
        for (int64_t j = 0; j < inner_begin; ++j) checked(j);
        const int64_t offset = pooling.offset;
        if (pool == 2) {
          for (int64_t j = inner_begin; j < inner_end; ++j) {
            out[j] = out[j] + source[2 * j - offset] + source[2 * j - offset + 1];
          }
        } else {
          for (int64_t j = inner_begin; j < inner_end; ++j) {
            for (int64_t b = 0; b < pool; ++b) out[j] += source[j * pool - offset + b];
          }
        }
        for (int64_t j = inner_end; j < width; ++j) checked(j);
      }
    }
    for (int m = 0; m < count; ++m) {
      T* __restrict out = planes[m].row(i);
      std::fill(out, out + width, T(0));
      for (int64_t c = 0; c < channels; ++c) {
        const T weight = mixes[m].w[c];
        const T* __restrict source = pooled.data() + c * width;
        for (int64_t j = 0; j < width; ++j) out[j] += weight * source[j];
      }
      for (int64_t j = 0; j < width; ++j) out[j] *= factor;
    }
  }
}

// The next level of a 2x pyramid (zero padding after odd sizes, as piq).
template <typename T>
MF_CPU_INLINE void halve(const Plane<T>& source, Plane<T>& out) {
  const int64_t h = halved(source.height, source.height, source.width);
  const int64_t w = halved(source.width, source.height, source.width);
  out.resize(h, w);
  for (int64_t i = 0; i < h; ++i) {
    for (int64_t j = 0; j < w; ++j) {
      // reads past the source's last row/column land in its zero margin
      out.row(i)[j] = block_mean2<T>(source, 2 * i, 2 * j);
    }
  }
}

// out += g * a (or g * a * b): one moment row of the vertical Gaussian pass.
template <typename T>
MF_CPU_INLINE void weighted_product(T* __restrict out, const T* __restrict a, const T* __restrict b, T g, int64_t n,
                                    bool product) {
  if (product) {
    for (int64_t j = 0; j < n; ++j) out[j] += g * a[j] * b[j];
  } else {
    for (int64_t j = 0; j < n; ++j) out[j] += g * a[j];
  }
}

template <typename T>
T sum(const std::vector<T>& values) {
  T total = 0;
  for (T v : values) total += v;
  return total;
}

// Adds sum(v - shift) and sum((v - shift)^2) in double, in independent lanes (a single
// running sum is a dependency chain the compiler may not reorder, so it would not
// vectorise). The shift is a value the data sit near (1 for similarities), so a variance
// taken from these sums does not cancel when the spread is tiny.
template <typename T>
MF_CPU_INLINE void shifted_sums(const T* __restrict v, int64_t n, double shift, double& total, double* squares) {
  constexpr int kLanes = 8;
  double lane_sum[kLanes] = {}, lane_squares[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double d = double(v[j + l]) - shift;
      lane_sum[l] += d;
      if (squares) lane_squares[l] += d * d;
    }
  }
  for (; j < n; ++j) {
    const double d = double(v[j]) - shift;
    total += d;
    if (squares) *squares += d * d;
  }
  for (int l = 0; l < kLanes; ++l) {
    total += lane_sum[l];
    if (squares) *squares += lane_squares[l];
  }
}

template <typename T>
MF_CPU_INLINE double shifted_sum(const T* __restrict v, int64_t n, double shift) {
  double total = 0;
  shifted_sums(v, n, shift, total, nullptr);
  return total;
}

// MDSI's |gcs^q - mean|^rho, in place of re.
template <typename T>
MF_CPU_INLINE void mdsi_deviations(T* __restrict re, const T* __restrict im, int64_t n, T m_re, T m_im, T rho) {
  for (int64_t p = 0; p < n; ++p) {
    const T d_re = re[p] - m_re, d_im = im[p] - m_im;
    re[p] = sqrt(d_re * d_re + d_im * d_im);
  }
  if (rho != T(1)) {
    for (int64_t p = 0; p < n; ++p) re[p] = pow(re[p], rho);
  }
}

}  // namespace

namespace {

// The images [begin, end) of squared_error_cpu, compiled for each CPU (common/cpu_clones.h).
template <typename T>
MF_CPU_CLONES void squared_error_images(const Pair<T>& pair, T s, bool mix, int64_t plane, T* out, int64_t begin,
                                        int64_t end) {
  // In chunks: the squared differences into a buffer (a loop that vectorises), then their
  // sum in double lanes.
  constexpr int64_t kChunk = 4096;
  std::vector<T> squares(kChunk);
  const int64_t count = mix ? plane : pair.channels * plane;
  for (int64_t k = begin; k < end; ++k) {
    const T* x = pair.x + k * pair.channels * plane;
    const T* y = pair.y + k * pair.channels * plane;
    double total = 0;
    for (int64_t first = 0; first < count; first += kChunk) {
      const int64_t n = std::min(kChunk, count - first);
      T* __restrict sq = squares.data();
      for (int64_t p = 0; p < n; ++p) {
        const int64_t q = first + p;
        const T d = mix ? luma_difference(x + q, y + q, plane, s) : x[q] * s - y[q] * s;
        sq[p] = d * d;
      }
      total += shifted_sum(sq, n, 0.0);
    }
    out[k] = T(total / double(count));
  }
}

}  // namespace

template <typename T>
void squared_error_cpu(const Pair<T>& pair, double scale, bool greyscale, T* out) {
  const bool mix = greyscale && pair.channels == 3;
  const int64_t plane = pair.height * pair.width;
  const T s = T(scale);
  at::parallel_for(0, pair.n, 1, [&](int64_t begin, int64_t end) {
    squared_error_images(pair, s, mix, plane, out, begin, end);
  });
}

namespace {

// The images [begin, end) of ssim_cpu, compiled for each CPU (common/cpu_clones.h).
template <typename T>
MF_CPU_CLONES void ssim_images(const Pair<T>& pair, const T* window, int size, double scale, int pool, double c1,
                               double c2, int64_t h, int64_t w, int64_t out_h, int64_t out_w, int64_t plane, T* ssim,
                               T* cs, int64_t begin, int64_t end) {
  Plane<T> px, py;
  std::vector<T> vertical(5 * w), moments(5 * out_w), ssim_row(out_w), cs_row(out_w);
  for (int64_t task = begin; task < end; ++task) {
    const Image<T> ix{pair.x + task * plane, 1, pair.height, pair.width};
    const Image<T> iy{pair.y + task * plane, 1, pair.height, pair.width};
    const Mix<T> grey = Mix<T>::grey();
    load(ix, &grey, 1, Pooling{pool, 0}, T(scale), h, w, &px);
    load(iy, &grey, 1, Pooling{pool, 0}, T(scale), h, w, &py);
    double ssim_total = 0, cs_total = 0;
    for (int64_t i = 0; i < out_h; ++i) {
      T* v = vertical.data();
      std::fill(vertical.begin(), vertical.end(), T(0));
      for (int a = 0; a < size; ++a) {
        const T g = window[a];
        const T* rx = px.row(i + a);
        const T* ry = py.row(i + a);
        weighted_product(v, rx, rx, g, w, false), weighted_product(v + w, ry, ry, g, w, false);
        weighted_product(v + 2 * w, rx, rx, g, w, true), weighted_product(v + 3 * w, ry, ry, g, w, true);
        weighted_product(v + 4 * w, rx, ry, g, w, true);
      }
      std::fill(moments.begin(), moments.end(), T(0));
      for (int m = 0; m < 5; ++m) {
        T* __restrict out = moments.data() + m * out_w;
        const T* __restrict in = vertical.data() + m * w;
        for (int b = 0; b < size; ++b) {
          const T g = window[b];
          for (int64_t j = 0; j < out_w; ++j) out[j] += g * in[j + b];
        }
      }
      const T* mo = moments.data();
      for (int64_t j = 0; j < out_w; ++j) {
        ssim_pixel(mo[j], mo[out_w + j], mo[2 * out_w + j], mo[3 * out_w + j], mo[4 * out_w + j], T(c1), T(c2),
                   ssim_row[j], cs_row[j]);
      }
      ssim_total += double(sum(ssim_row)), cs_total += double(sum(cs_row));
    }
    const double count = double(out_h * out_w);
    ssim[task] = T(ssim_total / count), cs[task] = T(cs_total / count);
  }
}

}  // namespace

template <typename T>
void ssim_cpu(const Pair<T>& pair, const T* window, int size, double scale, int pool, double c1, double c2, T* ssim,
              T* cs) {
  const int64_t h = pair.height / pool, w = pair.width / pool;
  const int64_t out_h = h - size + 1, out_w = w - size + 1;
  const int64_t plane = pair.height * pair.width;
  at::parallel_for(0, pair.n * pair.channels, 1, [&](int64_t begin, int64_t end) {
    ssim_images(pair, window, size, scale, pool, c1, c2, h, w, out_h, out_w, plane, ssim, cs, begin, end);
  });
}

namespace {

// The images [begin, end) of gmsd_cpu, compiled for each CPU (common/cpu_clones.h).
template <typename T>
MF_CPU_CLONES void gmsd_images(const Pair<T>& pair, double scale, const Pooling& pooling, int num_scales, double t,
                               double alpha, int64_t h, int64_t w, T* out, int64_t begin, int64_t end) {
  Plane<T> px, py, next;
  std::vector<T> row;
  for (int64_t k = begin; k < end; ++k) {
    const Mix<T> mix = Mix<T>::luma(pair.channels);
    load(pair.image_x(k), &mix, 1, pooling, T(scale), h, w, &px);
    load(pair.image_y(k), &mix, 1, pooling, T(scale), h, w, &py);
    for (int level = 0; level < num_scales; ++level) {
      if (level > 0) {
        halve(px, next), std::swap(px, next);
        halve(py, next), std::swap(py, next);
      }
      double total = 0, squares = 0;  // of gms - 1: gms is at most 1, and 1 where the gradients agree
      row.resize(px.width);
      const auto vx = px.view(), vy = py.view();
      for (int64_t i = 0; i < px.height; ++i) {
        for (int64_t j = 0; j < px.width; ++j) {
          row[j] = similarity(prewitt_magnitude<T>(vx, i, j), prewitt_magnitude<T>(vy, i, j), T(t), T(alpha));
        }
        shifted_sums(row.data(), px.width, 1.0, total, &squares);
      }
      const double count = double(px.height * px.width), mean = total / count;
      out[k * num_scales + level] = T(std::sqrt(std::max(0.0, squares / count - mean * mean)));
    }
  }
}

}  // namespace

template <typename T>
void gmsd_cpu(const Pair<T>& pair, double scale, bool pool_first, int num_scales, double t, double alpha, T* out) {
  const int64_t H = pair.height, W = pair.width;
  const Pooling pooling{pool_first ? 2 : 1, 0};
  const int64_t h = pool_first ? halved(H, H, W) : H, w = pool_first ? halved(W, H, W) : W;
  at::parallel_for(0, pair.n, 1, [&](int64_t begin, int64_t end) {
    gmsd_images(pair, scale, pooling, num_scales, t, alpha, h, w, out, begin, end);
  });
}

namespace {

// One row of MDSI's similarities, then of gcs^q.
template <typename T>
MF_CPU_INLINE void mdsi_row(const Plane<T>* planes, const MdsiTerms<T>& terms, int64_t i, T* gs, T* cs, T* re, T* im) {
  const auto lx = planes[0].view(), ly = planes[3].view();
  const T *hx = planes[1].row(i), *mx = planes[2].row(i), *hy = planes[4].row(i), *my = planes[5].row(i);
  const int64_t w = planes[0].width;
  MF_CPU_INDEPENDENT
  for (int64_t j = 0; j < w; ++j) mdsi_similarities<T>(lx, ly, hx[j], mx[j], hy[j], my[j], terms, i, j, gs[j], cs[j]);
  if (terms.mult) {
    for (int64_t j = 0; j < w; ++j) mdsi_combine(gs[j], cs[j], terms, re[j], im[j]);
    return;
  }
  const RealPower<T> power = terms.power_q;
  if (power.exponent != T(0.25)) {
    for (int64_t j = 0; j < w; ++j) power(mdsi_sum_base(gs[j], cs[j], terms), re[j], im[j]);
    return;
  }
  MF_CPU_INDEPENDENT
  for (int64_t j = 0; j < w; ++j) {  // the default q, without a call to pow: vectorises
    const T base = mdsi_sum_base(gs[j], cs[j], terms);
    power.turn(base, RealPower<T>::quarter_power(base), re[j], im[j]);
  }
}

// The images [begin, end) of mdsi_cpu, compiled for each CPU (common/cpu_clones.h).
template <typename T>
MF_CPU_CLONES void mdsi_images(const Pair<T>& pair, double scale, const Pooling& pooling, const MdsiTerms<T>& terms,
                               const Mix<T>* mixes, double rho, int64_t h, int64_t w, T* out, int64_t begin,
                               int64_t end) {
  Plane<T> planes[6];  // L, H, M of x, then of y
  std::vector<T> map(2 * h * w), gs(w), cs(w);
  const int64_t count = h * w;
  T* re = map.data();
  T* im = re + count;
  for (int64_t k = begin; k < end; ++k) {
    load(pair.image_x(k), mixes, 3, pooling, T(scale), h, w, planes);
    load(pair.image_y(k), mixes, 3, pooling, T(scale), h, w, planes + 3);
    for (int64_t i = 0; i < h; ++i) mdsi_row(planes, terms, i, gs.data(), cs.data(), re + i * w, im + i * w);
    // The mean of gcs^q, shifted by 1 + 0i where it sits for similar images: the
    // deviations from it can be far smaller than a rounding error of 1.
    const T m_re = T(1.0 + shifted_sum(re, count, 1.0) / double(count));
    const T m_im = T(shifted_sum(im, count, 0.0) / double(count));
    mdsi_deviations(re, im, count, m_re, m_im, T(rho));
    out[k] = T(shifted_sum(re, count, 0.0) / double(count));
  }
}

}  // namespace

template <typename T>
void mdsi_cpu(const Pair<T>& pair, double scale, int pool, const MdsiParams& params, double rho, T* out) {
  const int64_t h = (pair.height + pool - 1) / pool, w = (pair.width + pool - 1) / pool;
  const Pooling pooling{pool, (pool - 1) / 2};
  const MdsiTerms<T> terms = MdsiTerms<T>::of(params);
  const Mix<T> mixes[3] = {Mix<T>::of(kLhm[0], pair.channels), Mix<T>::of(kLhm[1], pair.channels),
                           Mix<T>::of(kLhm[2], pair.channels)};
  at::parallel_for(0, pair.n, 1, [&](int64_t begin, int64_t end) {
    mdsi_images(pair, scale, pooling, terms, mixes, rho, h, w, out, begin, end);
  });
}

namespace {

// The integral image of a plane (metrics.h's IntegralView), its margin `pad` the largest
// Haar half-size.
struct IntegralImage {
  int64_t pad = 0, stride = 0;
  std::vector<double> sums;

  template <typename T>
  void build(const Plane<T>& plane, int64_t margin) {
    pad = margin, stride = IntegralView::stride_for(plane.width, pad);
    const int64_t rows = IntegralView::rows_for(plane.height, pad) - 1;
    sums.assign((rows + 1) * stride, 0.0);
    for (int64_t i = 0; i < plane.height; ++i) {
      double* above = sums.data() + (i + pad) * stride + pad + 1;
      double* here = above + stride;
      double row = 0;
      for (int64_t j = 0; j < plane.width; ++j) here[j] = above[j] + (row += double(plane(i, j)));
      for (int64_t j = plane.width; j < plane.width + pad; ++j) here[j] = above[j] + row;
    }
    for (int64_t i = plane.height + pad + 1; i <= rows; ++i) {
      std::copy(sums.begin() + (i - 1) * stride, sums.begin() + i * stride, sums.begin() + i * stride);
    }
  }
  template <typename T>
  IntegralBox<T> box() const {
    return {{sums.data(), pad, stride}};
  }
};

// The images [begin, end) of haarpsi_cpu, compiled for each CPU (common/cpu_clones.h).
// Row by row, in loops over the row that vectorise: each scale's Haar responses into the
// terms, the chroma similarity, then (with calls to exp) the weighted sums.
template <typename T>
MF_CPU_CLONES void haarpsi_images(const Pair<T>& pair, double scale, const Pooling& pooling, const HaarParams& params,
                                  const Mix<T>* mixes, bool colour, int64_t h, int64_t w, T* out, int64_t begin,
                                  int64_t end) {
  Plane<T> yiq[6];
  IntegralImage box_x, box_y;
  std::vector<T> rows(7 * w);
  T *sim_h = rows.data(), *sim_v = sim_h + w, *weight_h = sim_v + w, *weight_v = weight_h + w;
  T *chroma_sim = weight_v + w, *weighted = chroma_sim + w, *weights = weighted + w;
  const T c = T(params.c), alpha = T(params.alpha);
  for (int64_t k = begin; k < end; ++k) {
    // Y, I, Q (or grey) of x, then of y
    const int count = colour ? 3 : 1;
    load(pair.image_x(k), mixes, count, pooling, T(scale), h, w, yiq);
    load(pair.image_y(k), mixes, count, pooling, T(scale), h, w, yiq + 3);
    const int64_t margin = int64_t(1) << (params.scales - 1);
    box_x.build(yiq[0], margin), box_y.build(yiq[3], margin);
    const IntegralBox<T> bx = box_x.box<T>(), by = box_y.box<T>();
    const auto ix = yiq[1].view(), qx = yiq[2].view(), iy = yiq[4].view(), qy = yiq[5].view();
    double total_weighted = 0, total_weights = 0;
    for (int64_t i = 0; i < h; ++i) {
      std::fill(sim_h, sim_h + 2 * w, T(0));
      for (int s = 0; s < params.scales; ++s) {
        if (!haarpsi_uses_scale(s, params.scales)) continue;
        const int64_t half = int64_t(1) << s;
        MF_CPU_INDEPENDENT
        for (int64_t j = 0; j < w; ++j) {
          T hx, vx, hy, vy;
          haar<T>(bx, i, j, half, hx, vx);
          haar<T>(by, i, j, half, hy, vy);
          haarpsi_scale_terms(s, params.scales, c, hx, vx, hy, vy, sim_h[j], sim_v[j], weight_h[j], weight_v[j]);
        }
      }
      if (colour) {
        MF_CPU_INDEPENDENT
        for (int64_t j = 0; j < w; ++j) chroma_sim[j] = haarpsi_chroma_similarity<T>(ix, qx, iy, qy, params.c, i, j);
      }
      for (int64_t j = 0; j < w; ++j) {
        haarpsi_weigh(sim_h[j], sim_v[j], weight_h[j], weight_v[j], colour, chroma_sim[j], alpha, weighted[j],
                      weights[j]);
      }
      total_weighted += shifted_sum(weighted, w, 0.0), total_weights += shifted_sum(weights, w, 0.0);
    }
    out[2 * k] = T(total_weighted), out[2 * k + 1] = T(total_weights);
  }
}

}  // namespace

template <typename T>
void haarpsi_cpu(const Pair<T>& pair, double scale, bool subsample, const HaarParams& params, T* out) {
  const int64_t H = pair.height, W = pair.width;
  const Pooling pooling{subsample ? 2 : 1, 0};
  const int64_t h = subsample ? halved(H, H, W) : H, w = subsample ? halved(W, H, W) : W;
  const bool colour = pair.channels == 3;
  const Mix<T> mixes[3] = {Mix<T>::luma(pair.channels), Mix<T>::of(kYiq[1], 3), Mix<T>::of(kYiq[2], 3)};
  at::parallel_for(0, pair.n, 1, [&](int64_t begin, int64_t end) {
    haarpsi_images(pair, scale, pooling, params, mixes, colour, h, w, out, begin, end);
  });
}

#define MEDGAN_FAST_INSTANTIATE(T)                                                                                  \
  template void squared_error_cpu<T>(const Pair<T>&, double, bool, T*);                                             \
  template void ssim_cpu<T>(const Pair<T>&, const T*, int, double, int, double, double, T*, T*);                    \
  template void gmsd_cpu<T>(const Pair<T>&, double, bool, int, double, double, T*);                                 \
  template void mdsi_cpu<T>(const Pair<T>&, double, int, const MdsiParams&, double, T*);                            \
  template void haarpsi_cpu<T>(const Pair<T>&, double, bool, const HaarParams&, T*);
MEDGAN_FAST_INSTANTIATE(float)
MEDGAN_FAST_INSTANTIATE(double)
#undef MEDGAN_FAST_INSTANTIATE

}  // namespace medgan_fast::metrics
