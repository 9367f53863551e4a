// dilate / erode: checks, scratch planes and the CPU and CUDA registrations. The kernels
// are in morphology_cpu.cpp and morphology_cuda.cu; the math they share in morphology.h.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "common/device_guard.h"
#include "common/output/output.h"
#include "ops/morphology/morphology.h"

namespace medgan_fast::morphology {
namespace {

Grey grey_dtype(at::ScalarType type) {
  switch (type) {
    case at::kByte: return Grey::u8;
    case at::kUInt16: return Grey::u16;
    case at::kInt: return Grey::i32;
    case at::kFloat: return Grey::f32;
    case at::kDouble: return Grey::f64;
    default:
      TORCH_CHECK(false, "input must be bool (binary) or uint8, uint16, int32, float32, float64 (grey), got ", type);
  }
}

at::Tensor morphology(const at::Tensor& input, const at::Tensor& footprint, bool dilation, const Backend& backend) {
  TORCH_CHECK(footprint.scalar_type() == at::kBool, "footprint must be a bool tensor, got ", footprint.scalar_type());
  TORCH_CHECK(footprint.dim() == 2 || footprint.dim() == 3, "footprint must be 2-D or 3-D, got shape ",
              footprint.sizes());
  TORCH_CHECK(input.dim() == 2 || input.dim() == 3, "input must be (H, W), (N, H, W) or (D, H, W), got shape ",
              input.sizes());
  TORCH_CHECK(footprint.dim() <= input.dim(), "a 3-D footprint needs a 3-D (D, H, W) input, got input shape ",
              input.sizes());
  const bool binary = input.scalar_type() == at::kBool;
  const Grey dtype = binary ? Grey::u8 : grey_dtype(input.scalar_type());

  const at::Tensor fp = footprint.to(at::kCPU).contiguous();
  const int64_t kd = fp.dim() == 3 ? fp.size(0) : 1;
  const Plan plan = make_plan(fp.data_ptr<bool>(), kd, fp.size(-2), fp.size(-1), dilation);

  TORCH_CHECK(!plan.runs.empty(), "footprint must have at least one true element");

  const at::Tensor x = input.contiguous();
  at::Tensor out = empty_output(x.sizes(), x.options());
  if (x.numel() == 0) return out;
  const Shape shape{x.dim() == 3 ? x.size(0) : 1, x.size(-2), x.size(-1)};
  if (binary) {
    // Erosion with outside = true is NOT(dilation of NOT x with outside = false).
    backend.binary(reinterpret_cast<const uint8_t*>(x.data_ptr<bool>()), reinterpret_cast<uint8_t*>(out.data_ptr<bool>()),
                   shape, plan, /*invert=*/!dilation);
  } else {
    backend.grey(dtype, x.data_ptr(), out.data_ptr(), shape, plan, dilation);
  }
  return out;
}

template <typename Place>
struct Ops {
  static at::Tensor dilate(const at::Tensor& input, const at::Tensor& footprint) {
    const typename Place::Guard guard(input.device());
    return morphology(input, footprint, true, Place::backend());
  }
  static at::Tensor erode(const at::Tensor& input, const at::Tensor& footprint) {
    const typename Place::Guard guard(input.device());
    return morphology(input, footprint, false, Place::backend());
  }
  static void register_all(torch::Library& m) {
    m.impl("dilate", &dilate);
    m.impl("erode", &erode);
  }
};

constexpr Backend kCpu{binary_morphology_cpu, grey_morphology_cpu};

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CPU, m) {
  Ops<OnCpu<Backend, kCpu, MF_EMULATED_BACKEND(emulated_backend)>>::register_all(m);
}

#ifdef MEDGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(medgan_fast, CUDA, m) { Ops<OnCuda<Backend, cuda_backend>>::register_all(m); }
#endif

}  // namespace medgan_fast::morphology
