#include "minsharp/experiments/jobs.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/experiments/profiles.hpp"
#include "minsharp/io/files.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <sstream>

namespace minsharp::experiments {

namespace fs = std::filesystem;

// ---- jobs -----------------------------------------------------------------------------------

std::string Job::name() const {
    if (experiment == "e1" || experiment == "e2")
        return model + "-n" + std::to_string(n) + "-t" + std::to_string(trial);
    if (experiment == "e3") return model + "-r" + format_double(ratio) + "-t" + std::to_string(trial);
    if (experiment == "e5") return model + "-lr" + format_double(sgd.lr);
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

bool trains(const std::string& experiment) {
    return experiment == "e3" || experiment == "e4" || experiment == "e5";
}

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
bool e5_only(const std::string& e) { return e == "e5"; }

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
        {"experiment", "e1 | e2 | e3 | e4 | e5", always, [](const Job& j) { return j.experiment; },
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
        {"n", "E1/E2: random training images; E3/E4/E5: the first n training images", always,
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
        {"test-size", "E3/E4/E5: first test images for the test accuracy (0: all)", trains,
         [](const Job& j) { return std::to_string(j.test_size); },
         [](Job& j, const std::string& v) { j.test_size = parse_number<std::size_t>("test-size", v); }},
        {"epochs", "E3/E4/E5: epochs of training", trains,
         [](const Job& j) { return std::to_string(j.epochs); },
         [](Job& j, const std::string& v) { j.epochs = parse_number<int>("epochs", v); }},
        {"batch-size", "E3/E4/E5: minibatch size", trains,
         [](const Job& j) { return std::to_string(j.batch_size); },
         [](Job& j, const std::string& v) { j.batch_size = parse_number<std::size_t>("batch-size", v); }},
        {"lr", "E3/E4/E5: SGD learning rate", trains,
         [](const Job& j) { return format_double(j.sgd.lr); },
         [](Job& j, const std::string& v) { j.sgd.lr = parse_number<double>("lr", v); }},
        {"momentum", "E3/E4/E5: SGD momentum", trains,
         [](const Job& j) { return format_double(j.sgd.momentum); },
         [](Job& j, const std::string& v) { j.sgd.momentum = parse_number<double>("momentum", v); }},
        {"weight-decay", "E3/E4/E5: coupled weight decay", trains,
         [](const Job& j) { return format_double(j.sgd.weight_decay); },
         [](Job& j, const std::string& v) {
             j.sgd.weight_decay = parse_number<double>("weight-decay", v);
         }},
        {"lr-decay", "E3/E4/E5: learning rate lr / (1 + lr-decay · step)", trains,
         [](const Job& j) { return format_double(j.sgd.lr_decay); },
         [](Job& j, const std::string& v) { j.sgd.lr_decay = parse_number<double>("lr-decay", v); }},
        {"eval-every", "E3/E4/E5: train/test evaluation every k epochs (and the last)", trains,
         [](const Job& j) { return std::to_string(j.eval_every); },
         [](Job& j, const std::string& v) { j.eval_every = parse_number<int>("eval-every", v); }},
        {"checkpoint-every", "E3/E4/E5: resumable checkpoint every k epochs (and the last)", trains,
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
        {"measures", "E5: comma-separated measures tracked during training (e.g. trace,ms)",
         e5_only, [](const Job& j) { return j.measures; },
         [](Job& j, const std::string& v) { j.measures = v; }},
        {"track-every", "E5: measure every k gradient-descent steps (and before the first)",
         e5_only, [](const Job& j) { return std::to_string(j.track_every); },
         [](Job& j, const std::string& v) { j.track_every = parse_number<int>("track-every", v); }},
        {"threads", "BLAS and worker threads (optional, default 1; not part of the result)",
         always, [](const Job& j) { return std::to_string(j.threads); },
         [](Job& j, const std::string& v) { j.threads = parse_number<int>("threads", v); }},
    };
    return keys;
}

}  // namespace

void validate_job(const Job& job) {
    const auto known = experiment_names();
    if (std::find(known.begin(), known.end(), job.experiment) == known.end())
        throw Error("job: unknown experiment '" + job.experiment + "' (e1, e2, e3, e4 or e5)");
    if (job.model.empty()) throw Error("job " + job.experiment + ": --model is missing");
    if (job.out.empty()) throw Error("job " + job.experiment + ": --out is missing");
    if (job.n == 0) throw Error("job " + job.name() + ": --n must be positive");
    if (job.threads < 1) throw Error("job " + job.name() + ": --threads must be ≥ 1");
    if (trains(job.experiment)) job.train_config().validate();
    if (job.experiment == "e2" && job.samples == 0)
        throw Error("job " + job.name() + ": --samples must be positive");
    if (job.experiment == "e4" && job.factors.empty())
        throw Error("job " + job.name() + ": --factors is missing");
    if (job.experiment == "e5") {
        TrackOptions track;
        track.measures = job.measures;
        track.interval.every = std::size_t(std::max(0, job.track_every));
        if (job.measures.empty()) throw Error("job " + job.name() + ": --measures is missing");
        if (job.track_every < 1) throw Error("job " + job.name() + ": --track-every must be ≥ 1");
        track.validate();
    }
    for (double f : job.factors)
        if (!(f > 0) || !std::isfinite(f))
            throw Error("job " + job.name() + ": factor " + format_double(f) + " is not > 0");
}

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

}  // namespace minsharp::experiments
