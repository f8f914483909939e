#define BOOST_TEST_MODULE spectral
#include <boost/test/unit_test.hpp>

#include "minsharp/core/parallel.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/spectral.hpp"
#include "minsharp/core/tensor.hpp"

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xtensor.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

// A = Q diag(λ) Qᵀ with Q the eigenvectors of a random symmetric matrix: a dense symmetric
// matrix whose spectrum is known exactly.
struct KnownSpectrum {
    std::size_t n;
    std::vector<double> lambda;
    xt::xtensor<double, 2> q;  // column i: the eigenvector of lambda[i]
    std::vector<double> a;     // row-major n × n

    KnownSpectrum(std::vector<double> eigenvalues, std::uint64_t seed)
        : n(eigenvalues.size()), lambda(std::move(eigenvalues)) {
        Rng rng(seed);
        xt::xtensor<double, 2> g = xt::zeros<double>({n, n});
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j <= i; ++j) g(i, j) = g(j, i) = rng.normal();
        q = std::get<1>(xt::linalg::eigh(g));
        a.assign(n * n, 0.0);
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                double s = 0.0;
                for (std::size_t l = 0; l < n; ++l) s += q(i, l) * lambda[l] * q(j, l);
                a[i * n + j] = s;
            }
    }

    HessianVectorProduct product() const {
        return [this](std::span<const double> v, std::span<double> hv) {
            gemm(Trans::No, Trans::No, n, 1, n, 1.0, a.data(), v.data(), 0.0, hv.data());
        };
    }

    double trace() const { return std::accumulate(lambda.begin(), lambda.end(), 0.0); }

    std::vector<double> sorted_descending() const {
        std::vector<double> s = lambda;
        std::sort(s.rbegin(), s.rend());
        return s;
    }
};

// n eigenvalues: `top` first, the rest uniform in [lo, hi].
std::vector<double> spectrum(std::vector<double> top, std::size_t n, double lo, double hi,
                             std::uint64_t seed) {
    Rng rng(seed);
    while (top.size() < n) top.push_back(rng.uniform(lo, hi));
    return top;
}

HessianVectorProduct diagonal_product(const std::vector<double>& d) {
    return [&d](std::span<const double> v, std::span<double> hv) {
        for (std::size_t i = 0; i < d.size(); ++i) hv[i] = d[i] * v[i];
    };
}

