// metric_*: checks, outputs, and the CPU and CUDA registrations. Kernels in
// metrics_cpu.cpp / metrics_cuda.cu; the math in metrics.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>

#include "common/device_guard.h"
#include "ops/metrics/metrics.h"

namespace medgan_fast::metrics {
namespace {

void check_pair(const at::Tensor& x, const at::Tensor& y, bool colour_or_grey = true) {
  TORCH_CHECK(x.dim() == 4, "x must be a 4-D (N, C, H, W) tensor, got shape ", x.sizes());
  TORCH_CHECK(x.sizes() == y.sizes(), "x and y must have the same shape, got ", x.sizes(), " and ", y.sizes());
  TORCH_CHECK(x.scalar_type() == y.scalar_type() && x.device() == y.device(),
              "x and y must share dtype and device, got ", x.scalar_type(), " on ", x.device(), " and ",
              y.scalar_type(), " on ", y.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "x must be float32 or float64, got ",
              x.scalar_type());
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous(), "x and y must be contiguous");
  TORCH_CHECK(x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0, "x must not be empty, got shape ", x.sizes());
  if (colour_or_grey) {
    TORCH_CHECK(x.size(1) == 1 || x.size(1) == 3, "x must have 1 or 3 channels, got ", x.size(1));
  }
}

template <typename T>
Pair<T> pair_of(const at::Tensor& x, const at::Tensor& y) {
  return {x.data_ptr<T>(), y.data_ptr<T>(), x.size(0), x.size(1), x.size(2), x.size(3)};
}

// Calls driver<float> or driver<double> by dtype: F is a generic lambda taking a T tag.
template <typename F>
void by_dtype(const at::Tensor& x, F&& f) {
  if (x.scalar_type() == at::kFloat) {
    f(float{});
  } else {
    f(double{});
  }
}

template <typename T>
constexpr Drivers<T> kCpuDrivers{squared_error_cpu<T>, ssim_cpu<T>, gmsd_cpu<T>, mdsi_cpu<T>, haarpsi_cpu<T>};
constexpr Backend kCpu{kCpuDrivers<float>, kCpuDrivers<double>};

template <typename Place>
struct Ops {

  static at::Tensor squared_error(const at::Tensor& x, const at::Tensor& y, double scale, bool greyscale) {
    const typename Place::Guard guard(x.device());
    check_pair(x, y, false);
    at::Tensor out = at::empty({x.size(0)}, x.options());
    by_dtype(x, [&](auto tag) {
      using T = decltype(tag);
      Place::backend().template of<T>().squared_error(pair_of<T>(x, y), scale, greyscale, out.data_ptr<T>());
    });
    return out;
  }

  static std::tuple<at::Tensor, at::Tensor> ssim(const at::Tensor& x, const at::Tensor& y, const at::Tensor& window,
                                                 double scale, int64_t pool, double c1, double c2) {
    const typename Place::Guard guard(x.device());
    check_pair(x, y, false);
    TORCH_CHECK(pool >= 1, "pool must be >= 1, got ", pool);
    TORCH_CHECK(window.dim() == 1 && window.size(0) % 2 == 1 && window.is_contiguous() &&
                    window.scalar_type() == x.scalar_type() && window.device() == x.device(),
                "window must be a contiguous 1-D tensor of odd length, dtype and device of x, got ", window.sizes(),
                " ", window.scalar_type(), " on ", window.device());
    const int64_t size = window.size(0);
    TORCH_CHECK(x.size(2) / pool >= size && x.size(3) / pool >= size, "the window (", size,
                ") is larger than the images pooled by ", pool, ": ", x.size(2) / pool, "x", x.size(3) / pool);
    at::Tensor ssim = at::empty({x.size(0), x.size(1)}, x.options()), cs = at::empty_like(ssim);
    by_dtype(x, [&](auto tag) {
      using T = decltype(tag);
      Place::backend().template of<T>().ssim(pair_of<T>(x, y), window.data_ptr<T>(), static_cast<int>(size), scale,
                                           static_cast<int>(pool), c1, c2, ssim.data_ptr<T>(), cs.data_ptr<T>());
    });
    return {ssim, cs};
  }

  static at::Tensor gmsd(const at::Tensor& x, const at::Tensor& y, double scale, bool pool_first, int64_t num_scales,
                         double t, double alpha) {
    const typename Place::Guard guard(x.device());
    check_pair(x, y);
    TORCH_CHECK(num_scales >= 1 && num_scales <= 16, "num_scales must be in [1, 16], got ", num_scales);
    at::Tensor out = at::empty({x.size(0), num_scales}, x.options());
    by_dtype(x, [&](auto tag) {
      using T = decltype(tag);
      Place::backend().template of<T>().gmsd(pair_of<T>(x, y), scale, pool_first, static_cast<int>(num_scales), t,
                                           alpha, out.data_ptr<T>());
    });
    return out;
  }

  static at::Tensor mdsi(const at::Tensor& x, const at::Tensor& y, double scale, int64_t pool, double c1, double c2,
                         double c3, double alpha, double beta, double gamma, double q, double rho, bool mult) {
    const typename Place::Guard guard(x.device());
    check_pair(x, y);
    TORCH_CHECK(pool >= 1, "pool must be >= 1, got ", pool);
    at::Tensor out = at::empty({x.size(0)}, x.options());
    const MdsiParams params{c1, c2, c3, alpha, beta, gamma, q, mult};
    by_dtype(x, [&](auto tag) {
      using T = decltype(tag);
      Place::backend().template of<T>().mdsi(pair_of<T>(x, y), scale, static_cast<int>(pool), params, rho,
                                           out.data_ptr<T>());
    });
    return out;
  }

  static at::Tensor haarpsi(const at::Tensor& x, const at::Tensor& y, double scale, int64_t scales, bool subsample,
                            double c, double alpha) {
    const typename Place::Guard guard(x.device());
    check_pair(x, y);
    TORCH_CHECK(scales >= 3 && scales <= 16, "scales must be in [3, 16], got ", scales);
    at::Tensor out = at::empty({x.size(0), 2}, x.options());
    const HaarParams params{static_cast<int>(scales), c, alpha};
    by_dtype(x, [&](auto tag) {
      using T = decltype(tag);
      Place::backend().template of<T>().haarpsi(pair_of<T>(x, y), scale, subsample, params, out.data_ptr<T>());
    });
    return out;
  }

  static void register_all(torch::Library& m) {
    m.impl("metric_squared_error", &squared_error);
    m.impl("metric_ssim", &ssim);
    m.impl("metric_gmsd", &gmsd);
    m.impl("metric_mdsi", &mdsi);
    m.impl("metric_haarpsi", &haarpsi);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CPU, m) {
  Ops<OnCpu<Backend, kCpu, MF_EMULATED_BACKEND(emulated_backend)>>::register_all(m);
}

#ifdef MEDGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(medgan_fast, CUDA, m) { Ops<OnCuda<Backend, cuda_backend>>::register_all(m); }
#endif

}  // namespace medgan_fast::metrics
