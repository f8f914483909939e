// The float kernels written once over an xsimd architecture A, whose batches hold W floats.
// Each instruction set's file (sse2.cpp, avx2.cpp, avx512.cpp) includes this header, is
// compiled with that set's -m flags (meson.build) and exports the instantiation as a
// FloatKernels table, which dispatch.cpp chooses from at run time.
//
// Why vector code by hand at all: the rows here are 5–32 floats long, which GCC's vector
// loops leave mostly to their scalar tails, and its max-pool loop stays scalar. Per LeNet
// image, all these kernels take 30 µs with AVX-512 and 39 µs with AVX2 against 73 µs for
// GCC's loops with AVX2 (docs/benchmarks.md, "Float kernels per instruction set").
#pragma once

#include "col2im_rows.hpp"
#include "float_kernels.hpp"

#include <immintrin.h>
#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#if !XSIMD_WITH_SSE2
#error "the vector float kernels need x86-64"
#endif

namespace minsharp::kernels {

// Everything below is internal to the including file. Code compiled with -mavx512f must not
// become the one copy of an inline function the linker keeps for the whole program: other
// files would then run AVX-512 instructions on CPUs without them. xsimd's own templates are
// not internal (and are emitted out of line at -O0): a file may instantiate them only for its
// own architecture A, which other files use only on CPUs that have it.
namespace {

using std::size_t;
template <class A>
using Floats = xsimd::batch<float, A>;
template <class A>
using Ints = xsimd::batch<std::int32_t, A>;
template <class A>
constexpr size_t lanes = Floats<A>::size;

alignas(64) constexpr float float_lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
alignas(64) constexpr std::int32_t int_lane[16] = {0, 1, 2, 3, 4, 5, 6, 7,
                                                   8, 9, 10, 11, 12, 13, 14, 15};

// ---- Partial loads and stores -----------------------------------------------------------
// xsimd 8 has no masked memory operations. These read and write only the lanes asked for,
// so that a batch never touches memory outside the rows it works on, even at a page end.

// row + offset as an address: offset may lie before the row when only later lanes are read,
// and forming that pointer in C++ would be undefined.
inline const float* address(const float* row, long offset) {
    return reinterpret_cast<const float*>(reinterpret_cast<std::uintptr_t>(row) +
                                          std::uintptr_t(offset * long(sizeof(float))));
}

// Lanes [lo, hi) of a batch, clipped to it: load() reads row[offset + i] for i in the range
// and nothing else, and fills the other lanes. The generic version (SSE2) goes through
// scalars.
template <class A>
class LaneRange {
public:
    LaneRange(long lo, long hi) : lo_(lo), hi_(hi) {}

    Floats<A> load(const float* row, long offset, float fill) const {
        return gather(row, offset, fill, std::make_index_sequence<lanes<A>>());
    }

private:
    template <size_t... I>
    Floats<A> gather(const float* row, long offset, float fill, std::index_sequence<I...>) const {
        return Floats<A>{(long(I) >= lo_ && long(I) < hi_ ? row[offset + long(I)] : fill)...};
    }

    long lo_, hi_;
};

// Lanes [0, n) of v to p, n < W.
template <class A, class T>
void store_lanes(T* p, long n, xsimd::batch<T, A> v) {
    alignas(64) T lane[lanes<A>];
    v.store_aligned(lane);
    for (long i = 0; i < n; ++i) p[i] = lane[i];
}

#if XSIMD_WITH_AVX2
// vmaskmovps loads skip the lanes left out, faults included. (Its stores are microcoded on
// AMD Zen: the stores go through scalars, as for SSE2.)
template <>
class LaneRange<xsimd::avx2> {
public:
    using A = xsimd::avx2;

    LaneRange(long lo, long hi) {
        const Floats<A> lane = Floats<A>::load_aligned(float_lane);
        inside_ = (lane >= Floats<A>(float(lo))) & (lane < Floats<A>(float(hi)));
    }

