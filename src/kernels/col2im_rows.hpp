// How col2im walks an image: which column rows land on each image row. Shared by the scalar
// kernels (scalar.cpp) and the vector ones (simd_kernels.hpp), which differ only in how they
// sum one image row.
#pragma once

#include <cstddef>

namespace minsharp::kernels {

// Internal to each including file: the files are compiled for different instruction sets,
// and the linker must not keep one file's copy of an inline function for all of them.
namespace {

// The column rows that land on image row y of one channel.
struct ColumnRows {
    const float* cols;
    std::size_t ld, k, wo, y, ky_lo, ky_hi;

    const float* row(std::size_t ky, std::size_t kx) const {
        return cols + (ky * k + kx) * ld + (y - ky) * wo;
    }
};

// Calls sum_row(rows, width, image row) for every row of every channel (stride 1, no padding).
template <class SumRow>
void col2im_by_rows(const float* cols, std::size_t ld, std::size_t channels, std::size_t height,
                    std::size_t width, std::size_t k, float* image, SumRow sum_row) {
    const std::size_t ho = height - k + 1, wo = width - k + 1;
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t y = 0; y < height; ++y) {
            const std::size_t ky_lo = y >= ho ? y - ho + 1 : 0, ky_hi = y + 1 < k ? y + 1 : k;
            const ColumnRows rows{cols + c * k * k * ld, ld, k, wo, y, ky_lo, ky_hi};
            sum_row(rows, width, image + (c * height + y) * width);
        }
}

}  // namespace

}  // namespace minsharp::kernels
