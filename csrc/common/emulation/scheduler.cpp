// The CUDA emulation's scheduler (emulation.h says what it proves and what it cannot).
//
// A launch runs its blocks one after another on the calling CPU thread. Each thread of a
// block is a fiber on a stack of its own; a fiber runs until it finishes or reaches
// __syncthreads or a warp operation, then control returns here. When every fiber of the
// block has stopped, the warp operations whose lanes have all arrived are carried out; if
// none can be, and every live thread waits at the barrier, the barrier opens. Anything else
// (a thread that exits while others wait at a barrier, a lane missing from a shuffle) would
// hang or be undefined on a GPU, and is an error here.
#ifdef MEDGAN_FAST_WITH_EMULATION

#include "common/emulation/emulation.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <exception>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/emulation/control.h"

#if defined(__SANITIZE_ADDRESS__)
#define MF_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MF_ASAN 1
#endif
#endif
#ifdef MF_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace medgan_fast::emulation {
namespace {

// --- context switching ---------------------------------------------------------------------

#if defined(__x86_64__)
// Saves the callee-saved registers, MXCSR and the x87 control word on the current stack,
// stores the stack pointer in *save and continues on the stack `load` (SysV x86-64 ABI).
// glibc's swapcontext does the same plus a signal-mask system call, 20x slower per switch.
extern "C" void mf_fiber_switch(void** save, void* load);
extern "C" void mf_fiber_entry();
asm(R"(
  .text
  .p2align 4
  .hidden mf_fiber_switch
  .globl mf_fiber_switch
  .type mf_fiber_switch, @function
mf_fiber_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size mf_fiber_switch, .-mf_fiber_switch

  .p2align 4
  .hidden mf_fiber_entry
  .globl mf_fiber_entry
  .type mf_fiber_entry, @function
mf_fiber_entry:
  callq *%r13
  ud2
  .size mf_fiber_entry, .-mf_fiber_entry
)");

struct Context {
  void* sp = nullptr;
};

void switch_context(Context& from, Context& to) { mf_fiber_switch(&from.sp, to.sp); }

// A new fiber's stack as mf_fiber_switch leaves it: it "returns" into mf_fiber_entry,
// which calls main (in r13) with the stack 16-byte aligned.
void prepare_context(Context& context, char* stack, size_t bytes, void (*main)()) {
  auto top = reinterpret_cast<uintptr_t>(stack + bytes) & ~uintptr_t{15};
  auto* frame = reinterpret_cast<uint64_t*>(top - 16) - 8;
  uint16_t fpcw;
  asm volatile("fnstcw %0" : "=m"(fpcw));
  frame[0] = __builtin_ia32_stmxcsr() | (uint64_t{fpcw} << 32);
  frame[1] = frame[2] = frame[4] = frame[5] = frame[6] = 0;  // r15, r14, r12, rbx, rbp
  frame[3] = reinterpret_cast<uint64_t>(main);                 // r13
  frame[7] = reinterpret_cast<uint64_t>(&mf_fiber_entry);      // return address
  context.sp = frame;
}
#else
struct Context {
  ucontext_t context;
};

void switch_context(Context& from, Context& to) { swapcontext(&from.context, &to.context); }

void prepare_context(Context& context, char* stack, size_t bytes, void (*main)()) {
  getcontext(&context.context);
  context.context.uc_stack.ss_sp = stack;
  context.context.uc_stack.ss_size = bytes;
  context.context.uc_link = nullptr;
  makecontext(&context.context, main, 0);
}
#endif

// --- state -----------------------------------------------------------------------------------

constexpr unsigned kMaxThreads = 1024;
#ifdef MF_ASAN
constexpr size_t kStackBytes = size_t{512} << 10;
#else
constexpr size_t kStackBytes = size_t{256} << 10;
#endif

enum class State { ready, at_barrier, at_warp, done };

struct Fiber {
  Context context;
  char* stack = nullptr;
  State state = State::ready;
  Indices indices{};
  // The warp operation this fiber waits in, and its result.
  WarpOp op{};
  unsigned int mask = 0;
  uint64_t value = 0, result = 0;
  int operand = 0, width = 32;
  void* fake_stack = nullptr;  // AddressSanitizer's, while switched out
};

// One CPU thread's emulated block: its fibers, their stacks and the scheduler's context.
struct Block {
  const char* kernel = nullptr;
  void (*invoke)(const void*) = nullptr;
  const void* closure = nullptr;
  std::vector<Fiber> fibers;
  unsigned threads = 0;
  Context scheduler;
  std::exception_ptr error;
  char* stacks = nullptr;  // kMaxThreads stacks, each above a guard page
  const void* scheduler_stack = nullptr;
  size_t scheduler_stack_bytes = 0;
  void* scheduler_fake_stack = nullptr;

