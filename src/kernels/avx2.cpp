// The float kernels for AVX2: simd_kernels.hpp instantiated in a file
// of its own, which meson.build compiles with the matching -m flags.
#include "simd_kernels.hpp"

namespace minsharp::kernels {

extern const FloatKernels avx2_kernels = simd_kernels<xsimd::avx2>("avx2");

}  // namespace minsharp::kernels
