// The experiments of the Minimum Sharpness paper (Ibayashi, Hamaguchi and Imaizumi,
// arXiv:2106.12612) sized by a profile: how big each experiment is, and why.
#pragma once

#include "minsharp/train/optim.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp::experiments {

/// How one network is trained in E3/E4. Every run of a grid uses the same settings, in
/// particular the same fixed number of epochs: stopping each run when it reaches 100%
/// training accuracy would rank the runs by how long they trained.
struct TrainSpec {
    std::string model;           ///< zoo name
    std::size_t train_size = 0;  ///< N: the first N training images (measures use the same N)
    std::size_t test_size = 0;   ///< first test images for the test accuracy (0: all)
    int epochs = 1;
    std::size_t batch_size = 128;
    SgdConfig sgd;
    int eval_every = 1;          ///< train/test evaluation every k epochs (and the last)
    int checkpoint_every = 1;    ///< resumable state every k epochs (and the last)
    nlohmann::json to_json() const;
};

/// An E3 grid: one model at several label-noise ratios, `trials` seeds each, repeated
/// under `base_seeds` base seeds. Base seed b (0-based) runs trials b·trials … (b+1)·trials−1,
/// i.e. seeds profile.seed + b·trials + t: the grid a profile with seed profile.seed +
/// b·trials would run. Kendall τ is reported per base seed, so its spread over base seeds
/// shows how much of it is luck of the draw.
struct GridSpec {
    TrainSpec train;
    std::vector<double> ratios;
    int trials = 1;      ///< per ratio and base seed
    std::string why;     ///< the reason for these choices, quoted in the report
    int base_seeds = 1;  ///< repetitions of the whole grid under different seeds
    nlohmann::json to_json() const;
};

/// A model and the input counts n it is measured on (E1, E2).
struct SizedModel {
    std::string model;
    std::vector<std::size_t> sizes;
};

/// E1: fast exact diag H against brute force, at random init.
struct E1Spec {
    std::vector<SizedModel> models;
    int trials = 1;
    std::string why;
    nlohmann::json to_json() const;
};

/// E2: randomized estimators against the exact diagonal, error vs time.
struct E2Spec {
    std::vector<SizedModel> models;
    int trials = 1;
    std::size_t samples = 100;  ///< samples per estimator (the curve is recorded on the way)
    std::string why;
    nlohmann::json to_json() const;
};

/// E4: scale transformations of one trained network.
struct E4Spec {
    TrainSpec train;              ///< trained with label noise 0, trial 0
    std::vector<double> factors;  ///< transformation strengths, spanning 1e-3 … 1e3
    std::string why;
    nlohmann::json to_json() const;
};

/// One network of E5 and how it is trained: full-batch gradient descent on the first
/// `train_size` images at each learning rate, sharpness tracked every `track_every` steps.
struct E5Model {
    std::string model;           ///< zoo name
    std::size_t train_size = 0;  ///< N: the batch, and the inputs of the measures
    int steps = 1;               ///< gradient-descent steps (= epochs: one step per epoch)
    int track_every = 1;
    std::vector<double> lrs;
};

/// E5: the edge of stability (Cohen et al., 2021).
struct E5Spec {
    std::vector<E5Model> models;
    std::size_t test_size = 0;  ///< first test images for the final test accuracy (0: all)
    /// Tracked measures, as sharpness::parse_measures takes them. λ_max against 2/η needs
    /// "lambda-max" among them; the section reports what was measured.
    std::string measures;
    std::string why;
    nlohmann::json to_json() const;
};

/// Everything a profile decides, with the reasons.
struct Profile {
    std::string name;
    std::string summary;       ///< one paragraph: what it is for, its time budget
    std::uint64_t seed = 0;    ///< trial t uses seed + t (E3: see GridSpec::base_seeds)
    E1Spec e1;
    E2Spec e2;
    std::vector<GridSpec> e3;
    E4Spec e4;
    E5Spec e5;
    nlohmann::json to_json() const;
};

/// "tiny" (tests, seconds), "quick" (default, ≤ 20 min on 2 cores), "standard"
/// (≤ 90 min on 2 cores), "full" (the paper's protocol).
std::vector<std::string> profile_names();

/// The named profile; throws Error listing the valid names for an unknown one.
Profile make_profile(std::string_view name);

/// The experiment names "e1" … "e5".
std::vector<std::string> experiment_names();

/// Splits "e1,e3" into names, checking each; throws Error naming an unknown experiment.
std::vector<std::string> parse_experiments(std::string_view list);

/// The E3 base seed (0-based) a trial belongs to when each base seed runs
/// `trials_per_seed` trials (GridSpec::base_seeds).
int base_seed_index(int trial, int trials_per_seed);

}  // namespace minsharp::experiments
