#include "minsharp/experiments/runner.hpp"

#include "minsharp/core/clock.hpp"
#include "minsharp/experiments/e1.hpp"
#include "minsharp/experiments/e2.hpp"
#include "minsharp/experiments/e3.hpp"
#include "minsharp/experiments/e4.hpp"
#include "minsharp/experiments/e5.hpp"
#include "minsharp/experiments/support.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/core/parallel.hpp"
#include "minsharp/core/progress.hpp"

#include <fcntl.h>
#include <sched.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

extern char** environ;

namespace minsharp::experiments {

namespace fs = std::filesystem;

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
    else if (job.experiment == "e4") run_e4_job(job);
    else run_e5_job(job);
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
