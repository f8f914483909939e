#include "minsharp/experiments/common.hpp"

#include "minsharp/experiments/e1.hpp"
#include "minsharp/experiments/e2.hpp"
#include "minsharp/experiments/e3.hpp"
#include "minsharp/experiments/e4.hpp"
#include "minsharp/checked.hpp"
#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/parallel.hpp"
#include "minsharp/progress.hpp"

#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <map>
#include <numeric>
#include <sstream>
#include <thread>

extern char** environ;

namespace minsharp::experiments {

namespace fs = std::filesystem;

// ---- small helpers ----------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

nlohmann::json read_json(const fs::path& file) {
    const std::string text = read_file(file);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        throw IoError(file.string() + ": malformed JSON: " + e.what());
    }
}

void write_json(const fs::path& file, const nlohmann::json& j) {
    write_file_atomic(file, j.dump(2) + "\n");
}

Dataset random_training_images(const Job& job) {
    const DatasetSplit split = load_dataset(job.dataset, job.data_dir.empty()
                                                             ? default_data_dir(job.dataset)
                                                             : fs::path(job.data_dir));
    Rng rng(derive_seed(job.seed, 1));
    return subset_random(split.train, job.n, rng);
}

Tensor4<double> to_double(const Tensor4<float>& x) {
    Tensor4<double> out = Tensor4<double>::from_shape(x.shape());
    std::copy(x.begin(), x.end(), out.begin());
    return out;
}

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

nlohmann::json Profile::to_json() const {
    nlohmann::json grids = nlohmann::json::array();
    for (const auto& g : e3) grids.push_back(g.to_json());
    return {{"name", name}, {"summary", summary}, {"seed", seed},  {"e1", e1.to_json()},
            {"e2", e2.to_json()}, {"e3", grids},  {"e4", e4.to_json()}};
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
    return p;
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

std::vector<std::string> experiment_names() { return {"e1", "e2", "e3", "e4"}; }

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
                        "e1, e2, e3, e4");
        if (std::find(out.begin(), out.end(), item) == out.end()) out.push_back(item);
    }
    if (out.empty()) throw Error("no experiment selected: expected e.g. 'e1,e3'");
    std::sort(out.begin(), out.end());
    return out;
}

// ---- jobs -----------------------------------------------------------------------------------

std::string Job::name() const {
    if (experiment == "e1" || experiment == "e2")
        return model + "-n" + std::to_string(n) + "-t" + std::to_string(trial);
    if (experiment == "e3") return model + "-r" + format_double(ratio) + "-t" + std::to_string(trial);
    return model;
}

fs::path Job::folder() const { return fs::path(out) / experiment / "runs" / name(); }

fs::path Job::result_file() const {
    return folder() / (experiment == "e3" ? "measures.json" : "result.json");
}

TrainConfig Job::train_config() const {
    TrainConfig c;
    c.model = model;
    c.dataset = dataset;
    c.data_dir = data_dir;
    c.train_size = n;
    c.subset = "first";
    c.test_size = test_size;
    c.label_noise = ratio;
    c.epochs = epochs;
    c.batch_size = batch_size;
    c.sgd = sgd;
    c.seed = seed;
    c.threads = threads;
    c.eval_every = eval_every;
    c.checkpoint_every = checkpoint_every;
    return c;
}

