// Randomized finite-difference estimators of diag H and Tr H (docs/science.md §5).
//
// Reading of the two Tsuzuku et al. versions:
//  - "arXiv": g(θ + rε) − g(θ − rε) ≈ 2r Hε, so ε_i (Hε)_i has mean Σ_j H_ij E[ε_i ε_j] = H_ii
//    for ε ~ N(0, I).
//  - "ICML": the perturbation is relative to the weights, θ ± r|θ|∘ε with ε Rademacher, so
//    g(θ + r|θ|∘ε) − g(θ − r|θ|∘ε) ≈ 2r H(|θ|∘ε) and ε_i (·)_i / (2r|θ_i|) has mean H_ii.
//    The 1e-8 in the denominator 2r|θ_i| + 1e-8 guards θ_i = 0 and damps the estimate of
//    H_ii by 2r|θ_i| / (2r|θ_i| + 1e-8); the averaged estimate goes through a ReLU since
//    the diagonal it estimates is non-negative (a sum of squares for these networks).
// Both evaluate the exact training-loss gradient (with the batch's labels) in double.

#include "minsharp/sharpness/estimators.hpp"

#include "minsharp/core/clock.hpp"

#include <chrono>
#include <cmath>

namespace minsharp::sharpness {

std::string to_string(DiagEstimator kind) {
    switch (kind) {
        case DiagEstimator::Gaussian: return "gaussian";
        case DiagEstimator::Rademacher: return "rademacher";
    }
    return "unknown";
}

std::vector<std::size_t> record_points(std::size_t max_samples) {
    std::vector<std::size_t> points;
    for (std::size_t decade = 1; decade <= max_samples; decade *= 10)
        for (std::size_t m : {1, 2, 5})
            if (m * decade <= max_samples) points.push_back(m * decade);
    if (points.empty() || points.back() != max_samples) points.push_back(max_samples);
    if (points.front() == 0) points.erase(points.begin());
    return points;
}

namespace {

// g(θ + δ) − g(θ − δ) around the model's parameters θ, which it restores when done.
class GradientDifference {
public:
    GradientDifference(Sequential<double>& model, const Batch<double>& batch, std::size_t chunk)
        : model_(model), batch_(batch), chunk_(chunk), theta_(get_flat_parameters(model)) {
        if (batch.size() == 0) throw Error("estimator: no inputs");
    }
    ~GradientDifference() { set_flat_parameters(model_, theta_); }
    GradientDifference(const GradientDifference&) = delete;
    GradientDifference& operator=(const GradientDifference&) = delete;

    const std::vector<double>& theta() const { return theta_; }

