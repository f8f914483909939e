// E2 of the paper (Ibayashi et al., 2021, arXiv:2106.12612): how fast the randomized estimators
// approach the exact Hessian diagonal — error against wall time for Tsuzuku et al.'s
// finite-difference estimators ("arXiv": Gaussian probes; "ICML": Rademacher probes, relative
// step, final ReLU) and the Hutchinson trace estimate, with the exact method as the reference
// point.
#pragma once

#include "minsharp/experiments/jobs.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace minsharp::experiments {

/// The running estimate after `samples` probes.
struct E2Point {
    std::size_t samples = 0;
    double seconds = 0;         ///< wall time spent by the estimator so far
    double error = 0;           ///< ‖d̂ − diag H‖₂ (Hutchinson: |t̂ − Tr H|)
    double relative_error = 0;  ///< error / ‖diag H‖₂ (Hutchinson: / Tr H)
};

/// One estimator's curve: "arxiv", "icml" (diagonal) or "hutchinson" (trace).
struct E2Curve {
    std::string estimator;
    std::vector<E2Point> points;
};

/// One E2 trial.
struct E2Result {
    std::string model;
    std::size_t n = 0;
    int trial = 0;
    int threads = 1;
    double exact_seconds = 0;  ///< the exact diag H (the reference point)
    double exact_trace = 0;
    double diag_norm = 0;      ///< ‖diag H‖₂
    std::vector<E2Curve> curves;

    nlohmann::json to_json() const;
    static E2Result from_json(const nlohmann::json& j);
    /// Columns of e2.csv: one row per recorded point of every curve.
    static std::vector<std::string> csv_columns();
    std::vector<std::vector<std::string>> csv_rows() const;
};

/// The exact diagonal and the three estimators with `samples` probes each on (x, y),
/// recorded at 1, 2, 5, 10, 20, 50, … samples and at `samples`.
E2Result compare_estimators(const Sequential<double>& model, const Tensor4<double>& x,
                            const std::vector<int>& y, std::size_t samples, std::uint64_t seed,
                            int threads);

/// Runs an E2 job (random init and images as in E1 for the same seed); writes result.json.
void run_e2_job(const Job& job);

}  // namespace minsharp::experiments
