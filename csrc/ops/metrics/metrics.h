// Image-quality metrics: the per-pixel math shared by the CPU drivers and CUDA kernels.
//
// Every metric runs in two stages per image:
//  1. load: the raw (C, H, W) image becomes the metric's working planes (colour mix such
//     as Y of YIQ, average pooling with piq's padding convention, times `scale`);
//  2. map and reduce: filters (Gaussian, Prewitt, Haar) at each pixel of the planes, the
//     metric's per-pixel map, summed per image in double.
// The planes are at most the image's size (usually a quarter); no per-moment map is kept.
// Filters read planes through an accessor `get(row, col)` that returns 0 outside the plane
// (piq's zero padding): the CPU passes a padded copy, CUDA a bounds-checked pointer.
//
// Conventions follow piq 0.8.0 (see medgan_fast/ops/metrics.py for the references).
#pragma once

#include <type_traits>

#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace medgan_fast::metrics {

// std's float overloads on the host (CUDA provides them on the device).
using std::atan2, std::cos, std::exp, std::fabs, std::fmax, std::pow, std::signbit, std::sin, std::sqrt;

constexpr double kYiq[3][3] = {{0.299, 0.587, 0.114}, {0.5959, -0.2746, -0.3213}, {0.2115, -0.5227, 0.3112}};
constexpr double kLhm[3][3] = {{0.2989, 0.587, 0.114}, {0.3, 0.04, -0.35}, {0.34, -0.6, 0.17}};

// A (channels, height, width) image, C-contiguous.
template <typename T>
struct Image {
  const T* data;
  int64_t channels, height, width;
  MF_HD T at(int64_t c, int64_t i, int64_t j) const {
    return (i < 0 || j < 0 || i >= height || j >= width) ? T(0) : data[(c * height + i) * width + j];
  }
};

// How a plane is pooled from its source: output (i, j) is the mean of the pool x pool
// block whose top-left source pixel is (i * pool - offset, j * pool - offset); source
// pixels outside count as zero. Sizes: SSIM floor(H / pool); the 2x pyramids of GMSD and
// HaarPSI (H + p) / 2 with p = max(H % 2, W % 2) (zero padding after); MDSI
// (H + pool - 1) / pool with offset (pool - 1) / 2 (zero padding on both sides).
struct Pooling {
  int pool, offset;
};

MF_HD int64_t halved(int64_t size, int64_t height, int64_t width) {
  return (size + ((height % 2) | (width % 2))) / 2;
}

// Channel weights of a working plane: luma (Y of YIQ), a row of YIQ or LHM for RGB; for
// grey, the row's sum (piq's MDSI repeats a grey channel three times) or 1.
template <typename T>
struct Mix {
  T w[3];
  static Mix<T> of(const double (&row)[3], int64_t channels) {
    if (channels == 1) return {{T(row[0] + row[1] + row[2]), T(0), T(0)}};
    return {{T(row[0]), T(row[1]), T(row[2])}};
  }
  static Mix<T> grey() { return {{T(1), T(0), T(0)}}; }
  // The luma of GMSD and HaarPSI: Y of YIQ for RGB, the grey channel itself otherwise.
  static Mix<T> luma(int64_t channels) { return channels == 3 ? of(kYiq[0], 3) : grey(); }
};

// The scaled difference of the lumas (Y of YIQ) of two RGB pixels whose channels lie
// `plane` apart: PSNR's greyscale conversion.
template <typename T>
MF_HD T luma_difference(const T* x, const T* y, int64_t plane, T scale) {
  const T w0 = T(kYiq[0][0]), w1 = T(kYiq[0][1]), w2 = T(kYiq[0][2]);
  return (w0 * x[0] + w1 * x[plane] + w2 * x[2 * plane]) * scale - (w0 * y[0] + w1 * y[plane] + w2 * y[2 * plane]) * scale;
}