double weighted_moment(const SpectralDensity& d, std::size_t probe, int power) {
    double s = 0.0;
    for (std::size_t j = 0; j < d.nodes[probe].size(); ++j)
        s += d.weights[probe][j] * std::pow(d.nodes[probe][j], power);
    return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(top_five_of_a_positive_definite_matrix) {
    const KnownSpectrum m(spectrum({10, 9, 8, 7, 6}, 300, 0.01, 1.0, 1), 2);
    const EigenResult r = top_eigenvalues(m.product(), m.n, 5, 60, 7, {EigenOrder::Largest, true});
    BOOST_TEST_REQUIRE(r.values.size() == 5u);
    BOOST_TEST(r.iterations == 60u);
    BOOST_TEST(!r.invariant_subspace);
    for (std::size_t i = 0; i < 5; ++i) {
        BOOST_TEST(std::abs(r.values[i] - (10.0 - double(i))) < 1e-8, "value " << i << ": " << r.values[i]);
        BOOST_TEST(r.residuals[i] < 1e-6, "residual " << i << ": " << r.residuals[i]);
        // The Ritz vector is the eigenvector (up to sign).
        double overlap = 0.0;
        for (std::size_t j = 0; j < m.n; ++j) overlap += m.q(j, i) * r.vectors[i][j];
        BOOST_TEST(std::abs(std::abs(overlap) - 1.0) < 1e-8);
    }
}

BOOST_AUTO_TEST_CASE(indefinite_matrix_by_value_and_by_magnitude) {
    const KnownSpectrum m(spectrum({6, 5, 4, 3, 2.5, -8, -7.5}, 250, -1.0, 1.0, 3), 4);
    const EigenResult largest = top_eigenvalues(m.product(), m.n, 5, 80, 1);
    const std::vector<double> want = m.sorted_descending();
    for (std::size_t i = 0; i < 5; ++i) {
        BOOST_TEST(std::abs(largest.values[i] - want[i]) < 1e-8, i << ": " << largest.values[i]);
        BOOST_TEST(largest.residuals[i] < 1e-6);
    }
    BOOST_TEST(largest.vectors.empty());  // not asked for
    const EigenResult dominant =
        top_eigenvalues(m.product(), m.n, 3, 80, 1, {EigenOrder::Magnitude, false});
    const double want_dominant[] = {-8, -7.5, 6};
    for (std::size_t i = 0; i < 3; ++i) {
        BOOST_TEST(std::abs(dominant.values[i] - want_dominant[i]) < 1e-8, i << ": " << dominant.values[i]);
        BOOST_TEST(dominant.residuals[i] < 1e-6);
    }
}

BOOST_AUTO_TEST_CASE(repeated_top_eigenvalue_lies_in_its_eigenspace) {
    const KnownSpectrum m(spectrum({5, 5, 3}, 200, 0.0, 1.0, 5), 6);
    const EigenResult r = top_eigenvalues(m.product(), m.n, 2, 50, 3, {EigenOrder::Largest, true});
    BOOST_TEST(std::abs(r.values[0] - 5.0) < 1e-8);
    BOOST_TEST(r.residuals[0] < 1e-6);
    double in_eigenspace = 0.0;  // squared length of the projection onto span{q₀, q₁}
    for (std::size_t e = 0; e < 2; ++e) {
        double c = 0.0;
        for (std::size_t j = 0; j < m.n; ++j) c += m.q(j, e) * r.vectors[0][j];
        in_eigenspace += c * c;
    }
    BOOST_TEST(std::abs(in_eigenspace - 1.0) < 1e-10);
    // In exact arithmetic one start vector sees the double eigenvalue once; in floating point
    // rounding seeds the other copy and Lanczos may find it later. Either way the second
    // value is a true eigenvalue (5 again or 3) with a small residual.
    BOOST_TEST((std::abs(r.values[1] - 5.0) < 1e-8 || std::abs(r.values[1] - 3.0) < 1e-8), r.values[1]);
    BOOST_TEST(r.residuals[1] < 1e-6);
}

BOOST_AUTO_TEST_CASE(clustered_top_eigenvalues_are_resolved) {
    const KnownSpectrum m(spectrum({5, 5 - 1e-4, 4}, 200, 0.0, 1.0, 7), 8);
    const EigenResult r = top_eigenvalues(m.product(), m.n, 3, 100, 2);
    BOOST_TEST(std::abs(r.values[0] - 5.0) < 1e-8, r.values[0]);
    BOOST_TEST(std::abs(r.values[1] - (5 - 1e-4)) < 1e-8, r.values[1]);
    BOOST_TEST(std::abs(r.values[2] - 4.0) < 1e-8, r.values[2]);
    for (double res : r.residuals) BOOST_TEST(res < 1e-6);
}

BOOST_AUTO_TEST_CASE(invariant_krylov_space_stops_early_with_exact_values) {
    std::vector<double> d(50);
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = i % 3 == 0 ? 4.0 : i % 3 == 1 ? -1.0 : 2.0;
    const EigenResult r = top_eigenvalues(diagonal_product(d), d.size(), 5, 20, 9);
    BOOST_TEST(r.invariant_subspace);
    BOOST_TEST(r.iterations == 3u);
    BOOST_TEST_REQUIRE(r.values.size() == 3u);  // only three distinct eigenvalues exist
    const double want[] = {4.0, 2.0, -1.0};
    for (std::size_t i = 0; i < 3; ++i) {
        BOOST_TEST(std::abs(r.values[i] - want[i]) < 1e-12);
        BOOST_TEST(r.residuals[i] < 1e-12);
    }
}

// The residuals come from the Lanczos relation, not from a further product: they must be
// the residuals of the returned vectors, also far from convergence.
BOOST_AUTO_TEST_CASE(residuals_equal_explicit_norm_of_hu_minus_theta_u) {
    const KnownSpectrum m(spectrum({4, 3.9, 3.5}, 300, -2.0, 2.0, 13), 14);
    const EigenResult r = top_eigenvalues(m.product(), m.n, 4, 8, 3, {EigenOrder::Largest, true});
    std::vector<double> hu(m.n);
    for (std::size_t i = 0; i < r.values.size(); ++i) {
        m.product()(r.vectors[i], hu);
        double sq = 0.0;
        for (std::size_t j = 0; j < m.n; ++j) {
            const double e = hu[j] - r.values[i] * r.vectors[i][j];
            sq += e * e;
        }
        const double explicit_residual = std::sqrt(sq);
        BOOST_TEST(explicit_residual > 1e-3, "8 steps must leave pair " << i << " unconverged");
        BOOST_TEST(std::abs(r.residuals[i] - explicit_residual) < 1e-10 * explicit_residual + 1e-13,
                   i << ": " << r.residuals[i] << " vs " << explicit_residual);
    }
}

// Vectors longer than one orthogonalisation block are split over the workers; the sums
// keep their order, so any thread count gives the same bits.
BOOST_AUTO_TEST_CASE(long_vectors_give_the_same_bits_for_any_thread_count) {
    std::vector<double> d(200'000);
    Rng rng(21);
    for (auto& x : d) x = rng.uniform(-1.0, 3.0);
    d[12345] = 5.0;
    set_threads(1);
    const EigenResult one = top_eigenvalues(diagonal_product(d), d.size(), 2, 12, 4);
    set_threads(2);
    const EigenResult two = top_eigenvalues(diagonal_product(d), d.size(), 2, 12, 4);
    set_threads(0);
    BOOST_TEST(one.values == two.values);
    BOOST_TEST(one.residuals == two.residuals);
    BOOST_TEST(std::abs(one.values[0] - 5.0) < 1e-6, one.values[0]);
}

BOOST_AUTO_TEST_CASE(same_seed_same_bits_other_seed_other_start) {
    const KnownSpectrum m(spectrum({3, 2}, 100, -1.0, 1.0, 11), 12);
    const auto a = top_eigenvalues(m.product(), m.n, 3, 10, 5, {EigenOrder::Largest, true});
    const auto b = top_eigenvalues(m.product(), m.n, 3, 10, 5, {EigenOrder::Largest, true});
    const auto c = top_eigenvalues(m.product(), m.n, 3, 10, 6, {EigenOrder::Largest, true});
    BOOST_TEST(a.values == b.values);
    BOOST_TEST(a.residuals == b.residuals);
    BOOST_TEST(a.vectors == b.vectors);
    BOOST_TEST(a.values != c.values);  // 10 steps do not converge the third value exactly
    const auto ha = hutchinson_trace(m.product(), m.n, 30, 4);
    const auto hb = hutchinson_trace(m.product(), m.n, 30, 4);
    BOOST_TEST(ha.value == hb.value);
    BOOST_TEST(ha.standard_error == hb.standard_error);
    const auto da = spectral_density(m.product(), m.n, 3, 8, 4);
    const auto db = spectral_density(m.product(), m.n, 3, 8, 4);
    BOOST_TEST(da.nodes == db.nodes);
    BOOST_TEST(da.weights == db.weights);
    BOOST_TEST(da.density == db.density);
}

BOOST_AUTO_TEST_CASE(hutchinson_is_unbiased_and_its_error_shrinks_like_one_over_root_n) {
    const KnownSpectrum m(spectrum({}, 120, -2.0, 3.0, 13), 14);
    // Var(zᵀAz) for Rademacher z: 2 Σ_{i≠j} A_ij².
    double off_diagonal = 0.0;
    for (std::size_t i = 0; i < m.n; ++i)
        for (std::size_t j = 0; j < m.n; ++j)
            if (i != j) off_diagonal += m.a[i * m.n + j] * m.a[i * m.n + j];
    const double sd = std::sqrt(2.0 * off_diagonal);
    const TraceEstimate few = hutchinson_trace(m.product(), m.n, 100, 1);
    const TraceEstimate many = hutchinson_trace(m.product(), m.n, 1600, 2);
    BOOST_TEST(many.samples == 1600u);
    for (const auto& e : {few, many}) {
        BOOST_TEST(std::abs(e.value - m.trace()) < 4 * e.standard_error,
                   e.value << " vs " << m.trace() << " +- " << e.standard_error);
        // The reported standard error estimates the true one, sd/√samples.
        const double expected = sd / std::sqrt(double(e.samples));
        BOOST_TEST(std::abs(e.standard_error / expected - 1.0) < 0.3, e.standard_error << " vs " << expected);
    }
    const double ratio = few.standard_error / many.standard_error;  // √16 = 4
    BOOST_TEST((ratio > 3.0 && ratio < 5.3), ratio);
}

// The classic error in stochastic Lanczos quadrature is weighting the nodes by an unsquared
// or wrong component of T's eigenvectors. On a diagonal matrix with three distinct
// eigenvalues, a Rademacher probe has squared components 1/n each, so the exact quadrature
// puts mass (multiplicity / n) on each eigenvalue: 0.5, 0.3, 0.2 here.
BOOST_AUTO_TEST_CASE(quadrature_weights_are_the_eigenvalue_counting_measure) {
    std::vector<double> d(100);
    for (std::size_t i = 0; i < d.size(); ++i) d[i] = i < 50 ? 1.0 : i < 80 ? 2.0 : 5.0;
    const SpectralDensity s = spectral_density(diagonal_product(d), d.size(), 4, 10, 3);
    BOOST_TEST_REQUIRE(s.nodes.size() == 4u);
    const double nodes[] = {1, 2, 5}, mass[] = {0.5, 0.3, 0.2};
    for (std::size_t p = 0; p < 4; ++p) {
        BOOST_TEST(s.steps[p] == 3u);  // the Krylov space is invariant after 3 steps
        BOOST_TEST_REQUIRE(s.nodes[p].size() == 3u);
        for (std::size_t j = 0; j < 3; ++j) {
            BOOST_TEST(std::abs(s.nodes[p][j] - nodes[j]) < 1e-12);
            BOOST_TEST(std::abs(s.weights[p][j] - mass[j]) < 1e-12, p << "," << j << ": " << s.weights[p][j]);
        }
    }
}

// The same with clusters instead of exact multiplicities: every eigenvalue distinct, so the
// run does not stop early and the weights of the nodes near each cluster must add up.
BOOST_AUTO_TEST_CASE(quadrature_mass_near_each_cluster_is_its_share) {
    std::vector<double> d(300);
    Rng rng(21);
    for (std::size_t i = 0; i < d.size(); ++i)
        d[i] = (i < 60 ? -1.0 : i < 240 ? 2.0 : 6.0) + rng.uniform(-0.05, 0.05);
    const SpectralDensity s = spectral_density(diagonal_product(d), d.size(), 5, 20, 8);
    const double centre[] = {-1, 2, 6}, share[] = {0.2, 0.6, 0.2};
    for (std::size_t p = 0; p < s.nodes.size(); ++p) {
        BOOST_TEST(s.steps[p] == 20u);
        double total = 0.0, near[3] = {0, 0, 0};
        for (std::size_t j = 0; j < s.nodes[p].size(); ++j) {
            total += s.weights[p][j];
            for (int c = 0; c < 3; ++c)
                if (std::abs(s.nodes[p][j] - centre[c]) < 0.1) near[c] += s.weights[p][j];
        }
        BOOST_TEST(std::abs(total - 1.0) < 1e-12);
        for (int c = 0; c < 3; ++c)
            BOOST_TEST(std::abs(near[c] - share[c]) < 1e-9, p << "," << c << ": " << near[c]);
    }
    // The broadened density integrates to 1 and peaks at the largest cluster.
    const double step = s.grid[1] - s.grid[0];
    double integral = 0.0;
    for (double v : s.density) integral += v * step;
    BOOST_TEST(std::abs(integral - 1.0) < 1e-3, integral);
    const auto peak = std::max_element(s.density.begin(), s.density.end()) - s.density.begin();
    BOOST_TEST(std::abs(s.grid[peak] - 2.0) < 0.2, s.grid[peak]);
}

// Gauss quadrature with m nodes is exact for polynomials of degree < 2m: per probe,
// Σ τ_j θ_j^p = vᵀAᵖv; averaged over probes that estimates tr(Aᵖ)/n.
BOOST_AUTO_TEST_CASE(quadrature_moments_match_the_traces_of_powers) {
    const KnownSpectrum m(spectrum({4, -3}, 200, -1.0, 2.0, 17), 18);
    const std::size_t probes = 40, steps = 12;
    const SpectralDensity s = spectral_density(m.product(), m.n, probes, steps, 5);
    // The first probe, drawn as the implementation draws it, gives the exact moments.
    Rng rng(5);
    std::vector<double> v(m.n), av(m.n), a2v(m.n);
    for (auto& x : v) x = rng.rademacher() / std::sqrt(double(m.n));
    m.product()(v, av);
    m.product()(av, a2v);
    const double v_av = std::inner_product(v.begin(), v.end(), av.begin(), 0.0);
    const double v_a2v = std::inner_product(v.begin(), v.end(), a2v.begin(), 0.0);
    BOOST_TEST(std::abs(weighted_moment(s, 0, 0) - 1.0) < 1e-12);
    BOOST_TEST(std::abs(weighted_moment(s, 0, 1) - v_av) < 1e-12);
    BOOST_TEST(std::abs(weighted_moment(s, 0, 2) - v_a2v) < 1e-12);
    // Over the probes: within 4 standard errors of tr(A)/n and tr(A²)/n.
    double tr2 = 0.0;
    for (double l : m.lambda) tr2 += l * l;
    const double want[] = {m.trace() / double(m.n), tr2 / double(m.n)};
    for (int power = 1; power <= 2; ++power) {
        double mean = 0.0, sq = 0.0;
        for (std::size_t p = 0; p < probes; ++p) {
            const double x = weighted_moment(s, p, power);
            mean += x / double(probes);
            sq += x * x / double(probes);
        }
        const double se = std::sqrt((sq - mean * mean) / double(probes - 1));
        BOOST_TEST(std::abs(mean - want[power - 1]) < 4 * se + 1e-12,
                   "moment " << power << ": " << mean << " vs " << want[power - 1] << " +- " << se);
    }
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_refused) {
    const std::vector<double> d{1, 2, 3};
    const auto hvp = diagonal_product(d);
    BOOST_CHECK_THROW(top_eigenvalues(hvp, 0, 1, 5, 0), Error);
    BOOST_CHECK_THROW(top_eigenvalues(hvp, 3, 0, 5, 0), Error);
    BOOST_CHECK_THROW(top_eigenvalues(hvp, 3, 6, 5, 0), Error);
    BOOST_CHECK_THROW(hutchinson_trace(hvp, 3, 0, 0), Error);
    BOOST_CHECK_THROW(spectral_density(hvp, 3, 0, 5, 0), Error);
    BOOST_CHECK_THROW(spectral_density(hvp, 3, 1, 0, 0), Error);
    const HessianVectorProduct broken = [](std::span<const double>, std::span<double> hv) {
        std::fill(hv.begin(), hv.end(), NAN);
    };
    BOOST_CHECK_THROW(top_eigenvalues(broken, 3, 1, 2, 0), Error);
    BOOST_CHECK_THROW(hutchinson_trace(broken, 3, 2, 0), Error);
    // More iterations than the dimension: the Krylov space is exhausted, values exact.
    const EigenResult r = top_eigenvalues(hvp, 3, 3, 10, 1);
    BOOST_TEST(r.iterations <= 3u);
    BOOST_TEST(std::abs(r.values[0] - 3.0) < 1e-12);
    BOOST_TEST(std::abs(r.values[2] - 1.0) < 1e-12);
}
