// The output cache's controls, without torch's headers (module.cpp includes pybind11 only).
#pragma once

#include <cstdint>

namespace medgan_fast {

// Bytes of freed outputs the cache holds for reuse.
int64_t cached_output_bytes();

// Returns the cache's blocks to the system; the bytes freed.
int64_t release_cached_outputs();

}  // namespace medgan_fast