// Channel mix (weights[c] for each source channel; for grey one weight), pooled, scaled.
template <typename T>
MF_HD T load_pixel(const Image<T>& image, const T* weights, Pooling pooling, T scale, int64_t i, int64_t j) {
  T sum = 0;
  const int64_t top = i * pooling.pool - pooling.offset, left = j * pooling.pool - pooling.offset;
  const bool inside = top >= 0 && left >= 0 && top + pooling.pool <= image.height && left + pooling.pool <= image.width;
  const int64_t plane = image.height * image.width;
  for (int a = 0; a < pooling.pool; ++a) {
    for (int b = 0; b < pooling.pool; ++b) {
      T mixed = 0;
      if (inside) {  // the common case, without a bounds check per read
        const T* pixel = image.data + (top + a) * image.width + left + b;
        for (int64_t c = 0; c < image.channels; ++c) mixed += weights[c] * pixel[c * plane];
      } else {
        for (int64_t c = 0; c < image.channels; ++c) mixed += weights[c] * image.at(c, top + a, left + b);
      }
      sum += mixed;
    }
  }
  return sum / T(pooling.pool * pooling.pool) * scale;
}

// The mean of the 2x2 block whose top-left pixel is (i, j): piq's 2x2 average pool
// (halving) and HaarPSI's stride-1 chroma mean.
template <typename T, typename Get>
MF_HD T block_mean2(const Get& get, int64_t i, int64_t j) {
  return (get(i, j) + get(i, j + 1) + get(i + 1, j) + get(i + 1, j + 1)) / T(4);
}

// (2ab - alpha ab + c) / (a^2 + b^2 - alpha ab + c): piq's similarity_map.
template <typename T>
MF_HD T similarity(T a, T b, T constant, T alpha = T(0)) {
  return (T(2) * a * b - alpha * a * b + constant) / (a * a + b * b - alpha * a * b + constant);
}

template <typename T>
MF_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

// Prewitt gradient (piq's kernels [-1 0 1]/3 in 3 rows, and its transpose), zero padding.
template <typename T, typename Get>
MF_HD void prewitt(const Get& get, int64_t i, int64_t j, T& gx, T& gy) {
  gx = T(0), gy = T(0);
  for (int d = -1; d <= 1; ++d) {
    gx += get(i + d, j + 1) - get(i + d, j - 1);
    gy += get(i + 1, j + d) - get(i - 1, j + d);
  }
  gx /= T(3), gy /= T(3);
}

template <typename T, typename Get>
MF_HD T prewitt_magnitude(const Get& get, int64_t i, int64_t j) {
  T gx, gy;
  prewitt<T>(get, i, j, gx, gy);
  return sqrt(gx * gx + gy * gy);
}

// SSIM and contrast-structure at one pixel from the Gaussian-weighted moments.
template <typename T>
MF_HD void ssim_pixel(T mx, T my, T mxx, T myy, T mxy, T c1, T c2, T& ssim, T& cs) {
  const T sxx = mxx - mx * mx, syy = myy - my * my, sxy = mxy - mx * my;
  cs = (T(2) * sxy + c2) / (sxx + syy + c2);
  ssim = (T(2) * mx * my + c1) / (mx * mx + my * my + c1) * cs;
}

// r^e (cos e phi, sin e phi) of re + i im, phi = atan2(im, re): piq's pow_for_complex.
template <typename T>
MF_HD void complex_power(T re, T im, T exponent, T& out_re, T& out_im) {
  const T radius = pow(sqrt(re * re + im * im), exponent), phase = atan2(im, re) * exponent;
  out_re = radius * cos(phase);
  out_im = radius * sin(phase);
}

