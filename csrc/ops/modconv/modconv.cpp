// modconv_epilogue and modconv_epilogue_backward: checks, outputs, and the CPU and CUDA
// registrations. Kernels in modconv_cpu.cpp / modconv_cuda.cu; the math in modconv.h. The
// whole modulated convolution (ATen's convolution between our epilogue passes) is
// modconv_layer.cpp.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>

#include "common/device_guard.h"
#include "common/output/output.h"
#include "ops/modconv/modconv.h"

namespace medgan_fast::modconv {
namespace {

// y is (N, C, H, W); dcoefs (N, C), noise (1 or N, 1, H, W), bias (C), each optional.
void check_inputs(const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
                  const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(y.dim() == 4, "y must be a 4-D (N, C, H, W) tensor, got shape ", y.sizes());
  const auto dtype = y.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf || dtype == at::kBFloat16,
              "y must be float32, float64, float16 or bfloat16, got ", dtype);
  const auto same = [&](const char* name, const at::Tensor& t) {
    TORCH_CHECK(t.scalar_type() == dtype && t.device() == y.device(), name, " must be ", dtype, " on ", y.device(),
                " like y, got ", t.scalar_type(), " on ", t.device());
  };
  if (dcoefs.has_value()) {
    same("dcoefs", *dcoefs);
    TORCH_CHECK(dcoefs->dim() == 2 && dcoefs->size(0) == y.size(0) && dcoefs->size(1) == y.size(1),
                "dcoefs must be (N, C) = (", y.size(0), ", ", y.size(1), "), got shape ", dcoefs->sizes());
  }
  if (noise.has_value()) {
    same("noise", *noise);
    TORCH_CHECK(noise->dim() == 4 && (noise->size(0) == 1 || noise->size(0) == y.size(0)) && noise->size(1) == 1 &&
                    noise->size(2) == y.size(2) && noise->size(3) == y.size(3),
                "noise must be (1 or N, 1, H, W) with N, H, W = ", y.size(0), ", ", y.size(2), ", ", y.size(3),
                ", got shape ", noise->sizes());
  }
  if (bias.has_value()) {
    same("bias", *bias);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == y.size(1), "bias must be (C) = (", y.size(1), "), got shape ",
                bias->sizes());
  }
}

Epilogue epilogue(int64_t activation, double alpha, double gain, double clamp) {
  TORCH_CHECK(activation == kLinear || activation == kLrelu, "activation must be 0 (linear) or 1 (lrelu), got ",
              activation);
  TORCH_CHECK(gain > 0, "gain must be > 0, got ", gain);
  return {gain, activation == kLrelu ? alpha * gain : gain,
          clamp > 0 ? clamp : std::numeric_limits<double>::infinity()};
}

// The contiguous tensors of one call (copies where the caller's were not).
struct Contiguous {
  at::Tensor y, dcoefs, noise, bias;
};

Contiguous contiguous(const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
                      const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias) {
  return {y.contiguous(), dcoefs ? dcoefs->contiguous() : at::Tensor(), noise ? noise->contiguous() : at::Tensor(),
          bias ? bias->contiguous() : at::Tensor()};
}

template <typename T>
const T* pointer(const at::Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.data_ptr()) : nullptr;
}

template <typename T>
Planes<T> planes_of(const Contiguous& c) {
  return {c.y.size(0),
          c.y.size(1),
          c.y.size(2) * c.y.size(3),
          pointer<T>(c.y),
          pointer<T>(c.dcoefs),
          pointer<T>(c.noise),
          c.noise.defined() ? c.noise.size(0) : 0,
          pointer<T>(c.bias)};
}

// Calls f with a tag of y's storage type (c10::Half, c10::BFloat16, float or double).
template <typename F>
void by_dtype(const at::Tensor& y, F&& f) {
  switch (y.scalar_type()) {
    case at::kFloat: f(float{}); break;
    case at::kDouble: f(double{}); break;
    case at::kHalf: f(c10::Half{}); break;
    default: f(c10::BFloat16{}); break;
  }
}

template <typename T>
const Drivers<T>& drivers(const Backend& backend) {
  if constexpr (std::is_same_v<T, float>) return backend.f32;
  else if constexpr (std::is_same_v<T, double>) return backend.f64;
  else if constexpr (std::is_same_v<T, c10::Half>) return backend.f16;
  else return backend.bf16;
}

