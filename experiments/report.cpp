#include "minsharp/experiments/report.hpp"

#include "report_parts.hpp"

#include "minsharp/core/numerics.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io/files.hpp"
#include "minsharp/core/progress.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <limits>
#include <map>
#include <set>
#include <sstream>

namespace minsharp::experiments {

namespace fs = std::filesystem;

namespace report_parts {

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nullptr; }

void Figures::draw(const std::string& name,
                   const std::vector<std::pair<std::string, std::string>>& data,
                   const std::string& script_body, const std::string& size) {
    for (const auto& [file, text] : data) write_file_atomic(dir / file, text);
    const fs::path png = dir / (name + ".png");
    const fs::path tmp = dir / (name + ".png.tmp");
    const std::string script = "set terminal pngcairo size " + size +
                               " enhanced font 'Sans,10'\nset output '" + tmp.string() +
                               "'\n" + script_body + "\nunset output\n";
    const fs::path script_file = dir / (name + ".gp");
    write_file_atomic(script_file, script);
    const std::string command = shell_quote(gnuplot.string()) + " " +
                                shell_quote(script_file.string()) + " > " +
                                shell_quote((dir / (name + ".log")).string()) + " 2>&1";
    const int rc = std::system(command.c_str());
    if (rc == 0 && fs::exists(tmp) && fs::file_size(tmp) > 0) {
        fs::rename(tmp, png);
        drawn.push_back(png);
    } else {
        fs::remove(tmp);
        failures.push_back(name + " (see " + (dir / (name + ".log")).string() + ")");
    }
}

std::string figure_link(const std::vector<fs::path>& drawn, const std::string& name,
                        const std::string& alt) {
    for (const auto& p : drawn)
        if (p.filename() == name + ".png") return "![" + alt + "](figures/" + name + ".png)\n\n";
    return "";
}

}  // namespace report_parts

using namespace report_parts;

namespace {

// ---- collecting -------------------------------------------------------------------------

std::vector<fs::path> run_folders(const fs::path& dir, const std::string& experiment) {
    std::vector<fs::path> out;
    const fs::path runs = dir / experiment / "runs";
    if (!fs::is_directory(runs)) return out;
    for (const auto& entry : fs::directory_iterator(runs))
        if (entry.is_directory()) out.push_back(entry.path());
    std::sort(out.begin(), out.end());
    return out;
}

template <class R>
void collect_experiment(const fs::path& dir, const std::string& experiment,
                        const std::string& file_name, std::vector<R>& into, Collected& c) {
    for (const auto& folder : run_folders(dir, experiment)) {
        const fs::path file = folder / file_name;
        if (!fs::exists(file)) continue;
        try {
            const nlohmann::json result = read_json(file);
            const std::string numerics = numerics_text(result);
            into.push_back(R::from_json(result));
            ++c.numerics[numerics];
        } catch (const std::exception& e) {
            c.problems.push_back(file.string() + ": " + e.what());
        }
    }
}

}  // namespace

Collected collect_results(const fs::path& dir) {
    if (!fs::is_directory(dir))
        throw Error("collect: '" + dir.string() + "' is not a folder of experiment results");
    Collected c;
    if (fs::exists(dir / "plan.json")) c.plan = read_json(dir / "plan.json");
    collect_experiment(dir, "e1", "result.json", c.e1, c);
    collect_experiment(dir, "e2", "result.json", c.e2, c);
    collect_experiment(dir, "e3", "measures.json", c.e3, c);
    std::vector<E4Result> e4;
    collect_experiment(dir, "e4", "result.json", e4, c);
    if (!e4.empty()) c.e4 = e4.front();
    collect_experiment(dir, "e5", "result.json", c.e5, c);
    std::sort(c.e5.begin(), c.e5.end(), [](const E5Result& a, const E5Result& b) {
        return std::tie(a.model, a.lr) < std::tie(b.model, b.lr);
    });
    const auto by_model_n = [](const auto& a, const auto& b) {
        return std::tie(a.model, a.n, a.trial) < std::tie(b.model, b.n, b.trial);
    };
    std::sort(c.e1.begin(), c.e1.end(), by_model_n);
    std::sort(c.e2.begin(), c.e2.end(), by_model_n);
    std::sort(c.e3.begin(), c.e3.end(), [](const E3Result& a, const E3Result& b) {
        return std::tie(a.model, a.ratio, a.trial) < std::tie(b.model, b.ratio, b.trial);
    });
    if (c.plan.is_object() && c.plan.contains("jobs"))
        for (const auto& name : c.plan["jobs"]) {
            const std::string job = name.get<std::string>();
            const auto slash = job.find('/');
            const std::string experiment = job.substr(0, slash);
            const fs::path folder = dir / experiment / "runs" / job.substr(slash + 1);
            const char* file = experiment == "e3" ? "measures.json" : "result.json";
            if (!fs::exists(folder / file)) c.missing.push_back(job);
        }
    return c;
}