namespace {

bool trains(const std::string& experiment) { return experiment == "e3" || experiment == "e4"; }

// One command-line key: what it means (for `run --help`), how to print it from a Job and
// how to set it from text, and which experiments use it.
struct JobKey {
    const char* key;
    const char* help;
    bool (*applies)(const std::string& experiment);
    std::function<std::string(const Job&)> get;
    std::function<void(Job&, const std::string&)> set;
};

bool always(const std::string&) { return true; }
bool e2_only(const std::string& e) { return e == "e2"; }
bool e3_only(const std::string& e) { return e == "e3"; }
bool e4_only(const std::string& e) { return e == "e4"; }

// Whole numbers are plain digits (no sign, spaces or exponent: "-1" must not wrap to 2^64 − 1);
// real numbers must be finite.
template <class T>
T parse_number(const std::string& key, const std::string& text) {
    const std::string what = "job argument --" + key;
    if constexpr (std::is_integral_v<T>) {
        return static_cast<T>(
            parse_whole_number(text, what, 0, std::uint64_t(std::numeric_limits<T>::max())));
    } else {
        std::size_t used = 0;
        double value = 0;
        try {
            value = std::stod(text, &used);
        } catch (const std::exception&) {
            used = 0;
        }
        const bool plain = !text.empty() && !std::isspace(static_cast<unsigned char>(text[0]));
        if (!plain || used != text.size() || !std::isfinite(value))
            throw Error(what + ": '" + text + "' is not a finite number");
        return static_cast<T>(value);
    }
}

std::string join_doubles(const std::vector<double>& v) {
    std::string s;
    for (double x : v) s += (s.empty() ? "" : ",") + format_double(x);
    return s;
}

std::vector<double> split_doubles(const std::string& key, const std::string& text) {
    std::vector<double> v;
    std::stringstream in(text);
    std::string item;
    while (std::getline(in, item, ',')) v.push_back(parse_number<double>(key, item));
    return v;
}

const std::vector<JobKey>& job_keys() {
    static const std::vector<JobKey> keys = {
        {"experiment", "e1 | e2 | e3 | e4", always, [](const Job& j) { return j.experiment; },
         [](Job& j, const std::string& v) { j.experiment = v; }},
        {"model", "zoo model name or layer spec", always,
         [](const Job& j) { return j.model; },
         [](Job& j, const std::string& v) { j.model = v; }},
        {"dataset", "mnist or fashion-mnist", always, [](const Job& j) { return j.dataset; },
         [](Job& j, const std::string& v) { j.dataset = v; }},
        {"data-dir", "folder of the IDX files (empty: the dataset's default)", always,
         [](const Job& j) { return j.data_dir; },
         [](Job& j, const std::string& v) { j.data_dir = v; }},
        {"out", "the grid's output folder; the job writes <out>/<experiment>/runs/<name>/",
         always, [](const Job& j) { return j.out; },
         [](Job& j, const std::string& v) { j.out = v; }},
        {"n", "E1/E2: random training images; E3/E4: the first n training images", always,
         [](const Job& j) { return std::to_string(j.n); },
         [](Job& j, const std::string& v) { j.n = parse_number<std::size_t>("n", v); }},
        {"ratio", "E3: fraction of the labels permuted (label noise), in [0, 1]", e3_only,
         [](const Job& j) { return format_double(j.ratio); },
         [](Job& j, const std::string& v) { j.ratio = parse_number<double>("ratio", v); }},
        {"trial", "trial index (part of the folder name)", always,
         [](const Job& j) { return std::to_string(j.trial); },
         [](Job& j, const std::string& v) { j.trial = parse_number<int>("trial", v); }},
        {"seed", "seed of every random choice of the job (init, noise, batches, samples)",
         always, [](const Job& j) { return std::to_string(j.seed); },
         [](Job& j, const std::string& v) { j.seed = parse_number<std::uint64_t>("seed", v); }},
        {"test-size", "E3/E4: first test images for the test accuracy (0: all)", trains,
         [](const Job& j) { return std::to_string(j.test_size); },
         [](Job& j, const std::string& v) { j.test_size = parse_number<std::size_t>("test-size", v); }},
        {"epochs", "E3/E4: epochs of training", trains,
         [](const Job& j) { return std::to_string(j.epochs); },
         [](Job& j, const std::string& v) { j.epochs = parse_number<int>("epochs", v); }},
        {"batch-size", "E3/E4: minibatch size", trains,
         [](const Job& j) { return std::to_string(j.batch_size); },
         [](Job& j, const std::string& v) { j.batch_size = parse_number<std::size_t>("batch-size", v); }},
        {"lr", "E3/E4: SGD learning rate", trains,
         [](const Job& j) { return format_double(j.sgd.lr); },
         [](Job& j, const std::string& v) { j.sgd.lr = parse_number<double>("lr", v); }},
        {"momentum", "E3/E4: SGD momentum", trains,
         [](const Job& j) { return format_double(j.sgd.momentum); },
         [](Job& j, const std::string& v) { j.sgd.momentum = parse_number<double>("momentum", v); }},
        {"weight-decay", "E3/E4: coupled weight decay", trains,
         [](const Job& j) { return format_double(j.sgd.weight_decay); },
         [](Job& j, const std::string& v) {
             j.sgd.weight_decay = parse_number<double>("weight-decay", v);
         }},
        {"lr-decay", "E3/E4: learning rate lr / (1 + lr-decay · step)", trains,
         [](const Job& j) { return format_double(j.sgd.lr_decay); },
         [](Job& j, const std::string& v) { j.sgd.lr_decay = parse_number<double>("lr-decay", v); }},
        {"eval-every", "E3/E4: train/test evaluation every k epochs (and the last)", trains,
         [](const Job& j) { return std::to_string(j.eval_every); },
         [](Job& j, const std::string& v) { j.eval_every = parse_number<int>("eval-every", v); }},
        {"checkpoint-every", "E3/E4: resumable checkpoint every k epochs (and the last)", trains,
         [](const Job& j) { return std::to_string(j.checkpoint_every); },
         [](Job& j, const std::string& v) {
             j.checkpoint_every = parse_number<int>("checkpoint-every", v);
         }},
        {"samples", "E2: samples per estimator", e2_only,
         [](const Job& j) { return std::to_string(j.samples); },
         [](Job& j, const std::string& v) { j.samples = parse_number<std::size_t>("samples", v); }},
        {"factors", "E4: comma-separated transformation factors, each > 0", e4_only,
         [](const Job& j) { return join_doubles(j.factors); },
         [](Job& j, const std::string& v) { j.factors = split_doubles("factors", v); }},
        {"threads", "BLAS and worker threads (optional, default 1; not part of the result)",
         always, [](const Job& j) { return std::to_string(j.threads); },
         [](Job& j, const std::string& v) { j.threads = parse_number<int>("threads", v); }},
    };
    return keys;
}

void validate_job(const Job& job) {
    const auto known = experiment_names();
    if (std::find(known.begin(), known.end(), job.experiment) == known.end())
        throw Error("job: unknown experiment '" + job.experiment + "' (e1, e2, e3 or e4)");
    if (job.model.empty()) throw Error("job " + job.experiment + ": --model is missing");
    if (job.out.empty()) throw Error("job " + job.experiment + ": --out is missing");
    if (job.n == 0) throw Error("job " + job.name() + ": --n must be positive");
    if (job.threads < 1) throw Error("job " + job.name() + ": --threads must be ≥ 1");
    if (trains(job.experiment)) job.train_config().validate();
    if (job.experiment == "e2" && job.samples == 0)
        throw Error("job " + job.name() + ": --samples must be positive");
    if (job.experiment == "e4" && job.factors.empty())
        throw Error("job " + job.name() + ": --factors is missing");
    for (double f : job.factors)
        if (!(f > 0) || !std::isfinite(f))
            throw Error("job " + job.name() + ": factor " + format_double(f) + " is not > 0");
}

}  // namespace

