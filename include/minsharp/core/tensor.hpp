// Tensor aliases over xtensor, shape checks and the one GEMM wrapper every matrix
// product in minsharp goes through.
#pragma once

#include <xtensor/xtensor.hpp>

#include <array>
#include <cstddef>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// Base of every error minsharp throws; apps print what() as one line.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A tensor has the wrong shape; the message says expected vs found.
class ShapeError : public Error {
public:
    using Error::Error;
};

template <class T, std::size_t N>
using Tensor = xt::xtensor<T, N>;
template <class T>
using Tensor1 = Tensor<T, 1>;
template <class T>
using Tensor2 = Tensor<T, 2>;
template <class T>
using Tensor4 = Tensor<T, 4>;

using Shape = std::vector<std::size_t>;

/// "(2, 3, 4)" — for error messages.
template <class S>
std::string shape_str(const S& shape) {
    std::ostringstream out;
    out << '(';
    bool first = true;
    for (auto d : shape) {
        out << (first ? "" : ", ") << d;
        first = false;
    }
    out << ')';
    return out.str();
}

/// Throws ShapeError "<what>: expected shape (..), found (..)" unless shapes match.
template <class E, class S>
void check_shape(const E& tensor, const S& expected, std::string_view what) {
    const auto& found = tensor.shape();
    bool same = found.size() == expected.size();
    for (std::size_t i = 0; same && i < found.size(); ++i)
        same = found[i] == static_cast<std::size_t>(expected[i]);
    if (!same)
        throw ShapeError(std::string(what) + ": expected shape " + shape_str(expected) +
                         ", found " + shape_str(found));
}

/// Resize only when the shape differs, so steady-state loops never reallocate.
template <class T, std::size_t N>
void ensure_shape(Tensor<T, N>& t, const std::array<std::size_t, N>& shape) {
    bool same = true;
    for (std::size_t i = 0; i < N; ++i) same = same && t.shape()[i] == shape[i];
    if (!same) t.resize(shape);
}

enum class Trans { No, Yes };

/// Row-major C = alpha * op(A) * op(B) + beta * C, with op(A) m×k and op(B) k×n.
/// lda/ldb/ldc are row strides of the stored (untransposed) matrices.
/// Float and double go to cblas_sgemm / cblas_dgemm.
template <class T>
void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc);

/// Convenience over contiguous row-major matrices: lda etc. are derived from the shapes.
template <class T>
void gemm(Trans trans_a, Trans trans_b, std::size_t m, std::size_t n, std::size_t k, T alpha,
          const T* a, const T* b, T beta, T* c) {
    gemm(trans_a, trans_b, m, n, k, alpha, a, trans_a == Trans::No ? k : m, b,
         trans_b == Trans::No ? n : k, beta, c, n);
}

/// Threads BLAS may use (0 = leave OpenBLAS's choice). Returns the count in force.
int set_blas_threads(int threads);
int blas_threads();

}  // namespace minsharp
