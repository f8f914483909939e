#define BOOST_TEST_MODULE tensor
#include <boost/test/unit_test.hpp>

#include <cmath>

#include "minsharp/core/parallel.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/core/tensor.hpp"

using namespace minsharp;

namespace {

template <class T>
void check_gemm_against_naive(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k,
                              Rng& rng, bool parallel = false) {
    std::vector<T> a(m * k), b(k * n), c(m * n), expected(m * n), magnitude(m * n);
    for (auto& v : a) v = T(rng.normal());
    for (auto& v : b) v = T(rng.normal());
    for (auto& v : c) v = T(rng.normal());
    const T alpha = T(0.7), beta = T(-0.3);
    for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (std::size_t p = 0; p < k; ++p) {
                const T av = ta == Trans::No ? a[i * k + p] : a[p * m + i];
                const T bv = tb == Trans::No ? b[p * n + j] : b[j * k + p];
                s += double(av) * double(bv);
                mag += std::abs(double(av) * double(bv));
            }
            expected[i * n + j] = T(alpha * s + beta * double(c[i * n + j]));
            magnitude[i * n + j] = T(alpha * mag + std::abs(beta * double(c[i * n + j])));
        }
    if (parallel)
        parallel_gemm<T>(ta, tb, m, n, k, alpha, a.data(), b.data(), beta, c.data());
    else
        gemm<T>(ta, tb, m, n, k, alpha, a.data(), b.data(), beta, c.data());
    // Rounding error is bounded by the size of the summed products, not of the result.
    const double eps = std::numeric_limits<T>::epsilon() * 8;
    for (std::size_t i = 0; i < m * n; ++i)
        BOOST_TEST(std::abs(double(c[i]) - double(expected[i])) <= eps * double(magnitude[i]));
}

}  // namespace

BOOST_AUTO_TEST_CASE(gemm_matches_naive_loop_for_all_transposes) {
    Rng rng(1);
    for (Trans ta : {Trans::No, Trans::Yes})
        for (Trans tb : {Trans::No, Trans::Yes})
            for (int trial = 0; trial < 4; ++trial) {
                const auto m = 1 + rng.below(40), n = 1 + rng.below(40), k = 1 + rng.below(70);
                check_gemm_against_naive<float>(ta, tb, m, n, k, rng);
                check_gemm_against_naive<double>(ta, tb, m, n, k, rng);
            }
}

// Big enough to be split over two workers: by rows (m ≥ n) and by columns (n > m), with
// split points that are not multiples of 16; also from inside a parallel part, where it
// must run in place.
BOOST_AUTO_TEST_CASE(parallel_gemm_matches_naive_loop_when_split) {
    set_threads(2);
    Rng rng(2);
    for (Trans ta : {Trans::No, Trans::Yes})
        for (Trans tb : {Trans::No, Trans::Yes}) {
            check_gemm_against_naive<float>(ta, tb, 151, 90, 100, rng, true);
            check_gemm_against_naive<double>(ta, tb, 70, 163, 100, rng, true);
        }
    // Nested: each part multiplies its own matrices (Boost.Test is not thread-safe, so the
    // checks run afterwards on this thread).
    const std::size_t m = 120, n = 99, k = 100;
    std::vector<std::vector<float>> a(2), b(2), nested(2), serial(2);
    for (std::size_t p = 0; p < 2; ++p) {
        a[p].resize(m * k);
        b[p].resize(n * k);  // op(B) = Bᵀ: B is n × k
        for (auto* v : {&a[p], &b[p]})
            for (auto& x : *v) x = float(rng.normal());
        nested[p].assign(m * n, 0.f);
        serial[p].assign(m * n, 0.f);
        gemm<float>(Trans::No, Trans::Yes, m, n, k, 1.f, a[p].data(), b[p].data(), 0.f,
                    serial[p].data());
    }
    parallel_parts(2, [&](std::size_t p) {
        parallel_gemm<float>(Trans::No, Trans::Yes, m, n, k, 1.f, a[p].data(), b[p].data(), 0.f,
                             nested[p].data());
    });
    // Not bitwise: the serial call may be split over OpenBLAS's own threads, and on some
    // CPUs (seen on AMD Zen 3) a different split sums in a different order. A product of
    // k = 100 unit normals has |c| ~ 10; float rounding moves it by ~1e-5 at most.
    for (std::size_t p = 0; p < 2; ++p)
        for (std::size_t i = 0; i < m * n; ++i)
            BOOST_TEST_REQUIRE(std::abs(nested[p][i] - serial[p][i]) <=
                               1e-4f * (1.f + std::abs(serial[p][i])));
    set_threads(0);
}

BOOST_AUTO_TEST_CASE(gemm_respects_leading_dimensions) {
    // A 2×2 block inside a 3×4 matrix times identity.
    std::vector<double> a{1, 2, 0, 0, 3, 4, 0, 0, 9, 9, 9, 9}, id{1, 0, 0, 1}, c(4, 0.0);
    gemm<double>(Trans::No, Trans::No, 2, 2, 2, 1.0, a.data(), 4, id.data(), 2, 0.0, c.data(), 2);
    BOOST_TEST(c == (std::vector<double>{1, 2, 3, 4}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(check_shape_reports_expected_and_found) {
    Tensor2<float> t = Tensor2<float>::from_shape({2, 3});
    BOOST_CHECK_NO_THROW(check_shape(t, std::array<std::size_t, 2>{2, 3}, "t"));
    BOOST_CHECK_EXCEPTION(check_shape(t, std::array<std::size_t, 2>{3, 2}, "weights"), ShapeError,
                          [](const ShapeError& e) {
                              return std::string(e.what()) ==
                                     "weights: expected shape (3, 2), found (2, 3)";
                          });
}

BOOST_AUTO_TEST_CASE(rng_is_seeded_and_well_spread) {
    Rng a(42), b(42), c(43);
    BOOST_TEST(a.next() == b.next());
    BOOST_TEST(a.next() != c.next());
    Rng r(7);
    double mean = 0, var = 0;
    const int n = 100000;
    for (int i = 0; i < n; ++i) {
        const double x = r.normal();
        mean += x / n;
        var += x * x / n;
    }
    BOOST_TEST(std::abs(mean) < 0.02);
    BOOST_TEST(std::abs(var - 1) < 0.02);
    auto p = random_permutation(10, r);
    std::sort(p.begin(), p.end());
    for (std::size_t i = 0; i < 10; ++i) BOOST_TEST(p[i] == i);
}
