// im2col / col2im for the GEMM form of conv2d (src/ops/im2col.cpp, with the SIMD kernels of
// src/kernels).
#pragma once

#include "minsharp/autograd/tape.hpp"

#include <cstddef>

namespace minsharp {

/// im2col of one image (C, H, W) into columns [col0, col0 + Ho·Wo) of a row-major matrix
/// with C·k·k rows and `ld` columns; row (c, ki, kj), column oy·Wo + ox.
template <class T>
void im2col(const T* image, std::size_t channels, std::size_t height, std::size_t width,
            const Window& window, T* cols, std::size_t ld, std::size_t col0);

/// The adjoint of im2col: adds the columns back into the image gradient.
template <class T>
void col2im_add(const T* cols, std::size_t ld, std::size_t col0, std::size_t channels,
                std::size_t height, std::size_t width, const Window& window, T* image);

}  // namespace minsharp
