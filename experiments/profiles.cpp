#include "minsharp/experiments/profiles.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/io/files.hpp"

#include <cmath>
#include <sstream>

namespace minsharp::experiments {

namespace fs = std::filesystem;

namespace {

nlohmann::json sgd_json(const SgdConfig& s) {
    return {{"lr", s.lr}, {"momentum", s.momentum}, {"weight_decay", s.weight_decay},
            {"lr_decay", s.lr_decay}};
}

nlohmann::json sized_models_json(const std::vector<SizedModel>& models) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& m : models) j.push_back({{"model", m.model}, {"n", m.sizes}});
    return j;
}

}  // namespace

nlohmann::json TrainSpec::to_json() const {
    return {{"model", model},           {"train_size", train_size}, {"test_size", test_size},
            {"epochs", epochs},         {"batch_size", batch_size}, {"sgd", sgd_json(sgd)},
            {"eval_every", eval_every}, {"checkpoint_every", checkpoint_every}};
}

nlohmann::json GridSpec::to_json() const {
    return {{"train", train.to_json()}, {"ratios", ratios},         {"trials", trials},
            {"why", why},               {"base_seeds", base_seeds}};
}

nlohmann::json E1Spec::to_json() const {
    return {{"models", sized_models_json(models)}, {"trials", trials}, {"why", why}};
}

nlohmann::json E2Spec::to_json() const {
    return {{"models", sized_models_json(models)}, {"trials", trials}, {"samples", samples},
            {"why", why}};
}

nlohmann::json E4Spec::to_json() const {
    return {{"train", train.to_json()}, {"factors", factors}, {"why", why}};
}

nlohmann::json E5Spec::to_json() const {
    nlohmann::json runs = nlohmann::json::array();
    for (const auto& m : models)
        runs.push_back({{"model", m.model}, {"train_size", m.train_size}, {"steps", m.steps},
                        {"track_every", m.track_every}, {"lrs", m.lrs}});
    return {{"models", runs}, {"test_size", test_size}, {"measures", measures}, {"why", why}};
}

nlohmann::json Profile::to_json() const {
    nlohmann::json grids = nlohmann::json::array();
    for (const auto& g : e3) grids.push_back(g.to_json());
    return {{"name", name}, {"summary", summary}, {"seed", seed},  {"e1", e1.to_json()},
            {"e2", e2.to_json()}, {"e3", grids},  {"e4", e4.to_json()}, {"e5", e5.to_json()}};
}

// ---- profiles -----------------------------------------------------------------------------