fs::path find_gnuplot() {
    const char* path = std::getenv("PATH");
    if (!path) return {};
    std::stringstream in(path);
    for (std::string dir; std::getline(in, dir, ':');) {
        if (dir.empty()) continue;
        const fs::path candidate = fs::path(dir) / "gnuplot";
        if (fs::is_regular_file(candidate) && ::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return {};
}

namespace {

// ---- CSV and JSON -------------------------------------------------------------------------

nlohmann::json results_json(const Collected& c, const std::vector<Correlation>& correlations,
                            const std::vector<SeedSpread>& spread, const ReportOptions& options) {
    nlohmann::json j;
    j["plan"] = c.plan;
    j["e1"] = nlohmann::json::array();
    for (const auto& r : c.e1) j["e1"].push_back(r.to_json());
    j["e2"] = nlohmann::json::array();
    for (const auto& r : c.e2) j["e2"].push_back(r.to_json());
    j["e3"]["runs"] = nlohmann::json::array();
    for (const auto& r : c.e3) j["e3"]["runs"].push_back(r.to_json());
    j["e3"]["correlations"] = correlations_json(correlations);
    j["e3"]["seed_spread"] = seed_spread_json(spread);
    j["e4"] = c.e4 ? c.e4->to_json() : nlohmann::json(nullptr);
    j["e5"] = nlohmann::json::array();
    for (const auto& r : c.e5) j["e5"].push_back(r.to_json());
    j["missing"] = c.missing;
    j["problems"] = c.problems;
    j["numerics"] = c.numerics;
    if (options.wall_seconds) j["wall_seconds"] = *options.wall_seconds;
    if (options.jobs > 0) j["jobs"] = options.jobs;
    if (options.threads > 0) j["threads_per_job"] = options.threads;
    j["jobs_run"] = options.jobs_run;
    j["jobs_reused"] = options.jobs_reused;
    return j;
}

// ---- report.md --------------------------------------------------------------------------------

// " under each of B base seeds" for a grid repeated under several base seeds.
std::string base_seeds_text(const nlohmann::json& grid) {
    const int b = grid.value("base_seeds", 1);
    return b > 1 ? " under each of " + std::to_string(b) + " base seeds" : "";
}

std::string profile_section(const nlohmann::json& plan) {
    std::string s = "## Profile and why\n\n";
    if (!plan.is_object() || !plan.contains("profile"))
        return s + "No plan.json was found in this folder, so the profile is unknown; the "
                   "tables below describe whatever runs were found.\n\n";
    const auto& p = plan["profile"];
    s += "Profile **" + p["name"].get<std::string>() + "** on **" +
         plan["dataset"].get<std::string>() + "** (" + plan["data_dir"].get<std::string>() +
         "). " + p["summary"].get<std::string>() + "\n\n";
    s += "Seeds: trial t uses seed " + std::to_string(p["seed"].get<std::uint64_t>()) +
         " + t (model init, label noise, subset and epoch order are separate streams of "
         "it).\n\n";
    const auto sized = [](const nlohmann::json& models) {
        std::string out;
        for (const auto& m : models) {
            std::string ns;
            for (const auto& n : m["n"]) ns += (ns.empty() ? "" : ", ") + std::to_string(n.get<std::size_t>());
            out += (out.empty() ? "" : "; ") + m["model"].get<std::string>() + " n ∈ {" + ns + "}";
        }
        return out;
    };
    s += "- **E1**: " + sized(p["e1"]["models"]) + ", " + std::to_string(p["e1"]["trials"].get<int>()) +
         " trial(s). Why: " + p["e1"]["why"].get<std::string>() + ".\n";
    s += "- **E2**: " + sized(p["e2"]["models"]) + ", " + std::to_string(p["e2"]["trials"].get<int>()) +
         " trial(s), " + std::to_string(p["e2"]["samples"].get<std::size_t>()) +
         " samples per estimator. Why: " + p["e2"]["why"].get<std::string>() + ".\n";
    for (const auto& g : p["e3"]) {
        const auto& t = g["train"];
        std::string ratios;
        for (const auto& r : g["ratios"]) ratios += (ratios.empty() ? "" : ", ") + format_double(r.get<double>());
        s += "- **E3 " + t["model"].get<std::string>() + "**: N = " +
             std::to_string(t["train_size"].get<std::size_t>()) + " first training images, test on " +
             (t["test_size"].get<std::size_t>() == 0 ? std::string("all")
                                                    : std::to_string(t["test_size"].get<std::size_t>())) +
             " test images, ratios {" + ratios + "}, " + std::to_string(g["trials"].get<int>()) +
             " trial(s)" + base_seeds_text(g) + ", " + std::to_string(t["epochs"].get<int>()) +
             " epochs for every run, batch " +
             std::to_string(t["batch_size"].get<std::size_t>()) + ", lr " +
             format_double(t["sgd"]["lr"].get<double>()) + " / (1 + " +
             format_double(t["sgd"]["lr_decay"].get<double>()) + "·step), momentum " +
             format_double(t["sgd"]["momentum"].get<double>()) + ", weight decay " +
             format_double(t["sgd"]["weight_decay"].get<double>()) + ". Why: " +
             g["why"].get<std::string>() + ".\n";
    }
    std::string factors;
    for (const auto& f : p["e4"]["factors"]) factors += (factors.empty() ? "" : ", ") + sig(f.get<double>());
    s += "- **E4**: " + p["e4"]["train"]["model"].get<std::string>() + " trained on N = " +
         std::to_string(p["e4"]["train"]["train_size"].get<std::size_t>()) + " for " +
         std::to_string(p["e4"]["train"]["epochs"].get<int>()) + " epochs, factors {" + factors +
         "}. Why: " + p["e4"]["why"].get<std::string>() + ".\n";
    if (p.contains("e5")) {
        std::string runs;
        for (const auto& m : p["e5"]["models"]) {
            std::string lrs;
            for (const auto& lr : m["lrs"]) lrs += (lrs.empty() ? "" : ", ") + format_double(lr.get<double>());
            runs += (runs.empty() ? "" : "; ") + m["model"].get<std::string>() + " on N = " +
                    std::to_string(m["train_size"].get<std::size_t>()) + " for " +
                    std::to_string(m["steps"].get<int>()) + " steps, η ∈ {" + lrs +
                    "}, measured every " + std::to_string(m["track_every"].get<int>()) + " steps";
        }
        s += "- **E5**: full-batch gradient descent (momentum 0, no weight decay): " + runs +
             "; tracked: " + p["e5"]["measures"].get<std::string>() + ". Why: " +
             p["e5"]["why"].get<std::string>() + ".\n";
    }
    s += "\n";
    s += "Every measure is computed in double on the N training inputs the run was trained on. "
         "Minimum sharpness is the exact optimum of the convex problem (Newton); node-wise MS "
         "alternates closed-form per-unit updates to a relative change ≤ 1e-12; normalized "
         "sharpness uses the closed-form alternating updates.\n\n";
    return s;
}

// Whether the plan selected `experiment` (a report without a plan shows what it found).
bool planned(const nlohmann::json& plan, const std::string& experiment) {
    if (!plan.is_object() || !plan.contains("experiments")) return false;
    for (const auto& e : plan["experiments"])
        if (e == experiment) return true;
    return false;
}

// Which kernels computed the results: a rerun reproduces these numbers only under the same
// OpenBLAS kernel set, and a folder resumed on another machine mixes two sets of networks.
std::string numerics_paragraph(const std::map<std::string, int>& numerics) {
    if (numerics.empty()) return "";
    if (numerics.size() == 1 && numerics.begin()->first == numerics_text({}))
        return "Numerics: not recorded (results written by an older minsharp).\n\n";
    if (numerics.size() == 1)
        return "Numerics: every result was computed with " + numerics.begin()->first +
               ". The same seeds train slightly different networks under another OpenBLAS "
               "kernel set (OPENBLAS_CORETYPE), which can swap a pair of runs and move τ "
               "(minsharp's docs/experiments.md).\n\n";
    std::string s = "**Mixed numerics:** the results were computed under " +
                    std::to_string(numerics.size()) + " kernel sets:";
    for (const auto& [text, count] : numerics)
        s += " " + text + " (" + std::to_string(count) + (count == 1 ? " result);" : " results);");
    s.back() = '.';
    return s + " Runs of one seed are different networks under different OpenBLAS kernel "
               "sets; rerun into a fresh folder on one machine to compare like with like.\n\n";
}

std::string report_markdown(const Collected& c, const std::vector<Correlation>& corr,
                            const std::vector<SeedSpread>& spread, const ReportOutcome& outcome, const std::vector<std::string>& figure_failures,
                            const ReportOptions& options) {
    std::string s = "# minsharp: reproducing *Minimum sharpness* (Ibayashi et al., 2021)\n\n";
    const std::time_t now = std::time(nullptr);
    char date[64];
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::localtime(&now));
    s += std::string("Generated ") + date + ".";
    if (options.wall_seconds)
        s += " Wall time of this invocation: **" + format_seconds(*options.wall_seconds) +
             "**" + (options.jobs > 0 ? " with " + std::to_string(options.jobs) + " parallel jobs × " +
                                            std::to_string(options.threads) + " BLAS thread(s)"
                                      : std::string()) +
             " (" + std::to_string(options.jobs_run) + " jobs run, " +
             std::to_string(options.jobs_reused) + " reused from earlier invocations).";
    s += "\n\n";
    if (!c.missing.empty()) {
        s += "**Incomplete:** " + std::to_string(c.missing.size()) +
             " planned job(s) have no result yet (rerun the same command to finish them): ";
        for (std::size_t i = 0; i < c.missing.size() && i < 10; ++i)
            s += (i ? ", " : "") + c.missing[i];
        s += c.missing.size() > 10 ? ", …\n\n" : "\n\n";
    }
    for (const auto& p : c.problems) s += "**Unreadable result:** " + p + "\n\n";
    s += numerics_paragraph(c.numerics);
    if (!outcome.gnuplot)
        s += "gnuplot was not found on the PATH, so this report has no figures (install "
             "gnuplot-nox and rerun with --collect to draw them).\n\n";
    for (const auto& f : figure_failures) s += "Figure failed: " + f + "\n\n";
    s += profile_section(c.plan);
    s += e3_section(c.e3, corr, spread, outcome.figures);
    s += paper_section(c.e3, corr, spread, c.plan);
    s += e1_section(c.e1, outcome.figures);
    s += e2_section(c.e2, outcome.figures);
    s += e4_section(c.e4, outcome.figures);
    if (!c.e5.empty() || planned(c.plan, "e5")) s += e5_section(c.e5, outcome.figures);
    s += "## Files\n\n`e1.csv`, `e2.csv`, `e3.csv`, `e3_correlations.csv`, `e3_tau_by_seed.csv`, "
         "`e4.csv`, `e5.csv` (one row per trial / run / point / base seed / tracked step), `results.json` (everything, "
         "including the plan), `figures/` (PNGs with their gnuplot scripts and data), and one "
         "folder per run under "
         "`e*/runs/` (training config, metrics.jsonl, checkpoints, the run's JSON result).\n";
    return s;
}

}  // namespace

ReportOutcome write_report(const fs::path& dir, const Collected& c, const ReportOptions& options) {
    ReportOutcome outcome;
    if (!c.e1.empty()) write_file_atomic(dir / "e1.csv", results_csv(c.e1));
    if (!c.e2.empty()) write_file_atomic(dir / "e2.csv", e2_csv(c.e2));
    const std::vector<Correlation> corr = e3_correlations(c.e3);
    const std::vector<SeedSpread> spread = e3_seed_spread(c.e3, trials_per_seed(c.plan));
    if (!c.e3.empty()) {
        write_file_atomic(dir / "e3.csv", results_csv(c.e3));
        write_file_atomic(dir / "e3_correlations.csv", correlations_csv(corr));
        write_file_atomic(dir / "e3_tau_by_seed.csv", seed_spread_csv(spread));
    }
    if (c.e4) write_file_atomic(dir / "e4.csv", e4_csv(*c.e4));
    if (!c.e5.empty()) write_file_atomic(dir / "e5.csv", e5_csv(c.e5));
    write_json(dir / "results.json", results_json(c, corr, spread, options));

    Figures figures{dir / "figures", find_gnuplot(), {}, {}};
    outcome.gnuplot = !figures.gnuplot.empty();
    if (options.figures && outcome.gnuplot) {
        fs::create_directories(figures.dir);
        if (!c.e1.empty()) e1_figure(figures, c.e1);
        if (!c.e2.empty()) e2_figure(figures, c.e2);
        if (!c.e3.empty()) e3_figures(figures, c.e3);
        if (c.e4) e4_figure(figures, *c.e4);
        if (!c.e5.empty()) e5_figure(figures, c.e5);
    }
    outcome.figures = figures.drawn;
    outcome.report = dir / "report.md";
    write_file_atomic(outcome.report,
                      report_markdown(c, corr, spread, outcome, figures.failures, options));
    return outcome;
}

}  // namespace minsharp::experiments