nlohmann::json Job::identity() const {
    nlohmann::json j;
    for (const auto& k : job_keys()) {
        const std::string key = k.key;
        if (key == "data-dir" || key == "out" || key == "threads") continue;
        if (k.applies(experiment)) j[key] = k.get(*this);
    }
    return j;
}

std::vector<JobOption> job_options() {
    std::vector<JobOption> out;
    for (const auto& k : job_keys()) out.push_back({k.key, k.help});
    return out;
}

std::vector<std::string> job_arguments(const Job& job) {
    std::vector<std::string> args;
    for (const auto& k : job_keys())
        if (k.applies(job.experiment)) {
            args.push_back(std::string("--") + k.key);
            args.push_back(k.get(job));
        }
    return args;
}

Job parse_job_arguments(const std::vector<std::string>& args) {
    Job job;
    std::map<std::string, std::string> given;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string arg = args[i], value;
        if (arg.rfind("--", 0) != 0)
            throw Error("job arguments: expected --key, found '" + arg + "'");
        arg = arg.substr(2);
        if (const auto eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
        } else if (i + 1 < args.size()) {
            value = args[++i];
        } else {
            throw Error("job arguments: --" + arg + " needs a value");
        }
        // A repeated key would silently keep one of its values.
        if (!given.emplace(arg, value).second)
            throw Error("job arguments: --" + arg + " is given more than once");
    }
    const auto& keys = job_keys();
    for (const auto& [key, value] : given) {
        auto it = std::find_if(keys.begin(), keys.end(),
                               [&](const JobKey& k) { return key == k.key; });
        if (it == keys.end()) throw Error("job arguments: unknown option --" + key);
        it->set(job, value);
    }
    for (const auto& k : keys)
        if (k.applies(job.experiment) && !given.count(k.key) && std::string(k.key) != "threads")
            throw Error("job arguments: --" + std::string(k.key) + " is missing (every parameter "
                        "of a job is explicit)");
    validate_job(job);
    return job;
}

namespace {

// Seconds per image and epoch of training (float) on one core, measured on the 2-core
// reference machine; only used for the order of jobs and the ETA.
double train_cost(const std::string& model) {
    if (model == "mlp") return 3e-5;
    if (model == "lenet") return 4.5e-4;
    if (model == "small-cnn") return 1.2e-4;
    return 5e-6;
}

// Seconds per image of one gradient evaluation in double (brute force, estimators).
double gradient_cost(const std::string& model) {
    if (model == "small-cnn") return 3e-4;
    if (model == "small-mlp") return 8e-6;  // with the kink check's second differencing
    return 10.0 * train_cost(model);
}

std::size_t zoo_parameters(const std::string& model) {
    return build_model<float>(model).parameter_count();
}

}  // namespace

double Job::estimated_seconds() const {
    const double per_image = train_cost(model);
    const double diag = 10.0 * per_image * double(n);  // K backward passes
    const double gradient = gradient_cost(model) * double(n) + 5e-5;
    if (experiment == "e1") return diag + 2.0 * double(zoo_parameters(model)) * gradient;
    if (experiment == "e2") return diag + 6.0 * double(samples) * gradient;
    const double test = 2.0 * per_image * double(test_size ? test_size : 10000);
    const double training = double(epochs) * per_image * double(n) * 1.2;
    const double measures = diag * (experiment == "e4" ? 2.0 * double(factors.size()) + 1 : 1.0);
    return training + test + measures + 1.0;
}