  Block() {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t slot = kStackBytes + page, total = slot * kMaxThreads;
    void* memory = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    TORCH_CHECK(memory != MAP_FAILED, "emulated CUDA: cannot map ", total, " bytes of fiber stacks");
    stacks = static_cast<char*>(memory);
    fibers.resize(kMaxThreads);
    for (unsigned t = 0; t < kMaxThreads; ++t) {
      mprotect(stacks + t * slot, page, PROT_NONE);  // an overflowing kernel faults instead of corrupting
      fibers[t].stack = stacks + t * slot + page;
    }
  }
};

thread_local bool tls_enabled = false;
thread_local Block* tls_block = nullptr;
thread_local Fiber* tls_fiber = nullptr;
std::atomic<uint64_t> g_seed{0};
std::atomic<int64_t> g_budget{-1}, g_in_use{0}, g_peak{0};
std::atomic<int64_t> g_launches{0}, g_threads{0}, g_atomics{0};
std::atomic<uint64_t> g_launch_serial{0};

Block& this_block() {
  thread_local Block block;
  return block;
}

// --- switching between the scheduler and fibers ---------------------------------------------

void start_switch(void** fake_stack, const void* bottom, size_t bytes) {
#ifdef MF_ASAN
  __sanitizer_start_switch_fiber(fake_stack, bottom, bytes);
#else
  (void)fake_stack, (void)bottom, (void)bytes;
#endif
}

void finish_switch(void* fake_stack, const void** bottom, size_t* bytes) {
#ifdef MF_ASAN
  __sanitizer_finish_switch_fiber(fake_stack, bottom, bytes);
#else
  (void)fake_stack, (void)bottom, (void)bytes;
#endif
}

// After an error, fibers are abandoned mid-kernel: their frames never return, so
// AddressSanitizer's redzones stay poisoned on stacks the next launch reuses.
void forget_stacks(const Block& block) {
#ifdef MF_ASAN
  for (unsigned t = 0; t < block.threads; ++t) ASAN_UNPOISON_MEMORY_REGION(block.fibers[t].stack, kStackBytes);
#else
  (void)block;
#endif
}

void resume(Block& block, Fiber& fiber) {
  tls_fiber = &fiber;
  start_switch(&block.scheduler_fake_stack, fiber.stack, kStackBytes);
  switch_context(block.scheduler, fiber.context);
  finish_switch(block.scheduler_fake_stack, nullptr, nullptr);
  tls_fiber = nullptr;
}

void yield(Block& block, Fiber& fiber, bool last) {
  start_switch(last ? nullptr : &fiber.fake_stack, block.scheduler_stack, block.scheduler_stack_bytes);
  switch_context(fiber.context, block.scheduler);
  finish_switch(fiber.fake_stack, nullptr, nullptr);
}

void fiber_main() {
  Block& block = *tls_block;
  Fiber& fiber = *tls_fiber;
  finish_switch(nullptr, &block.scheduler_stack, &block.scheduler_stack_bytes);
  try {
    block.invoke(block.closure);
  } catch (...) {
    if (!block.error) block.error = std::current_exception();
  }
  fiber.state = State::done;
  yield(block, fiber, /*last=*/true);
  std::abort();  // a finished fiber is never resumed
}

// --- the schedule ----------------------------------------------------------------------------

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// 0..n-1, shuffled unless the seed is 0.
void fill_order(std::vector<unsigned>& order, unsigned n, uint64_t seed, uint64_t& state) {
  order.resize(n);
  std::iota(order.begin(), order.end(), 0u);
  if (seed == 0) return;
  for (unsigned i = n; i > 1; --i) std::swap(order[i - 1], order[splitmix64(state) % i]);
}

std::string describe(const uint3& v) {
  std::ostringstream s;
  s << "(" << v.x << ", " << v.y << ", " << v.z << ")";
  return s.str();
}

[[noreturn]] void fail(const Block& block, const Fiber& any, const std::string& what) {
  TORCH_CHECK(false, "emulated CUDA kernel ", block.kernel, ", block ", describe(any.indices.block), ": ", what);
}

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::shfl: return "__shfl_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::sync: return "__syncwarp";
    case WarpOp::ballot: return "__ballot_sync";
  }
  return "?";
}

