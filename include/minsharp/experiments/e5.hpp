// E5: the edge of stability (J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient
// descent on neural networks typically occurs at the edge of stability", ICLR 2021). Full-batch
// gradient descent at step size η is stable on a quadratic only while the sharpness λ_max
// (the top Hessian eigenvalue) stays below 2/η; Cohen et al. observe that on neural networks
// λ_max rises during training until it reaches ≈ 2/η and then hovers there while the loss
// keeps decreasing, non-monotonically. Each E5 job trains one network by full-batch gradient
// descent (apps/train with --batch-size = the training set, momentum 0, no weight decay)
// with its sharpness tracked (--track), and the report compares λ_max with 2/η, with Tr H and
// minimum sharpness beside it.
#pragma once

#include "minsharp/experiments/jobs.hpp"

#include <nlohmann/json.hpp>

#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace minsharp::experiments {

/// One tracked point of an E5 run. A measure that was not tracked is NaN.
struct E5Point {
    static constexpr double none = std::numeric_limits<double>::quiet_NaN();
    int step = 0;
    double loss = none;        ///< full-batch training loss at the step's weights (float)
    double lambda_max = none;  ///< top Hessian eigenvalue of that loss
    double trace = none;       ///< Tr H
    double ms = none;          ///< layer-wise minimum sharpness
    double seconds = 0;        ///< time the measures took
};

/// One E5 run: a network trained by full-batch gradient descent at one learning rate.
struct E5Result {
    std::string model;
    double lr = 0;
    std::size_t n = 0;  ///< training images (full batch; the measures use all of them)
    int steps = 0;
    std::string measures;  ///< what was tracked, as sharpness::parse_measures takes it
    double train_accuracy = 0, test_accuracy = 0;
    std::vector<E5Point> points;

    double two_over_lr() const { return 2.0 / lr; }
    nlohmann::json to_json() const;
    static E5Result from_json(const nlohmann::json& j);
    /// e5.csv: one row per point, the run's model, lr, 2/η and n first.
    static std::vector<std::string> csv_columns();
    std::vector<std::vector<std::string>> csv_rows() const;
};

/// How λ_max of one run compares with 2/η: what the report's sentences are made of.
struct EdgeSummary {
    bool measured = false;     ///< λ_max was tracked at some point
    double start_ratio = 0;    ///< λ_max / (2/η) at the first point
    double peak_ratio = 0;     ///< its largest value
    int peak_step = 0;
    /// First step at which λ_max ≥ threshold · 2/η, if any.
    std::optional<int> reached_step;
    double reached_ratio = 0;  ///< λ_max / (2/η) at that step
    /// Largest |λ_max / (2/η) − 1| over the points after reached_step (0 without any).
    double deviation_after = 0;
    std::size_t points_after = 0;
};

/// λ_max against 2/η over the run's points; `threshold` is the fraction of 2/η that counts
/// as having reached it.
EdgeSummary summarize_edge(const E5Result& run, double threshold = 0.9);

/// The E5 result of a finished training run with tracked sharpness: one point per tracked
/// step, with the full-batch loss of that step from the epoch lines (one step per epoch).
E5Result e5_result(const Job& job, const RunResult& run);

/// Runs an E5 job: trains (or resumes) full-batch gradient descent with the job's measures
/// tracked every job.track_every steps on all n training images, then writes result.json.
void run_e5_job(const Job& job);

}  // namespace minsharp::experiments