std::vector<Job> plan_jobs(const Profile& profile, const PlanSettings& settings) {
    Job base;
    base.dataset = settings.dataset;
    base.data_dir = fs::absolute(settings.data_dir.empty() ? default_data_dir(settings.dataset)
                                                           : fs::path(settings.data_dir))
                        .lexically_normal()
                        .string();
    base.out = fs::absolute(settings.out).lexically_normal().string();
    base.threads = settings.threads;
    const auto wants = [&](const char* e) {
        return std::find(settings.experiments.begin(), settings.experiments.end(), e) !=
               settings.experiments.end();
    };
    const auto with_training = [&](Job job, const TrainSpec& t) {
        job.model = t.model;
        job.n = t.train_size;
        job.test_size = t.test_size;
        job.epochs = t.epochs;
        job.batch_size = t.batch_size;
        job.sgd = t.sgd;
        job.eval_every = t.eval_every;
        job.checkpoint_every = t.checkpoint_every;
        return job;
    };
    std::vector<Job> jobs;
    const auto measurement_jobs = [&](const char* experiment, const std::vector<SizedModel>& models,
                                      int trials, std::size_t samples) {
        for (const auto& m : models)
            for (std::size_t n : m.sizes)
                for (int t = 0; t < trials; ++t) {
                    Job job = base;
                    job.experiment = experiment;
                    job.model = m.model;
                    job.n = n;
                    job.trial = t;
                    job.seed = profile.seed + std::uint64_t(t);
                    job.samples = samples;
                    jobs.push_back(job);
                }
    };
    if (wants("e1")) measurement_jobs("e1", profile.e1.models, profile.e1.trials, 0);
    if (wants("e2")) measurement_jobs("e2", profile.e2.models, profile.e2.trials, profile.e2.samples);
    if (wants("e3"))
        for (const auto& grid : profile.e3)
            for (double ratio : grid.ratios)
                for (int t = 0; t < grid.trials * grid.base_seeds; ++t) {
                    Job job = with_training(base, grid.train);
                    job.experiment = "e3";
                    job.ratio = ratio;
                    job.trial = t;
                    job.seed = profile.seed + std::uint64_t(t);
                    jobs.push_back(job);
                }
    if (wants("e4")) {
        Job job = with_training(base, profile.e4.train);
        job.experiment = "e4";
        job.seed = profile.seed;
        job.factors = profile.e4.factors;
        jobs.push_back(job);
    }
    return jobs;
}

std::string shell_quote(const std::string& arg) {
    const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("-_./=,:+@%", c);
    });
    if (plain) return arg;
    std::string q = "'";
    for (char c : arg) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

std::string plan_text(const std::vector<Job>& jobs, const fs::path& executable) {
    std::string text;
    for (const auto& job : jobs) {
        text += shell_quote(executable.string()) + " run";
        for (const auto& a : job_arguments(job)) text += " " + shell_quote(a);
        text += "\n";
    }
    return text;
}

void write_plan_json(const Profile& profile, const PlanSettings& settings,
                     const std::vector<Job>& jobs) {
    nlohmann::json names = nlohmann::json::array();
    for (const auto& job : jobs) names.push_back(job.experiment + "/" + job.name());
    write_json(settings.out / "plan.json",
               {{"profile", profile.to_json()},
                {"dataset", settings.dataset},
                {"data_dir", jobs.empty() ? settings.data_dir : jobs.front().data_dir},
                {"experiments", settings.experiments},
                {"threads_per_job", settings.threads},
                {"jobs", names}});
}

int base_seed_index(int trial, int trials_per_seed) {
    return trials_per_seed > 0 ? trial / trials_per_seed : 0;
}

// ---- one output folder, one grid -------------------------------------------------------------

namespace {

// The JSON without the keys whose values are prose.
nlohmann::json without_prose(const nlohmann::json& j) {
    if (j.is_array()) {
        nlohmann::json out = nlohmann::json::array();
        for (const auto& item : j) out.push_back(without_prose(item));
        return out;
    }
    if (!j.is_object()) return j;
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [key, value] : j.items())
        if (key != "why" && key != "summary") out[key] = without_prose(value);
    return out;
}

std::string describe_plan(const nlohmann::json& plan) {
    const auto name = plan.contains("profile") && plan["profile"].contains("name")
                          ? plan["profile"]["name"].get<std::string>()
                          : std::string("(unnamed)");
    const auto dataset = plan.contains("dataset") ? plan["dataset"].get<std::string>() : "?";
    return "profile " + name + " on " + dataset;
}

}  // namespace

nlohmann::json plan_fingerprint(const nlohmann::json& profile, const std::string& dataset) {
    return {{"profile", without_prose(profile)}, {"dataset", dataset}};
}

void check_same_plan(const Profile& profile, const PlanSettings& settings) {
    const fs::path file = settings.out / "plan.json";
    if (!fs::exists(file)) return;
    nlohmann::json stored;
    try {
        stored = read_json(file);
    } catch (const Error& e) {
        throw Error(std::string(e.what()) + "; use --force to start over in " +
                    settings.out.string());
    }
    const nlohmann::json expected = plan_fingerprint(profile.to_json(), settings.dataset);
    const bool same = stored.is_object() && stored.contains("profile") &&
                      plan_fingerprint(stored["profile"], stored.value("dataset", "")) == expected;
    if (!same)
        throw Error(settings.out.string() + " holds a grid of " + describe_plan(stored) +
                    ", not of profile " + profile.name + " on " + settings.dataset +
                    " (or of an older version of it): use another --out, or --force to delete "
                    "its results and start over");
}

