#define BOOST_TEST_MODULE estimators
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/estimators.hpp"

#include <cmath>
#include <numeric>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

const ActShape tiny_input{1, 3, 3};
const char* const tiny_net = "flatten,dense:8,relu,dense:6,relu,dense:4";

struct Fixture {
    Sequential<double> model = make_model<double>(tiny_net, 1, tiny_input);
    Batch<double> batch;
    std::vector<double> exact;

    Fixture() {
        Rng rng(2);
        batch.x = Tensor4<double>::from_shape({20, 1, 3, 3});
        for (auto& v : batch.x) v = rng.normal();
        for (int i = 0; i < 20; ++i) batch.y.push_back(int(rng.below(4)));
        exact = exact_diag_hessian(model, batch.x).flat();
    }
};

// Per-entry sample mean and standard deviation of the mean.
struct Moments {
    std::vector<double> mean, sem;
};

Moments moments(const std::vector<std::vector<double>>& samples) {
    const std::size_t s = samples.size(), p = samples[0].size();
    Moments m{std::vector<double>(p, 0.0), std::vector<double>(p, 0.0)};
    for (const auto& x : samples)
        for (std::size_t j = 0; j < p; ++j) m.mean[j] += x[j] / double(s);
    for (std::size_t j = 0; j < p; ++j) {
        double var = 0;
        for (const auto& x : samples) var += (x[j] - m.mean[j]) * (x[j] - m.mean[j]);
        m.sem[j] = std::sqrt(var / double(s - 1) / double(s));
    }
    return m;
}

double sum(const std::vector<double>& v) { return std::accumulate(v.begin(), v.end(), 0.0); }

// Every entry's sample mean lies within 5 standard errors of what it estimates, and the
// check has power: the standard error of the trace is below `power` times the trace.
void check_unbiased(const std::vector<std::vector<double>>& samples,
                    const std::vector<double>& expected, double power) {
    const Moments m = moments(samples);
    BOOST_REQUIRE_EQUAL(m.mean.size(), expected.size());
    for (std::size_t j = 0; j < expected.size(); ++j)
        BOOST_TEST(std::abs(m.mean[j] - expected[j]) <= 5 * m.sem[j] + 1e-12,
                   "entry " << j << ": mean " << m.mean[j] << " ± " << m.sem[j] << ", expected "
                            << expected[j]);
    std::vector<std::vector<double>> traces;
    for (const auto& x : samples) traces.push_back({sum(x)});
    const Moments t = moments(traces);
    BOOST_TEST(std::abs(t.mean[0] - sum(expected)) <= 5 * t.sem[0]);
    BOOST_TEST_MESSAGE("trace " << sum(expected) << " mean " << t.mean[0] << " sem " << t.sem[0]);
    BOOST_TEST(t.sem[0] < power * sum(expected));
}

}  // namespace

BOOST_AUTO_TEST_CASE(record_points_are_one_two_five_per_decade) {
    BOOST_TEST(record_points(1000) ==
               std::vector<std::size_t>({1, 2, 5, 10, 20, 50, 100, 200, 500, 1000}));
    BOOST_TEST(record_points(30) == std::vector<std::size_t>({1, 2, 5, 10, 20, 30}));
    BOOST_TEST(record_points(1) == std::vector<std::size_t>({1}));
    BOOST_TEST(record_points(0).empty());
}

BOOST_FIXTURE_TEST_CASE(gaussian_estimator_is_unbiased, Fixture) {
    Rng rng(3);
    std::vector<std::vector<double>> samples;
    for (int s = 0; s < 12000; ++s)
        samples.push_back(diag_estimator_sample(model, batch, DiagEstimator::Gaussian, rng));
    check_unbiased(samples, exact, 0.03);
}

BOOST_FIXTURE_TEST_CASE(rademacher_estimator_is_unbiased_up_to_its_damping, Fixture) {
    // The ICML version estimates H_ii · 2r|θ_i| / (2r|θ_i| + 1e-8) before its ReLU.
    const auto theta = get_flat_parameters(model);
    std::vector<double> damped(exact.size());
    for (std::size_t j = 0; j < exact.size(); ++j)
        damped[j] = exact[j] * 2e-5 * std::abs(theta[j]) / (2e-5 * std::abs(theta[j]) + 1e-8);
    Rng rng(4);
    std::vector<std::vector<double>> samples;
    for (int s = 0; s < 12000; ++s)
        samples.push_back(diag_estimator_sample(model, batch, DiagEstimator::Rademacher, rng));
    // Dividing by |θ_i| lets the off-diagonal terms H_ij|θ_j|/|θ_i| in: a much noisier
    // estimator than the Gaussian one, hence the weaker power requirement.
    check_unbiased(samples, damped, 0.2);
}

BOOST_FIXTURE_TEST_CASE(hutchinson_is_unbiased_for_the_trace, Fixture) {
    Rng rng(5);
    std::vector<std::vector<double>> samples;
    for (int s = 0; s < 12000; ++s) samples.push_back({hutchinson_sample(model, batch, rng)});
    const Moments m = moments(samples);
    BOOST_TEST(std::abs(m.mean[0] - sum(exact)) <= 5 * m.sem[0]);
    BOOST_TEST_MESSAGE("trace " << sum(exact) << " mean " << m.mean[0] << " sem " << m.sem[0]);
    BOOST_TEST(m.sem[0] < 0.03 * sum(exact));
}

