// The experiments of the Minimum Sharpness paper (Ibayashi, Hamaguchi and Imaizumi,
// arXiv:2106.12612) as a grid of independent jobs: profiles (how big each experiment is),
// jobs (one training run or one measurement, each writing its own folder), self-contained
// job command lines for --plan, and a runner that executes jobs as child processes with a
// progress line and skips the ones already finished.
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

/// Everything a profile decides, with the reasons.
struct Profile {
    std::string name;
    std::string summary;       ///< one paragraph: what it is for, its time budget
    std::uint64_t seed = 0;    ///< trial t uses seed + t (E3: see GridSpec::base_seeds)
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

/// The E3 base seed (0-based) a trial belongs to when each base seed runs
/// `trials_per_seed` trials (GridSpec::base_seeds).
int base_seed_index(int trial, int trials_per_seed);

/// The JSON of the profile and dataset that decide every job's identity: the profile without
/// its prose (reasons and summary, which may be reworded without changing a result).
nlohmann::json plan_fingerprint(const nlohmann::json& profile, const std::string& dataset);

/// Refuses to put `profile` on `settings.dataset` into a folder whose plan.json was written
/// for another profile or dataset: its results would be reported under the new profile's
/// name. Throws Error naming both and the way out (another --out, or --force).
void check_same_plan(const Profile& profile, const PlanSettings& settings);

/// The experiments an earlier plan.json of DIR selected (empty when there is none), so that
/// running `--experiments e3` after `--experiments e1` keeps E1 in the plan.
std::vector<std::string> planned_experiments(const std::filesystem::path& dir);

/// Deletes what a grid writes into DIR (run folders, plan, CSVs, results, report, figures)
/// and nothing else: `--force` starts over with this.
void clear_outputs(const std::filesystem::path& dir);

/// An exclusive, non-blocking flock on DIR/.lock for its lifetime, so that two runs never
/// compute the same jobs into one folder. The file holds the owner's pid for the message.
class OutputLock {
public:
    /// Throws Error "another reproduce_experiments (pid N) is running in DIR" when held.
    explicit OutputLock(const std::filesystem::path& dir);
    ~OutputLock();
    OutputLock(const OutputLock&) = delete;
    OutputLock& operator=(const OutputLock&) = delete;

private:
    int fd_ = -1;
};

/// True when job.result_file() exists and holds this job's result. A result file that cannot
/// be read (empty, truncated, not a result) counts as not done: a warning naming the file goes
/// to stderr and the job is recomputed. Throws Error when the file was produced with another
/// identity (e.g. a different profile into the same DIR), since reusing it would silently mix
/// settings.
bool job_done(const Job& job);

/// Executes one job in this process (training + measures for E3), writing its folder.
/// Does nothing when it is already done.
void run_job(const Job& job);

/// What `reproduce_experiments run` does: says "job X already done" for a finished job,
/// else runs it with its output (epoch lines, errors) appended to <folder>/job.log and echoed
/// to stdout with a "[e3/mlp-r0.2-t0] " prefix, so that the lines of jobs run side by side
/// (GNU parallel) can be told apart. When stdout already is that job.log (the runner opens
/// it for its children), the output goes there only.
void run_job_with_log(const Job& job);

/// A command-line key of a job and what it means, for `run --help`.
struct JobOption {
    std::string key;  ///< without the leading "--"
    std::string help;
};

/// Every key job_arguments can write, in order.
std::vector<JobOption> job_options();

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
    std::size_t stopped = 0;  ///< running jobs stopped by an interruption (not failures)
    int interrupted_by = 0;   ///< SIGINT or SIGTERM when the grid was interrupted, else 0
    double seconds = 0;
    std::vector<std::string> failures;  ///< "<job>: <reason> (log: <file>)"
};

/// Runs every job that is not done yet, longest first, `jobs` at a time as child processes
/// (each with OPENBLAS_NUM_THREADS = job.threads, output in <folder>/job.log), or one after
/// the other in this process when no executable is given. A failed job does not stop the
/// others; failures are listed in the summary.
///
/// Child processes die with the runner, even by kill -9 (PR_SET_PDEATHSIG). SIGINT or
/// SIGTERM to the runner stops the grid: no new job starts, the running ones get SIGTERM
/// (a second signal: SIGKILL) and are waited for, finished jobs are kept, and the summary
/// says which signal it was.
RunnerSummary run_jobs(const std::vector<Job>& jobs, const RunnerOptions& options);

/// One line for an interrupted grid: the signal, what was stopped, what is kept.
std::string interruption_message(const RunnerSummary& summary);

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