// The same for a real x: phi is 0, or pi when x is negative (or -0), so the rotation is a
// constant: cos and sin of pi * exponent, computed once in T as piq computes them.
template <typename T>
struct RealPower {
  T exponent, cos_negative, sin_negative;
  static RealPower<T> of(double exponent) {
    const T phase = T(atan2(T(0), T(-1))) * T(exponent);
    return {T(exponent), T(cos(phase)), T(sin(phase))};
  }
  // |x|^exponent: MDSI's default q = 0.25 as two square roots, a few times faster than pow
  // and as exact (each rounds once, pow to within an ulp), and vectorisable on the CPU.
  MF_HD static T quarter_power(T x) { return sqrt(sqrt(fabs(x))); }
  MF_HD T radius(T x) const { return exponent == T(0.25) ? quarter_power(x) : pow(fabs(x), exponent); }
  // x^exponent from its radius |x|^exponent.
  MF_HD void turn(T x, T radius, T& re, T& im) const {
    const bool negative = signbit(x);
    re = negative ? radius * cos_negative : radius;
    im = negative ? radius * sin_negative : T(0);
  }
  MF_HD void operator()(T x, T& re, T& im) const { turn(x, radius(x), re, im); }
};

struct MdsiParams {
  double c1, c2, c3, alpha, beta, gamma, q;
  bool mult;
};

// MdsiParams in T, with the real powers' constants.
template <typename T>
struct MdsiTerms {
  T c1, c2, c3, alpha, q;
  RealPower<T> power_q, power_gamma, power_beta;
  bool mult;
  static MdsiTerms<T> of(const MdsiParams& p) {
    return {T(p.c1), T(p.c2), T(p.c3), T(p.alpha), T(p.q), RealPower<T>::of(p.q), RealPower<T>::of(p.gamma),
            RealPower<T>::of(p.beta), p.mult};
  }
};

// MDSI's similarities at one pixel: gradient similarity of L (x, y and their mean) and
// chroma similarity of H and M.
template <typename T, typename Get>
MF_HD void mdsi_similarities(const Get& lx, const Get& ly, T hx, T mx, T hy, T my, const MdsiTerms<T>& p, int64_t i,
                             int64_t j, T& gs, T& cs) {
  T gxx, gxy, gyx, gyy;
  prewitt<T>(lx, i, j, gxx, gxy);
  prewitt<T>(ly, i, j, gyx, gyy);
  const T ax = (gxx + gyx) / T(2), ay = (gxy + gyy) / T(2);
  const T gm_x = sqrt(gxx * gxx + gxy * gxy), gm_y = sqrt(gyx * gyx + gyy * gyy), gm_avg = sqrt(ax * ax + ay * ay);
  gs = similarity(gm_x, gm_y, p.c1) + similarity(gm_x, gm_avg, p.c2) - similarity(gm_y, gm_avg, p.c2);
  // Summed in pairs, so that equal chroma gives exactly 2 (hx hy + mx my) below and cs = 1:
  // identical images then give exactly 1 at every pixel, and MDSI (a deviation from the
  // mean, raised to 1/4 at the end) exactly 0, with any rounding of the power.
  cs = (T(2) * (hx * hy + mx * my) + p.c3) / ((hx * hx + hy * hy) + (mx * mx + my * my) + p.c3);
}

// The sum combination's base, alpha gs + (1 - alpha) cs, raised to q by power_q.
template <typename T>
MF_HD T mdsi_sum_base(T gs, T cs, const MdsiTerms<T>& p) {
  return p.alpha * gs + (T(1) - p.alpha) * cs;
}

// gcs^q (complex) from the similarities: the sum combination, or piq's product of complex
// powers.
template <typename T>
MF_HD void mdsi_combine(T gs, T cs, const MdsiTerms<T>& p, T& re, T& im) {
  if (p.mult) {
    T gs_re, gs_im, cs_re, cs_im;
    p.power_gamma(gs, gs_re, gs_im);
    p.power_beta(cs, cs_re, cs_im);
    complex_power(gs_re * cs_re, gs_im + cs_im, p.q, re, im);
  } else {
    p.power_q(mdsi_sum_base(gs, cs, p), re, im);
  }
}

