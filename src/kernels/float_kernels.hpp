// The float kernels of src/ops (im2col, pooling, ReLU masks), compiled once per instruction
// set and chosen at run time (see core/simd.hpp). Internal to src/.
#pragma once

#include <cstddef>
#include <cstdint>

namespace minsharp::kernels {

/// One instruction set's float kernels. Every variant computes bitwise the same results:
/// the same additions in the same order per element, the same comparisons and selects.
struct FloatKernels {
    const char* isa;  ///< "avx512", "avx2", "sse2" or "scalar"

    /// im2col of one image for stride 1 without padding (see ops/im2col.hpp).
    void (*im2col_dense)(const float* image, std::size_t channels, std::size_t height,
                         std::size_t width, std::size_t k, float* cols, std::size_t ld);

    /// Its adjoint: image value v at column x becomes (v + the values of the column rows that
    /// land on x with even kx) + (those with odd kx), each sum over kx, then ky, in order.
    void (*col2im_dense)(const float* cols, std::size_t ld, std::size_t channels,
                         std::size_t height, std::size_t width, std::size_t k, float* image);

    /// 2×2 max pooling of one plane of width w with stride 1 or 2: y and the flat index
    /// base + (row·w + column) of the first maximum among top-left, top-right, bottom-left,
    /// bottom-right (a NaN is never greater, so it wins only as the top-left).
    void (*max_pool_2x2_stride1)(const float* x, std::size_t w, std::size_t ho, std::size_t wo,
                                 std::uint32_t base, float* y, std::uint32_t* argmax);
    void (*max_pool_2x2_stride2)(const float* x, std::size_t w, std::size_t ho, std::size_t wo,
                                 std::uint32_t base, float* y, std::uint32_t* argmax);
};

/// The variant chosen by MINSHARP_SIMD or set_simd_isa (the best this CPU runs by default).
const FloatKernels& float_kernels();

extern const FloatKernels scalar_kernels;
#if defined(MINSHARP_X86_KERNELS)
extern const FloatKernels sse2_kernels, avx2_kernels, avx512_kernels;
#endif

}  // namespace minsharp::kernels
