// One level of parallelism per phase: our own workers over independent parts (images of a
// batch, rows or columns of a product), each calling single-threaded BLAS. A GEMM called
// outside a part may still use OpenBLAS's threads; mixing both at once oversubscribes the
// two cores and makes small GEMMs spin (TOOLCHAIN.md), so the training step's GEMMs all go
// through parallel_gemm.
#pragma once

#include "minsharp/core/tensor.hpp"

#include <algorithm>
#include <cstddef>
#include <functional>

namespace minsharp {

/// Threads used by parallel_parts (the --threads setting; default: all cores).
int worker_threads();

/// Most worker threads set_threads accepts: far above the cores of any machine this runs
/// on, and low enough that starting them cannot exhaust the process's thread limit (at
/// 100,000 the system refused with "Resource temporarily unavailable").
inline constexpr int max_threads = 256;

/// Sets the worker count and OpenBLAS's thread count together (0: all cores). Throws Error
/// naming the value unless 0 ≤ threads ≤ max_threads.
void set_threads(int threads);

/// Runs part(i) for i in [0, parts) on the workers and waits. BLAS runs single-threaded
/// inside. Parts must write disjoint memory; results do not depend on which worker ran a
/// part, so output is reproducible for a given `parts`.
void parallel_parts(std::size_t parts, const std::function<void(std::size_t)>& part);

/// C = alpha·op(A)·op(B) + beta·C (row-major, packed: lda/ldb/ldc as in gemm's short form)
/// with the rows or columns of C split over the workers, each calling single-threaded BLAS.
/// Every GEMM of the training step goes through here, so OpenBLAS's own threads never wake
/// up and spin while our workers run (that cost 15% of a LeNet step at batch 128).
/// Small products run on the calling thread.
template <class T>
void parallel_gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k,
                   T alpha, const T* a, const T* b, T beta, T* c);

/// [begin, end) of part i when n items are split into `parts` contiguous pieces.
inline std::pair<std::size_t, std::size_t> part_range(std::size_t n, std::size_t parts,
                                                      std::size_t i) {
    const std::size_t base = n / parts, extra = n % parts;
    const std::size_t begin = i * base + (i < extra ? i : extra);
    return {begin, begin + base + (i < extra ? 1 : 0)};
}

/// Element-wise passes are memory-bound; splitting them over the workers pays from about
/// this many elements on (below, handing out the parts costs more than it saves).
inline constexpr std::size_t parallel_ranges_min = std::size_t(1) << 16;

/// Runs fn(begin, end) over [0, n) in one contiguous range per worker (one range when n is
/// below parallel_ranges_min).
template <class F>
void parallel_ranges(std::size_t n, F&& fn) {
    const std::size_t parts =
        n < parallel_ranges_min ? 1 : std::max<std::size_t>(1, std::size_t(worker_threads()));
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(n, parts, part);
        fn(begin, end);
    });
}

}  // namespace minsharp