// Haar responses of size k = 2 * half (piq's haar_filter and its transpose, zero padding
// half - 1 before and half after, as MATLAB's conv2 'same'). box(r0, c0, r1, c1) is the
// sum over rows [r0, r1) and columns [c0, c1) of the plane, zero outside.
template <typename T, typename Box>
MF_HD void haar(const Box& box, int64_t i, int64_t j, int64_t half, T& horizontal, T& vertical) {
  const int64_t r0 = i - half + 1, c0 = j - half + 1;
  const T k = T(2 * half);
  horizontal = (box(r0, c0, i + 1, j + half + 1) - box(i + 1, c0, i + half + 1, j + half + 1)) / k;
  vertical = (box(r0, c0, i + half + 1, j + 1) - box(r0, j + 1, i + half + 1, j + half + 1)) / k;
}

// Box sums over a plane (zero outside) from its integral image in double, which has a zero
// margin of `pad` on every side so that no read needs a bounds check: sums[a * stride + b]
// is the sum over rows < a - pad and columns < b - pad, for a in [0, height + 2 pad], b in
// [0, width + 2 pad]. The CPU and CUDA drivers build it with the same additions in the same
// order (each row's prefix sum, then plus the row above), so their box sums are the same bits.
struct IntegralView {
  const double* sums;
  int64_t pad, stride;
  MF_HD static int64_t rows_for(int64_t height, int64_t pad) { return height + 2 * pad + 1; }
  MF_HD static int64_t stride_for(int64_t width, int64_t pad) { return width + 2 * pad + 1; }
  MF_HD double at(int64_t i, int64_t j) const { return sums[(i + pad) * stride + j + pad]; }
  MF_HD double operator()(int64_t r0, int64_t c0, int64_t r1, int64_t c1) const {
    return at(r1, c1) - at(r0, c1) - at(r1, c0) + at(r0, c0);
  }
};

// An integral image as haar()'s box of T.
template <typename T>
struct IntegralBox {
  IntegralView sums;
  MF_HD T operator()(int64_t r0, int64_t c0, int64_t r1, int64_t c1) const { return T(sums(r0, c0, r1, c1)); }
};

struct HaarParams {
  int scales;
  double c, alpha;
};

// Scale s's share of one pixel's HaarPSI terms for the horizontal and vertical maps, from
// the Haar responses of x and y at that scale: the similarity sums the two finest scales
// (sim, starting at 0; sigmoid(alpha * sim / 2) later), the weight is the coarsest's
// larger response. Scales in between play no part.
template <typename T>
MF_HD void haarpsi_scale_terms(int s, int scales, T c, T hx, T vx, T hy, T vy, T& sim_h, T& sim_v, T& weight_h,
                               T& weight_v) {
  hx = fabs(hx), vx = fabs(vx), hy = fabs(hy), vy = fabs(vy);
  if (s < 2) {
    sim_h += similarity(hx, hy, c);
    sim_v += similarity(vx, vy, c);
  }
  if (s == scales - 1) {  // inputs are never NaN, so a plain max (a vector instruction)
    weight_h = hx > hy ? hx : hy;
    weight_v = vx > vy ? vx : vy;
  }
}

// The scales that take part in HaarPSI's terms: the two finest and the coarsest.
MF_HD bool haarpsi_uses_scale(int s, int scales) { return s < 2 || s == scales - 1; }

// One pixel's HaarPSI terms of the horizontal and vertical maps, over all scales.
template <typename T, typename Box>
MF_HD void haarpsi_terms(const Box& box_x, const Box& box_y, const HaarParams& p, int64_t i, int64_t j, T& sim_h,
                         T& sim_v, T& weight_h, T& weight_v) {
  sim_h = T(0), sim_v = T(0);
  for (int s = 0; s < p.scales; ++s) {
    if (!haarpsi_uses_scale(s, p.scales)) continue;
    T hx, vx, hy, vy;
    haar<T>(box_x, i, j, int64_t(1) << s, hx, vx);
    haar<T>(box_y, i, j, int64_t(1) << s, hy, vy);
    haarpsi_scale_terms(s, p.scales, T(p.c), hx, vx, hy, vy, sim_h, sim_v, weight_h, weight_v);
  }
}

