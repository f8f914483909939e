// The 2×2 max-pool row of the double path and of the scalar float kernels: one definition,
// which the vector kernels of simd_kernels.hpp reproduce lane by lane.
#pragma once

#include <cstddef>
#include <cstdint>

namespace minsharp::kernels {

// Selects on values (not on indices, whose dependent loads kept GCC from vectorizing): ties
// go to the first maximum in a, b, c, d order, like the generic loop of src/ops/max_pool2d.cpp.
template <std::size_t Stride, class T>
void max_pool_row_2x2(const T* __restrict top, const T* __restrict bottom, std::size_t wo,
                      std::uint32_t first, std::uint32_t w, T* __restrict y,
                      std::uint32_t* __restrict argmax) {
    for (std::size_t ox = 0; ox < wo; ++ox) {
        const T a = top[ox * Stride], b = top[ox * Stride + 1];
        const T c = bottom[ox * Stride], d = bottom[ox * Stride + 1];
        const bool right_top = b > a, right_bottom = d > c;
        const T ab = right_top ? b : a, cd = right_bottom ? d : c;
        const bool lower = cd > ab;
        const std::uint32_t offset =
            lower ? w + std::uint32_t(right_bottom) : std::uint32_t(right_top);
        y[ox] = lower ? cd : ab;
        argmax[ox] = first + std::uint32_t(ox * Stride) + offset;
    }
}

// A plane of rows; Stride 1 or 2 as a compile-time constant, which lets GCC vectorize.
template <std::size_t Stride, class T>
void max_pool_plane_2x2(const T* x, std::size_t w, std::size_t ho, std::size_t wo,
                        std::uint32_t base, T* y, std::uint32_t* argmax) {
    for (std::size_t oy = 0; oy < ho; ++oy) {
        const std::size_t top = oy * Stride * w;
        max_pool_row_2x2<Stride>(x + top, x + top + w, wo, base + std::uint32_t(top),
                                 std::uint32_t(w), y + oy * wo, argmax + oy * wo);
    }
}

}  // namespace minsharp::kernels
