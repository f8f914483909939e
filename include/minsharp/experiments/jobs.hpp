// One unit of work of the experiment grid (one training run or one measurement, each writing
// its own folder) and its self-contained command line, as --plan prints it and the runner's
// child processes read it back.
#pragma once

#include "minsharp/train/optim.hpp"
#include "minsharp/train/training.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace minsharp::experiments {

/// One unit of work: an E1/E2 measurement (model, n, trial), an E3 run (model, ratio,
/// trial: training plus its measures), the E4 demonstration or an E5 run (model, lr:
/// full-batch gradient descent with its sharpness tracked). Every field a job needs is
/// here, so its command line (job_arguments) is self-contained.
struct Job {
    std::string experiment;      ///< e1 | e2 | e3 | e4 | e5
    std::string model;
    std::string dataset = "mnist";
    std::string data_dir;        ///< folder of the IDX files
    std::string out;             ///< the experiment output folder DIR
    std::size_t n = 0;           ///< inputs: E1/E2 random training images, E3/E4 the first n
    double ratio = 0;            ///< E3 label-noise ratio
    int trial = 0;
    std::uint64_t seed = 0;
    // Training (E3, E4, E5).
    std::size_t test_size = 0;
    int epochs = 0;
    std::size_t batch_size = 0;
    SgdConfig sgd;
    int eval_every = 1;
    int checkpoint_every = 1;
    // E2: samples per estimator. E4: the transformation factors.
    std::size_t samples = 0;
    std::vector<double> factors;
    // E5: the tracked measures (sharpness::parse_measures) and every how many steps.
    std::string measures;
    int track_every = 0;
    /// BLAS and worker threads of this job; not part of its identity.
    int threads = 1;

    /// Folder name, e.g. "mlp-r0.2-t1", "small-cnn-n100-t0", "mlp", "small-mlp-lr0.1".
    std::string name() const;
    /// DIR/<experiment>/runs/<name>.
    std::filesystem::path folder() const;
    /// The file whose presence marks the job as finished: measures.json for E3 runs,
    /// result.json otherwise; written atomically, last.
    std::filesystem::path result_file() const;
    /// The training run of an E3/E4/E5 job (subset "first", label noise = ratio).
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

/// Throws Error naming the first field a job cannot run with (unknown experiment, missing
/// model or folder, n = 0, bad training settings, samples or factors).
void validate_job(const Job& job);

/// `arg` quoted for a POSIX shell when it needs it.
std::string shell_quote(const std::string& arg);

/// One line per job: "<executable> run --experiment ... --threads T", every value explicit.
std::string plan_text(const std::vector<Job>& jobs, const std::filesystem::path& executable);

/// A command-line key of a job and what it means, for `run --help`.
struct JobOption {
    std::string key;  ///< without the leading "--"
    std::string help;
};

/// Every key job_arguments can write, in order.
std::vector<JobOption> job_options();

}  // namespace minsharp::experiments