// The lane whose value `lane` receives (CUDA's rules: outside the lane's segment of
// `width` lanes, a lane keeps its own value).
unsigned source_lane(const Fiber& f, unsigned lane) {
  const unsigned width = static_cast<unsigned>(f.width), base = lane & ~(width - 1);
  const unsigned operand = static_cast<unsigned>(f.operand);
  switch (f.op) {
    case WarpOp::shfl: return base + (operand & (width - 1));
    case WarpOp::shfl_up: return (lane - base) >= operand ? lane - operand : lane;
    case WarpOp::shfl_down: return (lane - base) + operand < width ? lane + operand : lane;
    case WarpOp::shfl_xor: {
      const unsigned source = lane ^ operand;
      return source >= base && source < base + width ? source : lane;
    }
    default: return lane;
  }
}

// Carries out the warp operations all of whose lanes are waiting; returns how many lanes
// were released (pushed onto `ready`).
unsigned resolve_warps(Block& block, std::vector<unsigned>& ready) {
  unsigned released = 0;
  for (unsigned first = 0; first < block.threads; first += 32) {
    const unsigned lanes = std::min(32u, block.threads - first);
    Fiber* lead = nullptr;
    for (unsigned l = 0; l < lanes && lead == nullptr; ++l) {
      if (block.fibers[first + l].state == State::at_warp) lead = &block.fibers[first + l];
    }
    if (lead == nullptr) continue;
    const unsigned mask = lead->mask;
    for (unsigned l = 0; l < 32; ++l) {
      const bool named = (mask >> l) & 1u;
      if (l >= lanes) {
        if (named) {
          fail(block, *lead, std::string(op_name(lead->op)) + " names lane " + std::to_string(l) + " of warp " +
                                 std::to_string(first / 32) + ", which does not exist (" +
                                 std::to_string(block.threads) + " threads per block)");
        }
        continue;
      }
      const Fiber& f = block.fibers[first + l];
      if (f.state == State::at_warp && (f.mask != mask || f.op != lead->op)) {
        fail(block, f, "lanes of warp " + std::to_string(first / 32) + " wait in different warp operations (" +
                           op_name(f.op) + " and " + op_name(lead->op) + ", or different masks)");
      }
      if (!named && f.state == State::at_warp) {
        fail(block, f, std::string(op_name(f.op)) + ": lane " + std::to_string(l) +
                           " takes part but its mask does not name it");
      }
      // Called only once the ready queue is empty: a named lane not here exited or waits at a barrier.
      if (named && f.state != State::at_warp) {
        fail(block, f, std::string(op_name(lead->op)) + " on warp " + std::to_string(first / 32) + ": lane " +
                           std::to_string(l) +
                           (f.state == State::done ? " exited without reaching it" : " waits at __syncthreads instead"));
      }
    }
    uint64_t ballot = 0;
    for (unsigned l = 0; l < lanes; ++l) {
      if ((mask >> l) & 1u) ballot |= uint64_t{block.fibers[first + l].value != 0} << l;
    }
    for (unsigned l = 0; l < lanes; ++l) {
      if (!((mask >> l) & 1u)) continue;
      Fiber& f = block.fibers[first + l];
      const unsigned source = source_lane(f, l);
      if (!((mask >> source) & 1u)) {
        fail(block, f, std::string(op_name(f.op)) + ": lane " + std::to_string(l) + " reads lane " +
                           std::to_string(source) + ", which is not in the mask");
      }
      f.result = f.op == WarpOp::ballot ? ballot : block.fibers[first + source].value;
    }
    for (unsigned l = 0; l < lanes; ++l) {
      if ((mask >> l) & 1u) {
        block.fibers[first + l].state = State::ready;
        ready.push_back(first + l);
        ++released;
      }
    }
  }
  return released;
}