    const std::vector<double>& difference(const std::vector<double>& delta) {
        shifted_.resize(theta_.size());
        for (std::size_t j = 0; j < theta_.size(); ++j) shifted_[j] = theta_[j] + delta[j];
        set_flat_parameters(model_, shifted_);
        loss_and_gradient(model_, batch_, &plus_, chunk_);
        for (std::size_t j = 0; j < theta_.size(); ++j) shifted_[j] = theta_[j] - delta[j];
        set_flat_parameters(model_, shifted_);
        loss_and_gradient(model_, batch_, &minus_, chunk_);
        for (std::size_t j = 0; j < theta_.size(); ++j) plus_[j] -= minus_[j];
        return plus_;
    }

private:
    Sequential<double>& model_;
    const Batch<double>& batch_;
    std::size_t chunk_;
    std::vector<double> theta_, shifted_, plus_, minus_;
};

void diag_sample(GradientDifference& gd, DiagEstimator kind, Rng& rng, double r,
                 std::vector<double>& out) {
    const auto& theta = gd.theta();
    const std::size_t p = theta.size();
    std::vector<double> eps(p), delta(p);
    for (std::size_t j = 0; j < p; ++j) {
        eps[j] = kind == DiagEstimator::Gaussian ? rng.normal() : rng.rademacher();
        delta[j] = kind == DiagEstimator::Gaussian ? r * eps[j] : r * std::abs(theta[j]) * eps[j];
    }
    const auto& diff = gd.difference(delta);
    out.resize(p);
    for (std::size_t j = 0; j < p; ++j)
        out[j] = eps[j] * diff[j] /
                 (kind == DiagEstimator::Gaussian ? 2 * r : 2 * r * std::abs(theta[j]) + 1e-8);
}

double hutchinson(GradientDifference& gd, Rng& rng, double r) {
    const auto& theta = gd.theta();
    const std::size_t p = theta.size();
    double norm = 0;
    for (double t : theta) norm += t * t;
    norm = std::sqrt(norm);
    const double h = norm > 0 ? r * norm / std::sqrt(double(p)) : r;  // ‖v‖₂ = √p
    std::vector<double> v(p), delta(p);
    for (std::size_t j = 0; j < p; ++j) {
        v[j] = rng.rademacher();
        delta[j] = h * v[j];
    }
    const auto& diff = gd.difference(delta);
    double vhv = 0;
    for (std::size_t j = 0; j < p; ++j) vhv += v[j] * diff[j];
    return vhv / (2 * h);
}

void check_options(const EstimatorOptions& o, std::size_t parameters, bool diag) {
    if (o.record_at.empty() || o.record_at.front() == 0)
        throw Error("estimator: record points must be given and start at 1 sample or more");
    for (std::size_t i = 1; i < o.record_at.size(); ++i)
        if (o.record_at[i] <= o.record_at[i - 1])
            throw Error("estimator: record points must increase strictly, found " +
                        std::to_string(o.record_at[i - 1]) + " then " +
                        std::to_string(o.record_at[i]));
    if (!(o.r > 0)) throw Error("estimator: step r must be positive");
    if (diag && !o.reference_diag.empty() && o.reference_diag.size() != parameters)
        throw ShapeError("estimator: reference diag has " + std::to_string(o.reference_diag.size()) +
                         " entries, the model has " + std::to_string(parameters) + " parameters");
}

void record(EstimatorTrace& trace, const EstimatorOptions& o, std::size_t samples,
            double seconds, double trace_value, double error, std::vector<double> estimate,
            bool keep) {
    trace.samples.push_back(samples);
    trace.seconds.push_back(seconds);
    trace.traces.push_back(trace_value);
    if (!std::isnan(error)) trace.errors.push_back(error);
    if (o.on_record) o.on_record(samples, seconds, estimate);
    if (keep) trace.estimates.push_back(std::move(estimate));
}

}  // namespace

std::vector<double> diag_estimator_sample(Sequential<double>& model, const Batch<double>& batch,
                                          DiagEstimator kind, Rng& rng, double r,
                                          std::size_t chunk) {
    GradientDifference gd(model, batch, chunk);
    std::vector<double> out;
    diag_sample(gd, kind, rng, r, out);
    return out;
}

double hutchinson_sample(Sequential<double>& model, const Batch<double>& batch, Rng& rng,
                         double r, std::size_t chunk) {
    GradientDifference gd(model, batch, chunk);
    return hutchinson(gd, rng, r);
}

EstimatorTrace estimate_diag(Sequential<double>& model, const Batch<double>& batch,
                             DiagEstimator kind, Rng& rng, const EstimatorOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    GradientDifference gd(model, batch, options.chunk);
    const std::size_t p = gd.theta().size();
    check_options(options, p, true);
    std::vector<double> sum(p, 0.0), sample;
    EstimatorTrace trace;
    std::size_t next = 0;
    for (std::size_t s = 1; s <= options.record_at.back(); ++s) {
        diag_sample(gd, kind, rng, options.r, sample);
        for (std::size_t j = 0; j < p; ++j) sum[j] += sample[j];
        if (s != options.record_at[next]) continue;
        ++next;
        std::vector<double> estimate(p);
        double total = 0, squared_error = 0;
        for (std::size_t j = 0; j < p; ++j) {
            estimate[j] = sum[j] / double(s);
            if (kind == DiagEstimator::Rademacher) estimate[j] = std::max(estimate[j], 0.0);
            total += estimate[j];
            if (!options.reference_diag.empty()) {
                const double e = estimate[j] - options.reference_diag[j];
                squared_error += e * e;
            }
        }
        const double error = options.reference_diag.empty()
                                 ? std::numeric_limits<double>::quiet_NaN()
                                 : std::sqrt(squared_error);
        record(trace, options, s, seconds_since(start), total, error, std::move(estimate),
               options.keep_estimates);
    }
    return trace;
}

EstimatorTrace estimate_trace_hutchinson(Sequential<double>& model, const Batch<double>& batch,
                                         Rng& rng, const EstimatorOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    GradientDifference gd(model, batch, options.chunk);
    check_options(options, gd.theta().size(), false);
    double sum = 0;
    EstimatorTrace trace;
    std::size_t next = 0;
    for (std::size_t s = 1; s <= options.record_at.back(); ++s) {
        sum += hutchinson(gd, rng, options.r);
        if (s != options.record_at[next]) continue;
        ++next;
        const double estimate = sum / double(s);
        const double error = std::isnan(options.reference_trace)
                                 ? std::numeric_limits<double>::quiet_NaN()
                                 : std::abs(estimate - options.reference_trace);
        record(trace, options, s, seconds_since(start), estimate, error, {estimate}, false);
    }
    return trace;
}

}  // namespace minsharp::sharpness
