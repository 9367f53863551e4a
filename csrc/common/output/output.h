// Output allocation shared by the ops' host code.
#pragma once

#include <ATen/ATen.h>

#include "common/output/output_cache.h"

namespace medgan_fast {

// An uninitialised output tensor. A large CPU output comes from the output cache
// (output.cpp): memory whose pages are already faulted in, so the op's first write does not
// pay for fresh pages. Other outputs are plain at::empty.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options);

}  // namespace medgan_fast