BOOST_FIXTURE_TEST_CASE(running_estimate_is_the_mean_of_the_samples, Fixture) {
    EstimatorOptions options;
    options.record_at = {1, 3, 10};
    options.reference_diag = exact;
    std::vector<std::size_t> called;
    options.on_record = [&](std::size_t s, double, const std::vector<double>& e) {
        called.push_back(s);
        BOOST_TEST(e.size() == exact.size());
    };
    Rng a(6), b(6);
    const EstimatorTrace trace = estimate_diag(model, batch, DiagEstimator::Gaussian, a, options);
    std::vector<double> sum_samples(exact.size(), 0.0);
    for (int s = 1; s <= 10; ++s) {
        const auto x = diag_estimator_sample(model, batch, DiagEstimator::Gaussian, b);
        for (std::size_t j = 0; j < x.size(); ++j) sum_samples[j] += x[j];
        if (s == 3 || s == 10) {
            const auto& e = trace.estimates[s == 3 ? 1 : 2];
            for (std::size_t j = 0; j < x.size(); ++j)
                BOOST_TEST(e[j] == sum_samples[j] / s, boost::test_tools::tolerance(1e-12));
        }
    }
    BOOST_TEST(trace.samples == options.record_at);
    BOOST_TEST(called == options.record_at);
    BOOST_REQUIRE_EQUAL(trace.errors.size(), 3u);
    double squared = 0;
    for (std::size_t j = 0; j < exact.size(); ++j)
        squared += (trace.estimates[2][j] - exact[j]) * (trace.estimates[2][j] - exact[j]);
    BOOST_TEST(trace.errors[2] == std::sqrt(squared), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(trace.traces[2] == sum(trace.estimates[2]), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(trace.seconds[0] <= trace.seconds[2]);
}

BOOST_FIXTURE_TEST_CASE(rademacher_running_estimate_is_clipped_at_zero, Fixture) {
    EstimatorOptions options;
    options.record_at = {1, 2};
    Rng rng(7);
    const auto trace = estimate_diag(model, batch, DiagEstimator::Rademacher, rng, options);
    Rng again(7);
    const auto raw = diag_estimator_sample(model, batch, DiagEstimator::Rademacher, again);
    bool some_negative = false;
    for (std::size_t j = 0; j < raw.size(); ++j) {
        some_negative = some_negative || raw[j] < 0;
        BOOST_TEST(trace.estimates[0][j] == std::max(raw[j], 0.0));
    }
    BOOST_TEST(some_negative);  // so the clipping was exercised
}

BOOST_FIXTURE_TEST_CASE(estimators_are_seed_deterministic_and_restore_the_model, Fixture) {
    const auto theta = get_flat_parameters(model);
    EstimatorOptions options;
    options.record_at = {1, 4};
    options.keep_estimates = false;
    options.reference_trace = sum(exact);
    Rng a(8), b(8), c(9);
    const auto first = estimate_trace_hutchinson(model, batch, a, options);
    const auto second = estimate_trace_hutchinson(model, batch, b, options);
    const auto other = estimate_trace_hutchinson(model, batch, c, options);
    BOOST_TEST(first.traces == second.traces);
    BOOST_TEST(first.traces != other.traces);
    BOOST_TEST(first.estimates.empty());
    BOOST_REQUIRE_EQUAL(first.errors.size(), 2u);
    BOOST_TEST(first.errors[1] == std::abs(first.traces[1] - sum(exact)));

    Rng d(10), e(10);
    options.keep_estimates = true;
    const auto diag_a = estimate_diag(model, batch, DiagEstimator::Gaussian, d, options);
    const auto diag_b = estimate_diag(model, batch, DiagEstimator::Gaussian, e, options);
    BOOST_TEST(diag_a.estimates == diag_b.estimates);
    BOOST_TEST(get_flat_parameters(model) == theta);  // bit for bit
}

BOOST_FIXTURE_TEST_CASE(bad_options_are_refused, Fixture) {
    Rng rng(11);
    EstimatorOptions options;
    options.record_at = {};
    BOOST_CHECK_THROW(estimate_diag(model, batch, DiagEstimator::Gaussian, rng, options), Error);
    options.record_at = {0, 2};
    BOOST_CHECK_THROW(estimate_trace_hutchinson(model, batch, rng, options), Error);
    options.record_at = {2, 2};
    BOOST_CHECK_THROW(estimate_diag(model, batch, DiagEstimator::Gaussian, rng, options), Error);
    options.record_at = {1};
    options.reference_diag = {1.0, 2.0};
    BOOST_CHECK_THROW(estimate_diag(model, batch, DiagEstimator::Gaussian, rng, options),
                      ShapeError);
    const Batch<double> empty{Tensor4<double>::from_shape({0, 1, 3, 3}), {}};
    BOOST_CHECK_THROW(hutchinson_sample(model, empty, rng), Error);
    BOOST_TEST(to_string(DiagEstimator::Rademacher) == "rademacher");
}
