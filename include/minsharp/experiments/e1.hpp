// E1 of the paper (Ibayashi et al., 2021, arXiv:2106.12612): the fast exact Hessian diagonal
// against the brute-force reference on SmallMLP / SmallCNN at random init — time of each, Tr H,
// and how far apart they are.
#pragma once

#include "minsharp/experiments/jobs.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace minsharp::experiments {

/// One E1 trial.
struct E1Result {
    std::string model;
    std::size_t n = 0;
    int trial = 0;
    std::size_t parameters = 0;
    int threads = 1;
    double fast_seconds = 0;        ///< exact_diag_hessian in double
    double brute_seconds = 0;       ///< brute_force_diag_hessian (2·P gradient evaluations)
    double step = 0;                ///< the brute force's central-difference step
    /// Entries where the differences at `step` and at step/10 disagreed (a ReLU or max-pool
    /// kink within reach of the step); they were redone at smaller steps until two agreed.
    std::size_t kink_entries = 0;
    std::size_t unresolved_entries = 0;  ///< still disagreeing at the smallest step
    double check_seconds = 0;            ///< time of that check (not part of brute_seconds)
    double fast_float_seconds = 0;  ///< exact_diag_hessian in float
    double fast_trace = 0, brute_trace = 0;
    double diff_norm = 0;           ///< ‖fast − brute‖₂ over all entries (brute after the kink check)
    double diag_norm = 0;           ///< ‖brute‖₂
    double float_diff_norm = 0;     ///< ‖fast(float) − brute‖₂
    double relative_diff() const { return diag_norm > 0 ? diff_norm / diag_norm : diff_norm; }
    double float_relative_diff() const {
        return diag_norm > 0 ? float_diff_norm / diag_norm : float_diff_norm;
    }
    double speedup() const { return fast_seconds > 0 ? brute_seconds / fast_seconds : 0; }

    nlohmann::json to_json() const;
    static E1Result from_json(const nlohmann::json& j);
    static std::vector<std::string> csv_columns();
    std::vector<std::string> csv_row() const;
};

/// Fast (double and float) vs brute-force diag H of `model` at its current parameters on x.
E1Result compare_diag_hessians(const Sequential<double>& model, const Tensor4<double>& x,
                               int threads);

/// Runs an E1 job: the job's model at the seeded random init, job.n random training
/// images; writes result.json (with the job's identity) atomically.
void run_e1_job(const Job& job);

}  // namespace minsharp::experiments
