// CUDA drivers of morphology.h: one thread per element (a word of 64 pixels for binary,
// a pixel for grey) in each stage: plane 0, ladder levels, spans, combine-runs, over one
// band of rows at a time (run_bands). Every stage reads rows that neighbouring threads read
// too, so the caches serve most loads.
#include "common/cuda_utils.cuh"
#include "ops/morphology/morphology.h"

namespace medgan_fast::morphology {
namespace {

// Every kernel works on the band of source rows its Planes hold (planes.first on) or on a
// band of output rows; the driver (run_bands) walks the volume band by band.

// Plane 0 over whole rows, margins included: packed input (binary) or a copy (grey).
__global__ void pack_kernel(const uint8_t* input, Planes<uint64_t> planes, Shape shape, bool invert) {
  const int64_t stride = planes.stride();
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = planes.first + i / stride, j = i % stride - planes.left;
    const bool inside = j >= 0 && j < planes.n;
    planes.row(0, r)[j] = inside ? pack_word(input + r * shape.width, shape.width, j, invert) : 0;
  }
}

template <typename Lane>
__global__ void copy_kernel(Lane lane, const typename Lane::T* input, Planes<typename Lane::T> planes) {
  const int64_t stride = planes.stride();
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = planes.first + i / stride, j = i % stride - planes.left;
    planes.row(0, r)[j] = (j >= 0 && j < planes.n) ? input[r * planes.n + j] : lane.identity();
  }
}

// Ladder level `level` over whole rows; the right margin is identity.
template <typename Lane>
__global__ void ladder_kernel(Lane lane, Planes<typename Lane::T> planes, int32_t level) {
  const int64_t stride = planes.stride();
  const Shift by_h = Lane::shift(int64_t{1} << (level - 1));
  MF_GRID_STRIDE(i, planes.rows * stride) {
    const int64_t r = planes.first + i / stride, j = i % stride - planes.left;
    planes.row(level, r)[j] = j < planes.n ? ladder_element<Lane>(planes.row(level - 1, r), j, by_h) : lane.identity();
  }
}

// Spans in one launch: blockIdx.y = span (of those `spans` points at).
template <typename Lane>
__global__ void span_kernel(Planes<typename Lane::T> planes, const Span* spans) {
  const Span span = spans[blockIdx.y];
  const Shift first = span_first<Lane>(span), last = span_last<Lane>(span);
  MF_GRID_STRIDE(i, planes.rows * planes.n) {
    const int64_t r = planes.first + i / planes.n, j = i % planes.n;
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

// Output rows [begin, begin + rows).
__global__ void binary_output_kernel(Planes<uint64_t> planes, Shape shape, const RunRef* runs, int32_t num_runs,
                                     int64_t begin, int64_t rows, uint8_t* output, bool invert) {
  MF_GRID_STRIDE(i, rows * planes.n) {
    const int64_t r = begin + i / planes.n, j = i % planes.n;
    const uint64_t word = combine_runs(BitLane{}, planes, shape, runs, num_runs, r, j);
    unpack_word(invert ? ~word : word, output + r * shape.width, shape.width, j);
  }
}

template <typename Lane>
__global__ void grey_output_kernel(Lane lane, Planes<typename Lane::T> planes, Shape shape, const RunRef* runs,
                                   int32_t num_runs, int64_t begin, int64_t rows, typename Lane::T* output) {
  MF_GRID_STRIDE(i, rows * planes.n) {
    const int64_t r = begin + i / planes.n, j = i % planes.n;
    output[r * planes.n + j] = combine_runs(lane, planes, shape, runs, num_runs, r, j);
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

// Walks the output rows in bands whose planes fit in at most kMaxScratch bytes and 3/4 of the
// free device memory: each band builds the planes of the source rows it reaches (its rows
// plus the footprint's reach), then writes its output rows. A whole 512^3 float volume with
// ball(20) would need ~14 GB of planes at once; the CPU streams rows for the same reason.
// fill(planes) writes plane 0 of the band's source rows; write(planes, begin, rows) the output.
constexpr int64_t kMaxScratch = int64_t{512} << 20;

template <typename Lane, typename Fill, typename Write>
void run_bands(const Lane& lane, const Shape& shape, const Plan& layout, int64_t n, Fill fill, Write write) {
  using T = typename Lane::T;
  const cudaStream_t stream = current_stream();
  const DevicePlan device_plan(layout);
  const PlanView& plan = device_plan.view;
  const RowReach reach = row_reach(shape, layout.runs.data(), plan.num_runs);
  const int64_t total = shape.rows(), halo = reach.hi - reach.lo;
  const int64_t row_bytes = planes_elements<Lane>(plan, 1, n) * static_cast<int64_t>(sizeof(T));
  const int64_t free = free_device_memory(), budget = std::min(kMaxScratch, free - free / 4);
  const int64_t band = std::max<int64_t>(1, std::min(total, budget / row_bytes - halo));
  const c10::DataPtr scratch = device_buffer(std::min(total, band + halo) * row_bytes);
  for (int64_t begin = 0; begin < total; begin += band) {
    const int64_t end = std::min(total, begin + band);
    const int64_t first = std::max<int64_t>(0, begin + reach.lo), last = std::min(total, end + reach.hi);
    auto planes = make_planes<Lane>(static_cast<T*>(scratch.get()), plan, last - first, n);
    planes.first = first;
    fill(planes, stream);
    build_planes(lane, planes, plan, stream);
    write(planes, plan, begin, end - begin, stream);
  }
}

template <typename Lane>
void grey_morphology(const Lane& lane, const void* input, void* output, const Shape& shape, const Plan& layout) {
  using T = typename Lane::T;
  using P = Planes<T>;
  run_bands(
      lane, shape, layout, shape.width,
      [&](const P& planes, cudaStream_t stream) {
        MF_LAUNCH(copy_kernel, blocks_for(planes.rows * planes.stride()), kThreads, 0, stream)(
            lane, static_cast<const T*>(input), planes);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      },
      [&](const P& planes, const PlanView& plan, int64_t begin, int64_t rows, cudaStream_t stream) {
        MF_LAUNCH(grey_output_kernel, blocks_for(rows * planes.n), kThreads, 0, stream)(
            lane, planes, shape, plan.runs, plan.num_runs, begin, rows, static_cast<T*>(output));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

void binary_morphology_cuda(const uint8_t* input, uint8_t* output, const Shape& shape, const Plan& layout,
                            bool invert) {
  using P = Planes<uint64_t>;
  run_bands(
      BitLane{}, shape, layout, words_per_row(shape.width),
      [&](const P& planes, cudaStream_t stream) {
        MF_LAUNCH(pack_kernel, blocks_for(planes.rows * planes.stride()), kThreads, 0, stream)(input, planes, shape,
                                                                                              invert);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      },
      [&](const P& planes, const PlanView& plan, int64_t begin, int64_t rows, cudaStream_t stream) {
        MF_LAUNCH(binary_output_kernel, blocks_for(rows * planes.n), kThreads, 0, stream)(
            planes, shape, plan.runs, plan.num_runs, begin, rows, output, invert);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
}

void grey_morphology_cuda(Grey dtype, const void* input, void* output, const Shape& shape, const Plan& plan,
                          bool dilation) {
  with_grey_lane(dtype, dilation, [&](auto lane) { grey_morphology(lane, input, output, shape, plan); });
}

}  // namespace

extern const Backend MF_GPU_BACKEND{binary_morphology_cuda, grey_morphology_cuda};

}  // namespace medgan_fast::morphology
