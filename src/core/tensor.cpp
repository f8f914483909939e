#include "minsharp/core/tensor.hpp"

#include "minsharp/core/checked.hpp"

#include <cblas.h>

namespace minsharp {

namespace {
CBLAS_TRANSPOSE to_cblas(Trans t) { return t == Trans::No ? CblasNoTrans : CblasTrans; }

// The layer limits keep every side far below 2^31; a wrap here would make BLAS read and
// write out of bounds, so it is checked anyway.
blasint blas_int(std::size_t side) { return checked_cast<blasint>(side, "GEMM side"); }
}  // namespace

template <>
void gemm<float>(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
                 float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, to_cblas(ta), to_cblas(tb), blas_int(m), blas_int(n), blas_int(k),
                alpha, a, blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

template <>
void gemm<double>(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k,
                  double alpha, const double* a, std::size_t lda, const double* b,
                  std::size_t ldb, double beta, double* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, to_cblas(ta), to_cblas(tb), blas_int(m), blas_int(n), blas_int(k),
                alpha, a, blas_int(lda), b, blas_int(ldb), beta, c, blas_int(ldc));
}

int set_blas_threads(int threads) {
    if (threads > 0) openblas_set_num_threads(threads);
    return openblas_get_num_threads();
}

int blas_threads() { return openblas_get_num_threads(); }

}  // namespace minsharp
