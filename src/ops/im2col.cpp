// im2col / col2im for the GEMM form of conv2d (declared in minsharp/ops/im2col.hpp).
#include "minsharp/ops/im2col.hpp"

#include "../kernels/float_kernels.hpp"

#include <algorithm>
#include <vector>

namespace minsharp {

namespace {

// Output columns ox whose input column ox·stride + kx − pad lies inside [0, width).
std::pair<std::size_t, std::size_t> valid_columns(std::size_t kx, std::size_t width,
                                                  std::size_t wo, const Window& win) {
    const long pad = long(win.padding), stride = long(win.stride);
    long lo = pad > long(kx) ? (pad - long(kx) + stride - 1) / stride : 0;
    long hi = (long(width) - 1 + pad - long(kx));
    hi = hi < 0 ? 0 : hi / stride + 1;
    lo = std::min<long>(lo, long(wo));
    hi = std::clamp<long>(hi, lo, long(wo));
    return {std::size_t(lo), std::size_t(hi)};
}

// Rows are a few floats long (8–28 here): plain loops over restrict pointers, which GCC
// vectorizes without alias checks, instead of a memmove/memset call per row (those calls
// were 13% of a SmallCNN step). meson.build compiles this file with
// -fno-tree-loop-distribute-patterns so that GCC keeps the loops as loops.
// `src` points at the input of output column lo; columns outside [lo, hi) are padding.
template <class T>
[[gnu::always_inline]] inline void im2col_row(
    const T* __restrict src, std::size_t stride, std::size_t lo, std::size_t hi, std::size_t wo,
    T* __restrict dst) {
    for (std::size_t ox = 0; ox < lo; ++ox) dst[ox] = T(0);
    T* __restrict valid = dst + lo;
    if (stride == 1)
        for (std::size_t j = 0; j < hi - lo; ++j) valid[j] = src[j];
    else
        for (std::size_t j = 0; j < hi - lo; ++j) valid[j] = src[j * stride];
    for (std::size_t ox = hi; ox < wo; ++ox) dst[ox] = T(0);
}

template <class T>
[[gnu::always_inline]] inline void col2im_row(const T* __restrict src, std::size_t stride,
                                              std::size_t count, T* __restrict dst) {
    if (stride == 1)
        for (std::size_t j = 0; j < count; ++j) dst[j] += src[j];
    else
        for (std::size_t j = 0; j < count; ++j) dst[j * stride] += src[j];
}

// Input column of output column ox is ox·stride + kx − pad, inside the row from lo on.
inline std::size_t first_input_column(std::size_t lo, std::size_t kx, const Window& win) {
    return lo * win.stride + kx - win.padding;
}

// Stride 1 without padding (every conv of the zoo but LeNet's first): whole rows, no
// bounds. Measured 1.5–2.5× faster than the general loop below.
template <class T>
void im2col_dense(const T* __restrict image, std::size_t channels, std::size_t height,
                  std::size_t width, std::size_t k, T* __restrict cols, std::size_t ld) {
    const std::size_t ho = height - k + 1, wo = width - k + 1;
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                T* row = cols + ((c * k + ky) * k + kx) * ld;
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    const T* src = image + (c * height + oy + ky) * width + kx;
                    T* dst = row + oy * wo;
                    for (std::size_t ox = 0; ox < wo; ++ox) dst[ox] = src[ox];
                }
            }
}

template <class T>
void col2im_dense(const T* __restrict cols, std::size_t ld, std::size_t channels,
                  std::size_t height, std::size_t width, std::size_t k, T* __restrict image) {
    const std::size_t ho = height - k + 1, wo = width - k + 1;
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < k; ++ky)
            for (std::size_t kx = 0; kx < k; ++kx) {
                const T* row = cols + ((c * k + ky) * k + kx) * ld;
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    T* dst = image + (c * height + oy + ky) * width + kx;
                    const T* src = row + oy * wo;
                    for (std::size_t ox = 0; ox < wo; ++ox) dst[ox] += src[ox];
                }
            }
}

// The float rows go to the vector kernels of the running CPU (src/kernels), overloads
// chosen over the templates above.
void im2col_dense(const float* image, std::size_t channels, std::size_t height,
                  std::size_t width, std::size_t k, float* cols, std::size_t ld) {
    kernels::float_kernels().im2col_dense(image, channels, height, width, k, cols, ld);
}

void col2im_dense(const float* cols, std::size_t ld, std::size_t channels, std::size_t height,
                  std::size_t width, std::size_t k, float* image) {
    kernels::float_kernels().col2im_dense(cols, ld, channels, height, width, k, image);
}

// Stride 1 with padding (LeNet's first conv): the dense path on a zero-padded copy of the
// image, 2.7× faster than the general loop with its per-row bounds.
template <class T>
std::vector<T>& padded_scratch(std::size_t size) {
    thread_local std::vector<T> scratch;
    if (scratch.size() < size) scratch.resize(size);
    return scratch;
}

