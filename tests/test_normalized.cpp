#define BOOST_TEST_MODULE normalized
#include <boost/test/unit_test.hpp>

#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/normalized.hpp"
#include "minsharp/core/tensor.hpp"

#include <cmath>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

double relative_difference(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), std::abs(b)); }

Tensor2<double> random_positive(Rng& rng, std::size_t rows, std::size_t cols, double spread) {
    Tensor2<double> t({rows, cols});
    for (auto& x : t) x = std::exp(spread * rng.normal());
    return t;
}

double objective(const Tensor2<double>& h, const Tensor2<double>& w2, const std::vector<double>& x,
                 const std::vector<double>& y) {
    double f = 0.0;
    for (std::size_t i = 0; i < h.shape()[0]; ++i)
        for (std::size_t j = 0; j < h.shape()[1]; ++j) {
            const double e = std::exp(x[i] + y[j]);
            f += h(i, j) * e + w2(i, j) / e;
        }
    return f;
}

/// The slow reference: gradient descent in (log σ, log τ) with Armijo backtracking, run until
/// the gradient is negligible. Nothing in common with the solver but the objective.
double reference_descent(const Tensor2<double>& h, const Tensor2<double>& w2) {
    const std::size_t m = h.shape()[0], n = h.shape()[1];
    std::vector<double> x(m, 0.0), y(n, 0.0);
    double f = objective(h, w2, x, y), step = 1e-2;
    for (int it = 0; it < 1000000; ++it) {
        std::vector<double> gx(m, 0.0), gy(n, 0.0);
        double norm2 = 0.0;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                const double e = std::exp(x[i] + y[j]);
                const double d = h(i, j) * e - w2(i, j) / e;
                gx[i] += d;
                gy[j] += d;
            }
        for (double g : gx) norm2 += g * g;
        for (double g : gy) norm2 += g * g;
        // Value error ~ ‖g‖²/curvature: negligible here; tighter is below the roundoff of f.
        if (std::sqrt(norm2) < 1e-8 * f) break;
        for (;;) {
            std::vector<double> xn = x, yn = y;
            for (std::size_t i = 0; i < m; ++i) xn[i] -= step * gx[i];
            for (std::size_t j = 0; j < n; ++j) yn[j] -= step * gy[j];
            const double fn = objective(h, w2, xn, yn);
            if (fn <= f - 0.5 * step * norm2) {
                x = xn;
                y = yn;
                f = fn;
                step *= 1.2;
                break;
            }
            step *= 0.5;
            if (step < 1e-300) return f;
        }
    }
    return f;
}

Tensor2<double> without_row(const Tensor2<double>& t, std::size_t row) {
    Tensor2<double> out({t.shape()[0] - 1, t.shape()[1]});
    for (std::size_t i = 0, k = 0; i < t.shape()[0]; ++i) {
        if (i == row) continue;
        for (std::size_t j = 0; j < t.shape()[1]; ++j) out(k, j) = t(i, j);
        ++k;
    }
    return out;
}