namespace {

std::vector<double> ratio_steps(int intervals) {
    std::vector<double> r;
    for (int i = 0; i <= intervals; ++i) r.push_back(double(i) / double(intervals));
    return r;
}

// 1e-3 … 1e3 at `per_decade` points per decade.
std::vector<double> log_factors(int per_decade) {
    std::vector<double> f;
    for (int i = -3 * per_decade; i <= 3 * per_decade; ++i)
        f.push_back(std::pow(10.0, double(i) / double(per_decade)));
    return f;
}

SgdConfig sgd(double lr) { return {lr, 0.9, 1e-5, 1e-4}; }

// The measures E5 tracks: λ_max is what the edge of stability is about (it is compared with
// 2/η); Tr H and minimum sharpness are tracked beside it.
const std::string e5_measures = "lambda-max,trace,ms";

TrainSpec train_spec(std::string model, std::size_t n, int epochs, std::size_t batch, double lr,
                     int evaluations = 10, int checkpoints = 10) {
    TrainSpec t;
    t.model = std::move(model);
    t.train_size = n;
    t.epochs = epochs;
    t.batch_size = batch;
    t.sgd = sgd(lr);
    t.eval_every = std::max(1, epochs / evaluations);
    t.checkpoint_every = std::max(1, epochs / checkpoints);
    return t;
}

Profile tiny_profile() {
    Profile p;
    p.name = "tiny";
    p.summary = "For tests: a few hundred images, a few epochs, two ratios, one trial. Runs in "
                "seconds; its numbers mean nothing.";
    p.e1 = {{{"small-mlp", {10}}}, 1, "smallest case that exercises the comparison"};
    p.e2 = {{{"small-mlp", {10}}}, 1, 40, "a short curve"};
    TrainSpec t = train_spec("small-mlp", 200, 3, 50, 0.05, 3, 3);
    t.test_size = 200;
    p.e3 = {{t, {0.0, 1.0}, 1, "two ratios, one trial: the smallest grid with a gap to rank"}};
    TrainSpec t4 = t;
    p.e4 = {t4, {1e-3, 1.0, 1e3}, "the two extremes and the identity"};
    p.e5 = {{{"small-mlp", 200, 12, 4, {0.05, 0.2}}}, 200, e5_measures,
            "two learning rates, a dozen steps: the pipeline, not the phenomenon"};
    return p;
}

E5Spec quick_e5() {
    return {{{"small-mlp", 1000, 500, 25, {0.04, 0.07, 0.1}},
             {"small-cnn", 250, 150, 15, {0.05, 0.1, 0.2}}},
            1000,
            e5_measures,
            "three step sizes per network whose 2/η is reached within the run: measured with "
            "exact Hessian-vector products, SmallMLP on 1,000 images at η = 0.04 climbs from "
            "λ_max ≈ 5 to ≈ 50 = 2/η within 300 steps (at η = 0.2 it catapulted out of its "
            "basin); SmallCNN costs ~0.3 ms per image and step, so it trains on 250 images "
            "for 150 steps; all of E5 takes about 2 minutes on 2 cores"};
}

Profile quick_profile() {
    // Each base seed adds six MLP runs, ~15 s each on one core.
    const int mlp_base_seeds = 5;
    const std::string seeds = std::to_string(mlp_base_seeds);
    Profile p;
    p.name = "quick";
    p.summary =
        "Default. Finishes in at most 20 minutes on 2 cores. E3 runs the MLP grid under " +
        seeds + " base seeds, because one grid of a dozen runs gives a τ that moves by a swapped pair "
        "or two between seeds and between CPUs (float summation order differs, so different "
        "networks come out): τ per base seed, with its mean, min and max, says how much of it "
        "is luck. A small LeNet grid shows the r = 0 versus r > 0 separation only: LeNet on "
        "≤ 2,000 images memorizes any noise level and is not expected to reproduce the "
        "paper's trend.";
    p.e1 = {{{"small-mlp", {10, 100, 1000}}, {"small-cnn", {10}}},
            2,
            "the brute force costs 2·P gradient evaluations in double (P = 16,330 / 13,750): "
            "measured on one core, SmallMLP takes ~3 minutes at n = 1000, SmallCNN ~2 "
            "minutes at n = 10 but ~40 minutes at n = 100, so SmallCNN runs n = 10 only "
            "(n = 100 and 1000 in the full profile)"};
    p.e2 = {{{"small-mlp", {100}}, {"small-cnn", {10}}},
            2,
            1000,
            "1,000 samples per estimator (the paper: 10,000) show the slope on log–log axes; "
            "each sample is 2 gradient evaluations, ~90 ms for SmallCNN at n = 100, so "
            "SmallCNN uses n = 10"};
    GridSpec mlp{train_spec("mlp", 2000, 200, 128, 0.05, 10, 10),
                 ratio_steps(5),
                 1,
                 "N = 2,000 first training images, six ratios, the same fixed 200 epochs for "
                 "every run, batch 128, lr 0.05 decayed per step, momentum 0.9, wd 1e-5; one "
                 "run per ratio under each of " + seeds + " base seeds rather than several per "
                 "ratio: two runs at one ratio have nearly the same gap, so which of them ranks "
                 "higher is a coin flip that costs a 12-run grid about 0.09 of τ whatever the "
                 "measure",
                 mlp_base_seeds};
    GridSpec lenet{train_spec("lenet", 1000, 80, 128, 0.02, 1, 8),
                   {0.0, 0.5, 1.0},
                   2,
                   "N = 1,000, three ratios, 80 epochs (about a minute per run), lr 0.02 (lr "
                   "0.05 was unstable with momentum 0.9 when we tried it): sized to the budget, "
                   "it shows whether LeNet separates clean from noisy labels, not the paper's "
                   "trend"};
    p.e3 = {mlp, lenet};
    p.e4 = {mlp.train, log_factors(2),
            "the r = 0 MLP of the E3 grid (same settings, trial 0), factors 1e-3 … 1e3 at "
            "half-decade steps"};
    p.e5 = quick_e5();
    return p;
}

Profile standard_profile() {
    Profile p = quick_profile();
    p.name = "standard";
    p.summary = "Finishes in at most 90 minutes on 2 cores. LeNet on N = 10,000 images, where "
                "label noise takes most of the training to memorize (a run at r = 1 reached "
                "86% training accuracy at epoch 30 and 100% at epoch 60); the MLP grid grows "
                "to 5,000 images and 3 trials.";
    p.e1 = {{{"small-mlp", {10, 100, 1000}}, {"small-cnn", {10}}},
            3,
            "3 trials; SmallCNN at n = 100 (~40 minutes of brute force per trial on one core) "
            "and n = 1000 (~7 hours) only in the full profile"};
    p.e2 = {{{"small-mlp", {100, 1000}}, {"small-cnn", {10}}},
            2,
            3000,
            "3,000 samples per estimator"};
    GridSpec mlp{train_spec("mlp", 5000, 200, 128, 0.05, 10, 10),
                 ratio_steps(5),
                 3,
                 "the quick profile's MLP setting on 5,000 images, 3 trials"};
    GridSpec lenet{train_spec("lenet", 10000, 60, 128, 0.02, 6, 12),
                   ratio_steps(5),
                   2,
                   "N = 10,000, six ratios, 2 trials, 60 epochs for every run (a run at r = 1 "
                   "memorized its labels by epoch 60) at lr 0.02: what fits in the budget"};
    p.e3 = {mlp, lenet};
    p.e4.train = mlp.train;
    return p;
}

Profile full_profile() {
    Profile p;
    p.name = "full";
    p.summary = "The paper's protocol (Ibayashi et al., 2021): 11 ratios × 10 trials × {MLP "
                "3,000 epochs at lr 0.1, LeNet 1,000 epochs at lr 0.01}, batch 1,024, all "
                "60,000 training images; E1/E2 with 10 trials and up to 10,000 samples. Weeks "
                "on 2 cores: use --plan on a cluster.";
    p.e1 = {{{"small-mlp", {10, 100, 1000}}, {"small-cnn", {10, 100, 1000}}}, 10, "the paper's"};
    p.e2 = {{{"small-mlp", {10, 100, 1000}}, {"small-cnn", {10, 100, 1000}}},
            10,
            10000,
            "the paper's"};
    GridSpec mlp{train_spec("mlp", 60000, 3000, 1024, 0.1, 30, 100), ratio_steps(10), 10,
                 "the paper's"};
    GridSpec lenet{train_spec("lenet", 60000, 1000, 1024, 0.01, 10, 100), ratio_steps(10), 10,
                   "the paper's"};
    p.e3 = {mlp, lenet};
    p.e4 = {mlp.train, log_factors(2), "the r = 0 MLP of the paper's setting, trial 0"};
    p.e5 = {{{"small-mlp", 5000, 3000, 30, {0.02, 0.05, 0.1}},
             {"small-cnn", 5000, 1000, 20, {0.02, 0.05, 0.1}}},
            0,
            e5_measures,
            "Cohen et al.'s scale: 5,000 training images (they use a 5,000-image subset of "
            "CIFAR-10), long enough for the smallest step size to reach 2/η"};
    return p;
}

}  // namespace

