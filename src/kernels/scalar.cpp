// The float kernels as plain loops: the definition the vector variants match bit for bit,
// and the kernels of CPUs without a vector variant here (or MINSHARP_SIMD=scalar).
#include "col2im_rows.hpp"
#include "float_kernels.hpp"
#include "max_pool_row.hpp"

namespace minsharp::kernels {

namespace {

using std::size_t;

void im2col_dense(const float* __restrict image, size_t channels, size_t height, size_t width,
                  size_t k, float* __restrict cols, size_t ld) {
    const size_t ho = height - k + 1, wo = width - k + 1;
    for (size_t c = 0; c < channels; ++c)
        for (size_t ky = 0; ky < k; ++ky)
            for (size_t kx = 0; kx < k; ++kx) {
                float* row = cols + ((c * k + ky) * k + kx) * ld;
                for (size_t oy = 0; oy < ho; ++oy) {
                    const float* src = image + (c * height + oy + ky) * width + kx;
                    float* dst = row + oy * wo;
                    for (size_t ox = 0; ox < wo; ++ox) dst[ox] = src[ox];
                }
            }
}

// Image column x gets the contribution of column row (ky, kx) at oy = y − ky, ox = x − kx
// when ox is inside [0, wo): summed into two accumulators by the parity of kx, kx outside
// ky, then added. The vector kernels add −0 for the missing contributions instead, which
// changes nothing (x + −0 = x for every x, +0 and NaN included), and so match these sums
// bit for bit. Columns go in blocks through accumulator arrays: each (ky, kx) is a
// contiguous loop that GCC vectorizes.
void col2im_row(const ColumnRows& rows, size_t width, float* dst) {
    constexpr size_t block = 64;
    for (size_t x0 = 0; x0 < width; x0 += block) {
        const size_t n = width - x0 < block ? width - x0 : block;
        float sums[2][block];
        for (size_t i = 0; i < n; ++i) {
            sums[0][i] = dst[x0 + i];
            sums[1][i] = -0.0f;
        }
        for (size_t kx = 0; kx < rows.k; ++kx) {
            // Columns x in [x0, x0 + n) with x − kx in [0, wo).
            const size_t lo = x0 > kx ? x0 : kx;
            const size_t hi = x0 + n < kx + rows.wo ? x0 + n : kx + rows.wo;
            if (hi <= lo) continue;
            float* __restrict sum = sums[kx & 1] + (lo - x0);
            for (size_t ky = rows.ky_lo; ky < rows.ky_hi; ++ky) {
                const float* __restrict src = rows.row(ky, kx) + (lo - kx);
                for (size_t j = 0; j < hi - lo; ++j) sum[j] += src[j];
            }
        }
        for (size_t i = 0; i < n; ++i) dst[x0 + i] = sums[0][i] + sums[1][i];
    }
}

void col2im_dense(const float* cols, size_t ld, size_t channels, size_t height, size_t width,
                  size_t k, float* image) {
    col2im_by_rows(cols, ld, channels, height, width, k, image, col2im_row);
}

}  // namespace

extern const FloatKernels scalar_kernels = {
    "scalar", im2col_dense, col2im_dense, max_pool_plane_2x2<1, float>,
    max_pool_plane_2x2<2, float>};

}  // namespace minsharp::kernels
