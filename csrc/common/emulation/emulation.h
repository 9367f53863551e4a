// The CUDA emulation: what a <family>_cuda.cu needs from CUDA, for the host compiler.
//
// A .cu compiled with MEDGAN_FAST_EMULATED (through its <family>_emulated.cpp) includes this
// instead of cuda_runtime.h. Each launch then runs the kernel's own code on the calling CPU
// thread: block after block, every thread of a block a fiber with its own stack, so
// __syncthreads is a real barrier and warp shuffles exchange values among 32 lanes.
// "Device" memory is host memory. A seeded schedule (scheduler.cpp) shuffles the order of
// blocks, of threads, and of threads resuming after each barrier.
//
// What this proves and what it cannot: indices, bounds (with AddressSanitizer), reductions,
// barriers, shuffles and launch shapes run as written. Memory-model races (fibers switch only
// at barriers and warp operations), timing, occupancy and nvcc's own floating-point
// contraction are not emulated.
#pragma once

#include <c10/core/Allocator.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

// CUDA's qualifiers mean nothing on the host. __shared__ variables are per block: blocks
// run one at a time on a CPU thread, so one copy per CPU thread is one copy per block.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define __launch_bounds__(...)

// Device code calls sqrt, pow, fabs, ... with float arguments and gets the float overloads.
using std::exp;
using std::fabs;
using std::log;
using std::pow;
using std::sqrt;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};

enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
using cudaStream_t = struct EmulatedStream*;

inline const char* cudaGetErrorString(cudaError_t error) { return error == cudaSuccess ? "no error" : "emulated error"; }

inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind, cudaStream_t) {
  if (bytes > 0) std::memcpy(dst, src, bytes);
  return cudaSuccess;
}

inline cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) {
  if (bytes > 0) std::memset(dst, value, bytes);
  return cudaSuccess;
}

namespace medgan_fast::emulation {
int64_t free_memory();  // the budget less what is held; 16 GiB without a budget
}  // namespace medgan_fast::emulation

inline cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total_bytes) {
  *free_bytes = static_cast<size_t>(::medgan_fast::emulation::free_memory());
  *total_bytes = *free_bytes;
  return cudaSuccess;
}

#define C10_CUDA_CHECK(expression)                                                                       \
  do {                                                                                                   \
    const cudaError_t mf_error = (expression);                                                           \
    TORCH_CHECK(mf_error == cudaSuccess, "emulated CUDA error: ", cudaGetErrorString(mf_error), " in ", \
                #expression);                                                                            \
  } while (0)
// A launch that breaks a CUDA limit throws from the launch itself (scheduler.cpp).
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

namespace medgan_fast::emulation {

// --- the scheduler (scheduler.cpp) ----------------------------------------------------------

struct Indices {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};

// The indices of the fiber that is running now.
const Indices& current_indices();

// Runs invoke(closure) once per thread of the grid; throws c10::Error for a launch outside
// CUDA's limits, a barrier that not every thread of a block reaches, or a warp operation
// whose lanes do not all arrive.
void run_grid(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes, void (*invoke)(const void*),
              const void* closure);

// Block barrier and warp operations, called from inside a fiber.
void sync_threads();
enum class WarpOp { shfl, shfl_up, shfl_down, shfl_xor, sync, ballot };
uint64_t warp_operation(WarpOp op, unsigned int mask, uint64_t value, int operand, int width);

// Scratch "device" memory: host memory filled with 0xFF (NaN floats, -1 integers) so that a
// kernel that reads what nobody wrote shows it, counted against an optional budget.
c10::DataPtr allocate(size_t bytes);

void count_atomic();

// --- a launch: MF_LAUNCH(kernel, grid, block, shared, stream)(arguments...) -------------------

template <typename Kernel>
struct Launch {
  const char* name;
  dim3 grid, block;
  size_t shared_bytes;
  Kernel kernel;

  template <typename... Args>
  void operator()(Args... args) const {
    struct Closure {
      const Kernel* kernel;
      std::tuple<Args...> args;
    } closure{&kernel, std::tuple<Args...>(args...)};
    run_grid(name, grid, block, shared_bytes,
             [](const void* c) {
               const auto* self = static_cast<const Closure*>(c);
               std::apply(*self->kernel, self->args);  // each thread gets its own copies, as in CUDA
             },
             &closure);
  }
};

template <typename Kernel>
Launch<Kernel> launch(const char* name, dim3 grid, dim3 block, size_t shared_bytes, Kernel kernel) {
  return {name, grid, block, shared_bytes, kernel};
}

template <typename T>
T shuffle(WarpOp op, unsigned int mask, T value, int operand, int width) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = warp_operation(op, mask, bits, operand, width);
  T result;
  std::memcpy(&result, &bits, sizeof(T));
  return result;
}

}  // namespace medgan_fast::emulation