std::vector<std::string> planned_experiments(const fs::path& dir) {
    const fs::path file = dir / "plan.json";
    if (!fs::exists(file)) return {};
    const nlohmann::json plan = read_json(file);
    if (!plan.is_object() || !plan.contains("experiments")) return {};
    return plan["experiments"].get<std::vector<std::string>>();
}

void clear_outputs(const fs::path& dir) {
    for (const auto& e : experiment_names()) fs::remove_all(dir / e);
    for (const char* file : {"plan.json", "results.json", "report.md", "e1.csv", "e2.csv",
                             "e3.csv", "e3_correlations.csv", "e3_tau_by_seed.csv", "e4.csv"})
        fs::remove(dir / file);
    fs::remove_all(dir / "figures");
}

OutputLock::OutputLock(const fs::path& dir) {
    const fs::path file = dir / ".lock";
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0)
        throw Error("cannot open " + file.string() + ": " + std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
        const int error = errno;
        std::string owner;
        try {
            owner = read_file(file);
        } catch (const Error&) {
        }
        while (!owner.empty() && std::isspace(static_cast<unsigned char>(owner.back())))
            owner.pop_back();
        ::close(fd_);
        fd_ = -1;
        if (error != EWOULDBLOCK)
            throw Error("cannot lock " + file.string() + ": " + std::strerror(error));
        throw Error("another reproduce_experiments (pid " + (owner.empty() ? "?" : owner) +
                    ") is running in " + dir.string());
    }
    // The pid is only for the message above; the lock itself is the flock.
    const std::string pid = std::to_string(::getpid()) + "\n";
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
        // Not fatal: the lock holds without the pid.
    }
}

OutputLock::~OutputLock() {
    if (fd_ >= 0) ::close(fd_);  // releases the flock
}

// ---- running one job ---------------------------------------------------------------------

namespace {

std::string job_label(const Job& job) { return job.experiment + "/" + job.name(); }

}  // namespace

bool job_done(const Job& job) {
    const fs::path file = job.result_file();
    if (!fs::exists(file)) return false;
    nlohmann::json stored;
    try {
        stored = read_json(file);
    } catch (const Error& e) {
        // A zero-byte or truncated file (a full disk, a copy cut short) is no result: the job
        // is recomputed rather than aborting the whole grid.
        std::fprintf(stderr, "warning: %s; recomputing %s\n", e.what(), job_label(job).c_str());
        return false;
    }
    if (!stored.is_object() || !stored.contains("job") || !stored["job"].is_object()) {
        std::fprintf(stderr, "warning: %s is not a job result; recomputing %s\n",
                     file.c_str(), job_label(job).c_str());
        return false;
    }
    const nlohmann::json expected = job.identity();
    if (stored["job"] != expected)
        throw Error(file.string() + " was produced with other settings:\n  " +
                    stored["job"].dump() + "\nthis job:\n  " + expected.dump() +
                    "\nuse another --out folder, or delete that run folder to recompute it");
    return true;
}

void run_job(const Job& job) {
    validate_job(job);
    if (job_done(job)) return;
    set_threads(job.threads);
    if (job.experiment == "e1") run_e1_job(job);
    else if (job.experiment == "e2") run_e2_job(job);
    else if (job.experiment == "e3") run_e3_job(job);
    else run_e4_job(job);
}

namespace {

fs::path log_file(const Job& job) { return job.folder() / "job.log"; }

// True when file descriptor `fd` is `file` (the runner points a child's stdout at its log).
bool same_file(int fd, const fs::path& file) {
    struct stat a {}, b {};
    return ::fstat(fd, &a) == 0 && ::stat(file.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

void write_all(int fd, const std::string& text) {
    std::size_t done = 0;
    while (done < text.size()) {
        const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // nowhere to write: drop the rest rather than fail the job
        done += std::size_t(n);
    }
}

// For its lifetime, everything written to stdout and stderr (by printf, by the training's
// epoch lines) goes to the job's log and, each line prefixed with "[<job>] ", to the original
// stdout. A thread copies from a pipe; the destructor restores the descriptors and drains it.
class TeeOutput {
public:
    TeeOutput(const fs::path& log, std::string prefix) : prefix_(std::move(prefix)) {
        log_ = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (log_ < 0) throw Error("cannot open " + log.string() + ": " + std::strerror(errno));
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC) != 0) {
            ::close(log_);
            throw Error(std::string("cannot create a pipe for the job log: ") +
                        std::strerror(errno));
        }
        std::fflush(stdout);
        std::fflush(stderr);
        saved_out_ = ::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);
        saved_err_ = ::fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
        ::dup2(fds[1], STDOUT_FILENO);
        ::dup2(fds[1], STDERR_FILENO);
        ::close(fds[1]);
        copier_ = std::thread([this, in = fds[0]] { copy_lines(in); });
    }

    ~TeeOutput() {
        std::fflush(stdout);
        std::fflush(stderr);
        ::dup2(saved_out_, STDOUT_FILENO);  // closes the pipe's last write ends: EOF
        ::dup2(saved_err_, STDERR_FILENO);
        copier_.join();
        ::close(saved_out_);
        ::close(saved_err_);
        ::close(log_);
    }

