// The experiments of SCIENCE.md §6 as a grid of independent jobs: profiles (how big each
// experiment is), jobs (one training run or one measurement, each writing its own folder),
// self-contained job command lines for --plan, and a runner that executes jobs as child
// processes with a progress line and skips the ones already finished.
#pragma once

#include "minsharp/optim.hpp"
#include "minsharp/train.hpp"

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp::experiments {

/// How one network is trained in E3/E4 (every run of a grid uses the same settings,
/// in particular the same fixed number of epochs: SCIENCE.md §7).
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

/// An E3 grid: one model at several label-noise ratios, `trials` seeds each.
struct GridSpec {
    TrainSpec train;
    std::vector<double> ratios;
    int trials = 1;
    std::string why;  ///< the reason for these choices, quoted in the report
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

/// Everything a profile decides, with the reasons.
struct Profile {
    std::string name;
    std::string summary;       ///< one paragraph: what it is for, its time budget
    std::uint64_t seed = 0;    ///< trial t uses seed + t
    E1Spec e1;
    E2Spec e2;
    std::vector<GridSpec> e3;
    E4Spec e4;
    nlohmann::json to_json() const;
};

/// "tiny" (tests, seconds), "quick" (default, ≤ 20 min on 2 cores), "standard"
/// (≤ 90 min on 2 cores), "full" (the paper's protocol).
std::vector<std::string> profile_names();

/// The named profile; throws Error listing the valid names for an unknown one.
Profile make_profile(std::string_view name);

/// The experiment names "e1" … "e4".
std::vector<std::string> experiment_names();

/// Splits "e1,e3" into names, checking each; throws Error naming an unknown experiment.
std::vector<std::string> parse_experiments(std::string_view list);

/// One unit of work: an E1/E2 measurement (model, n, trial), an E3 run (model, ratio,
/// trial: training plus its measures) or the E4 demonstration. Every field a job needs is
/// here, so its command line (job_arguments) is self-contained.
struct Job {
    std::string experiment;      ///< e1 | e2 | e3 | e4
    std::string model;
    std::string dataset = "mnist";
    std::string data_dir;        ///< folder of the IDX files
    std::string out;             ///< the experiment output folder DIR
    std::size_t n = 0;           ///< inputs: E1/E2 random training images, E3/E4 the first n
    double ratio = 0;            ///< E3 label-noise ratio
    int trial = 0;
    std::uint64_t seed = 0;
    // Training (E3, E4).
    std::size_t test_size = 0;
    int epochs = 0;
    std::size_t batch_size = 0;
    SgdConfig sgd;
    int eval_every = 1;
    int checkpoint_every = 1;
    // E2: samples per estimator. E4: the transformation factors.
    std::size_t samples = 0;
    std::vector<double> factors;
    /// BLAS and worker threads of this job; not part of its identity.
    int threads = 1;

    /// Folder name, e.g. "mlp-r0.2-t1", "small-cnn-n100-t0", "mlp".
    std::string name() const;
    /// DIR/<experiment>/runs/<name>.
    std::filesystem::path folder() const;
    /// The file whose presence marks the job as finished: measures.json for E3 runs,
    /// result.json otherwise; written atomically, last.
    std::filesystem::path result_file() const;
    /// The training run of an E3/E4 job (subset "first", label noise = ratio).
    TrainConfig train_config() const;
    /// Everything that identifies the result (no paths, no thread count).
    nlohmann::json identity() const;
    /// Rough cost in seconds on one core, for ordering and the ETA.
    double estimated_seconds() const;
};

/// The job's parameters as "--key value" arguments (after the "run" subcommand).
std::vector<std::string> job_arguments(const Job& job);

/// Inverse of job_arguments. Throws Error naming an unknown key, a missing value or a value
/// that does not parse.
Job parse_job_arguments(const std::vector<std::string>& args);

/// What the user chose besides the profile.
struct PlanSettings {
    std::filesystem::path out;              ///< made absolute
    std::string dataset = "mnist";
    std::string data_dir;                   ///< empty: default_data_dir(dataset)
    std::vector<std::string> experiments = experiment_names();
    int threads = 1;                        ///< threads per job
};

/// Every job of the profile's selected experiments, in a fixed order
/// (E1, E2, E3 grid by grid/ratio/trial, E4).
std::vector<Job> plan_jobs(const Profile& profile, const PlanSettings& settings);

/// `arg` quoted for a POSIX shell when it needs it.
std::string shell_quote(const std::string& arg);

/// One line per job: "<executable> run --experiment ... --threads T", every value explicit.
std::string plan_text(const std::vector<Job>& jobs, const std::filesystem::path& executable);

/// Writes DIR/plan.json: the profile (with its reasons), the settings and the job names,
/// which --collect uses to say how many runs are missing.
void write_plan_json(const Profile& profile, const PlanSettings& settings,
                     const std::vector<Job>& jobs);

/// True when job.result_file() exists. Throws Error when it exists but was produced with
/// another identity (e.g. a different profile into the same DIR), since reusing it would
/// silently mix settings.
bool job_done(const Job& job);

/// Executes one job in this process (training + measures for E3), writing its folder.
/// Does nothing when it is already done.
void run_job(const Job& job);

/// Number of processors this process may use (≥ 1).
int available_cores();

/// BLAS threads per job so that jobs × threads ≤ cores.
int threads_per_job(int jobs, int cores);

struct RunnerOptions {
    int jobs = 1;                        ///< jobs at the same time
    std::filesystem::path executable;    ///< spawn "<executable> run ..." per job; empty: in-process
    bool progress = true;                ///< a line per finished job on stderr (done/total, ETA)
};

struct RunnerSummary {
    std::size_t total = 0, skipped = 0, finished = 0, failed = 0;
    double seconds = 0;
    std::vector<std::string> failures;  ///< "<job>: <reason> (log: <file>)"
};

/// Runs every job that is not done yet, longest first, `jobs` at a time as child processes
/// (each with OPENBLAS_NUM_THREADS = job.threads, output in <folder>/job.log), or one after
/// the other in this process when no executable is given. A failed job does not stop the
/// others; failures are listed in the summary.
RunnerSummary run_jobs(const std::vector<Job>& jobs, const RunnerOptions& options);

/// The job's n training images drawn at random (seeded by job.seed), with their labels, as
/// E1 and E2 use them (the same job seed and n give the same images in both).
Dataset random_training_images(const Job& job);

/// float images → double, for the measures (which run in double).
Tensor4<double> to_double(const Tensor4<float>& x);

/// Loads a JSON file. Throws IoError naming the file when it is missing or malformed.
nlohmann::json read_json(const std::filesystem::path& file);

/// Writes `j` (indented) atomically.
void write_json(const std::filesystem::path& file, const nlohmann::json& j);

/// Seconds since `start` on the steady clock.
double seconds_since(std::chrono::steady_clock::time_point start);

}  // namespace minsharp::experiments
