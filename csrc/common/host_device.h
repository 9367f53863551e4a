// MF_HD marks the per-pixel / per-word math that both the CPU drivers and the
// CUDA kernels call, so the CPU tests exercise the arithmetic the GPU runs.
#pragma once

#if defined(__CUDACC__)
#define MF_HD __host__ __device__ __forceinline__
#else
#define MF_HD inline
#endif