    TeeOutput(const TeeOutput&) = delete;
    TeeOutput& operator=(const TeeOutput&) = delete;

    /// Appends to the log only (the terminal gets the text from the caller).
    void log_only(const std::string& text) const { write_all(log_, text); }

private:
    void copy_lines(int in) {
        std::string pending;
        char buffer[4096];
        for (;;) {
            const ssize_t n = ::read(in, buffer, sizeof buffer);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            write_all(log_, std::string(buffer, std::size_t(n)));
            pending.append(buffer, std::size_t(n));
            for (std::size_t end; (end = pending.find('\n')) != std::string::npos;) {
                write_all(saved_out_, prefix_ + pending.substr(0, end + 1));
                pending.erase(0, end + 1);
            }
        }
        if (!pending.empty()) write_all(saved_out_, prefix_ + pending + "\n");
        ::close(in);
    }

    std::string prefix_;
    int log_ = -1, saved_out_ = -1, saved_err_ = -1;
    std::thread copier_;
};

}  // namespace

void run_job_with_log(const Job& job) {
    validate_job(job);
    if (job_done(job)) {
        std::printf("job %s already done (%s)\n", job_label(job).c_str(),
                    job.result_file().c_str());
        return;
    }
    fs::create_directories(job.folder());
    if (same_file(STDOUT_FILENO, log_file(job))) {
        run_job(job);
        return;
    }
    TeeOutput tee(log_file(job), "[" + job_label(job) + "] ");
    try {
        run_job(job);
    } catch (const std::exception& e) {
        // The app prints the error on the terminal once the tee is gone; the log keeps it too.
        tee.log_only(std::string("error: ") + e.what() + "\n");
        throw;
    }
    std::printf("job %s done\n", job_label(job).c_str());
}

// ---- the runner -----------------------------------------------------------------------------

int available_cores() {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0) return std::max(1, CPU_COUNT(&set));
    return std::max(1u, std::thread::hardware_concurrency());
}

int threads_per_job(int jobs, int cores) { return std::max(1, cores / std::max(1, jobs)); }

namespace {

// A child process running one job, with its output in <folder>/job.log.
struct Child {
    pid_t pid = -1;
    std::size_t index = 0;
    std::chrono::steady_clock::time_point start;
};

std::vector<std::string> child_environment(int threads) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        const std::string entry = *e;
        if (entry.rfind("OPENBLAS_NUM_THREADS=", 0) == 0 || entry.rfind("OMP_NUM_THREADS=", 0) == 0)
            continue;
        env.push_back(entry);
    }
    env.push_back("OPENBLAS_NUM_THREADS=" + std::to_string(threads));
    env.push_back("OMP_NUM_THREADS=" + std::to_string(threads));
    return env;
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
    std::vector<char*> out;
    for (auto& s : v) out.push_back(s.data());
    out.push_back(nullptr);
    return out;
}

// Everything a child needs, prepared before fork: between fork and exec only
// async-signal-safe calls are allowed.
struct SpawnPlan {
    std::vector<std::string> argv_s, env_s;
    std::vector<char*> argv, envp;
    std::string log;
};

// In the child, between fork and exec: die with the runner (even by kill -9), take default
// SIGINT/SIGTERM/SIGCHLD (a shell may have set them to ignored; the runner catches them)
// with the runner's original signal mask, and write to the job's log.
[[noreturn]] void exec_child(const SpawnPlan& plan, pid_t runner, const sigset_t& original_mask) {
    ::signal(SIGINT, SIG_DFL);
    ::signal(SIGTERM, SIG_DFL);
    ::signal(SIGCHLD, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &original_mask, nullptr);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != runner) ::_exit(127);  // the runner died before prctl
    const int log = ::open(plan.log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (log >= 0) {
        ::dup2(log, STDOUT_FILENO);
        ::dup2(log, STDERR_FILENO);
        if (log > STDERR_FILENO) ::close(log);
    }
    ::execve(plan.argv[0], plan.argv.data(), plan.envp.data());
    const char message[] = "cannot execute the job's command\n";
    [[maybe_unused]] const auto ignored = ::write(STDERR_FILENO, message, sizeof message - 1);
    ::_exit(127);
}

pid_t spawn_job(const Job& job, const fs::path& executable) {
    fs::create_directories(job.folder());
    SpawnPlan plan;
    plan.argv_s = {executable.string(), "run"};
    for (auto& a : job_arguments(job)) plan.argv_s.push_back(a);
    plan.env_s = child_environment(job.threads);
    plan.argv = c_strings(plan.argv_s);
    plan.envp = c_strings(plan.env_s);
    plan.log = log_file(job).string();
    if (::access(executable.c_str(), X_OK) != 0)
        throw Error("cannot start " + executable.string() + " for job " + job_label(job) + ": " +
                    std::strerror(errno));
    // Every signal blocked across fork, so that the child cannot run the runner's handlers
    // before it has reset them.
    sigset_t all, original;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &original);
    const pid_t runner = ::getpid();
    const pid_t pid = ::fork();
    if (pid == 0) exec_child(plan, runner, original);
    const int error = errno;
    ::pthread_sigmask(SIG_SETMASK, &original, nullptr);
    if (pid < 0) throw Error("cannot start job " + job_label(job) + ": " + std::strerror(error));
    return pid;
}

