#include "minsharp/experiments/common.hpp"

#include "minsharp/experiments/e1.hpp"
#include "minsharp/experiments/e2.hpp"
#include "minsharp/experiments/e3.hpp"
#include "minsharp/experiments/e4.hpp"
#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/parallel.hpp"
#include "minsharp/progress.hpp"

#include <fcntl.h>
#include <sched.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
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
    return {{"train", train.to_json()}, {"ratios", ratios}, {"trials", trials}, {"why", why}};
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
    Profile p;
    p.name = "quick";
    p.summary =
        "Default. Finishes in at most 20 minutes on 2 cores. E3 uses the MLP setting of the "
        "PyTorch pilot (SCIENCE.md §7), which gave Kendall τ(MS, gap) = 0.97-1.0, and a "
        "small LeNet grid that shows the r = 0 versus r > 0 separation only: LeNet on ≤ 2,000 "
        "images memorizes any noise level and is not expected to reproduce the paper's trend.";
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
                 2,
                 "the pilot's setting: N = 2,000 first training images, six ratios, the same "
                 "fixed 200 epochs for every run, batch 128, lr 0.05 decayed per step, "
                 "momentum 0.9, wd 1e-5"};
    GridSpec lenet{train_spec("lenet", 1000, 80, 128, 0.02, 1, 8),
                   {0.0, 0.5, 1.0},
                   2,
                   "N = 1,000, three ratios, 80 epochs (about a minute per run), lr 0.02 (lr "
                   "0.05 was unstable with momentum 0.9 in the pilot): sized to the budget, it "
                   "shows whether LeNet separates clean from noisy labels, not the paper's trend"};
    p.e3 = {mlp, lenet};
    p.e4 = {mlp.train, log_factors(2),
            "the r = 0 MLP of the E3 grid (same settings, trial 0), factors 1e-3 … 1e3 at "
            "half-decade steps"};
    return p;
}

Profile standard_profile() {
    Profile p = quick_profile();
    p.name = "standard";
    p.summary = "Finishes in at most 90 minutes on 2 cores. LeNet on N = 10,000 images, five "
                "times the pilot's largest, where label noise takes most of the training to "
                "memorize (a pilot at r = 1 reached 86% training accuracy at epoch 30 and 100% "
                "at epoch 60); the MLP grid grows to 5,000 images and 3 trials.";
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
                 "the pilot's MLP setting on 5,000 images, 3 trials"};
    GridSpec lenet{train_spec("lenet", 10000, 60, 128, 0.02, 6, 12),
                   ratio_steps(5),
                   2,
                   "N = 10,000 (the issue asks for ≥ 10,000), six ratios, 2 trials, 60 epochs "
                   "for every run (the r = 1 pilot memorized its labels by epoch 60) at lr 0.02: "
                   "what fits in the budget"};
    p.e3 = {mlp, lenet};
    p.e4.train = mlp.train;
    return p;
}