void run_block(Block& block, uint64_t seed, uint64_t& rng) {
  std::vector<unsigned> ready, order;
  fill_order(ready, block.threads, seed, rng);
  size_t head = 0;
  while (true) {
    while (head < ready.size()) {
      resume(block, block.fibers[ready[head++]]);
      if (block.error) std::rethrow_exception(block.error);
    }
    ready.clear();
    head = 0;
    unsigned done = 0, at_barrier = 0;
    const Fiber* exited = nullptr;
    for (unsigned t = 0; t < block.threads; ++t) {
      const State s = block.fibers[t].state;
      if (s == State::done) ++done, exited = exited ? exited : &block.fibers[t];
      at_barrier += s == State::at_barrier;
    }
    if (done == block.threads) return;
    if (resolve_warps(block, ready) > 0) {
      if (seed != 0) std::shuffle(ready.begin(), ready.end(), std::mt19937_64(splitmix64(rng)));
      continue;
    }
    if (at_barrier + done < block.threads) {
      fail(block, block.fibers[0], "warp operations wait for lanes that never arrive (deadlock)");
    }
    if (done > 0) {
      fail(block, *exited, "__syncthreads is not reached by every thread: " + std::to_string(done) + " of " +
                               std::to_string(block.threads) + " threads exited without it (first: thread " +
                               describe(exited->indices.thread) + ")");
    }
    fill_order(order, block.threads, seed, rng);
    for (unsigned t : order) block.fibers[t].state = State::ready;
    ready.swap(order);
  }
}

void check_launch(const char* kernel, dim3 grid, dim3 block, size_t shared_bytes) {
  const auto fail_launch = [&](const std::string& what) {
    TORCH_CHECK(false, "emulated CUDA launch of ", kernel, " with grid (", grid.x, ", ", grid.y, ", ", grid.z,
                ") and block (", block.x, ", ", block.y, ", ", block.z, "): ", what,
                " (a GPU fails this launch with an invalid-configuration error)");
  };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) fail_launch("a grid dimension is 0");
  if (block.x == 0 || block.y == 0 || block.z == 0) fail_launch("a block dimension is 0");
  if (grid.x > 2147483647u) fail_launch("gridDim.x exceeds 2^31 - 1");
  if (grid.y > 65535u || grid.z > 65535u) fail_launch("gridDim.y and gridDim.z must be at most 65535");
  if (block.x > 1024u || block.y > 1024u || block.z > 64u) fail_launch("a block dimension exceeds (1024, 1024, 64)");
  if (uint64_t{block.x} * block.y * block.z > kMaxThreads) fail_launch("more than 1024 threads per block");
  if (shared_bytes > 48 * 1024) fail_launch("more than 48 KiB of dynamic shared memory");
}

}  // namespace

// --- the interface of emulation.h and control.h ------------------------------------------

const Indices& current_indices() {
  TORCH_CHECK(tls_fiber != nullptr, "emulated CUDA: threadIdx/blockIdx read outside a kernel");
  return tls_fiber->indices;
}

void run_grid(const char* kernel, dim3 grid, dim3 block_dim, size_t shared_bytes, void (*invoke)(const void*),
              const void* closure) {
  check_launch(kernel, grid, block_dim, shared_bytes);
  TORCH_CHECK(tls_fiber == nullptr, "emulated CUDA: kernel ", kernel, " launched from device code");
  Block& block = this_block();
  block.kernel = kernel, block.invoke = invoke, block.closure = closure, block.error = nullptr;
  block.threads = block_dim.x * block_dim.y * block_dim.z;
  tls_block = &block;
  const uint64_t seed = g_seed.load();
  uint64_t rng = seed ^ (0x632be59bd9b4e019ull * (g_launch_serial.fetch_add(1) + 1));
  const uint64_t blocks = uint64_t{grid.x} * grid.y * grid.z;
  std::vector<uint64_t> order(seed == 0 ? 0 : blocks);
  std::iota(order.begin(), order.end(), uint64_t{0});
  if (seed != 0) std::shuffle(order.begin(), order.end(), std::mt19937_64(splitmix64(rng)));
  try {
    for (uint64_t k = 0; k < blocks; ++k) {
      const uint64_t b = seed == 0 ? k : order[k];
      const uint3 block_index{static_cast<unsigned>(b % grid.x), static_cast<unsigned>(b / grid.x % grid.y),
                              static_cast<unsigned>(b / (uint64_t{grid.x} * grid.y))};
      for (unsigned t = 0; t < block.threads; ++t) {
        Fiber& f = block.fibers[t];
        f.state = State::ready;
        f.indices = {{t % block_dim.x, t / block_dim.x % block_dim.y, t / (block_dim.x * block_dim.y)}, block_index,
                     block_dim, grid};
        prepare_context(f.context, f.stack, kStackBytes, &fiber_main);
      }
      run_block(block, seed, rng);
    }
  } catch (...) {
    forget_stacks(block);
    tls_block = nullptr;
    throw;
  }
  tls_block = nullptr;
  g_launches.fetch_add(1);
  g_threads.fetch_add(static_cast<int64_t>(blocks * block.threads));
}

