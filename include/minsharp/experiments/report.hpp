// From finished run folders to the deliverables: e1.csv … e5.csv, e3_correlations.csv,
// results.json, gnuplot figures and report.md (the paper's numbers side by side).
#pragma once

#include "minsharp/experiments/e1.hpp"
#include "minsharp/experiments/e2.hpp"
#include "minsharp/experiments/e3.hpp"
#include "minsharp/experiments/e4.hpp"
#include "minsharp/experiments/e5.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace minsharp::experiments {

/// Everything found in an output folder.
struct Collected {
    nlohmann::json plan;  ///< DIR/plan.json (profile, settings, job names), or null
    std::vector<E1Result> e1;
    std::vector<E2Result> e2;
    std::vector<E3Result> e3;  ///< sorted by model, ratio, trial
    std::optional<E4Result> e4;
    std::vector<E5Result> e5;  ///< sorted by model, lr
    std::vector<std::string> missing;   ///< planned jobs without a result
    std::vector<std::string> problems;  ///< result files that could not be read
    /// numerics_text of each result → how many results have it; more than one entry means
    /// the folder mixes runs computed under different kernel sets (a grid resumed elsewhere).
    std::map<std::string, int> numerics;
};

/// Reads DIR/plan.json and every DIR/e*/runs/*/{result,measures}.json. Results are sorted
/// so that the same set of runs always gives the same tables.
Collected collect_results(const std::filesystem::path& dir);

struct ReportOptions {
    bool figures = true;                 ///< draw PNGs when gnuplot is on the PATH
    std::optional<double> wall_seconds;  ///< of the command that produced the runs
    int jobs = 0, threads = 0;           ///< how it ran (0: unknown, e.g. --collect)
    std::size_t jobs_run = 0;            ///< jobs this invocation executed
    std::size_t jobs_reused = 0;         ///< jobs found finished and skipped
};

struct ReportOutcome {
    std::filesystem::path report;                ///< DIR/report.md
    std::vector<std::filesystem::path> figures;  ///< PNGs drawn
    bool gnuplot = false;                        ///< whether gnuplot was found
};

/// Where gnuplot is on the PATH, or empty.
std::filesystem::path find_gnuplot();

/// Writes the CSVs, results.json, the figures and report.md into `dir` (all atomically).
ReportOutcome write_report(const std::filesystem::path& dir, const Collected& collected,
                           const ReportOptions& options = {});

}  // namespace minsharp::experiments