std::vector<std::string> profile_names() { return {"tiny", "quick", "standard", "full"}; }

Profile make_profile(std::string_view name) {
    if (name == "tiny") return tiny_profile();
    if (name == "quick") return quick_profile();
    if (name == "standard") return standard_profile();
    if (name == "full") return full_profile();
    throw Error("unknown profile '" + std::string(name) + "': expected tiny, quick, standard or full");
}

std::vector<std::string> experiment_names() { return {"e1", "e2", "e3", "e4", "e5"}; }

std::vector<std::string> parse_experiments(std::string_view list) {
    std::vector<std::string> out;
    std::stringstream in{std::string(list)};
    std::string item;
    const auto known = experiment_names();
    while (std::getline(in, item, ',')) {
        item.erase(0, item.find_first_not_of(' '));
        item.erase(item.find_last_not_of(' ') + 1);
        if (item.empty()) continue;
        if (std::find(known.begin(), known.end(), item) == known.end())
            throw Error("unknown experiment '" + item + "': expected a comma-separated list of "
                        "e1, e2, e3, e4, e5");
        if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
    if (out.empty()) throw Error("no experiment selected: expected e.g. 'e1,e3'");
    std::sort(out.begin(), out.end());
    return out;
}

int base_seed_index(int trial, int trials_per_seed) {
    return trials_per_seed > 0 ? trial / trials_per_seed : 0;
}

}  // namespace minsharp::experiments