// Where the signal handlers report: the write end of SignalWatch's pipe.
volatile std::sig_atomic_t signal_pipe = -1;

extern "C" void on_runner_signal(int sig) {
    const int saved = errno;
    const char byte = char(sig);
    [[maybe_unused]] const auto ignored = ::write(signal_pipe, &byte, 1);
    errno = saved;
}

// For its lifetime, SIGINT, SIGTERM and SIGCHLD are caught and reported through a pipe
// (the self-pipe trick): the runner then waits on the pipe instead of dying, whichever of
// its threads (OpenBLAS starts some) the signal is delivered to, and a signal that arrives
// just before the wait is not lost.
class SignalWatch {
public:
    SignalWatch() {
        int fds[2];
        if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
            throw Error(std::string("cannot create a pipe for signals: ") + std::strerror(errno));
        read_ = fds[0];
        write_ = fds[1];
        signal_pipe = write_;
        struct sigaction action {};
        action.sa_handler = on_runner_signal;
        sigemptyset(&action.sa_mask);
        action.sa_flags = SA_RESTART;
        for (int i = 0; i < 3; ++i) ::sigaction(signals_[i], &action, &previous_[i]);
    }
    ~SignalWatch() {
        for (int i = 0; i < 3; ++i) ::sigaction(signals_[i], &previous_[i], nullptr);
        signal_pipe = -1;
        ::close(read_);
        ::close(write_);
    }
    SignalWatch(const SignalWatch&) = delete;
    SignalWatch& operator=(const SignalWatch&) = delete;

    /// Waits up to `seconds` for a signal; returns the SIGINT/SIGTERM that arrived (in
    /// order; SIGCHLD only wakes the caller up).
    std::vector<int> wait(double seconds) const {
        pollfd fd{read_, POLLIN, 0};
        ::poll(&fd, 1, int(seconds * 1000));
        std::vector<int> stops;
        char bytes[64];
        for (ssize_t n; (n = ::read(read_, bytes, sizeof bytes)) > 0;)
            for (ssize_t i = 0; i < n; ++i)
                if (bytes[i] == SIGINT || bytes[i] == SIGTERM) stops.push_back(bytes[i]);
        return stops;
    }

private:
    const int signals_[3] = {SIGINT, SIGTERM, SIGCHLD};
    struct sigaction previous_[3];
    int read_ = -1, write_ = -1;
};

const char* signal_name(int sig) {
    return sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal";
}

// The last few lines of a job's log, for the failure message.
std::string log_tail(const fs::path& file, std::size_t lines = 3) {
    std::string text;
    try {
        text = read_file(file);
    } catch (const Error&) {
        return "";
    }
    std::vector<std::string> all;
    std::stringstream in(text);
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) all.push_back(line);
    std::string tail;
    for (std::size_t i = all.size() > lines ? all.size() - lines : 0; i < all.size(); ++i)
        tail += (tail.empty() ? "" : " | ") + all[i];
    return tail;
}

std::string describe_exit(int status) {
    if (WIFEXITED(status)) return "exit status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
    return "stopped";
}

// Done / total, elapsed and ETA from the estimated cost of what is finished and what is left.
class ProgressLog {
public:
    ProgressLog(bool enabled, std::size_t total, std::size_t skipped, double todo_cost, int jobs)
        : enabled_(enabled), total_(total), done_(skipped), todo_cost_(todo_cost), jobs_(jobs),
          start_(std::chrono::steady_clock::now()) {}

    void finished(const Job& job, double seconds, bool ok) {
        ++done_;
        done_cost_ += job.estimated_seconds();
        if (!enabled_) return;
        const double elapsed = seconds_since(start_);
        const double rate = done_cost_ / std::max(elapsed, 1e-9);
        const double eta = (todo_cost_ - done_cost_) / std::max(rate, 1e-12);
        std::fprintf(stderr, "[%zu/%zu] %s %s/%s in %s; elapsed %s, ETA %s\n", done_, total_,
                     ok ? "done" : "FAILED", job.experiment.c_str(), job.name().c_str(),
                     format_seconds(seconds).c_str(), format_seconds(elapsed).c_str(),
                     format_seconds(std::max(0.0, eta)).c_str());
        std::fflush(stderr);
    }

