// The float kernels for SSE2 (part of every x86-64 CPU): simd_kernels.hpp instantiated in a file
// of its own, which meson.build compiles with the matching -m flags.
#include "simd_kernels.hpp"

namespace minsharp::kernels {

extern const FloatKernels sse2_kernels = simd_kernels<xsimd::sse2>("sse2");

}  // namespace minsharp::kernels