    // The lanes left out load as +0 (no bits set): or-ing in the fill's bits there is one
    // instruction (a blend is up to three on recent Intel cores).
    Floats<A> load(const float* row, long offset, float fill) const {
        const Floats<A> v = _mm256_maskload_ps(address(row, offset), _mm256_castps_si256(inside_));
        const Floats<A> inside_bits(static_cast<__m256>(inside_));
        return v | (Floats<A>(fill) & ~inside_bits);
    }

private:
    xsimd::batch_bool<float, A> inside_;
};
#endif

#if XSIMD_WITH_AVX512F
inline __mmask16 lane_mask(long lo, long hi) {
    lo = lo < 0 ? 0 : lo;
    hi = hi > 16 ? 16 : hi;
    if (hi <= lo) return 0;
    return __mmask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

template <>
class LaneRange<xsimd::avx512f> {
public:
    LaneRange(long lo, long hi) : mask_(lane_mask(lo, hi)) {}

    Floats<xsimd::avx512f> load(const float* row, long offset, float fill) const {
        return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), mask_, address(row, offset));
    }

private:
    __mmask16 mask_;
};

template <>
inline void store_lanes<xsimd::avx512f, float>(float* p, long n, Floats<xsimd::avx512f> v) {
    _mm512_mask_storeu_ps(p, lane_mask(0, n), v);
}

template <>
inline void store_lanes<xsimd::avx512f, std::int32_t>(std::int32_t* p, long n,
                                                      Ints<xsimd::avx512f> v) {
    _mm512_mask_storeu_epi32(p, lane_mask(0, n), v);
}
#endif

// even = (p[0], p[2], …), odd = (p[1], p[3], …) of the 2W floats p = lo ++ hi. xsimd 8 has no
// two-batch shuffle (and no SSE2 swizzle): one or two instructions per set.
template <class A>
void split_pairs(Floats<A> lo, Floats<A> hi, Floats<A>& even, Floats<A>& odd) {
    if constexpr (std::is_same_v<A, xsimd::sse2>) {
        even = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
        odd = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    } else if constexpr (std::is_same_v<A, xsimd::avx2>) {
        // Each batch to (its evens | its odds), then the halves across the two.
        const __m256i halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
        const __m256 l = _mm256_permutevar8x32_ps(lo, halves);
        const __m256 h = _mm256_permutevar8x32_ps(hi, halves);
        even = _mm256_permute2f128_ps(l, h, 0x20);
        odd = _mm256_permute2f128_ps(l, h, 0x31);
    } else {
        static_assert(std::is_same_v<A, xsimd::avx512f>);
        const __m512i evens =
            _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        even = _mm512_permutex2var_ps(lo, evens, hi);
        odd = _mm512_permutex2var_ps(lo, _mm512_add_epi32(evens, _mm512_set1_epi32(1)), hi);
    }
}

// ---- im2col -----------------------------------------------------------------------------

// Rows of W floats or more as whole batches, the last one overlapping the one before.
// AVX2 and AVX-512 copy by 8 floats: with 16, LeNet conv2's im2col took 1.5× as long (its
// unaligned 64-byte stores split across cache lines) and SmallCNN conv2's 8-float rows
// 1.3× (a masked store). Intrinsics there, not xsimd batches: see the namespace's comment.
template <class A>
void copy_row(const float* src, size_t n, float* dst) {
    if constexpr (lanes<A> >= 8) {
        if (n >= 8) {
            for (size_t j = 0; j + 8 < n; j += 8)
                _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
            _mm256_storeu_ps(dst + n - 8, _mm256_loadu_ps(src + n - 8));
            return;
        }
        if (n >= 4) {
            _mm_storeu_ps(dst, _mm_loadu_ps(src));
            _mm_storeu_ps(dst + n - 4, _mm_loadu_ps(src + n - 4));
            return;
        }
    } else {
        constexpr size_t W = lanes<A>;
        if (n >= W) {
            for (size_t j = 0; j + W < n; j += W)
                Floats<A>::load_unaligned(src + j).store_unaligned(dst + j);
            Floats<A>::load_unaligned(src + n - W).store_unaligned(dst + n - W);
            return;
        }
    }
    for (size_t j = 0; j < n; ++j) dst[j] = src[j];
}

template <class A>
void im2col_dense(const float* image, size_t channels, size_t height, size_t width, size_t k,
                  float* cols, size_t ld) {
    const size_t ho = height - k + 1, wo = width - k + 1;
    for (size_t c = 0; c < channels; ++c)
        for (size_t ky = 0; ky < k; ++ky)
            for (size_t kx = 0; kx < k; ++kx) {
                float* row = cols + ((c * k + ky) * k + kx) * ld;
                for (size_t oy = 0; oy < ho; ++oy)
                    copy_row<A>(image + (c * height + oy + ky) * width + kx, wo, row + oy * wo);
            }
}

// ---- col2im -----------------------------------------------------------------------------
// Image row y of a channel += Σ over (ky, kx) of column row (ky, kx) at oy = y − ky, shifted
// right by kx; W image columns at a time, summed in registers. (Adding each column row into
// the image in turn is 2.6× slower: the overlapping read-modify-writes of one image row stall
// on store forwarding.)

// sum += the column rows (ky, kx) for every ky, shifted to image columns [x0, x0 + W).
template <class A, bool Interior>
void add_column_rows(const ColumnRows& rows, size_t x0, size_t kx, Floats<A>& sum) {
    const long offset = long(x0) - long(kx);
    if constexpr (Interior) {
        for (size_t ky = rows.ky_lo; ky < rows.ky_hi; ++ky)
            sum += Floats<A>::load_unaligned(rows.row(ky, kx) + offset);
    } else {
        const LaneRange<A> inside(-offset, long(rows.wo) - offset);
        for (size_t ky = rows.ky_lo; ky < rows.ky_hi; ++ky)
            sum += inside.load(rows.row(ky, kx), offset, -0.0f);
    }
}

// value + the contributions to image columns [x0, x0 + W), in the order of the scalar
// kernels. Lanes whose column row position x0 + lane − kx is outside [0, wo) add −0, which
// changes nothing. Interior: no such lanes, so no masks.
template <class A, bool Interior>
Floats<A> image_values(const ColumnRows& rows, size_t x0, Floats<A> value) {
    // Even and odd kx in two accumulators: one chain of k·k dependent adds was
    // latency-bound. kx outside ky: one lane range serves every ky.
    Floats<A> even = value, odd(-0.0f);
    for (size_t kx = 0; kx < rows.k; kx += 2) {
        add_column_rows<A, Interior>(rows, x0, kx, even);
        if (kx + 1 < rows.k) add_column_rows<A, Interior>(rows, x0, kx + 1, odd);
    }
    return even + odd;
}

template <class A>
Floats<A> image_values(const ColumnRows& rows, size_t x0, const float* dst) {
    const Floats<A> value = Floats<A>::load_unaligned(dst + x0);
    if (x0 + 1 >= rows.k && x0 + lanes<A> <= rows.wo)
        return image_values<A, true>(rows, x0, value);
    return image_values<A, false>(rows, x0, value);
}

template <class A>
void col2im_row(const ColumnRows& rows, size_t width, float* dst) {
    constexpr size_t W = lanes<A>;
    if (width < W) {
        const Floats<A> value = LaneRange<A>(0, long(width)).load(dst, 0, -0.0f);
        return store_lanes<A>(dst, long(width), image_values<A, false>(rows, 0, value));
    }
    // The last W columns overlap the batch before them: summed from the row as it was,
    // before that batch is stored, and stored after it (the same values on the overlap).
    const bool ragged = width % W != 0;
    Floats<A> last;
    if (ragged) last = image_values<A>(rows, width - W, dst);
    for (size_t x0 = 0; x0 + W <= width; x0 += W)
        image_values<A>(rows, x0, dst).store_unaligned(dst + x0);
    if (ragged) last.store_unaligned(dst + width - W);
}

template <class A>
void col2im_dense(const float* cols, size_t ld, size_t channels, size_t height, size_t width,
                  size_t k, float* image) {
    col2im_by_rows(cols, ld, channels, height, width, k, image, col2im_row<A>);
}

// ---- 2×2 max pooling --------------------------------------------------------------------
// max_pool_row.hpp's selects lane by lane: the same maxima, ties and NaNs.

// a = row[ox·Stride], b = row[ox·Stride + 1] for the W outputs from ox0 on, of which only
// the first n are read when Partial.
template <class A, size_t Stride, bool Partial>
void load_window_pairs(const float* row, size_t ox0, long n, Floats<A>& a, Floats<A>& b) {
    constexpr long W = long(lanes<A>);
    const long at = long(ox0 * Stride);
    if constexpr (Stride == 1 && Partial) {
        const LaneRange<A> outputs(0, n);
        a = outputs.load(row, at, 0.0f);
        b = outputs.load(row, at + 1, 0.0f);
    } else if constexpr (Stride == 1) {
        a = Floats<A>::load_unaligned(row + at);
        b = Floats<A>::load_unaligned(row + at + 1);
    } else if constexpr (Partial) {
        split_pairs<A>(LaneRange<A>(0, 2 * n).load(row, at, 0.0f),
                       LaneRange<A>(0, 2 * n - W).load(row, at + W, 0.0f), a, b);
    } else {
        split_pairs<A>(Floats<A>::load_unaligned(row + at),
                       Floats<A>::load_unaligned(row + at + W), a, b);
    }
}

template <class A, size_t Stride, bool Partial>
void max_pool_outputs(const float* top, const float* bottom, size_t ox0, long n,
                      std::uint32_t first, std::uint32_t w, float* y, std::uint32_t* argmax) {
    Floats<A> a, b, c, d;
    load_window_pairs<A, Stride, Partial>(top, ox0, n, a, b);
    load_window_pairs<A, Stride, Partial>(bottom, ox0, n, c, d);
    const auto right_top = b > a, right_bottom = d > c;
    const Floats<A> ab = xsimd::select(right_top, b, a), cd = xsimd::select(right_bottom, d, c);
    const auto lower = cd > ab;
    const Ints<A> one(1), zero(0);
    const Ints<A> upper_offset = xsimd::select(xsimd::bool_cast(right_top), one, zero);
    const Ints<A> lower_offset =
        Ints<A>(std::int32_t(w)) + xsimd::select(xsimd::bool_cast(right_bottom), one, zero);
    Ints<A> column = Ints<A>::load_aligned(int_lane);
    if constexpr (Stride == 2) column = column + column;
    // Indices wrap as std::uint32_t: int32 lanes add the same bits.
    const Ints<A> index = column + Ints<A>(std::int32_t(first + std::uint32_t(ox0 * Stride))) +
                          xsimd::select(xsimd::bool_cast(lower), lower_offset, upper_offset);
    const Floats<A> best = xsimd::select(lower, cd, ab);
    auto* out = reinterpret_cast<std::int32_t*>(argmax + ox0);
    if constexpr (Partial) {
        store_lanes<A>(y + ox0, n, best);
        store_lanes<A>(out, n, index);
    } else {
        best.store_unaligned(y + ox0);
        index.store_unaligned(out);
    }
}

template <class A, size_t Stride>
void max_pool_row(const float* top, const float* bottom, size_t wo, std::uint32_t first,
                  std::uint32_t w, float* y, std::uint32_t* argmax) {
    constexpr size_t W = lanes<A>;
    if (wo < W)
        return max_pool_outputs<A, Stride, true>(top, bottom, 0, long(wo), first, w, y, argmax);
    for (size_t ox0 = 0; ox0 + W <= wo; ox0 += W)
        max_pool_outputs<A, Stride, false>(top, bottom, ox0, long(W), first, w, y, argmax);
    // The last outputs as a batch overlapping the one before: the same values again.
    if (wo % W != 0)
        max_pool_outputs<A, Stride, false>(top, bottom, wo - W, long(W), first, w, y, argmax);
}

template <class A, size_t Stride>
void max_pool_plane(const float* x, size_t w, size_t ho, size_t wo, std::uint32_t base,
                    float* y, std::uint32_t* argmax) {
    for (size_t oy = 0; oy < ho; ++oy) {
        const size_t top = oy * Stride * w;
        max_pool_row<A, Stride>(x + top, x + top + w, wo, base + std::uint32_t(top),
                                std::uint32_t(w), y + oy * wo, argmax + oy * wo);
    }
}

template <class A>
constexpr FloatKernels simd_kernels(const char* isa) {
    return {isa, im2col_dense<A>, col2im_dense<A>, max_pool_plane<A, 1>, max_pool_plane<A, 2>};
}

}  // namespace

}  // namespace minsharp::kernels