// A pixel's sum over its maps of sigmoid(alpha * similarity) * weight, and of the weights:
// horizontal and vertical, and for colour the chroma map, weighted by their mean weight.
template <typename T>
MF_HD void haarpsi_weigh(T sim_h, T sim_v, T weight_h, T weight_v, bool colour, T chroma_sim, T alpha, T& weighted,
                         T& weights) {
  weighted = sigmoid(sim_h / T(2) * alpha) * weight_h + sigmoid(sim_v / T(2) * alpha) * weight_v;
  weights = weight_h + weight_v;
  if (colour) {
    const T mean = weights / T(2);
    weighted += sigmoid(chroma_sim * alpha) * mean;
    weights += mean;
  }
}

// HaarPSI's chroma map: |2x2 mean| of I and Q (zero padding after), their similarity.
template <typename T, typename Get>
MF_HD T haarpsi_chroma_similarity(const Get& ix, const Get& qx, const Get& iy, const Get& qy, double c, int64_t i,
                                  int64_t j) {
  auto mean4 = [&](const Get& g) { return fabs(block_mean2<T>(g, i, j)); };
  return (similarity(mean4(ix), mean4(iy), T(c)) + similarity(mean4(qx), mean4(qy), T(c))) / T(2);
}

// The drivers: x and y are (n, channels, height, width) C-contiguous; outputs are
// per-image (per-channel for SSIM) values, explained in medgan_fast/ops/metrics.py.
template <typename T>
struct Pair {
  const T* x;
  const T* y;
  int64_t n, channels, height, width;
  MF_HD Image<T> image_x(int64_t k) const { return {x + k * channels * height * width, channels, height, width}; }
  MF_HD Image<T> image_y(int64_t k) const { return {y + k * channels * height * width, channels, height, width}; }
};

#define MEDGAN_FAST_METRIC_DRIVERS(backend)                                                                          \
  template <typename T>                                                                                              \
  void squared_error_##backend(const Pair<T>& pair, double scale, bool greyscale, T* out);                          \
  template <typename T>                                                                                              \
  void ssim_##backend(const Pair<T>& pair, const T* window, int size, double scale, int pool, double c1, double c2, \
                      T* ssim, T* cs);                                                                               \
  template <typename T>                                                                                              \
  void gmsd_##backend(const Pair<T>& pair, double scale, bool pool_first, int num_scales, double t, double alpha,   \
                      T* out);                                                                                       \
  template <typename T>                                                                                              \
  void mdsi_##backend(const Pair<T>& pair, double scale, int pool, const MdsiParams& params, double rho, T* out);    \
  template <typename T>                                                                                              \
  void haarpsi_##backend(const Pair<T>& pair, double scale, bool subsample, const HaarParams& params, T* out);

MEDGAN_FAST_METRIC_DRIVERS(cpu)
#undef MEDGAN_FAST_METRIC_DRIVERS

// One backend's drivers, by dtype (metrics_cuda.cu has the same ones as the CPU). cuda_backend:
// that file built by nvcc; emulated_backend: built against the CPU emulation.
template <typename T>
struct Drivers {
  decltype(&squared_error_cpu<T>) squared_error;
  decltype(&ssim_cpu<T>) ssim;
  decltype(&gmsd_cpu<T>) gmsd;
  decltype(&mdsi_cpu<T>) mdsi;
  decltype(&haarpsi_cpu<T>) haarpsi;
};

struct Backend {
  Drivers<float> f32;
  Drivers<double> f64;
  template <typename T>
  const Drivers<T>& of() const {
    if constexpr (std::is_same_v<T, float>) {
      return f32;
    } else {
      return f64;
    }
  }
};
extern const Backend cuda_backend;
extern const Backend emulated_backend;

}  // namespace medgan_fast::metrics
