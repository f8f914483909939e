// Executing jobs: one in this process (with its log), or a grid of them as a pool of child
// processes with a progress line, skipping the ones already finished.
#pragma once

#include "minsharp/experiments/jobs.hpp"

#include <filesystem>
#include <string>
#include <vector>

namespace minsharp::experiments {

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

}  // namespace minsharp::experiments