    void started(std::size_t todo) const {
        if (!enabled_) return;
        std::fprintf(stderr,
                     "%zu jobs: %zu already finished, %zu to run, %d at a time (rough estimate "
                     "%s)\n",
                     total_, done_, todo, jobs_, format_seconds(todo_cost_ / jobs_).c_str());
        std::fflush(stderr);
    }

private:
    bool enabled_;
    std::size_t total_, done_;
    double todo_cost_, done_cost_ = 0;
    int jobs_;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace

namespace {

// What run_jobs needs from the jobs: which are left, longest first.
std::vector<std::size_t> jobs_to_run(const std::vector<Job>& jobs, RunnerSummary& summary,
                                     double& cost) {
    std::vector<std::size_t> todo;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (job_done(jobs[i])) {
            ++summary.skipped;
            continue;
        }
        todo.push_back(i);
        cost += jobs[i].estimated_seconds();
    }
    // Longest first: with a few workers this keeps the last one from running alone for long.
    std::stable_sort(todo.begin(), todo.end(), [&](std::size_t a, std::size_t b) {
        return jobs[a].estimated_seconds() > jobs[b].estimated_seconds();
    });
    return todo;
}

// The child processes of one grid and what became of them.
class ChildPool {
public:
    ChildPool(const std::vector<Job>& jobs, const fs::path& executable)
        : jobs_(jobs), executable_(executable) {}

    std::size_t size() const { return running_.size(); }

    void start(std::size_t index) {
        running_.push_back(
            {spawn_job(jobs_[index], executable_), index, std::chrono::steady_clock::now()});
    }

    /// Sends `sig` to every running child.
    void signal_all(int sig) const {
        for (const auto& c : running_) ::kill(c.pid, sig);
    }

    /// Reaps the children that have ended: (job index, seconds, failure or "").
    template <class F>
    void reap(F&& ended) {
        for (auto it = running_.begin(); it != running_.end();) {
            int status = 0;
            const pid_t pid = ::waitpid(it->pid, &status, WNOHANG);
            if (pid == 0 || (pid < 0 && errno == EINTR)) {
                ++it;
                continue;
            }
            const Job& job = jobs_[it->index];
            const bool ok = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                            fs::exists(job.result_file());
            ended(it->index, seconds_since(it->start), pid > 0 ? status : -1,
                  ok ? std::string()
                     : (pid > 0 ? describe_exit(status) : std::string("lost")) + ": " +
                           log_tail(log_file(job)) + " (log: " + log_file(job).string() + ")");
            it = running_.erase(it);
        }
    }

private:
    const std::vector<Job>& jobs_;
    fs::path executable_;
    std::vector<Child> running_;
};

}  // namespace

RunnerSummary run_jobs(const std::vector<Job>& jobs, const RunnerOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    RunnerSummary summary;
    summary.total = jobs.size();
    double todo_cost = 0;
    const std::vector<std::size_t> todo = jobs_to_run(jobs, summary, todo_cost);
    const int parallel = options.executable.empty() ? 1 : std::max(1, options.jobs);
    ProgressLog progress(options.progress, jobs.size(), summary.skipped, todo_cost, parallel);
    progress.started(todo.size());
    const auto record = [&](const Job& job, double seconds, const std::string& failure) {
        progress.finished(job, seconds, failure.empty());
        if (failure.empty()) {
            ++summary.finished;
        } else {
            ++summary.failed;
            summary.failures.push_back(job_label(job) + ": " + failure);
        }
    };
    if (options.executable.empty()) {
        for (std::size_t i : todo) {
            const auto t0 = std::chrono::steady_clock::now();
            std::string failure;
            try {
                run_job(jobs[i]);
            } catch (const std::exception& e) {
                failure = e.what();
            }
            record(jobs[i], seconds_since(t0), failure);
        }
        summary.seconds = seconds_since(start);
        return summary;
    }
    const SignalWatch signals;
    ChildPool pool(jobs, options.executable);
    std::size_t next = 0;
    while (next < todo.size() || pool.size() > 0) {
        while (summary.interrupted_by == 0 && next < todo.size() &&
               pool.size() < std::size_t(parallel)) {
            try {
                pool.start(todo[next]);
            } catch (const std::exception& e) {
                record(jobs[todo[next]], 0, e.what());
            }
            ++next;
        }
        if (summary.interrupted_by != 0 && pool.size() == 0) break;
        if (pool.size() == 0) continue;
        // The timeout only bounds how late a SIGCHLD lost to a full pipe would be noticed.
        for (const int sig : signals.wait(1.0)) {
            // First signal: ask the jobs to stop (a killed job resumes from its checkpoint
            // next time). A second one: the user insists.
            pool.signal_all(summary.interrupted_by == 0 ? SIGTERM : SIGKILL);
            if (summary.interrupted_by == 0) summary.interrupted_by = sig;
        }
        pool.reap([&](std::size_t index, double seconds, int status, const std::string& failure) {
            const bool stopped = summary.interrupted_by != 0 && !failure.empty() &&
                                 status >= 0 && WIFSIGNALED(status);
            if (stopped)
                ++summary.stopped;
            else
                record(jobs[index], seconds, failure);
        });
    }
    summary.seconds = seconds_since(start);
    return summary;
}

std::string interruption_message(const RunnerSummary& summary) {
    return std::string("interrupted by ") + signal_name(summary.interrupted_by) + ": stopped " +
           std::to_string(summary.stopped) + " running job(s); " +
           std::to_string(summary.finished + summary.skipped) + " of " +
           std::to_string(summary.total) +
           " jobs are finished and kept; run the same command again to resume";
}

}  // namespace minsharp::experiments
