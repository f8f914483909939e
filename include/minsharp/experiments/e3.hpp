// E3 of the paper (Ibayashi et al., 2021, arXiv:2106.12612): the randomized-label grid. Each
// run trains a network on labels of which a fraction `ratio` is permuted, then measures, on the
// same training inputs, the final training loss, accuracies and the sharpness measures; the
// report ranks every measure against the generalization gap (Kendall τ, Spearman ρ) per model.
#pragma once

#include "minsharp/experiments/jobs.hpp"
#include "minsharp/experiments/profiles.hpp"

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

namespace minsharp::experiments {

/// The numbers of one finished E3 run (its measures.json).
struct E3Result {
    std::string model;
    double ratio = 0;
    int trial = 0;
    std::size_t n = 0;   ///< training images (and inputs of the measures)
    int epochs = 0;
    int threads = 1;
    double train_loss = 0;      ///< mean cross-entropy on the (noisy) training labels, double
    double train_accuracy = 0;  ///< against the noisy labels it was trained on
    double test_accuracy = 0;
    double gap() const { return train_accuracy - test_accuracy; }
    double trace = 0;       ///< Tr H
    double ms = 0;          ///< layer-wise minimum sharpness (the paper's)
    double ms_node = 0;     ///< node-wise minimum sharpness
    double normalized = 0;  ///< normalized sharpness (Tsuzuku et al.)
    double ms_gradient_norm = 0;
    double train_seconds = 0;       ///< all epochs, including evaluations (summed over resumes)
    double evaluation_seconds = 0;  ///< the final double-precision loss/accuracy pass
    double diag_seconds = 0;        ///< the exact diag-H pass shared by all measures
    double ms_seconds = 0, ms_node_seconds = 0, normalized_seconds = 0;  ///< solves only
    std::vector<std::string> notes;  ///< unattained infima, unconverged solves

    nlohmann::json to_json() const;
    static E3Result from_json(const nlohmann::json& j);
    static std::vector<std::string> csv_columns();
    std::vector<std::string> csv_row() const;
};

/// The quantities ranked against the gap: "train_loss" (the baseline), "trace", "ms",
/// "ms_node", "normalized".
std::vector<std::string> e3_measure_names();

/// The value of a named quantity of a run; throws Error for an unknown name.
double e3_measure(const E3Result& r, const std::string& name);

/// Kendall τ-b and Spearman ρ between one quantity and the gap over the runs of a model.
struct Correlation {
    std::string model, measure;
    std::size_t runs = 0;
    double kendall = 0, spearman = 0;  ///< NaN when a side is constant or < 2 runs
};

/// One Correlation per (model, quantity), models in order of first appearance.
std::vector<Correlation> e3_correlations(const std::vector<E3Result>& results);

/// How much Kendall τ(quantity, gap) depends on the draw: τ of each base seed's grid
/// (GridSpec::base_seeds), their mean, min and max, and a bootstrap interval over runs.
struct SeedSpread {
    std::string model, measure;
    std::size_t runs = 0;         ///< all runs of the model
    std::vector<double> per_seed; ///< τ over the runs of base seed 0, 1, …
    double mean = 0, min = 0, max = 0;  ///< over per_seed (NaN when none is defined)
    double pooled = 0;            ///< τ over all runs
    double low = 0, high = 0;     ///< 95% percentile bootstrap interval of the pooled τ
};

/// One SeedSpread per (model, quantity). A run's base seed is trial / trials_per_seed[model]
/// (a model missing from the map is one base seed). The bootstrap draws runs with
/// replacement `resamples` times from a fixed seed, so the interval is reproducible.
std::vector<SeedSpread> e3_seed_spread(const std::vector<E3Result>& results,
                                       const std::map<std::string, int>& trials_per_seed,
                                       int resamples = 2000);

/// The mean over runs per (model, ratio) of the E3 quantities, for tables.
struct E3Summary {
    std::string model;
    double ratio = 0;
    std::size_t runs = 0;
    double gap = 0, train_loss = 0, train_accuracy = 0, test_accuracy = 0;
    double trace = 0, ms = 0, ms_node = 0, normalized = 0;
};
std::vector<E3Summary> summarize_e3(const std::vector<E3Result>& results);

/// Loss, accuracies (in double) and every measure of a trained model on its training set.
E3Result measure_trained_model(const Sequential<float>& model, const PreparedData& data,
                               int threads);

/// Runs an E3 job: train_run into the job folder (resuming a half-finished run), then the
/// measures; writes measures.json (the "done" marker) atomically, last.
void run_e3_job(const Job& job);

}  // namespace minsharp::experiments