Tensor2<double> without_column(const Tensor2<double>& t, std::size_t col) {
    Tensor2<double> out({t.shape()[0], t.shape()[1] - 1});
    for (std::size_t i = 0; i < t.shape()[0]; ++i)
        for (std::size_t j = 0, k = 0; j < t.shape()[1]; ++j)
            if (j != col) out(i, k++) = t(i, j);
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(alternating_matches_reference_descent) {
    Rng rng(31);
    for (int trial = 0; trial < 3; ++trial) {
        const Tensor2<double> h = random_positive(rng, 5, 7, 1.0);
        const Tensor2<double> w2 = random_positive(rng, 5, 7, 1.0);
        const NormalizedSharpness r = normalized_sharpness_layer(h, w2);
        BOOST_TEST(r.converged);
        BOOST_TEST(r.attained);
        BOOST_TEST(r.note.empty());
        BOOST_TEST(r.relative_change <= 1e-12);
        const double reference = reference_descent(h, w2);
        BOOST_TEST(relative_difference(r.value, reference) < 1e-9);
        // The starting point σ = τ = 1 is not optimal, so the solver really moved.
        BOOST_TEST(r.value < objective(h, w2, std::vector<double>(5, 0.0), std::vector<double>(7, 0.0)));
    }
}

BOOST_AUTO_TEST_CASE(rank_one_case_by_hand) {
    // H_ij = a_i b_j, W2_ij = c_i d_j: f = (Σ a σ)(Σ b τ) + (Σ c/σ)(Σ d/τ) ≥ 2·sqrt of the
    // product, and by Cauchy–Schwarz min_σ (Σ a σ)(Σ c/σ) = (Σ sqrt(a c))², so
    // min f = 2 (Σ_i sqrt(a_i c_i)) (Σ_j sqrt(b_j d_j)).
    // a = (1, 4), c = (1, 1), b = (1, 9, 4), d = (1, 1, 1): 2·(1 + 2)·(1 + 3 + 2) = 36.
    const std::vector<double> a = {1, 4}, c = {1, 1}, b = {1, 9, 4}, d = {1, 1, 1};
    Tensor2<double> h({2, 3}), w2({2, 3});
    for (std::size_t i = 0; i < 2; ++i)
        for (std::size_t j = 0; j < 3; ++j) {
            h(i, j) = a[i] * b[j];
            w2(i, j) = c[i] * d[j];
        }
    BOOST_TEST(normalized_sharpness_layer(h, w2).value == 36.0, boost::test_tools::tolerance(1e-12));
    // 1×1: min of hστ + w/(στ) is 2·sqrt(h w).
    BOOST_TEST(normalized_sharpness_layer(Tensor2<double>({{2.0}}), Tensor2<double>({{8.0}})).value == 8.0,
               boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(invariant_under_nodewise_scaling) {
    // W_ij → W_ij·a_i/b_j makes H_ij → H_ij·b_j²/a_i² and W2_ij → W2_ij·a_i²/b_j²; the
    // substitution σ_i → σ_i a_i², τ_j → τ_j / b_j² maps the objectives onto each other.
    Rng rng(32);
    for (int trial = 0; trial < 5; ++trial) {
        const std::size_t m = 30, n = 45;
        Tensor2<double> h = random_positive(rng, m, n, 2.0), w2 = random_positive(rng, m, n, 2.0);
        std::vector<double> a(m), b(n);
        for (double& x : a) x = std::exp(rng.uniform(std::log(1e-3), std::log(1e3)));
        for (double& x : b) x = std::exp(rng.uniform(std::log(1e-3), std::log(1e3)));
        Tensor2<double> h2 = h, w22 = w2;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                const double r = a[i] / b[j];
                h2(i, j) /= r * r;
                w22(i, j) *= r * r;
            }
        const NormalizedSharpness before = normalized_sharpness_layer(h, w2);
        const NormalizedSharpness after = normalized_sharpness_layer(h2, w22);
        BOOST_TEST(before.converged);
        BOOST_TEST(after.converged);
        BOOST_TEST(relative_difference(before.value, after.value) < 1e-9);
    }
}

BOOST_AUTO_TEST_CASE(reduce_kernel_sums_kernel_positions) {
    Tensor4<double> t({2, 3, 2, 2});
    for (std::size_t e = 0; e < t.size(); ++e) t.data()[e] = static_cast<double>(e);
    const Tensor2<double> r = reduce_kernel(t);
    BOOST_TEST(r.shape()[0] == 2u);
    BOOST_TEST(r.shape()[1] == 3u);
    // Entry (o, i) sums the four consecutive values starting at 4·(3o + i): 16·(3o+i) + 6.
    for (std::size_t o = 0; o < 2; ++o)
        for (std::size_t i = 0; i < 3; ++i) BOOST_TEST(r(o, i) == 16.0 * (3 * o + i) + 6.0);
}

BOOST_AUTO_TEST_CASE(zero_row_of_h_is_dropped) {
    // σ_i → ∞ removes a row whose H is all zero at no cost: the infimum is the value of the
    // layer without that row.
    Rng rng(33);
    Tensor2<double> h = random_positive(rng, 6, 8, 1.0);
    const Tensor2<double> w2 = random_positive(rng, 6, 8, 1.0);
    for (std::size_t j = 0; j < 8; ++j) h(3, j) = 0.0;
    const NormalizedSharpness r = normalized_sharpness_layer(h, w2);
    BOOST_TEST(!r.attained);
    BOOST_TEST(!r.note.empty());
    BOOST_TEST(std::isfinite(r.value));
    const double expected = normalized_sharpness_layer(without_row(h, 3), without_row(w2, 3)).value;
    BOOST_TEST(relative_difference(r.value, expected) < 1e-10);
}

BOOST_AUTO_TEST_CASE(zero_column_of_w2_is_dropped) {
    Rng rng(34);
    const Tensor2<double> h = random_positive(rng, 6, 8, 1.0);
    Tensor2<double> w2 = random_positive(rng, 6, 8, 1.0);
    for (std::size_t i = 0; i < 6; ++i) w2(i, 5) = 0.0;
    const NormalizedSharpness r = normalized_sharpness_layer(h, w2);
    BOOST_TEST(!r.attained);
    const double expected = normalized_sharpness_layer(without_column(h, 5), without_column(w2, 5)).value;
    BOOST_TEST(relative_difference(r.value, expected) < 1e-10);
}

BOOST_AUTO_TEST_CASE(one_way_coupling_between_balanced_blocks_vanishes) {
    // Rows/columns 0 and 1 each balance on their own (H_ii, W2_ii > 0); H_01 > 0 with
    // W2_01 = 0 couples them one way only. σ_0 τ_1 → 0 along σ = (1, 1/s), τ = (1, s), s → 0,
    // keeps the diagonal terms and kills H_01: infimum 2·sqrt(2·8) + 2·sqrt(1·9) = 14.
    // No row or column is all zero here, so this needs the strongly-connected-component test.
    const Tensor2<double> h = {{2.0, 5.0}, {0.0, 1.0}};
    const Tensor2<double> w2 = {{8.0, 0.0}, {0.0, 9.0}};
    const NormalizedSharpness r = normalized_sharpness_layer(h, w2);
    BOOST_TEST(!r.attained);
    BOOST_TEST(r.value == 14.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(all_zero_layer_gives_zero) {
    const Tensor2<double> zero({3, 4}, 0.0);
    const NormalizedSharpness r = normalized_sharpness_layer(zero, zero);
    BOOST_TEST(r.value == 0.0);
    BOOST_TEST(r.attained);
    BOOST_TEST(r.converged);
}

BOOST_AUTO_TEST_CASE(bad_input_is_rejected) {
    const Tensor2<double> ok({2, 3}, 1.0);
    BOOST_CHECK_THROW(normalized_sharpness_layer(ok, Tensor2<double>({3, 2}, 1.0)), ShapeError);
    Tensor2<double> bad = ok;
    bad(1, 2) = -1.0;
    BOOST_CHECK_THROW(normalized_sharpness_layer(bad, ok), Error);
    bad(1, 2) = std::nan("");
    BOOST_CHECK_THROW(normalized_sharpness_layer(ok, bad), Error);
    BOOST_CHECK_THROW(normalized_sharpness_layer(ok, ok, -1.0), Error);
    BOOST_CHECK_THROW(normalized_sharpness_layer(ok, ok, 1e-12, 0), Error);
}
