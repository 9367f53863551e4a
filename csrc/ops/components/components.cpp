// label, label_batch, component_stats, crop_windows, component_masks: checks, outputs and
// the CPU and CUDA registrations. Kernels in components_cpu.cpp / components_cuda.cu.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <limits>
#include <tuple>

#include "common/device_guard.h"
#include "common/output/output.h"
#include "ops/components/components.h"

namespace medgan_fast::components {
namespace {

std::tuple<at::Tensor, at::Tensor> label_volume(const at::Tensor& mask, int64_t connectivity, bool batch,
                                                const Backend& backend) {
  const char* name = batch ? "masks" : "mask";
  TORCH_CHECK(mask.scalar_type() == at::kBool, name, " must be a bool tensor, got ", mask.scalar_type());
  if (batch) {
    TORCH_CHECK(mask.dim() == 3, "masks must be (N, H, W), got shape ", mask.sizes());
  } else {
    TORCH_CHECK(mask.dim() == 2 || mask.dim() == 3, "mask must be (H, W) or (D, H, W), got shape ", mask.sizes());
  }
  const int ndim = batch ? 2 : static_cast<int>(mask.dim());
  TORCH_CHECK(connectivity >= 1 && connectivity <= ndim, "connectivity must be in [1, ", ndim, "], got ",
              connectivity);
  // Union-find indices are int32.
  TORCH_CHECK(mask.numel() < std::numeric_limits<int32_t>::max(), name, " has too many elements (", mask.numel(),
              ") for int32 labels");

  const at::Tensor m = mask.contiguous();
  at::Tensor labels = empty_output(m.sizes(), m.options().dtype(at::kInt));
  const Volume volume{m.dim() == 3 ? m.size(0) : 1, m.size(-2), m.size(-1), batch};
  at::Tensor counts = at::zeros({batch ? volume.depth : 1}, m.options().dtype(at::kLong));
  if (m.numel() > 0) {
    backend.label(reinterpret_cast<const uint8_t*>(m.data_ptr<bool>()), labels.data_ptr<int32_t>(),
                  counts.data_ptr<int64_t>(), volume, static_cast<int>(connectivity));
  }
  return {labels, batch ? counts : counts.squeeze(0)};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> component_stats(const at::Tensor& labels, int64_t count,
                                                               const Backend& backend) {
  TORCH_CHECK(labels.scalar_type() == at::kInt, "labels must be int32, got ", labels.scalar_type());
  TORCH_CHECK(labels.dim() == 2 || labels.dim() == 3, "labels must be (H, W) or (D, H, W), got shape ",
              labels.sizes());
  TORCH_CHECK(count >= 0, "count must be >= 0, got ", count);
  const int ndim = static_cast<int>(labels.dim());
  const at::Tensor l = labels.contiguous();
  const auto options = l.options().dtype(at::kLong);
  at::Tensor area = at::empty({count}, options);
  at::Tensor bbox = at::empty({count, 2 * ndim}, options);
  at::Tensor centroid = at::empty({count, ndim}, options.dtype(at::kDouble));
  if (count > 0) {
    const std::vector<int64_t> sizes(l.sizes().begin(), l.sizes().end());
    backend.stats(l.data_ptr<int32_t>(), sizes.data(), ndim, count, area.data_ptr<int64_t>(),
                  bbox.data_ptr<int64_t>(), centroid.data_ptr<double>());
  }
  return {area, bbox, centroid};
}

void check_corners(const at::Tensor& corners, const at::Tensor& source, int64_t size) {
  TORCH_CHECK(corners.scalar_type() == at::kLong && corners.dim() == 2 && corners.size(1) == 2,
              "corners must be int64 (K, 2), got ", corners.scalar_type(), " ", corners.sizes());
  TORCH_CHECK(corners.device() == source.device(), "corners must be on ", source.device(), ", got ",
              corners.device());
  TORCH_CHECK(size >= 1, "size must be >= 1, got ", size);
}

at::Tensor crop_windows(const at::Tensor& source, const at::Tensor& corners, int64_t size, const Backend& backend) {
  TORCH_CHECK(source.dim() == 3, "source must be (C, H, W), got shape ", source.sizes());
  check_corners(corners, source, size);
  const at::Tensor s = source.contiguous(), c = corners.contiguous();
  at::Tensor out = empty_output({c.size(0), s.size(0), size, size}, s.options());
  if (out.numel() > 0) {
    backend.crop(s.data_ptr(), out.data_ptr(), s.element_size(), s.size(0), s.size(1), s.size(2),
                 c.data_ptr<int64_t>(), c.size(0), size);
  }
  return out;
}

at::Tensor component_masks(const at::Tensor& labels, const at::Tensor& corners, const at::Tensor& ids, int64_t size,
                           const Backend& backend) {
  TORCH_CHECK(labels.scalar_type() == at::kInt && labels.dim() == 2, "labels must be int32 (H, W), got ",
              labels.scalar_type(), " ", labels.sizes());
  check_corners(corners, labels, size);
  TORCH_CHECK(ids.scalar_type() == at::kInt && ids.dim() == 1 && ids.size(0) == corners.size(0),
              "ids must be int32 (K,) with K = corners.size(0), got ", ids.scalar_type(), " ", ids.sizes());
  TORCH_CHECK(ids.device() == labels.device(), "ids must be on ", labels.device(), ", got ", ids.device());
  const at::Tensor l = labels.contiguous(), c = corners.contiguous(), i = ids.contiguous();
  at::Tensor out = empty_output({c.size(0), size, size}, l.options().dtype(at::kBool));
  if (out.numel() > 0) {
    backend.masks(l.data_ptr<int32_t>(), reinterpret_cast<uint8_t*>(out.data_ptr<bool>()), l.size(0), l.size(1),
                  c.data_ptr<int64_t>(), i.data_ptr<int32_t>(), c.size(0), size);
  }
  return out;
}

// The schema's functions for one backend; the CUDA ones also set the current device.
template <typename Place>
struct Ops {
  static std::tuple<at::Tensor, at::Tensor> label(const at::Tensor& mask, int64_t connectivity) {
    const typename Place::Guard guard(mask.device());
    return label_volume(mask, connectivity, false, Place::backend());
  }
  static std::tuple<at::Tensor, at::Tensor> label_batch(const at::Tensor& masks, int64_t connectivity) {
    const typename Place::Guard guard(masks.device());
    return label_volume(masks, connectivity, true, Place::backend());
  }
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> stats(const at::Tensor& labels, int64_t count) {
    const typename Place::Guard guard(labels.device());
    return component_stats(labels, count, Place::backend());
  }
  static at::Tensor crop(const at::Tensor& source, const at::Tensor& corners, int64_t size) {
    const typename Place::Guard guard(source.device());
    return crop_windows(source, corners, size, Place::backend());
  }
  static at::Tensor masks(const at::Tensor& labels, const at::Tensor& corners, const at::Tensor& ids, int64_t size) {
    const typename Place::Guard guard(labels.device());
    return component_masks(labels, corners, ids, size, Place::backend());
  }
  static void register_all(torch::Library& m) {
    m.impl("label", &label);
    m.impl("label_batch", &label_batch);
    m.impl("component_stats", &stats);
    m.impl("crop_windows", &crop);
    m.impl("component_masks", &masks);
  }
};

constexpr Backend kCpu{label_cpu, component_stats_cpu, crop_windows_cpu, component_masks_cpu};

}  // namespace

TORCH_LIBRARY_IMPL(medgan_fast, CPU, m) {
  Ops<OnCpu<Backend, kCpu, MF_EMULATED_BACKEND(emulated_backend)>>::register_all(m);
}

#ifdef MEDGAN_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(medgan_fast, CUDA, m) { Ops<OnCuda<Backend, cuda_backend>>::register_all(m); }
#endif

}  // namespace medgan_fast::components
