// Randomized estimators of diag H and Tr H from finite differences of gradients
// (docs/science.md §5): the baselines the exact diagonal is compared against (experiment E2).
// Each reports its running estimate at chosen sample counts with the elapsed time, so
// error-versus-time curves can be drawn without storing every sample.
#pragma once

#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/loss.hpp"

#include <functional>
#include <limits>
#include <string>
#include <vector>

namespace minsharp::sharpness {

/// The two randomized diag-H estimators of Tsuzuku, Sato & Sugiyama.
enum class DiagEstimator {
    /// "arXiv" version: ε ~ N(0, I), d̂ = ε ∘ (g(θ + rε) − g(θ − rε)) / 2r.
    Gaussian,
    /// "ICML" version: ε Rademacher, d̂ = ε ∘ (g(θ + r|θ|∘ε) − g(θ − r|θ|∘ε)) / (2r|θ| + 1e-8),
    /// and a ReLU on the averaged estimate.
    Rademacher,
};

/// "gaussian" / "rademacher".
std::string to_string(DiagEstimator kind);

struct EstimatorOptions {
    /// Sample counts at which the running estimate is recorded, strictly increasing and
    /// ≥ 1; the last one is the number of samples drawn. See record_points().
    std::vector<std::size_t> record_at{1, 2, 5, 10, 20, 50, 100};
    double r = 1e-5;            ///< finite-difference step (see each estimator)
    std::size_t chunk = 1000;   ///< inputs per forward pass of a gradient evaluation
    bool keep_estimates = true; ///< keep the diag estimate at every recorded point
    /// When non-empty (diag estimators): errors[i] = ‖estimate_i − reference_diag‖₂.
    std::vector<double> reference_diag;
    /// When not NaN (Hutchinson): errors[i] = |estimate_i − reference_trace|.
    double reference_trace = std::numeric_limits<double>::quiet_NaN();
    /// Called at every recorded point with (samples, seconds, estimate); the estimate is
    /// the diag estimate, or a single value for Hutchinson.
    std::function<void(std::size_t, double, const std::vector<double>&)> on_record;
};

/// The running estimate at the recorded sample counts.
struct EstimatorTrace {
    std::vector<std::size_t> samples;  ///< sample counts recorded
    std::vector<double> seconds;       ///< wall time since the start at each of them
    std::vector<double> traces;        ///< Tr of the diag estimate, or Hutchinson's estimate
    std::vector<double> errors;        ///< against the reference, when one was given
    std::vector<std::vector<double>> estimates;  ///< diag estimates (if keep_estimates)
};

/// 1, 2, 5, 10, 20, 50, ... up to and including max_samples.
std::vector<std::size_t> record_points(std::size_t max_samples);

/// One draw of a diag estimator (before averaging and before the ICML version's ReLU).
/// Two gradient evaluations; the model's parameters are restored afterwards.
std::vector<double> diag_estimator_sample(Sequential<double>& model, const Batch<double>& batch,
                                          DiagEstimator kind, Rng& rng, double r = 1e-5,
                                          std::size_t chunk = 1000);

/// One draw vᵀHv of Hutchinson's trace estimator, v Rademacher, Hv by central differences
/// of the gradient with step h = r‖θ‖₂/‖v‖₂ (a perturbation of relative size r; h = r
/// when θ = 0). The model's parameters are restored afterwards.
double hutchinson_sample(Sequential<double>& model, const Batch<double>& batch, Rng& rng,
                         double r = 1e-5, std::size_t chunk = 1000);

/// Running mean of diag_estimator_sample draws (ReLU applied to the mean for the ICML
/// version), recorded at options.record_at. Throws Error for bad record points, ShapeError
/// for a reference of the wrong length.
EstimatorTrace estimate_diag(Sequential<double>& model, const Batch<double>& batch,
                             DiagEstimator kind, Rng& rng, const EstimatorOptions& options = {});

/// Running mean of hutchinson_sample draws, recorded at options.record_at.
EstimatorTrace estimate_trace_hutchinson(Sequential<double>& model, const Batch<double>& batch,
                                         Rng& rng, const EstimatorOptions& options = {});

}  // namespace minsharp::sharpness
