// apps/reproduce_experiments: the paper's experiments E1–E4 and the edge-of-stability
// experiment E5 as a grid of independent jobs, then CSVs, figures and report.md. See
// docs/experiments.md.
#include "app_common.hpp"

#include "minsharp/experiments/planning.hpp"
#include "minsharp/experiments/profiles.hpp"
#include "minsharp/experiments/runner.hpp"
#include "minsharp/experiments/support.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/experiments/report.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/core/progress.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>

using namespace minsharp;
using namespace minsharp::experiments;
namespace fs = std::filesystem;

namespace {

// On 2 cores two single-threaded jobs beat one job with two BLAS threads for these small
// networks (GEMMs of a few hundred rows do not scale; see docs/experiments.md).
int default_jobs(int cores) { return std::max(1, cores); }

fs::path this_executable() { return fs::read_symlink("/proc/self/exe"); }

// model → trials per base seed, from the plan's E3 grids.
std::map<std::string, int> trials_per_seed(const nlohmann::json& plan) {
    std::map<std::string, int> out;
    if (plan.is_object() && plan.contains("profile"))
        for (const auto& g : plan["profile"]["e3"]) out[g["train"]["model"]] = g["trials"];
    return out;
}

void print_tau(const SeedSpread& s) {
    std::printf("E3 %-6s Kendall tau(%s, gap) = %.3f over %zu runs", s.model.c_str(),
                s.measure.c_str(), s.pooled, s.runs);
    if (s.per_seed.size() > 1)
        std::printf("; per base seed mean %.3f, min %.3f, max %.3f over %zu seeds", s.mean,
                    s.min, s.max, s.per_seed.size());
    std::printf("\n");
}

void print_summary(const Collected& collected, const ReportOutcome& outcome) {
    for (const auto& s : e3_seed_spread(collected.e3, trials_per_seed(collected.plan), 0))
        if (s.measure == "ms" || s.measure == "train_loss") print_tau(s);
    double worst = 0;
    for (const auto& r : collected.e1) worst = std::max(worst, r.relative_diff());
    if (!collected.e1.empty())
        std::printf("E1 largest |fast - brute| / |diag| = %.2e over %zu trials\n", worst,
                    collected.e1.size());
    std::printf("figures: %zu%s\n", outcome.figures.size(),
                outcome.gnuplot ? "" : " (gnuplot not found)");
    std::printf("report: %s\n", fs::absolute(outcome.report).string().c_str());
}

void build_report(const fs::path& dir, const ReportOptions& options) {
    const Collected collected = collect_results(dir);
    const ReportOutcome outcome = write_report(dir, collected, options);
    print_summary(collected, outcome);
}

// Every job parameter as an option of the `run` subcommand, so that `run --help` lists them
// and CLI11 rejects unknown or repeated ones; the values are then checked by
// parse_job_arguments, which also requires every parameter the experiment needs.
struct RunCommand {
    CLI::App* command = nullptr;
    std::map<std::string, std::string> values;
};

void add_run_options(RunCommand& run) {
    for (const auto& option : job_options())
        run.command->add_option("--" + option.key, run.values[option.key], option.help);
}

std::vector<std::string> given_job_arguments(const RunCommand& run) {
    std::vector<std::string> args;
    for (const auto& option : job_options())
        if (run.command->count("--" + option.key) > 0) {
            args.push_back("--" + option.key);
            args.push_back(run.values.at(option.key));
        }
    return args;
}

// The experiments to record in plan.json: these and those of an earlier plan of the same
// profile in the folder, so that a subset run after another keeps both in the report.
std::vector<std::string> with_planned(std::vector<std::string> experiments,
                                      const fs::path& out) {
    for (const auto& e : planned_experiments(out))
        if (std::find(experiments.begin(), experiments.end(), e) == experiments.end())
            experiments.push_back(e);
    std::sort(experiments.begin(), experiments.end());
    return experiments;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"Reproduce the experiments of 'Minimum sharpness' (Ibayashi et al., 2021):\n"
                 "E1 fast vs brute-force diag H, E2 randomized estimators, E3 randomized\n"
                 "labels (Kendall tau of each measure vs the generalization gap), E4 scale\n"
                 "invariance; and E5, the edge of stability (Cohen et al., 2021): lambda_max\n"
                 "against 2/lr under full-batch gradient descent. Writes e1.csv..e5.csv,\n"
                 "results.json, figures/ and report.md.\n"
                 "Finished runs are kept: rerunning the same command resumes the grid.",
                 "reproduce_experiments"};
    std::string profile_name = "quick", experiments = "e1,e2,e3,e4,e5", dataset = "mnist";
    std::string data_dir, out, plan_file, collect_dir;
    int jobs = 0, threads = 0;
    bool no_figures = false, force = false;
    // A repeated option (--ratio 0 --ratio 1) is an error, not "the last one wins".
    cli.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::Throw);
    cli.add_option("--profile", profile_name,
                   "tiny (tests, seconds), quick (default, <= 20 min on 2 cores), standard "
                   "(<= 90 min on 2 cores), full (the paper's protocol; use --plan)")
        ->capture_default_str();
    cli.add_option("--experiments", experiments, "comma-separated subset of e1,e2,e3,e4,e5")
        ->capture_default_str();
    cli.add_option("--dataset", dataset, "mnist or fashion-mnist")
        ->check(CLI::IsMember({"mnist", "fashion-mnist"}))
        ->capture_default_str();
    cli.add_option("--data-dir", data_dir,
                   "folder with the IDX files; default: data/mnist of the source tree "
                   "(data/fetch_mnist.sh) or /usr/share/datasets/fashion-mnist");
    cli.add_option("--jobs", jobs,
                   "jobs at the same time, each a child process (default: one per core)")
        ->check(app::thread_count(1));
    cli.add_option("--threads", threads, "BLAS threads per job (default: max(1, cores / jobs))")
        ->check(app::thread_count(1));
    cli.add_option("--out", out, "output folder (default: results/<profile>[-fashion-mnist])");
    cli.add_option("--plan", plan_file,
                   "write the grid as one self-contained command per line to FILE (for GNU "
                   "parallel or a Slurm array) instead of running it; then use --collect");
    cli.add_option("--collect", collect_dir,
                   "only build the CSVs, figures and report.md from the finished run folders "
                   "in DIR");
    cli.add_flag("--no-figures", no_figures, "skip gnuplot");
    cli.add_flag("--force", force,
                 "start over: delete the results of another profile or dataset in --out "
                 "(without it, such a folder is refused rather than mixed)");

    RunCommand run;
    run.command = cli.add_subcommand(
        "run", "run ONE job of a plan (what --plan lines call), every parameter explicit; "
               "its output goes to <out>/<experiment>/runs/<name>/job.log and, prefixed with "
               "the job's name, to stdout");
    run.command->option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::Throw);
    add_run_options(run);

    return app::run(cli, argc, argv, [&] {
        if (run.command->parsed()) {
            run_job_with_log(parse_job_arguments(given_job_arguments(run)));
            return;
        }
        if (!collect_dir.empty()) {
            build_report(collect_dir, {!no_figures, std::nullopt, 0, 0, 0, 0});
            return;
        }
        const Profile profile = make_profile(profile_name);
        const int cores = available_cores();
        if (jobs == 0) jobs = threads > 0 ? std::max(1, cores / threads) : default_jobs(cores);
        if (threads == 0) threads = threads_per_job(jobs, cores);
        PlanSettings settings;
        settings.out = out.empty() ? fs::path("results") /
                                         (profile.name + (dataset == "mnist" ? "" : "-" + dataset))
                                   : fs::path(out);
        settings.out = fs::absolute(settings.out).lexically_normal();
        settings.dataset = dataset;
        settings.data_dir = data_dir;
        settings.experiments = parse_experiments(experiments);
        settings.threads = threads;
        const std::vector<Job> grid = plan_jobs(profile, settings);
        fs::create_directories(settings.out);
        const OutputLock lock(settings.out);
        if (force)
            clear_outputs(settings.out);
        else
            check_same_plan(profile, settings);
        PlanSettings recorded = settings;
        recorded.experiments = with_planned(settings.experiments, settings.out);
        write_plan_json(profile, recorded, plan_jobs(profile, recorded));
        if (!plan_file.empty()) {
            write_file_atomic(plan_file, plan_text(grid, this_executable()));
            std::printf("wrote %zu jobs to %s\nrun them (e.g. parallel -j N < %s), then:\n  %s "
                        "--collect %s\n",
                        grid.size(), plan_file.c_str(), plan_file.c_str(),
                        this_executable().c_str(), settings.out.c_str());
            return;
        }
        std::fprintf(stderr, "profile %s, experiments %s, output %s\n", profile.name.c_str(),
                     experiments.c_str(), settings.out.c_str());
        const auto start = std::chrono::steady_clock::now();
        const RunnerSummary summary = run_jobs(grid, {jobs, this_executable(), true});
        if (summary.interrupted_by != 0) throw Error(interruption_message(summary));
        const double wall = seconds_since(start);
        std::fprintf(stderr, "%zu jobs: %zu finished now, %zu were already done, %zu failed (%s)\n",
                     summary.total, summary.finished, summary.skipped, summary.failed,
                     format_seconds(wall).c_str());
        build_report(settings.out, {!no_figures, wall, jobs, threads,
                                    summary.finished + summary.failed, summary.skipped});
        if (summary.failed > 0) {
            std::string list;
            for (const auto& f : summary.failures) list += "\n  " + f;
            throw Error(std::to_string(summary.failed) + " job(s) failed (the report covers the "
                        "others; rerun to retry):" + list);
        }
    });
}
