// Helpers shared by the AVX-512 float kernels of src/ (im2col.cpp, ops.cpp); include only
// under #if defined(__AVX512F__).
#pragma once

#include <immintrin.h>

#include <algorithm>

namespace minsharp::avx512 {

/// Lanes [lo, hi) ∩ [0, 16) of a 16-float vector set.
inline __mmask16 lane_mask(long lo, long hi) {
    lo = std::max(lo, 0L);
    hi = std::min(hi, 16L);
    if (hi <= lo) return 0;
    return __mmask16(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

}  // namespace minsharp::avx512
