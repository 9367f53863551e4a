// Switches for the CUDA emulation (scheduler.cpp), used by the op registrations and by
// _C's Python functions. Plain C++: no torch or CUDA headers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace medgan_fast::emulation {

// While enabled on a CPU thread, ops on CPU tensors called from it run the CUDA drivers
// compiled against the emulation instead of the CPU kernels (the tests' "emulated" device).
bool enabled();
void set_enabled(bool on);

// 0: blocks, threads and barrier releases in index order. Any other seed shuffles all three,
// differently for each launch, so a result that depends on execution order changes.
void set_schedule_seed(uint64_t seed);
uint64_t schedule_seed();

// Scratch memory (device_buffer) a launch sequence may hold at once; < 0: unlimited. Lets a
// test check that a driver tiles its work instead of allocating it whole.
void set_memory_budget(int64_t bytes);
int64_t memory_budget();
// The most scratch memory held at once since the last reset.
int64_t peak_memory();
void reset_peak_memory();

// How many launches, threads and atomic operations were run (tests check that the emulation
// really ran, and how many atomics a kernel issues).
struct Counters {
  int64_t launches, threads, atomics;
};
Counters counters();

// Runs one of the emulation's own test kernels (self_test.cpp) and returns what it wrote.
std::vector<int64_t> self_test(const std::string& name);

}  // namespace medgan_fast::emulation

// The emulated backend of an op family, or nullptr when the build leaves the emulation out.
#ifdef MEDGAN_FAST_WITH_EMULATION
#define MF_EMULATED_BACKEND(name) (&(name))
#else
#define MF_EMULATED_BACKEND(name) (static_cast<decltype(&(name))>(nullptr))
#endif

namespace medgan_fast {

// The drivers for CPU tensors: our CPU kernels, or the emulated CUDA ones while enabled.
template <typename Backend>
const Backend& cpu_or_emulated(const Backend& cpu, const Backend* emulated) {
  return emulated != nullptr && emulation::enabled() ? *emulated : cpu;
}

}  // namespace medgan_fast
