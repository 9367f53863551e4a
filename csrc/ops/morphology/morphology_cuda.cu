// CUDA drivers of morphology.h: one thread per element (a word of 64 pixels for binary,
// a pixel for grey) in each stage: plane 0, ladder levels, spans, combine-runs. Every
// stage reads rows that neighbouring threads read too, so the caches serve most loads.
#include "common/cuda_utils.cuh"
#include "ops/morphology/morphology.h"

namespace medgan_fast::morphology {
namespace {

// Plane 0 over whole rows, margins included: packed input (binary) or a copy (grey).
__global__ void pack_kernel(const uint8_t* input, Planes<uint64_t> planes, Shape shape, bool invert) {
  const int64_t stride = planes.stride();
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = i / stride, j = i % stride - planes.left;
    const bool inside = j >= 0 && j < planes.n;
    planes.row(0, r)[j] = inside ? pack_word(input + r * shape.width, shape.width, j, invert) : 0;
  }
}

template <typename Lane>
__global__ void copy_kernel(Lane lane, const typename Lane::T* input, Planes<typename Lane::T> planes) {
  const int64_t stride = planes.stride();
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = i / stride, j = i % stride - planes.left;
    planes.row(0, r)[j] = (j >= 0 && j < planes.n) ? input[r * planes.n + j] : lane.identity();
  }
}

// Ladder level `level` over whole rows; the right margin is identity.
template <typename Lane>
__global__ void ladder_kernel(Lane lane, Planes<typename Lane::T> planes, int32_t level) {
  const int64_t stride = planes.stride();
  const Shift by_h = Lane::shift(int64_t{1} << (level - 1));
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = i / stride, j = i % stride - planes.left;
    planes.row(level, r)[j] = j < planes.n ? ladder_element<Lane>(planes.row(level - 1, r), j, by_h) : lane.identity();
  }
}

// Spans in one launch: blockIdx.y = span (of those `spans` points at).
template <typename Lane>
__global__ void span_kernel(Planes<typename Lane::T> planes, const Span* spans) {
  const Span span = spans[blockIdx.y];
  const Shift first = span_first<Lane>(span), last = span_last<Lane>(span);
  MF_GRID_STRIDE(i, planes.rows * planes.n) {
    const int64_t r = i / planes.n, j = i % planes.n;
    planes.row(span.plane, r)[j] = span_element<Lane>(planes.row(span.level, r), j, first, last);
  }
}

template <typename Lane>
__device__ typename Lane::T combine_runs(const Lane& lane, const Planes<typename Lane::T>& planes, const Shape& shape,
                                         const RunRef* runs, int32_t num_runs, int64_t r, int64_t j) {
  typename Lane::T acc = lane.identity();
  for (int32_t k = 0; k < num_runs; ++k) {
    const int64_t source = run_source_row(shape, runs[k], r);
    if (source >= 0) acc = Lane::combine(acc, planes.row(runs[k].plane, source)[j]);
  }
  return acc;
}

__global__ void binary_output_kernel(Planes<uint64_t> planes, Shape shape, const RunRef* runs, int32_t num_runs,
                                     uint8_t* output, bool invert) {
  MF_GRID_STRIDE(i, planes.rows * planes.n) {
    const int64_t r = i / planes.n, j = i % planes.n;
    const uint64_t word = combine_runs(BitLane{}, planes, shape, runs, num_runs, r, j);
    unpack_word(invert ? ~word : word, output + r * shape.width, shape.width, j);
  }
}

template <typename Lane>
__global__ void grey_output_kernel(Lane lane, Planes<typename Lane::T> planes, Shape shape, const RunRef* runs,
                                   int32_t num_runs, typename Lane::T* output) {
  MF_GRID_STRIDE(i, planes.rows * planes.n) {
    output[i] = combine_runs(lane, planes, shape, runs, num_runs, i / planes.n, i % planes.n);
  }
}

template <typename Lane>
void build_planes(const Lane& lane, const Planes<typename Lane::T>& planes, const PlanView& plan,
                  cudaStream_t stream) {
  for (int32_t level = 1; level <= plan.levels; ++level) {
    MF_LAUNCH(ladder_kernel, blocks_for(planes.rows * planes.stride()), kThreads, 0, stream)(lane, planes, level);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  // One launch per 65,535 spans: gridDim.y cannot be larger.
  constexpr int32_t kMaxGridY = 65535;
  for (int32_t first = 0; first < plan.num_spans; first += kMaxGridY) {
    const dim3 grid(blocks_for(planes.rows * planes.n), std::min(kMaxGridY, plan.num_spans - first));
    MF_LAUNCH(span_kernel<Lane>, grid, kThreads, 0, stream)(planes, plan.spans + first);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

// The plan's spans and runs on the device, and the view that points at them.
struct DevicePlan {
  c10::DataPtr spans, runs;
  PlanView view;
  explicit DevicePlan(const Plan& plan)
      : spans(device_copy(plan.spans.data(), plan.spans.size())),
        runs(device_copy(plan.runs.data(), plan.runs.size())),
        view(view_of(plan, static_cast<const Span*>(spans.get()), static_cast<const RunRef*>(runs.get()))) {}
};

template <typename Lane>
void grey_morphology(const Lane& lane, const void* input, void* output, const Shape& shape, const Plan& layout) {
  using T = typename Lane::T;
  const cudaStream_t stream = current_stream();
  const DevicePlan device_plan(layout);
  const PlanView& plan = device_plan.view;
  const c10::DataPtr scratch = device_buffer(planes_elements<Lane>(plan, shape.rows(), shape.width) * sizeof(T));
  const auto planes = make_planes<Lane>(static_cast<T*>(scratch.get()), plan, shape.rows(), shape.width);
  MF_LAUNCH(copy_kernel, blocks_for(planes.rows * planes.stride()), kThreads, 0, stream)(lane, static_cast<const T*>(input),
                                                                                  planes);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  build_planes(lane, planes, plan, stream);
  MF_LAUNCH(grey_output_kernel, blocks_for(planes.rows * planes.n), kThreads, 0, stream)(
      lane, planes, shape, plan.runs, plan.num_runs, static_cast<T*>(output));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void binary_morphology_cuda(const uint8_t* input, uint8_t* output, const Shape& shape, const Plan& layout,
                            bool invert) {
  const cudaStream_t stream = current_stream();
  const DevicePlan device_plan(layout);
  const PlanView& plan = device_plan.view;
  const int64_t n = words_per_row(shape.width);
  const c10::DataPtr scratch = device_buffer(planes_elements<BitLane>(plan, shape.rows(), n) * sizeof(uint64_t));
  const auto planes = make_planes<BitLane>(static_cast<uint64_t*>(scratch.get()), plan, shape.rows(), n);
  MF_LAUNCH(pack_kernel, blocks_for(planes.rows * planes.stride()), kThreads, 0, stream)(input, planes, shape, invert);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  build_planes(BitLane{}, planes, plan, stream);
  MF_LAUNCH(binary_output_kernel, blocks_for(planes.rows * planes.n), kThreads, 0, stream)(planes, shape, plan.runs,
                                                                                      plan.num_runs, output, invert);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void grey_morphology_cuda(Grey dtype, const void* input, void* output, const Shape& shape, const Plan& plan,
                          bool dilation) {
  with_grey_lane(dtype, dilation, [&](auto lane) { grey_morphology(lane, input, output, shape, plan); });
}

}  // namespace

extern const Backend MF_GPU_BACKEND{binary_morphology_cuda, grey_morphology_cuda};

}  // namespace medgan_fast::morphology