at::Tensor forward(const at::Tensor& y, const std::optional<at::Tensor>& dcoefs, const std::optional<at::Tensor>& noise,
                   const std::optional<at::Tensor>& bias, int64_t activation, double alpha, double gain, double clamp,
                   const Backend& backend) {
  check_inputs(y, dcoefs, noise, bias);
  const Epilogue e = epilogue(activation, alpha, gain, clamp);
  const Contiguous c = contiguous(y, dcoefs, noise, bias);
  at::Tensor out = empty_output(y.sizes(), y.options().memory_format(at::MemoryFormat::Contiguous));
  by_dtype(y, [&](auto tag) {
    using T = decltype(tag);
    drivers<T>(backend).forward(planes_of<T>(c), e, static_cast<T*>(out.data_ptr()));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& out,
                                                        const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
                                                        int64_t noise_batch, int64_t activation, double alpha,
                                                        double gain, double clamp, const Backend& backend) {
  check_inputs(y, dcoefs, std::nullopt, std::nullopt);
  TORCH_CHECK(grad.sizes() == y.sizes() && out.sizes() == y.sizes(), "grad and out must have y's shape ", y.sizes(),
              ", got ", grad.sizes(), " and ", out.sizes());
  TORCH_CHECK(grad.scalar_type() == y.scalar_type() && out.scalar_type() == y.scalar_type() &&
                  grad.device() == y.device() && out.device() == y.device(),
              "grad and out must be ", y.scalar_type(), " on ", y.device(), " like y");
  TORCH_CHECK(noise_batch == 0 || noise_batch == 1 || noise_batch == y.size(0),
              "noise_batch must be 0 (no noise), 1 or N = ", y.size(0), ", got ", noise_batch);
  const Epilogue e = epilogue(activation, alpha, gain, clamp);
  const Contiguous c = contiguous(y, dcoefs, std::nullopt, std::nullopt);
  const at::Tensor g = grad.contiguous(), o = out.contiguous();
  const auto options = y.options().memory_format(at::MemoryFormat::Contiguous);
  at::Tensor grad_y = empty_output(y.sizes(), options);
  at::Tensor sums = at::empty({2, y.size(0), y.size(1)}, options);
  at::Tensor grad_noise = at::empty({noise_batch, 1, y.size(2), y.size(3)}, options);
  by_dtype(y, [&](auto tag) {
    using T = decltype(tag);
    Backward<T> b{planes_of<T>(c), pointer<T>(g), pointer<T>(o), static_cast<T*>(grad_y.data_ptr()),
                  static_cast<T*>(sums.data_ptr()), noise_batch > 0 ? static_cast<T*>(grad_noise.data_ptr()) : nullptr};
    b.in.noise_batch = noise_batch;
    drivers<T>(backend).backward(b, e);
  });
  return {grad_y, sums, grad_noise};
}

template <typename Place>
struct Ops {
  static at::Tensor epilogue_(const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
                              const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& bias,
                              int64_t activation, double alpha, double gain, double clamp) {
    const typename Place::Guard guard(y.device());
    return forward(y, dcoefs, noise, bias, activation, alpha, gain, clamp, Place::backend());
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> epilogue_backward_(
      const at::Tensor& grad, const at::Tensor& out, const at::Tensor& y, const std::optional<at::Tensor>& dcoefs,
      int64_t noise_batch, int64_t activation, double alpha, double gain, double clamp) {
    const typename Place::Guard guard(y.device());
    return backward(grad, out, y, dcoefs, noise_batch, activation, alpha, gain, clamp, Place::backend());
  }
  static void register_all(torch::Library& m) {
    m.impl("modconv_epilogue", &epilogue_);
    m.impl("modconv_epilogue_backward", &epilogue_backward_);
  }
};

template <typename T>
constexpr Drivers<T> kCpuDrivers{forward_cpu<T>, backward_cpu<T>};
constexpr Backend kCpu{kCpuDrivers<float>, kCpuDrivers<double>, kCpuDrivers<c10::Half>, kCpuDrivers<c10::BFloat16>};

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CPU, m) { Ops<OnCpu<Backend, kCpu, MF_EMULATED_BACKEND(emulated_backend)>>::register_all(m); }

#ifdef MEDGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(medgan_fast, CUDA, m) { Ops<OnCuda<Backend, cuda_backend>>::register_all(m); }
#endif

}  // namespace medgan_fast::modconv