// --- CUDA's built-in variables and functions -------------------------------------------------

#define threadIdx (::medgan_fast::emulation::current_indices().thread)
#define blockIdx (::medgan_fast::emulation::current_indices().block)
#define blockDim (::medgan_fast::emulation::current_indices().block_dim)
#define gridDim (::medgan_fast::emulation::current_indices().grid_dim)
constexpr int warpSize = 32;

inline void __syncthreads() { ::medgan_fast::emulation::sync_threads(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) {
  ::medgan_fast::emulation::warp_operation(::medgan_fast::emulation::WarpOp::sync, mask, 0, 0, warpSize);
}
inline unsigned int __ballot_sync(unsigned int mask, int predicate) {
  return static_cast<unsigned int>(::medgan_fast::emulation::warp_operation(
      ::medgan_fast::emulation::WarpOp::ballot, mask, predicate != 0, 0, warpSize));
}
template <typename T>
T __shfl_sync(unsigned int mask, T value, int lane, int width = warpSize) {
  return ::medgan_fast::emulation::shuffle(::medgan_fast::emulation::WarpOp::shfl, mask, value, lane, width);
}
template <typename T>
T __shfl_up_sync(unsigned int mask, T value, unsigned int delta, int width = warpSize) {
  return ::medgan_fast::emulation::shuffle(::medgan_fast::emulation::WarpOp::shfl_up, mask, value,
                                           static_cast<int>(delta), width);
}
template <typename T>
T __shfl_down_sync(unsigned int mask, T value, unsigned int delta, int width = warpSize) {
  return ::medgan_fast::emulation::shuffle(::medgan_fast::emulation::WarpOp::shfl_down, mask, value,
                                           static_cast<int>(delta), width);
}
template <typename T>
T __shfl_xor_sync(unsigned int mask, T value, int lane_mask, int width = warpSize) {
  return ::medgan_fast::emulation::shuffle(::medgan_fast::emulation::WarpOp::shfl_xor, mask, value, lane_mask, width);
}

// Atomics: blocks run one at a time and fibers switch only at barriers, so these need not be
// atomic; they are anyway (GCC builtins), so that nothing changes if blocks ever run in parallel.
// Each is counted (control.h's counters), so a test can check how many a kernel issues.
template <typename T>
T atomicAdd(T* address, T value) {
  ::medgan_fast::emulation::count_atomic();
  if constexpr (std::is_floating_point_v<T>) {
    T old = *address;
    *address = old + value;
    return old;
  } else {
    return __atomic_fetch_add(address, value, __ATOMIC_RELAXED);
  }
}
template <typename T>
T atomicMin(T* address, T value) {
  ::medgan_fast::emulation::count_atomic();
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (value < old && !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
T atomicMax(T* address, T value) {
  ::medgan_fast::emulation::count_atomic();
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (value > old && !__atomic_compare_exchange_n(address, &old, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
  }
  return old;
}
template <typename T>
T atomicCAS(T* address, T compare, T value) {
  ::medgan_fast::emulation::count_atomic();
  __atomic_compare_exchange_n(address, &compare, value, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return compare;
}
template <typename T>
T atomicExch(T* address, T value) {
  ::medgan_fast::emulation::count_atomic();
  return __atomic_exchange_n(address, value, __ATOMIC_RELAXED);
}
