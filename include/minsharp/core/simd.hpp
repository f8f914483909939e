// The instruction set of the hand-vectorized float kernels (im2col / col2im of conv2d, 2×2
// max pooling). They are compiled once per x86 instruction set (SSE2, AVX2, AVX-512) and the
// best one the CPU runs is chosen at the first call, so that a portable build
// (-Dnative=false) is as fast as a native one. Every choice computes bitwise the same results.
//
// The environment variable MINSHARP_SIMD caps the choice, for tests and benchmarks:
// MINSHARP_SIMD=avx2 runs the AVX2 kernels on an AVX-512 CPU (and SSE2 on a CPU without
// AVX2). Values: auto (the default), avx512, avx2, sse2, scalar; it is read at the first
// kernel call, and an unknown value is reported on stderr and ignored. Other CPUs than x86-64
// have the scalar kernels only.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// The instruction set of the float kernels in use: "avx512", "avx2", "sse2" or "scalar".
std::string_view simd_isa();

/// Uses the best kernels this CPU runs at or below `cap` (a MINSHARP_SIMD value), from now on
/// and in every thread; returns simd_isa(). Throws Error for an unknown name.
std::string_view set_simd_isa(std::string_view cap);

/// The instruction sets compiled in that this CPU runs, best first ("scalar" last).
std::vector<std::string> simd_isas();

}  // namespace minsharp
