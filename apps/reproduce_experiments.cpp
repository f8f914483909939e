// apps/reproduce_experiments: the paper's experiments E1–E4 as a grid of independent jobs,
// then CSVs, figures and report.md. See docs/experiments.md.
#include "app_common.hpp"

#include "minsharp/experiments/common.hpp"
#include "minsharp/experiments/report.hpp"
#include "minsharp/io.hpp"
#include "minsharp/progress.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

using namespace minsharp;
using namespace minsharp::experiments;
namespace fs = std::filesystem;

namespace {

// On 2 cores two single-threaded jobs beat one job with two BLAS threads for these small
// networks (GEMMs of a few hundred rows do not scale; see docs/experiments.md).
int default_jobs(int cores) { return std::max(1, cores); }

fs::path this_executable() { return fs::read_symlink("/proc/self/exe"); }

void print_summary(const Collected& collected, const ReportOutcome& outcome) {
    for (const auto& c : e3_correlations(collected.e3))
        if (c.measure == "ms" || c.measure == "train_loss")
            std::printf("E3 %-6s Kendall tau(%s, gap) = %.3f over %zu runs\n", c.model.c_str(),
                        c.measure.c_str(), c.kendall, c.runs);
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

}  // namespace

int main(int argc, char** argv) {
    CLI::App cli{"Reproduce the experiments of 'Minimum sharpness' (Ibayashi et al., 2021):\n"
                 "E1 fast vs brute-force diag H, E2 randomized estimators, E3 randomized\n"
                 "labels (Kendall tau of each measure vs the generalization gap), E4 scale\n"
                 "invariance. Writes e1.csv..e4.csv, results.json, figures/ and report.md.\n"
                 "Finished runs are kept: rerunning the same command resumes the grid.",
                 "reproduce_experiments"};
    std::string profile_name = "quick", experiments = "e1,e2,e3,e4", dataset = "mnist";
    std::string data_dir, out, plan_file, collect_dir;
    int jobs = 0, threads = 0;
    bool no_figures = false;
    cli.add_option("--profile", profile_name,
                   "tiny (tests, seconds), quick (default, <= 20 min on 2 cores), standard "
                   "(<= 90 min on 2 cores), full (the paper's protocol; use --plan)")
        ->capture_default_str();
    cli.add_option("--experiments", experiments, "comma-separated subset of e1,e2,e3,e4")
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

    std::vector<std::string> job_args;
    CLI::App* run = cli.add_subcommand(
        "run", "run ONE job of a plan (what --plan lines call): run --experiment e3 "
               "--model mlp ... (every parameter explicit)");
    run->allow_extras()->prefix_command();

    return app::run(cli, argc, argv, [&] {
        if (run->parsed()) {
            run_job(parse_job_arguments(run->remaining()));
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
        write_plan_json(profile, settings, grid);
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
