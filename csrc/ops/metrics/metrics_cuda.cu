// CUDA drivers of metrics.h. Per metric: one launch loads the working planes of all
// images (colour mix, pooling, scale), one computes the per-pixel map and reduces it per
// image into per-block partial sums (double), one sums the partials in a fixed order and
// finishes each image's value. No atomics, so results do not depend on scheduling.
#include <cmath>

#include "common/cuda_utils.cuh"
#include "ops/metrics/metrics.h"

namespace medgan_fast::metrics {
namespace {

constexpr int kBlocksPerItem = 32;

// A batch of planes [item][height][width] in device memory, zero outside.
template <typename T>
struct Planes {
  T* data;
  int64_t height, width;
  MF_HD int64_t size() const { return height * width; }
  MF_HD T* plane(int64_t item) const { return data + item * size(); }
};

template <typename T>
struct PlaneView {
  const T* data;
  int64_t height, width;
  MF_HD T operator()(int64_t i, int64_t j) const {
    return (i < 0 || j < 0 || i >= height || j >= width) ? T(0) : data[i * width + j];
  }
};

template <typename T>
MF_HD PlaneView<T> view(const Planes<T>& planes, int64_t item) {
  return {planes.plane(item), planes.height, planes.width};
}

// Planes item = image * mixes + m: either mix m of all channels or (per_channel) channel m.
template <typename T>
struct LoadSpec {
  Mix<T> mixes[3];
  int count;
  bool per_channel;
  Pooling pooling;
  T scale;
};

template <typename T>
__global__ void load_kernel(Pair<T> pair, LoadSpec<T> spec, Planes<T> out_x, Planes<T> out_y) {
  const int64_t per_image = spec.count * out_x.size();
  MF_GRID_STRIDE(index, pair.n * per_image) {
    const int64_t k = index / per_image, rest = index % per_image;
    const int m = static_cast<int>(rest / out_x.size());
    const int64_t p = rest % out_x.size(), i = p / out_x.width, j = p % out_x.width;
    Image<T> ix = pair.image_x(k), iy = pair.image_y(k);
    Mix<T> mix = spec.mixes[spec.per_channel ? 0 : m];
    if (spec.per_channel) {
      const int64_t plane = pair.height * pair.width;
      ix = {ix.data + m * plane, 1, pair.height, pair.width};
      iy = {iy.data + m * plane, 1, pair.height, pair.width};
    }
    out_x.data[index] = load_pixel(ix, mix.w, spec.pooling, spec.scale, i, j);
    out_y.data[index] = load_pixel(iy, mix.w, spec.pooling, spec.scale, i, j);
  }
}

template <typename T>
__global__ void halve_kernel(Planes<T> in, Planes<T> out, int64_t items) {
  MF_GRID_STRIDE(index, items * out.size()) {
    const int64_t item = index / out.size(), p = index % out.size(), i = p / out.width, j = p % out.width;
    out.data[index] = block_mean2<T>(view(in, item), 2 * i, 2 * j);
  }
}

// Q sums per item over `count` pixels: blockIdx.y is the item, blocks along x share its
// pixels; each block writes its partial sums, finish_kernel adds them in block order.
template <int Q, typename F>
__global__ void reduce_kernel(F f, int64_t count, int64_t first_item, double* partials) {
  __shared__ double shared[Q][kThreads];
  const int64_t item = first_item + blockIdx.y;
  double acc[Q] = {};
  for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < count;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    f(item, p, acc);
  }
  for (int q = 0; q < Q; ++q) shared[q][threadIdx.x] = acc[q];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      for (int q = 0; q < Q; ++q) shared[q][threadIdx.x] += shared[q][threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    for (int q = 0; q < Q; ++q) partials[(item * gridDim.x + blockIdx.x) * Q + q] = shared[q][0];
  }
}

template <int Q, typename G>
__global__ void finish_kernel(G g, int64_t items, int blocks, const double* partials) {
  MF_GRID_STRIDE(item, items) {
    double sums[Q] = {};
    for (int b = 0; b < blocks; ++b) {
      for (int q = 0; q < Q; ++q) sums[q] += partials[(item * blocks + b) * Q + q];
    }
    g(item, sums);
  }
}

// Runs f over count pixels of each of `items`, then g(item, sums) once per item.
template <int Q, typename F, typename G>
void reduce(int64_t items, int64_t count, F f, G g) {
  const int blocks = static_cast<int>(std::min<int64_t>(kBlocksPerItem, (count + kThreads - 1) / kThreads));
  c10::DataPtr partials = device_buffer(items * blocks * Q * sizeof(double));
  auto* data = static_cast<double*>(partials.get());
  constexpr int64_t kMaxGridY = 65535;
  for (int64_t first = 0; first < items; first += kMaxGridY) {
    const auto chunk = static_cast<unsigned int>(std::min(kMaxGridY, items - first));
    MF_LAUNCH(reduce_kernel<Q>, dim3(blocks, chunk), kThreads, 0, current_stream())(f, count, first, data);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  MF_LAUNCH(finish_kernel<Q>, blocks_for(items), kThreads, 0, current_stream())(g, items, blocks, data);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
struct PlaneBuffers {
  c10::DataPtr x_memory, y_memory;
  Planes<T> x, y;
  PlaneBuffers(int64_t items, int64_t height, int64_t width)
      : x_memory(device_buffer(items * height * width * sizeof(T))),
        y_memory(device_buffer(items * height * width * sizeof(T))),
        x{static_cast<T*>(x_memory.get()), height, width},
        y{static_cast<T*>(y_memory.get()), height, width} {}
};

template <typename T>
PlaneBuffers<T> load(const Pair<T>& pair, const LoadSpec<T>& spec, int64_t height, int64_t width) {
  PlaneBuffers<T> buffers(pair.n * spec.count, height, width);
  MF_LAUNCH(load_kernel, blocks_for(pair.n * spec.count * height * width), kThreads, 0, current_stream())(
      pair, spec, buffers.x, buffers.y);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return buffers;
}

// --- functors (device code cannot take host lambdas without extended-lambda flags) ---------

template <typename T>
struct SquaredErrorMap {
  Pair<T> pair;
  T scale;
  bool mix;
  MF_HD void operator()(int64_t k, int64_t p, double (&acc)[1]) const {
    const int64_t plane = pair.height * pair.width, base = k * pair.channels * plane;
    T d;
    if (mix) {
      d = luma_difference(pair.x + base + p, pair.y + base + p, plane, scale);
    } else {
      d = pair.x[base + p] * scale - pair.y[base + p] * scale;
    }
    acc[0] += double(d * d);
  }
};

template <typename T, int Q>
struct WriteMeans {
  T* out;
  double count;
  MF_HD void operator()(int64_t item, const double (&sums)[Q]) const {
    for (int q = 0; q < Q; ++q) out[item * Q + q] = T(sums[q] / count);
  }
};

template <typename T>
struct SsimMap {
  Planes<T> x, y;
  const T* window;
  int size;
  int64_t out_width;
  T c1, c2;
  MF_HD void operator()(int64_t item, int64_t p, double (&acc)[2]) const {
    const int64_t i = p / out_width, j = p % out_width;
    const T* px = x.plane(item) + i * x.width + j;
    const T* py = y.plane(item) + i * y.width + j;
    T mx = 0, my = 0, mxx = 0, myy = 0, mxy = 0;
    for (int a = 0; a < size; ++a) {
      T rx = 0, ry = 0, rxx = 0, ryy = 0, rxy = 0;
      for (int b = 0; b < size; ++b) {
        const T g = window[b], u = px[a * x.width + b], v = py[a * y.width + b];
        rx += g * u, ry += g * v, rxx += g * u * u, ryy += g * v * v, rxy += g * u * v;
      }
      const T g = window[a];
      mx += g * rx, my += g * ry, mxx += g * rxx, myy += g * ryy, mxy += g * rxy;
    }
    T ssim, cs;
    ssim_pixel(mx, my, mxx, myy, mxy, c1, c2, ssim, cs);
    acc[0] += double(ssim), acc[1] += double(cs);
  }
};

template <typename T>
struct SsimWrite {
  T* ssim;
  T* cs;
  double count;
  MF_HD void operator()(int64_t item, const double (&sums)[2]) const {
    ssim[item] = T(sums[0] / count), cs[item] = T(sums[1] / count);
  }
};

template <typename T>
struct GmsMap {
  Planes<T> x, y;
  T t, alpha;
  MF_HD void operator()(int64_t item, int64_t p, double (&acc)[2]) const {
    const int64_t i = p / x.width, j = p % x.width;
    const T gms = similarity(prewitt_magnitude<T>(view(x, item), i, j), prewitt_magnitude<T>(view(y, item), i, j), t,
                             alpha);
    const double d = double(gms) - 1.0;  // shifted: gms sits near 1, so the variance does not cancel
    acc[0] += d, acc[1] += d * d;
  }
};

template <typename T>
struct GmsWrite {
  T* out;
  int num_scales, level;
  double count;
  MF_HD void operator()(int64_t item, const double (&sums)[2]) const {
    const double mean = sums[0] / count, variance = sums[1] / count - mean * mean;
    out[item * num_scales + level] = T(sqrt(variance > 0 ? variance : 0.0));
  }
};

template <typename T>
struct MdsiMap {
  Planes<T> x, y;  // 3 planes per image: L, H, M
  MdsiTerms<T> params;
  T* map;          // (n, h * w, 2)
  MF_HD void operator()(int64_t k, int64_t p, double (&acc)[2]) const {
    const int64_t i = p / x.width, j = p % x.width;
    T gs, cs, re, im;
    mdsi_similarities<T>(view(x, 3 * k), view(y, 3 * k), x.plane(3 * k + 1)[p], x.plane(3 * k + 2)[p],
                         y.plane(3 * k + 1)[p], y.plane(3 * k + 2)[p], params, i, j, gs, cs);
    mdsi_combine(gs, cs, params, re, im);
    map[2 * (k * x.size() + p)] = re, map[2 * (k * x.size() + p) + 1] = im;
    acc[0] += double(re) - 1.0, acc[1] += double(im);  // shifted by 1 + 0i, as the CPU
  }
};

template <typename T>
struct MdsiMean {
  T* means;
  double count;
  MF_HD void operator()(int64_t item, const double (&sums)[2]) const {
    means[2 * item] = T(1.0 + sums[0] / count), means[2 * item + 1] = T(sums[1] / count);
  }
};

template <typename T>
struct MdsiDeviation {
  const T* map;
  const T* means;
  int64_t size;
  T rho;
  MF_HD void operator()(int64_t k, int64_t p, double (&acc)[1]) const {
    const T d_re = map[2 * (k * size + p)] - means[2 * k], d_im = map[2 * (k * size + p) + 1] - means[2 * k + 1];
    const T deviation = sqrt(d_re * d_re + d_im * d_im);
    acc[0] += double(rho == T(1) ? deviation : pow(deviation, rho));
  }
};

// Integral images (metrics.h's IntegralView) of every plane: first each row's prefix sum
// (one thread per row), then each column's running sum of those (one thread per column),
// the CPU's additions in the CPU's order. Four reads per box at any scale, where summing
// the box directly costs 4^s.
template <typename T>
__global__ void integral_rows_kernel(Planes<T> planes, int64_t items, int64_t pad, double* sums) {
  const int64_t rows = IntegralView::rows_for(planes.height, pad), stride = IntegralView::stride_for(planes.width, pad);
  MF_GRID_STRIDE(t, items * rows) {
    const int64_t item = t / rows, r = t % rows - pad - 1;  // this row holds the sums through plane row r
    const bool inside = r >= 0 && r < planes.height;
    const T* source = planes.plane(item) + (inside ? r : 0) * planes.width;
    double* out = sums + t * stride;
    double running = 0;
    for (int64_t b = 0; b < stride; ++b) {
      const int64_t c = b - pad - 1;
      if (inside && c >= 0 && c < planes.width) running += double(source[c]);
      out[b] = running;
    }
  }
}

__global__ void integral_columns_kernel(int64_t items, int64_t rows, int64_t stride, double* sums) {
  MF_GRID_STRIDE(t, items * stride) {
    double* column = sums + (t / stride) * rows * stride + t % stride;
    for (int64_t a = 1; a < rows; ++a) column[a * stride] = column[(a - 1) * stride] + column[a * stride];
  }
}

// Where the integral images of a batch of planes are: one per item, `rows` x `stride` each.
struct IntegralTable {
  const double* sums;
  int64_t pad, rows, stride;
  MF_HD IntegralView view(int64_t item) const { return {sums + item * rows * stride, pad, stride}; }
};

struct IntegralImages {
  c10::DataPtr memory;
  IntegralTable table;
};

template <typename T>
IntegralImages integral_images(const Planes<T>& planes, int64_t items, int64_t pad) {
  const int64_t rows = IntegralView::rows_for(planes.height, pad), stride = IntegralView::stride_for(planes.width, pad);
  c10::DataPtr memory = device_buffer(items * rows * stride * sizeof(double));
  auto* sums = static_cast<double*>(memory.get());
  MF_LAUNCH(integral_rows_kernel, blocks_for(items * rows), kThreads, 0, current_stream())(planes, items, pad, sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  MF_LAUNCH(integral_columns_kernel, blocks_for(items * stride), kThreads, 0, current_stream())(items, rows, stride,
                                                                                                 sums);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {std::move(memory), {sums, pad, rows, stride}};
}

template <typename T>
struct HaarMap {
  IntegralTable x, y;            // luma per image
  Planes<T> chroma_x, chroma_y;  // I, Q per image (colour only)
  bool colour;
  HaarParams params;
  MF_HD void operator()(int64_t k, int64_t p, double (&acc)[2]) const {
    const int64_t i = p / chroma_x.width, j = p % chroma_x.width;
    const IntegralBox<T> bx{x.view(k)}, by{y.view(k)};
    T sim_h, sim_v, weight_h, weight_v, weighted, weights;
    haarpsi_terms<T>(bx, by, params, i, j, sim_h, sim_v, weight_h, weight_v);
    const T chroma_sim = colour ? haarpsi_chroma_similarity<T>(view(chroma_x, 2 * k), view(chroma_x, 2 * k + 1),
                                                               view(chroma_y, 2 * k), view(chroma_y, 2 * k + 1),
                                                               params.c, i, j)
                                : T(0);
    haarpsi_weigh(sim_h, sim_v, weight_h, weight_v, colour, chroma_sim, T(params.alpha), weighted, weights);
    acc[0] += double(weighted);
    acc[1] += double(weights);
  }
};

template <typename T>
struct WriteSums {
  T* out;
  MF_HD void operator()(int64_t item, const double (&sums)[2]) const {
    out[2 * item] = T(sums[0]), out[2 * item + 1] = T(sums[1]);
  }
};

template <typename T>
void squared_error_cuda(const Pair<T>& pair, double scale, bool greyscale, T* out) {
  const bool mix = greyscale && pair.channels == 3;
  const int64_t count = (mix ? 1 : pair.channels) * pair.height * pair.width;
  reduce<1>(pair.n, count, SquaredErrorMap<T>{pair, T(scale), mix}, WriteMeans<T, 1>{out, double(count)});
}

template <typename T>
void ssim_cuda(const Pair<T>& pair, const T* window, int size, double scale, int pool, double c1, double c2, T* ssim,
               T* cs) {
  const int64_t h = pair.height / pool, w = pair.width / pool;
  LoadSpec<T> spec{{Mix<T>::grey()}, static_cast<int>(pair.channels), true, Pooling{pool, 0}, T(scale)};
  PlaneBuffers<T> planes = load(pair, spec, h, w);
  const int64_t out_h = h - size + 1, out_w = w - size + 1;
  reduce<2>(pair.n * pair.channels, out_h * out_w, SsimMap<T>{planes.x, planes.y, window, size, out_w, T(c1), T(c2)},
            SsimWrite<T>{ssim, cs, double(out_h * out_w)});
}

template <typename T>
void gmsd_cuda(const Pair<T>& pair, double scale, bool pool_first, int num_scales, double t, double alpha, T* out) {
  const int64_t H = pair.height, W = pair.width;
  const int64_t h = pool_first ? halved(H, H, W) : H, w = pool_first ? halved(W, H, W) : W;
  LoadSpec<T> spec{{Mix<T>::luma(pair.channels)}, 1, false, Pooling{pool_first ? 2 : 1, 0}, T(scale)};
  PlaneBuffers<T> level = load(pair, spec, h, w);
  for (int s = 0; s < num_scales; ++s) {
    if (s > 0) {
      const Planes<T>& in = level.x;
      PlaneBuffers<T> next(pair.n, halved(in.height, in.height, in.width), halved(in.width, in.height, in.width));
      const auto halve = [&](const Planes<T>& from, const Planes<T>& to) {
        MF_LAUNCH(halve_kernel, blocks_for(pair.n * to.size()), kThreads, 0, current_stream())(from, to, pair.n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      halve(level.x, next.x);
      halve(level.y, next.y);
      level = std::move(next);
    }
    reduce<2>(pair.n, level.x.size(), GmsMap<T>{level.x, level.y, T(t), T(alpha)},
              GmsWrite<T>{out, num_scales, s, double(level.x.size())});
  }
}

template <typename T>
void mdsi_cuda(const Pair<T>& pair, double scale, int pool, const MdsiParams& params, double rho, T* out) {
  const int64_t h = (pair.height + pool - 1) / pool, w = (pair.width + pool - 1) / pool;
  LoadSpec<T> spec{{Mix<T>::of(kLhm[0], pair.channels), Mix<T>::of(kLhm[1], pair.channels),
                    Mix<T>::of(kLhm[2], pair.channels)},
                   3, false, Pooling{pool, (pool - 1) / 2}, T(scale)};
  PlaneBuffers<T> planes = load(pair, spec, h, w);
  c10::DataPtr map = device_buffer(pair.n * h * w * 2 * sizeof(T));
  c10::DataPtr means = device_buffer(pair.n * 2 * sizeof(T));
  T* map_data = static_cast<T*>(map.get());
  T* mean_data = static_cast<T*>(means.get());
  reduce<2>(pair.n, h * w, MdsiMap<T>{planes.x, planes.y, MdsiTerms<T>::of(params), map_data}, MdsiMean<T>{mean_data, double(h * w)});
  reduce<1>(pair.n, h * w, MdsiDeviation<T>{map_data, mean_data, h * w, T(rho)}, WriteMeans<T, 1>{out, double(h * w)});
}

template <typename T>
void haarpsi_cuda(const Pair<T>& pair, double scale, bool subsample, const HaarParams& params, T* out) {
  const int64_t H = pair.height, W = pair.width;
  const int64_t h = subsample ? halved(H, H, W) : H, w = subsample ? halved(W, H, W) : W;
  const Pooling pooling{subsample ? 2 : 1, 0};
  PlaneBuffers<T> luma_planes = load(pair, LoadSpec<T>{{Mix<T>::luma(pair.channels)}, 1, false, pooling, T(scale)}, h, w);
  const bool colour = pair.channels == 3;
  PlaneBuffers<T> chroma = colour ? load(pair, LoadSpec<T>{{Mix<T>::of(kYiq[1], 3), Mix<T>::of(kYiq[2], 3)}, 2, false,
                                                           pooling, T(scale)}, h, w)
                                  : PlaneBuffers<T>(0, h, w);
  const int64_t pad = int64_t(1) << (params.scales - 1);
  const IntegralImages sums_x = integral_images(luma_planes.x, pair.n, pad);
  const IntegralImages sums_y = integral_images(luma_planes.y, pair.n, pad);
  reduce<2>(pair.n, h * w,
            HaarMap<T>{sums_x.table, sums_y.table, chroma.x, chroma.y, colour, params},
            WriteSums<T>{out});
}

template <typename T>
constexpr Drivers<T> kDrivers{squared_error_cuda<T>, ssim_cuda<T>, gmsd_cuda<T>, mdsi_cuda<T>, haarpsi_cuda<T>};

}  // namespace

extern const Backend MF_GPU_BACKEND{kDrivers<float>, kDrivers<double>};

}  // namespace medgan_fast::metrics
