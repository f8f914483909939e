// The float kernels for AVX-512 (F): simd_kernels.hpp instantiated in a file
// of its own, which meson.build compiles with the matching -m flags.
#include "simd_kernels.hpp"

namespace minsharp::kernels {

extern const FloatKernels avx512_kernels = simd_kernels<xsimd::avx512f>("avx512");

}  // namespace minsharp::kernels