Profile full_profile() {
    Profile p;
    p.name = "full";
    p.summary = "The paper's protocol (SCIENCE.md §6): 11 ratios × 10 trials × {MLP 3,000 "
                "epochs at lr 0.1, LeNet 1,000 epochs at lr 0.01}, batch 1,024, all 60,000 "
                "training images; E1/E2 with 10 trials and up to 10,000 samples. Weeks on 2 "
                "cores: use --plan on a cluster.";
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

// One command-line key: how to print it from a Job and how to set it from text, and which
// experiments use it.
struct JobKey {
    const char* key;
    bool (*applies)(const std::string& experiment);
    std::function<std::string(const Job&)> get;
    std::function<void(Job&, const std::string&)> set;
};

bool always(const std::string&) { return true; }
bool e2_only(const std::string& e) { return e == "e2"; }
bool e3_only(const std::string& e) { return e == "e3"; }
bool e4_only(const std::string& e) { return e == "e4"; }

template <class T>
T parse_number(const std::string& key, const std::string& text) {
    std::size_t used = 0;
    T value{};
    try {
        if constexpr (std::is_floating_point_v<T>)
            value = static_cast<T>(std::stod(text, &used));
        else if constexpr (std::is_signed_v<T>)
            value = static_cast<T>(std::stoll(text, &used));
        else {
            if (!text.empty() && text[0] == '-') throw std::invalid_argument("negative");
            value = static_cast<T>(std::stoull(text, &used));
        }
    } catch (const std::exception&) {
        used = 0;
    }
    if (used != text.size() || text.empty())
        throw Error("job argument --" + key + ": '" + text + "' is not a valid number");
    return value;
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
        {"experiment", always, [](const Job& j) { return j.experiment; },
         [](Job& j, const std::string& v) { j.experiment = v; }},
        {"model", always, [](const Job& j) { return j.model; },
         [](Job& j, const std::string& v) { j.model = v; }},
        {"dataset", always, [](const Job& j) { return j.dataset; },
         [](Job& j, const std::string& v) { j.dataset = v; }},
        {"data-dir", always, [](const Job& j) { return j.data_dir; },
         [](Job& j, const std::string& v) { j.data_dir = v; }},
        {"out", always, [](const Job& j) { return j.out; },
         [](Job& j, const std::string& v) { j.out = v; }},
        {"n", always, [](const Job& j) { return std::to_string(j.n); },
         [](Job& j, const std::string& v) { j.n = parse_number<std::size_t>("n", v); }},
        {"ratio", e3_only, [](const Job& j) { return format_double(j.ratio); },
         [](Job& j, const std::string& v) { j.ratio = parse_number<double>("ratio", v); }},
        {"trial", always, [](const Job& j) { return std::to_string(j.trial); },
         [](Job& j, const std::string& v) { j.trial = parse_number<int>("trial", v); }},
        {"seed", always, [](const Job& j) { return std::to_string(j.seed); },
         [](Job& j, const std::string& v) { j.seed = parse_number<std::uint64_t>("seed", v); }},
        {"test-size", trains, [](const Job& j) { return std::to_string(j.test_size); },
         [](Job& j, const std::string& v) { j.test_size = parse_number<std::size_t>("test-size", v); }},
        {"epochs", trains, [](const Job& j) { return std::to_string(j.epochs); },
         [](Job& j, const std::string& v) { j.epochs = parse_number<int>("epochs", v); }},
        {"batch-size", trains, [](const Job& j) { return std::to_string(j.batch_size); },
         [](Job& j, const std::string& v) { j.batch_size = parse_number<std::size_t>("batch-size", v); }},
        {"lr", trains, [](const Job& j) { return format_double(j.sgd.lr); },
         [](Job& j, const std::string& v) { j.sgd.lr = parse_number<double>("lr", v); }},
        {"momentum", trains, [](const Job& j) { return format_double(j.sgd.momentum); },
         [](Job& j, const std::string& v) { j.sgd.momentum = parse_number<double>("momentum", v); }},
        {"weight-decay", trains, [](const Job& j) { return format_double(j.sgd.weight_decay); },
         [](Job& j, const std::string& v) {
             j.sgd.weight_decay = parse_number<double>("weight-decay", v);
         }},
        {"lr-decay", trains, [](const Job& j) { return format_double(j.sgd.lr_decay); },
         [](Job& j, const std::string& v) { j.sgd.lr_decay = parse_number<double>("lr-decay", v); }},
        {"eval-every", trains, [](const Job& j) { return std::to_string(j.eval_every); },
         [](Job& j, const std::string& v) { j.eval_every = parse_number<int>("eval-every", v); }},
        {"checkpoint-every", trains, [](const Job& j) { return std::to_string(j.checkpoint_every); },
         [](Job& j, const std::string& v) {
             j.checkpoint_every = parse_number<int>("checkpoint-every", v);
         }},
        {"samples", e2_only, [](const Job& j) { return std::to_string(j.samples); },
         [](Job& j, const std::string& v) { j.samples = parse_number<std::size_t>("samples", v); }},
        {"factors", e4_only, [](const Job& j) { return join_doubles(j.factors); },
         [](Job& j, const std::string& v) { j.factors = split_doubles("factors", v); }},
        {"threads", always, [](const Job& j) { return std::to_string(j.threads); },
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
        given[arg] = value;
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
                for (int t = 0; t < grid.trials; ++t) {
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

bool job_done(const Job& job) {
    const fs::path file = job.result_file();
    if (!fs::exists(file)) return false;
    const nlohmann::json stored = read_json(file);
    const nlohmann::json expected = job.identity();
    if (!stored.contains("job") || stored["job"] != expected)
        throw Error(file.string() + " was produced with other settings:\n  " +
                    (stored.contains("job") ? stored["job"].dump() : std::string("(none)")) +
                    "\nthis job:\n  " + expected.dump() +
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

fs::path log_file(const Job& job) { return job.folder() / "job.log"; }

pid_t spawn_job(const Job& job, const fs::path& executable) {
    fs::create_directories(job.folder());
    std::vector<std::string> argv_s = {executable.string(), "run"};
    for (auto& a : job_arguments(job)) argv_s.push_back(a);
    std::vector<std::string> env_s = child_environment(job.threads);
    auto argv = c_strings(argv_s);
    auto envp = c_strings(env_s);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    const std::string log = log_file(job).string();
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    pid_t pid = -1;
    const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0)
        throw Error("cannot start " + executable.string() + " for job " + job.experiment + "/" +
                    job.name() + ": " + std::strerror(rc));
    return pid;
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

RunnerSummary run_jobs(const std::vector<Job>& jobs, const RunnerOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    RunnerSummary summary;
    summary.total = jobs.size();
    std::vector<std::size_t> todo;
    double todo_cost = 0;
    for (std::size_t i = 0; i < jobs.size(); ++i) {
        if (job_done(jobs[i])) {
            ++summary.skipped;
            continue;
        }
        todo.push_back(i);
        todo_cost += jobs[i].estimated_seconds();
    }
    // Longest first: with a few workers this keeps the last one from running alone for long.
    std::stable_sort(todo.begin(), todo.end(), [&](std::size_t a, std::size_t b) {
        return jobs[a].estimated_seconds() > jobs[b].estimated_seconds();
    });
    const int parallel = options.executable.empty() ? 1 : std::max(1, options.jobs);
    ProgressLog progress(options.progress, jobs.size(), summary.skipped, todo_cost, parallel);
    progress.started(todo.size());
    const auto record = [&](const Job& job, double seconds, const std::string& failure) {
        progress.finished(job, seconds, failure.empty());
        if (failure.empty()) {
            ++summary.finished;
        } else {
            ++summary.failed;
            summary.failures.push_back(job.experiment + "/" + job.name() + ": " + failure);
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
    } else {
        std::vector<Child> running;
        std::size_t next = 0;
        while (next < todo.size() || !running.empty()) {
            while (next < todo.size() && running.size() < std::size_t(parallel)) {
                const Job& job = jobs[todo[next]];
                try {
                    running.push_back({spawn_job(job, options.executable), todo[next],
                                       std::chrono::steady_clock::now()});
                } catch (const std::exception& e) {
                    record(job, 0, e.what());
                }
                ++next;
            }
            if (running.empty()) continue;
            int status = 0;
            const pid_t pid = waitpid(-1, &status, 0);
            if (pid < 0) {
                if (errno == EINTR) continue;
                throw Error(std::string("waiting for jobs failed: ") + std::strerror(errno));
            }
            auto it = std::find_if(running.begin(), running.end(),
                                   [&](const Child& c) { return c.pid == pid; });
            if (it == running.end()) continue;  // not one of ours
            const Job& job = jobs[it->index];
            const double seconds = seconds_since(it->start);
            const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                            fs::exists(job.result_file());
            record(job, seconds,
                   ok ? std::string()
                      : describe_exit(status) + ": " + log_tail(log_file(job)) +
                            " (log: " + log_file(job).string() + ")");
            running.erase(it);
        }
    }
    summary.seconds = seconds_since(start);
    return summary;
}

}  // namespace minsharp::experiments
