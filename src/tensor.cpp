#include "minsharp/tensor.hpp"

#include <cblas.h>

namespace minsharp {

namespace {
CBLAS_TRANSPOSE to_cblas(Trans t) { return t == Trans::No ? CblasNoTrans : CblasTrans; }
}  // namespace

template <>
void gemm<float>(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, float alpha,
                 const float* a, std::size_t lda, const float* b, std::size_t ldb, float beta,
                 float* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_sgemm(CblasRowMajor, to_cblas(ta), to_cblas(tb), static_cast<blasint>(m),
                static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
                static_cast<blasint>(ldc));
}

template <>
void gemm<double>(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k,
                  double alpha, const double* a, std::size_t lda, const double* b,
                  std::size_t ldb, double beta, double* c, std::size_t ldc) {
    if (m == 0 || n == 0) return;
    cblas_dgemm(CblasRowMajor, to_cblas(ta), to_cblas(tb), static_cast<blasint>(m),
                static_cast<blasint>(n), static_cast<blasint>(k), alpha, a,
                static_cast<blasint>(lda), b, static_cast<blasint>(ldb), beta, c,
                static_cast<blasint>(ldc));
}

int set_blas_threads(int threads) {
    if (threads > 0) openblas_set_num_threads(threads);
    return openblas_get_num_threads();
}

int blas_threads() { return openblas_get_num_threads(); }

}  // namespace minsharp
