// spectral_norm_power_iteration_ and spectral_norm_weight_grad_: checks, layer tables and
// scratch, and the CPU and CUDA registrations. Kernels in spectral_norm_cpu.cpp / spectral_norm_cuda.cu.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <optional>
#include <string>
#include <vector>

#include "common/device_guard.h"
#include "ops/spectral_norm/spectral_norm.h"

namespace medgan_fast::spectral_norm {
namespace {

// The weight as (P, h, Q) blocks (spectral_norm.h), its rows along dim (non-negative).
struct Blocks {
  int64_t P = 1, h = 1, Q = 1;
};

Blocks weight_blocks(at::IntArrayRef sizes, int64_t dim) {
  Blocks b;
  b.h = sizes[dim];
  for (int64_t d = 0; d < dim; ++d) b.P *= sizes[d];
  for (int64_t d = dim + 1; d < static_cast<int64_t>(sizes.size()); ++d) b.Q *= sizes[d];
  return b;
}

template <typename T>
at::Tensor run(at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims, int64_t n,
               double eps, void (*driver)(Layer<T>*, int, int64_t, double, T*)) {
  const int count = static_cast<int>(weights.size());
  std::vector<at::Tensor> contiguous;  // keeps copies of non-contiguous weights alive
  std::vector<Layer<T>> layers(count);
  int64_t rows = 0, columns = 0;
  for (int k = 0; k < count; ++k) {
    contiguous.push_back(weights[k].contiguous());
    const int64_t dim = dims[k] < 0 ? dims[k] + weights[k].dim() : dims[k];
    const Blocks blocks = weight_blocks(weights[k].sizes(), dim);
    Layer<T>& L = layers[k];
    L.P = blocks.P, L.h = blocks.h, L.Q = blocks.Q;
    L.weight = contiguous.back().data_ptr<T>();
    L.u = us[k].data_ptr<T>();
    L.v = vs[k].data_ptr<T>();
    L.row_offset = rows, L.column_offset = columns;
    rows += L.h, columns += L.width();
  }
  const auto options = weights[0].options();
  const at::Tensor scratch = at::empty({rows + columns}, options);
  for (Layer<T>& L : layers) {
    L.t = scratch.data_ptr<T>() + L.row_offset;
    L.s = scratch.data_ptr<T>() + rows + L.column_offset;
  }
  at::Tensor sigmas = at::empty({count}, options);
  driver(layers.data(), count, n, eps, sigmas.data_ptr<T>());
  return sigmas;
}

void check_vector(const std::string& name, const at::Tensor& x, int64_t size, const at::Tensor& like) {
  TORCH_CHECK(x.dim() == 1 && x.size(0) == size && x.is_contiguous(), name, " must be a contiguous vector of ", size,
              " elements, got shape ", x.sizes());
  TORCH_CHECK(x.scalar_type() == like.scalar_type() && x.device() == like.device(), name, " must be ",
              like.scalar_type(), " on ", like.device(), ", got ", x.scalar_type(), " on ", x.device());
}

void check_like(const char* name, const at::Tensor& x, const at::Tensor& like) {
  TORCH_CHECK(x.is_contiguous() && x.scalar_type() == like.scalar_type() && x.device() == like.device(), name,
              " must be a contiguous ", like.scalar_type(), " tensor on ", like.device(), ", got ", x.scalar_type(),
              " on ", x.device(), x.is_contiguous() ? "" : " (not contiguous)");
}

at::Tensor power_iteration(at::TensorList weights, at::TensorList us, at::TensorList vs, at::IntArrayRef dims,
                           int64_t n_power_iterations, double eps, const Backend& backend) {
  const size_t count = weights.size();
  TORCH_CHECK(count > 0, "weights must not be empty");
  TORCH_CHECK(us.size() == count && vs.size() == count && dims.size() == count,
              "weights, us, vs and dims must have the same length, got ", count, ", ", us.size(), ", ", vs.size(),
              ", ", dims.size());
  TORCH_CHECK(n_power_iterations >= 0, "n_power_iterations must be >= 0, got ", n_power_iterations);
  TORCH_CHECK(eps > 0, "eps must be > 0, got ", eps);
  const auto dtype = weights[0].scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "weights must be float32 or float64, got ", dtype);
  for (size_t k = 0; k < count; ++k) {
    const at::Tensor& w = weights[k];
    TORCH_CHECK(w.dim() >= 2, "weights[", k, "] must have at least 2 dimensions, got shape ", w.sizes());
    TORCH_CHECK(w.scalar_type() == dtype && w.device() == weights[0].device(),
                "all weights must share dtype and device, got weights[", k, "] ", w.scalar_type(), " on ",
                w.device());
    TORCH_CHECK(dims[k] >= -w.dim() && dims[k] < w.dim(), "dims[", k, "] = ", dims[k], " is out of range for ",
                w.dim(), "-D weights[", k, "]");
    const int64_t dim = dims[k] < 0 ? dims[k] + w.dim() : dims[k];
    const int64_t h = w.size(dim), width = h == 0 ? 0 : w.numel() / h;
    check_vector("us[" + std::to_string(k) + "]", us[k], h, w);
    check_vector("vs[" + std::to_string(k) + "]", vs[k], width, w);
    TORCH_CHECK(w.numel() > 0, "weights[", k, "] is empty");
  }
  return dtype == at::kFloat ? run<float>(weights, us, vs, dims, n_power_iterations, eps, backend.f32)
                             : run<double>(weights, us, vs, dims, n_power_iterations, eps, backend.f64);
}

template <typename T>
WeightGrad<T> weight_grad_arguments(const at::Tensor& grad_weight, const at::Tensor& sigma, const at::Tensor& u,
                                    const at::Tensor& v, int64_t dim, const at::Tensor& kept, const at::Tensor& a,
                                    bool weight_scaled) {
  WeightGrad<T> g{};
  g.grad = grad_weight.data_ptr<T>();
  g.kept = kept.data_ptr<T>();
  g.a = a.data_ptr<T>();
  g.n_kept = kept.numel();
  g.sigma = sigma.data_ptr<T>();
  g.u = u.data_ptr<T>();
  g.v = v.data_ptr<T>();
  const Blocks blocks = weight_blocks(grad_weight.sizes(), dim);
  g.P = blocks.P, g.h = blocks.h, g.Q = blocks.Q;
  g.weight_scaled = weight_scaled;
  return g;
}

void weight_grad(const at::Tensor& grad_weight, const at::Tensor& sigma, const at::Tensor& u, const at::Tensor& v,
                 int64_t dim, const at::Tensor& kept, const std::optional<at::Tensor>& scaled_grad,
                 const Backend& backend) {
  const auto dtype = grad_weight.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "grad_weight must be float32 or float64, got ", dtype);
  TORCH_CHECK(grad_weight.dim() >= 2 && grad_weight.numel() > 0 && grad_weight.is_contiguous(),
              "grad_weight must be a non-empty contiguous tensor of at least 2 dimensions, got shape ",
              grad_weight.sizes(), grad_weight.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(dim >= -grad_weight.dim() && dim < grad_weight.dim(), "dim = ", dim, " is out of range for ",
              grad_weight.dim(), "-D grad_weight");
  dim = dim < 0 ? dim + grad_weight.dim() : dim;
  const int64_t h = grad_weight.size(dim);
  TORCH_CHECK(sigma.numel() == 1, "sigma must hold one value, got shape ", sigma.sizes());
  check_like("sigma", sigma, grad_weight);
  check_vector("u", u, h, grad_weight);
  check_vector("v", v, grad_weight.numel() / h, grad_weight);
  check_like("kept", kept, grad_weight);
  const at::Tensor& a = scaled_grad.has_value() ? *scaled_grad : grad_weight;
  if (scaled_grad.has_value()) check_like("scaled_grad", a, grad_weight);
  TORCH_CHECK(a.numel() == kept.numel(), "kept must have as many elements as ",
              scaled_grad.has_value() ? "scaled_grad" : "grad_weight", " (", a.numel(), "), got ", kept.numel());
  if (dtype == at::kFloat) {
    backend.weight_grad_f32(weight_grad_arguments<float>(grad_weight, sigma, u, v, dim, kept, a, !scaled_grad));
  } else {
    backend.weight_grad_f64(weight_grad_arguments<double>(grad_weight, sigma, u, v, dim, kept, a, !scaled_grad));
  }
}

template <typename Place>
struct Ops {
  static at::Tensor power_iteration_(at::TensorList weights, at::TensorList us, at::TensorList vs,
                                     at::IntArrayRef dims, int64_t n, double eps) {
    const typename Place::Guard guard(weights.empty() ? at::Device(at::kCPU) : weights[0].device());
    return power_iteration(weights, us, vs, dims, n, eps, Place::backend());
  }
  static void weight_grad_(const at::Tensor& grad_weight, const at::Tensor& sigma, const at::Tensor& u,
                           const at::Tensor& v, int64_t dim, const at::Tensor& kept,
                           const std::optional<at::Tensor>& scaled_grad) {
    const typename Place::Guard guard(grad_weight.device());
    weight_grad(grad_weight, sigma, u, v, dim, kept, scaled_grad, Place::backend());
  }
  static void register_all(torch::Library& m) {
    m.impl("spectral_norm_power_iteration_", &power_iteration_);
    m.impl("spectral_norm_weight_grad_", &weight_grad_);
  }
};

constexpr Backend kCpu{power_iteration_cpu_f32, power_iteration_cpu_f64, weight_grad_cpu_f32, weight_grad_cpu_f64};

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CPU, m) {
  Ops<OnCpu<Backend, kCpu, MF_EMULATED_BACKEND(emulated_backend)>>::register_all(m);
}

#ifdef MEDGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(medgan_fast, CUDA, m) { Ops<OnCuda<Backend, cuda_backend>>::register_all(m); }
#endif

}  // namespace medgan_fast::spectral_norm
