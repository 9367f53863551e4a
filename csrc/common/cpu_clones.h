// MF_CPU_CLONES compiles a CPU hot loop twice, for x86-64-v3 (AVX2: 8 floats per
// instruction) and for the x86-64 baseline (SSE2: 4), and the loader
// picks one by the CPU it runs on (GCC's function multi-versioning; elsewhere, one plain
// build). The build must run on any x86-64, so -march=native is not an option, and the
// baseline alone leaves half of a current CPU's vector width unused.
//
// What a marked function calls must be inlined into it (MF_CPU_INLINE) to be compiled for
// the clone's target. The build passes -ffp-contract=off, so the clones do not fuse
// a * b + c into one FMA: results are the same bits on every CPU, and symmetric formulas
// stay exact (a similarity of two equal values is exactly 1, as piq computes it).
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && !defined(__CUDACC__)
#define MF_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MF_CPU_CLONES
#endif

#if defined(__GNUC__)
#define MF_CPU_INLINE inline __attribute__((always_inline))
#else
#define MF_CPU_INLINE inline
#endif

// Before a loop whose iterations are independent (each writes its own output element):
// GCC then vectorises it without run-time alias checks, which it gives up on past ten
// pairs of pointers (many input planes and several outputs).
#if defined(__GNUC__) && !defined(__clang__)
#define MF_CPU_INDEPENDENT _Pragma("GCC ivdep")
#else
#define MF_CPU_INDEPENDENT
#endif