void sync_threads() {
  TORCH_CHECK(tls_fiber != nullptr, "emulated CUDA: __syncthreads called outside a kernel");
  tls_fiber->state = State::at_barrier;
  yield(*tls_block, *tls_fiber, false);
}

uint64_t warp_operation(WarpOp op, unsigned int mask, uint64_t value, int operand, int width) {
  TORCH_CHECK(tls_fiber != nullptr, "emulated CUDA: ", op_name(op), " called outside a kernel");
  TORCH_CHECK(width >= 1 && width <= 32 && (width & (width - 1)) == 0, "emulated CUDA: ", op_name(op),
              " width must be a power of 2 in [1, 32], got ", width);
  Fiber& f = *tls_fiber;
  const unsigned lane = (f.indices.thread.x + f.indices.block_dim.x *
                         (f.indices.thread.y + f.indices.block_dim.y * f.indices.thread.z)) % 32;
  TORCH_CHECK((mask >> lane) & 1u, "emulated CUDA kernel ", tls_block->kernel, ": ", op_name(op), " on lane ", lane,
              " whose mask 0x", std::hex, mask, " does not name it");
  f.op = op, f.mask = mask, f.value = value, f.operand = operand, f.width = width;
  f.state = State::at_warp;
  yield(*tls_block, f, false);
  return f.result;
}

namespace {
struct Allocation {
  void* data;
  int64_t bytes;
};

void release(void* context) {
  auto* allocation = static_cast<Allocation*>(context);
  g_in_use.fetch_sub(allocation->bytes);
  std::free(allocation->data);
  delete allocation;
}
}  // namespace

c10::DataPtr allocate(size_t bytes) {
  const auto size = static_cast<int64_t>(bytes);
  const int64_t budget = g_budget.load(), in_use = g_in_use.fetch_add(size) + size;
  if (budget >= 0 && in_use > budget) {
    g_in_use.fetch_sub(size);
    TORCH_CHECK(false, "emulated CUDA: out of device memory: ", size, " bytes requested with ", in_use - size,
                " in use and a budget of ", budget);
  }
  int64_t peak = g_peak.load();
  while (in_use > peak && !g_peak.compare_exchange_weak(peak, in_use)) {
  }
  void* data = std::malloc(bytes > 0 ? bytes : 1);
  if (data == nullptr) {
    g_in_use.fetch_sub(size);
    TORCH_CHECK(false, "emulated CUDA: cannot allocate ", size, " bytes");
  }
  std::memset(data, 0xFF, bytes);
  return c10::DataPtr(data, new Allocation{data, size}, &release, c10::Device(c10::kCPU));
}

int64_t free_memory() {
  const int64_t budget = g_budget.load();
  return budget < 0 ? int64_t{16} << 30 : std::max<int64_t>(0, budget - g_in_use.load());
}

bool enabled() { return tls_enabled; }
void set_enabled(bool on) { tls_enabled = on; }
void set_schedule_seed(uint64_t seed) { g_seed.store(seed); }
uint64_t schedule_seed() { return g_seed.load(); }
void set_memory_budget(int64_t bytes) { g_budget.store(bytes); }
int64_t memory_budget() { return g_budget.load(); }
int64_t peak_memory() { return g_peak.load(); }
void reset_peak_memory() { g_peak.store(g_in_use.load()); }
Counters counters() { return {g_launches.load(), g_threads.load(), g_atomics.load()}; }
void count_atomic() { g_atomics.fetch_add(1, std::memory_order_relaxed); }

}  // namespace medgan_fast::emulation

#endif  // MEDGAN_FAST_WITH_EMULATION
