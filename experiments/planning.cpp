#include "minsharp/experiments/planning.hpp"

#include "minsharp/experiments/support.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace minsharp::experiments {

namespace fs = std::filesystem;

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
    if (experiment == "e5") {
        // Each tracked point: the diag-H pass, and ~20 Lanczos products when λ_max is asked.
        const double points = double(epochs) / double(std::max(1, track_every)) + 1.0;
        const double lanczos = measures.find("lambda-max") != std::string::npos ? 60.0 : 0.0;
        return double(epochs) * per_image * double(n) * 1.2 + test +
               points * (diag + lanczos * gradient) + 1.0;
    }
    const double training = double(epochs) * per_image * double(n) * 1.2;
    const double measures = diag * (experiment == "e4" ? 2.0 * double(factors.size()) + 1 : 1.0);
    return training + test + measures + 1.0;
}

std::vector<Job> plan_jobs(const Profile& profile, const PlanSettings& settings) {
    Job base;
    base.dataset = settings.dataset;
    base.data_dir = fs::absolute(data_dir_or_default(settings.dataset, settings.data_dir))
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
    if (wants("e5"))
        for (const auto& m : profile.e5.models)
            for (double lr : m.lrs) {
                Job job = base;
                job.experiment = "e5";
                job.model = m.model;
                job.n = m.train_size;
                job.test_size = profile.e5.test_size;
                job.epochs = m.steps;
                job.batch_size = m.train_size;  // full batch: one step per epoch
                job.sgd = {lr, 0.0, 0.0, 0.0};
                job.eval_every = m.steps;
                job.checkpoint_every = std::max(1, m.steps / 5);
                job.seed = profile.seed;
                job.measures = profile.e5.measures;
                job.track_every = m.track_every;
                jobs.push_back(job);
            }
    return jobs;
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
                             "e3.csv", "e3_correlations.csv", "e3_tau_by_seed.csv", "e4.csv",
                             "e5.csv"})
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

}  // namespace minsharp::experiments