template <class T>
void im2col_padded(const T* image, std::size_t channels, std::size_t height, std::size_t width,
                   std::size_t k, std::size_t pad, T* cols, std::size_t ld) {
    const std::size_t hp = height + 2 * pad, wp = width + 2 * pad;
    auto& padded = padded_scratch<T>(channels * hp * wp);
    std::fill(padded.begin(), padded.begin() + channels * hp * wp, T(0));
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t y = 0; y < height; ++y)
            std::copy(image + (c * height + y) * width, image + (c * height + y + 1) * width,
                      padded.data() + (c * hp + y + pad) * wp + pad);
    im2col_dense(padded.data(), channels, hp, wp, k, cols, ld);
}

template <class T>
void col2im_padded(const T* cols, std::size_t ld, std::size_t channels, std::size_t height,
                   std::size_t width, std::size_t k, std::size_t pad, T* image) {
    const std::size_t hp = height + 2 * pad, wp = width + 2 * pad;
    auto& padded = padded_scratch<T>(channels * hp * wp);
    std::fill(padded.begin(), padded.begin() + channels * hp * wp, T(0));
    col2im_dense(cols, ld, channels, hp, wp, k, padded.data());
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t y = 0; y < height; ++y) {
            const T* src = padded.data() + (c * hp + y + pad) * wp + pad;
            T* dst = image + (c * height + y) * width;
            for (std::size_t x = 0; x < width; ++x) dst[x] += src[x];
        }
}

}  // namespace

template <class T>
void im2col(const T* image, std::size_t channels, std::size_t height, std::size_t width,
            const Window& win, T* cols, std::size_t ld, std::size_t col0) {
    const std::size_t ho = (height + 2 * win.padding - win.kernel) / win.stride + 1;
    const std::size_t wo = (width + 2 * win.padding - win.kernel) / win.stride + 1;
    if (win.stride == 1 && win.padding == 0)
        return im2col_dense(image, channels, height, width, win.kernel, cols + col0, ld);
    if (win.stride == 1)
        return im2col_padded(image, channels, height, width, win.kernel, win.padding,
                             cols + col0, ld);
    const long pad = long(win.padding);
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < win.kernel; ++ky)
            for (std::size_t kx = 0; kx < win.kernel; ++kx) {
                T* row = cols + ((c * win.kernel + ky) * win.kernel + kx) * ld + col0;
                const auto [lo, hi] = valid_columns(kx, width, wo, win);
                const std::size_t x0 = hi > lo ? first_input_column(lo, kx, win) : 0;
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    const long iy = long(oy * win.stride + ky) - pad;
                    if (iy < 0 || iy >= long(height))
                        im2col_row(image, win.stride, 0, 0, wo, row + oy * wo);
                    else
                        im2col_row(image + (c * height + std::size_t(iy)) * width + x0,
                                   win.stride, lo, hi, wo, row + oy * wo);
                }
            }
}

template <class T>
void col2im_add(const T* cols, std::size_t ld, std::size_t col0, std::size_t channels,
                std::size_t height, std::size_t width, const Window& win, T* image) {
    const std::size_t ho = (height + 2 * win.padding - win.kernel) / win.stride + 1;
    const std::size_t wo = (width + 2 * win.padding - win.kernel) / win.stride + 1;
    if (win.stride == 1 && win.padding == 0)
        return col2im_dense(cols + col0, ld, channels, height, width, win.kernel, image);
    if (win.stride == 1)
        return col2im_padded(cols + col0, ld, channels, height, width, win.kernel, win.padding,
                             image);
    const long pad = long(win.padding);
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < win.kernel; ++ky)
            for (std::size_t kx = 0; kx < win.kernel; ++kx) {
                const T* row = cols + ((c * win.kernel + ky) * win.kernel + kx) * ld + col0;
                const auto [lo, hi] = valid_columns(kx, width, wo, win);
                if (hi == lo) continue;
                const std::size_t x0 = first_input_column(lo, kx, win);
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    const long iy = long(oy * win.stride + ky) - pad;
                    if (iy < 0 || iy >= long(height)) continue;
                    col2im_row(row + oy * wo + lo, win.stride, hi - lo,
                               image + (c * height + std::size_t(iy)) * width + x0);
                }
            }
}

template void im2col<float>(const float*, std::size_t, std::size_t, std::size_t,
                            const Window&, float*, std::size_t, std::size_t);
template void im2col<double>(const double*, std::size_t, std::size_t, std::size_t,
                             const Window&, double*, std::size_t, std::size_t);
template void col2im_add<float>(const float*, std::size_t, std::size_t, std::size_t,
                                std::size_t, std::size_t, const Window&, float*);
template void col2im_add<double>(const double*, std::size_t, std::size_t, std::size_t,
                                 std::size_t, std::size_t, const Window&, double*);

}  // namespace minsharp
