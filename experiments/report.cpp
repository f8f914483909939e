#include "minsharp/experiments/report.hpp"

#include "minsharp/experiments/support.hpp"

#include "minsharp/io.hpp"
#include "minsharp/progress.hpp"

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

namespace {

const double nan_value = std::numeric_limits<double>::quiet_NaN();

// ---- formatting -------------------------------------------------------------------------

std::string fmt(const char* format, double v) {
    if (!std::isfinite(v)) return "n/a";
    char buf[64];
    std::snprintf(buf, sizeof buf, format, v);
    return buf;
}

std::string sig(double v) { return fmt("%.3g", v); }
std::string fixed2(double v) { return fmt("%.2f", v); }
std::string fixed3(double v) { return fmt("%.3f", v); }
std::string sci(double v) { return fmt("%.1e", v); }

std::string table_row(const std::vector<std::string>& cells) {
    std::string s = "|";
    for (const auto& c : cells) s += " " + c + " |";
    return s + "\n";
}

std::string table_header(const std::vector<std::string>& cells) {
    std::string s = table_row(cells) + "|";
    for (std::size_t i = 0; i < cells.size(); ++i) s += "---|";
    return s + "\n";
}

double mean(const std::vector<double>& v) {
    if (v.empty()) return nan_value;
    double s = 0;
    for (double x : v) s += x;
    return s / double(v.size());
}

template <class R, class F>
double mean_of(const std::vector<const R*>& rows, F field) {
    std::vector<double> v;
    for (const auto* r : rows) v.push_back(field(*r));
    return mean(v);
}

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
                        const std::string& file_name, std::vector<R>& into,
                        std::vector<std::string>& problems) {
    for (const auto& folder : run_folders(dir, experiment)) {
        const fs::path file = folder / file_name;
        if (!fs::exists(file)) continue;
        try {
            into.push_back(R::from_json(read_json(file)));
        } catch (const std::exception& e) {
            problems.push_back(file.string() + ": " + e.what());
        }
    }
}

}  // namespace

Collected collect_results(const fs::path& dir) {
    if (!fs::is_directory(dir))
        throw Error("collect: '" + dir.string() + "' is not a folder of experiment results");
    Collected c;
    if (fs::exists(dir / "plan.json")) c.plan = read_json(dir / "plan.json");
    collect_experiment(dir, "e1", "result.json", c.e1, c.problems);
    collect_experiment(dir, "e2", "result.json", c.e2, c.problems);
    collect_experiment(dir, "e3", "measures.json", c.e3, c.problems);
    std::vector<E4Result> e4;
    collect_experiment(dir, "e4", "result.json", e4, c.problems);
    if (!e4.empty()) c.e4 = e4.front();
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

std::vector<E3Summary> summarize_e3(const std::vector<E3Result>& results) {
    std::map<std::pair<std::string, double>, std::vector<const E3Result*>> groups;
    for (const auto& r : results) groups[{r.model, r.ratio}].push_back(&r);
    std::vector<E3Summary> out;
    for (const auto& [key, rows] : groups) {
        E3Summary s;
        s.model = key.first;
        s.ratio = key.second;
        s.runs = rows.size();
        s.gap = mean_of(rows, [](const E3Result& r) { return r.gap(); });
        s.train_loss = mean_of(rows, [](const E3Result& r) { return r.train_loss; });
        s.train_accuracy = mean_of(rows, [](const E3Result& r) { return r.train_accuracy; });
        s.test_accuracy = mean_of(rows, [](const E3Result& r) { return r.test_accuracy; });
        s.trace = mean_of(rows, [](const E3Result& r) { return r.trace; });
        s.ms = mean_of(rows, [](const E3Result& r) { return r.ms; });
        s.ms_node = mean_of(rows, [](const E3Result& r) { return r.ms_node; });
        s.normalized = mean_of(rows, [](const E3Result& r) { return r.normalized; });
        out.push_back(s);
    }
    return out;
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

template <class R>
std::string results_csv(const std::vector<R>& rows) {
    CsvWriter csv(R::csv_columns());
    for (const auto& r : rows) csv.add_row(r.csv_row());
    return csv.str();
}

std::string e2_csv(const std::vector<E2Result>& rows) {
    CsvWriter csv(E2Result::csv_columns());
    for (const auto& r : rows)
        for (auto& row : r.csv_rows()) csv.add_row(std::move(row));
    return csv.str();
}

std::string correlations_csv(const std::vector<Correlation>& rows) {
    CsvWriter csv({"model", "measure", "runs", "kendall_tau", "spearman_rho"});
    for (const auto& c : rows)
        csv.add_row({c.model, c.measure, std::to_string(c.runs), format_double(c.kendall),
                     format_double(c.spearman)});
    return csv.str();
}

std::string e4_csv(const E4Result& r) {
    CsvWriter csv(E4Row::csv_columns());
    for (const auto& row : r.rows) csv.add_row(row.csv_row());
    return csv.str();
}

nlohmann::json finite_or_null(double v) { return std::isfinite(v) ? nlohmann::json(v) : nullptr; }

nlohmann::json seed_spread_json(const std::vector<SeedSpread>& spread) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& s : spread) {
        nlohmann::json per_seed = nlohmann::json::array();
        for (double t : s.per_seed) per_seed.push_back(finite_or_null(t));
        j.push_back({{"model", s.model},
                     {"measure", s.measure},
                     {"runs", s.runs},
                     {"kendall_tau_per_base_seed", per_seed},
                     {"mean", finite_or_null(s.mean)},
                     {"min", finite_or_null(s.min)},
                     {"max", finite_or_null(s.max)},
                     {"all_runs", finite_or_null(s.pooled)},
                     {"bootstrap_95", {finite_or_null(s.low), finite_or_null(s.high)}}});
    }
    return j;
}

std::string seed_spread_csv(const std::vector<SeedSpread>& spread) {
    CsvWriter csv({"model", "measure", "base_seed", "kendall_tau"});
    for (const auto& s : spread)
        for (std::size_t b = 0; b < s.per_seed.size(); ++b)
            csv.add_row({s.model, s.measure, std::to_string(b), format_double(s.per_seed[b])});
    return csv.str();
}

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
    j["e3"]["correlations"] = nlohmann::json::array();
    for (const auto& k : correlations)
        j["e3"]["correlations"].push_back({{"model", k.model},
                                           {"measure", k.measure},
                                           {"runs", k.runs},
                                           {"kendall_tau", finite_or_null(k.kendall)},
                                           {"spearman_rho", finite_or_null(k.spearman)}});
    j["e3"]["seed_spread"] = seed_spread_json(spread);
    j["e4"] = c.e4 ? c.e4->to_json() : nlohmann::json(nullptr);
    j["missing"] = c.missing;
    j["problems"] = c.problems;
    if (options.wall_seconds) j["wall_seconds"] = *options.wall_seconds;
    if (options.jobs > 0) j["jobs"] = options.jobs;
    if (options.threads > 0) j["threads_per_job"] = options.threads;
    j["jobs_run"] = options.jobs_run;
    j["jobs_reused"] = options.jobs_reused;
    return j;
}

// ---- figures --------------------------------------------------------------------------------

struct Figures {
    fs::path dir;  ///< DIR/figures
    fs::path gnuplot;
    std::vector<fs::path> drawn;
    std::vector<std::string> failures;

    // Writes the data files and the script, runs gnuplot into a temp file, renames it.
    void draw(const std::string& name, const std::vector<std::pair<std::string, std::string>>& data,
              const std::string& script_body, const std::string& size = "900,600") {
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
};

std::string quoted(const fs::path& p) { return "'" + p.string() + "'"; }

// The axes' range: every point's Tr H, padded by a factor 3 on both sides of the log axes
// (and at least a decade wide), so that the diagonal is a visible line even for one point.
std::pair<double, double> e1_plot_range(const std::vector<E1Result>& rows) {
    double lo = INFINITY, hi = 0;
    for (const auto& r : rows)
        for (double v : {r.brute_trace, r.fast_trace})
            if (v > 0 && std::isfinite(v)) {
                lo = std::min(lo, v);
                hi = std::max(hi, v);
            }
    if (!(hi > 0)) return {0.1, 10.0};
    const double middle = std::sqrt(lo * hi);
    lo = std::min(lo / 3.0, middle / std::sqrt(10.0));
    hi = std::max(hi * 3.0, middle * std::sqrt(10.0));
    return {lo, hi};
}

void e1_figure(Figures& f, const std::vector<E1Result>& rows) {
    std::map<std::string, std::string> per_model;
    for (const auto& r : rows)
        per_model[r.model] += format_double(r.brute_trace) + " " + format_double(r.fast_trace) +
                              " " + std::to_string(r.n) + "\n";
    // The diagonal as two explicit points: gnuplot would sample `plot x` only over the
    // points' own range, which is empty for a single point.
    const auto [lo, hi] = e1_plot_range(rows);
    std::vector<std::pair<std::string, std::string>> data = {
        {"e1_diagonal.dat", format_double(lo) + " " + format_double(lo) + "\n" +
                                format_double(hi) + " " + format_double(hi) + "\n"}};
    const std::string range = "[" + format_double(lo) + ":" + format_double(hi) + "]";
    std::string plot = "set xrange " + range + "\nset yrange " + range + "\nplot " +
                       quoted(f.dir / "e1_diagonal.dat") +
                       " u 1:2 w l lc rgb 'gray' dt 2 lw 1.5 title 'fast = brute force'";
    int style = 7;
    for (const auto& [model, text] : per_model) {
        const std::string file = "e1_" + model + ".dat";
        data.push_back({file, text});
        plot += ", " + quoted(f.dir / file) + " u 1:2 w p pt " + std::to_string(style) +
                " ps 1.3 title '" + model + "'";
        style += 2;
    }
    f.draw("e1_trace",
           data,
           "set title 'E1: Tr H, fast exact diagonal vs brute force (random init)'\n"
           "set xlabel 'Tr H, brute force (central differences of the gradient)'\n"
           "set ylabel 'Tr H, fast exact diagonal'\nset logscale xy\nset key top left\n"
           "set grid\n" + plot,
           "800,650");
}

// One line per trial: a finite-difference sample that straddles a kink is an outlier that
// dominates a mean over trials, and the reader should see it as such.
void e2_figure(Figures& f, const std::vector<E2Result>& rows) {
    std::map<std::string, std::vector<const E2Result*>> models;
    for (const auto& r : rows) models[r.model].push_back(&r);
    if (models.empty()) return;
    const std::map<std::string, int> colour = {{"arxiv", 1}, {"icml", 2}, {"hutchinson", 3}};
    std::vector<std::pair<std::string, std::string>> data;
    std::string script = "set multiplot layout 2," + std::to_string(models.size()) +
                         " title 'E2: relative error of the randomized estimators vs wall time "
                         "(one line per trial; dashed: exact diag H time)'\n"
                         "set logscale xy\nset grid\nset key bottom left font ',8'\n"
                         "set format y '10^{%T}'\n";
    for (int row = 0; row < 2; ++row)
        for (const auto& [model, results] : models) {
            std::string plot;
            std::set<std::string> titled;
            script += "unset arrow\n";
            for (const auto* r : results)
                script += "set arrow from " + format_double(r->exact_seconds) + ", graph 0 to " +
                          format_double(r->exact_seconds) +
                          ", graph 1 nohead dt 2 lc rgb 'gray'\n";
            for (const auto* r : results)
                for (const auto& c : r->curves) {
                    if ((c.estimator == "hutchinson") != (row == 1)) continue;
                    std::string text;
                    for (const auto& p : c.points)
                        text += format_double(p.seconds) + " " + format_double(p.relative_error) +
                                " " + std::to_string(p.samples) + "\n";
                    const std::string label = c.estimator + " n=" + std::to_string(r->n);
                    const std::string file = "e2_" + model + "_" + c.estimator + "_n" +
                                             std::to_string(r->n) + "_t" +
                                             std::to_string(r->trial) + ".dat";
                    data.push_back({file, text});
                    const auto it = colour.find(c.estimator);
                    plot += std::string(plot.empty() ? "plot " : ", ") + quoted(f.dir / file) +
                            " u 1:2 w lp pt 7 ps 0.4 lc " +
                            std::to_string(it == colour.end() ? 4 : it->second) + " dt " +
                            std::to_string(1 + (r->n >= 100) + (r->n >= 1000)) +
                            (titled.insert(label).second ? " title '" + label + "'"
                                                         : std::string(" notitle"));
                }
            script += "set title '" + model +
                      (row == 0 ? ": diag H estimators'" : ": Hutchinson Tr H'") +
                      "\nset xlabel 'seconds'\nset ylabel '" +
                      (row == 0 ? std::string("||d - diag H|| / ||diag H||")
                                : std::string("|t - Tr H| / Tr H")) +
                      "'\n" + (plot.empty() ? "plot NaN notitle" : plot) + "\n";
        }
    script += "unset multiplot";
    f.draw("e2_error_vs_time", data, script,
           std::to_string(std::max<std::size_t>(900, 520 * models.size())) + ",800");
}

void e3_figures(Figures& f, const std::vector<E3Result>& rows) {
    std::map<std::string, std::string> per_model;
    for (const auto& r : rows)
        per_model[r.model] += format_double(r.ratio) + " " + std::to_string(r.trial) + " " +
                              format_double(r.gap()) + " " + format_double(r.train_loss) + " " +
                              format_double(r.trace) + " " + format_double(r.ms) + " " +
                              format_double(r.ms_node) + " " + format_double(r.normalized) + "\n";
    const std::vector<std::pair<int, std::string>> panels = {
        {4, "final training loss (baseline)"}, {5, "Tr H"}, {6, "minimum sharpness (layer-wise)"},
        {7, "minimum sharpness (node-wise)"}, {8, "normalized sharpness"}};
    for (const auto& [model, text] : per_model) {
        const std::string file = "e3_" + model + ".dat";
        std::string script =
            "set multiplot layout 2,3 title 'E3 " + model +
            ": generalization gap vs each measure, coloured by label-noise ratio r'\n"
            "set palette defined (0 'blue', 0.5 'green', 1 'red')\nset cbrange [0:1]\n"
            "set cblabel 'r'\nset logscale x\nset grid\nset ylabel 'gap = train acc - test acc'\n";
        for (const auto& [column, label] : panels)
            script += "set xlabel '" + label + "'\nplot " + quoted(f.dir / file) + " u " +
                      std::to_string(column) + ":3:1 w p pt 7 ps 1.2 lc palette notitle\n";
        script += "unset multiplot";
        f.draw("e3_" + model, {{file, text}}, script, "1400,850");
    }
}

void e4_figure(Figures& f, const E4Result& r) {
    std::map<std::string, std::string> per_transform;
    for (const auto& row : r.rows)
        per_transform[row.transform] += format_double(row.factor) + " " + format_double(row.trace) +
                                        " " + format_double(row.ms) + " " +
                                        format_double(row.ms_node) + " " +
                                        format_double(row.normalized) + " " +
                                        format_double(row.output_change) + "\n";
    std::vector<std::pair<std::string, std::string>> data;
    std::string script = "set multiplot layout 1," + std::to_string(per_transform.size()) +
                         " title 'E4: " + r.model +
                         " rescaled without changing its function'\n"
                         "set logscale xy\nset grid\nset key top center\nset xlabel 'factor c'\n"
                         "set format x '10^{%T}'\nset format y '10^{%T}'\n";
    for (const auto& [transform, text] : per_transform) {
        const std::string file = "e4_" + transform + ".dat";
        data.push_back({file, text});
        const std::string q = quoted(f.dir / file);
        script += "set title '" + transform + "-wise transformation'\nset ylabel 'value'\nplot " +
                  q + " u 1:2 w lp pt 7 title 'Tr H', " + q +
                  " u 1:3 w lp pt 5 title 'MS (layer-wise)', " + q +
                  " u 1:4 w lp pt 9 title 'MS (node-wise)', " + q +
                  " u 1:5 w lp pt 11 title 'normalized'\n";
    }
    script += "unset multiplot";
    f.draw("e4_scale_invariance", data, script, "1300,550");
}

// ---- report.md --------------------------------------------------------------------------------

struct PaperReference {
    const char* model;
    double tau_ms, tau_normalized, ms_r0, ms_r1, gap_r0, gap_r1;
    const char* ms_note;
    int epochs;
    double lr;
};

const PaperReference paper[] = {
    {"mlp", 0.86, 0.94, 2.3, 98, 0.02, 0.90, "", 3000, 0.1},
    {"lenet", 0.68, 0.72, 5.8, 92, 0.01, 0.90, " (peak 120 at r = 0.8)", 1000, 0.01},
};

const PaperReference* paper_reference(const std::string& model) {
    for (const auto& p : paper)
        if (model == p.model) return &p;
    return nullptr;
}

double correlation_of(const std::vector<Correlation>& all, const std::string& model,
                      const std::string& measure) {
    for (const auto& c : all)
        if (c.model == model && c.measure == measure) return c.kendall;
    return nan_value;
}

std::string figure_link(const std::vector<fs::path>& drawn, const std::string& name,
                        const std::string& alt) {
    for (const auto& p : drawn)
        if (p.filename() == name + ".png") return "![" + alt + "](figures/" + name + ".png)\n\n";
    return "";
}

const nlohmann::json* grid_of(const nlohmann::json& plan, const std::string& model) {
    if (!plan.is_object() || !plan.contains("profile")) return nullptr;
    for (const auto& g : plan["profile"]["e3"])
        if (g["train"]["model"] == model) return &g;
    return nullptr;
}

// model → trials per base seed, from the plan's E3 grids (empty without a plan).
std::map<std::string, int> trials_per_seed(const nlohmann::json& plan) {
    std::map<std::string, int> out;
    if (!plan.is_object() || !plan.contains("profile")) return out;
    for (const auto& g : plan["profile"]["e3"]) out[g["train"]["model"]] = g["trials"].get<int>();
    return out;
}

const SeedSpread* spread_of(const std::vector<SeedSpread>& all, const std::string& model,
                            const std::string& measure) {
    for (const auto& s : all)
        if (s.model == model && s.measure == measure) return &s;
    return nullptr;
}

std::string joined_taus(const std::vector<double>& taus) {
    std::string out;
    for (double t : taus) out += (out.empty() ? "" : ", ") + fixed2(t);
    return out;
}

// The τ of every quantity per base seed, with mean/min/max and the bootstrap interval: how
// much of a single grid's τ is the luck of its seeds (and of the CPU's float summation
// order, which changes the trained networks just as a seed does).
std::string seed_spread_table(const std::vector<SeedSpread>& spread) {
    bool several = false;
    for (const auto& sp : spread) several = several || sp.per_seed.size() > 1;
    if (!several) return "";
    std::string s = "Kendall τ per base seed. Base seed b is the grid run with seeds "
                    "seed + b·trials + t (t < trials per ratio), i.e. the same grid drawn "
                    "again. The bootstrap interval (95%, percentile, 2,000 resamples) draws "
                    "all runs of the model with replacement; the last columns are τ over all "
                    "runs together, which also counts pairs of runs from different seeds.\n\n";
    s += table_header({"model", "quantity", "τ per base seed", "mean", "min", "max",
                       "τ all runs", "95% bootstrap"});
    for (const auto& sp : spread) {
        if (sp.per_seed.size() < 2) continue;
        const std::string name = sp.measure == "train_loss" ? "final train loss (baseline)"
                                                            : sp.measure;
        s += table_row({sp.model, name, joined_taus(sp.per_seed), fixed2(sp.mean),
                        fixed2(sp.min), fixed2(sp.max),
                        fixed2(sp.pooled) + " (" + std::to_string(sp.runs) + " runs)",
                        "[" + fixed2(sp.low) + ", " + fixed2(sp.high) + "]"});
    }
    return s + "\n";
}

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
         "}. Why: " + p["e4"]["why"].get<std::string>() + ".\n\n";
    s += "Every measure is computed in double on the N training inputs the run was trained on. "
         "Minimum sharpness is the exact optimum of the convex problem (Newton); node-wise MS "
         "alternates closed-form per-unit updates to a relative change ≤ 1e-12; normalized "
         "sharpness uses the closed-form alternating updates.\n\n";
    return s;
}

std::string e1_section(const std::vector<E1Result>& rows, const std::vector<fs::path>& drawn) {
    std::string s = "## E1: fast exact diag H vs brute force\n\n";
    if (rows.empty()) return s + "No E1 results.\n\n";
    s += "Random init, n random training images. Brute force = central differences (step " +
         sig(rows.front().step) +
         ") of the exact gradient along every coordinate, in double: 2·P gradient "
         "evaluations. A difference straddles a kink whenever some ReLU input (or a max-pool "
         "choice between near-tied inputs) is within reach of the step; it then returns the "
         "gradient's jump over 2·step. (At step 1e-4, SmallCNN on MNIST had hundreds of such "
         "entries.) So every entry is differenced a second time at step/10; where the two "
         "disagree, the entry is redone at 1e-8, 1e-9, 1e-10 until two successive steps "
         "agree, and that value is the reference (column 'kink entries'; the check is not "
         "counted in the brute-force time). Times are means over trials (" +
         std::to_string(rows.front().threads) + " thread(s) per job).\n\n";
    s += table_header({"model", "n", "trials", "P", "fast (s)", "fast float (s)", "brute (s)",
                       "speed-up", "Tr H fast", "Tr H brute", "max ‖diff‖/‖diag‖",
                       "max float ‖diff‖/‖diag‖", "kink entries (unresolved)"});
    std::map<std::pair<std::string, std::size_t>, std::vector<const E1Result*>> groups;
    for (const auto& r : rows) groups[{r.model, r.n}].push_back(&r);
    double worst = 0;
    for (const auto& [key, g] : groups) {
        double rel = 0, frel = 0;
        std::size_t kinks = 0, unresolved = 0;
        for (const auto* r : g) {
            rel = std::max(rel, r->relative_diff());
            frel = std::max(frel, r->float_relative_diff());
            kinks += r->kink_entries;
            unresolved += r->unresolved_entries;
        }
        worst = std::max(worst, rel);
        s += table_row({key.first, std::to_string(key.second), std::to_string(g.size()),
                        std::to_string(g.front()->parameters),
                        sig(mean_of(g, [](const E1Result& r) { return r.fast_seconds; })),
                        sig(mean_of(g, [](const E1Result& r) { return r.fast_float_seconds; })),
                        sig(mean_of(g, [](const E1Result& r) { return r.brute_seconds; })),
                        sig(mean_of(g, [](const E1Result& r) { return r.speedup(); })) + "×",
                        sig(mean_of(g, [](const E1Result& r) { return r.fast_trace; })),
                        sig(mean_of(g, [](const E1Result& r) { return r.brute_trace; })),
                        sci(rel), sci(frel),
                        std::to_string(kinks) + " (" + std::to_string(unresolved) + ")"});
    }
    s += "\nLargest relative difference over all trials: **" + sci(worst) + "** (" +
         (worst <= 1e-5 ? "within" : "NOT within") +
         " the 1e-5 asked of it; " +
         (worst <= 1e-5 ? std::string("the residual is the rounding error of the central "
                                      "differences, ~1e-16·|g|/step")
                        : std::string("a brute-force difference that straddles a kink is "
                                      "the likely cause; see the per-trial values in e1.csv")) +
         "). The authors printed ‖diff‖₂ = 0.0000 with fast times of "
         "0.02–0.34 s against 10–21 s for double backprop on a GPU.\n\n";
    s += figure_link(drawn, "e1_trace", "E1 Tr H fast vs brute force");
    return s;
}

std::string e2_section(const std::vector<E2Result>& rows, const std::vector<fs::path>& drawn) {
    std::string s = "## E2: randomized estimators vs the exact diagonal\n\n";
    if (rows.empty()) return s + "No E2 results.\n\n";
    s += "Relative error ‖d̂ − diag H‖₂ / ‖diag H‖₂ of Tsuzuku et al.'s finite-difference "
         "estimators (arXiv: Gaussian probes, r = 1e-5; ICML: Rademacher probes, step "
         "2r|θ| + 1e-8, final ReLU) and |t̂ − Tr H| / Tr H of Hutchinson, after the last "
         "sample; the exact method is the reference (error 0 by definition).\n\n";
    s += table_header({"model", "n", "exact (s)", "estimator", "samples", "time (s)",
                       "relative error (min – max over trials)", "time / exact"});
    std::map<std::tuple<std::string, std::size_t, std::string>, std::vector<E2Point>> last;
    std::map<std::pair<std::string, std::size_t>, std::vector<double>> exact;
    for (const auto& r : rows) {
        exact[{r.model, r.n}].push_back(r.exact_seconds);
        for (const auto& c : r.curves)
            if (!c.points.empty()) last[{r.model, r.n, c.estimator}].push_back(c.points.back());
    }
    for (const auto& [key, points] : last) {
        const auto& [model, n, estimator] = key;
        std::vector<double> t, e;
        for (const auto& p : points) {
            t.push_back(p.seconds);
            e.push_back(p.relative_error);
        }
        const double ex = mean(exact[{model, n}]);
        s += table_row({model, std::to_string(n), sig(ex), estimator,
                        std::to_string(points.front().samples), sig(mean(t)),
                        sig(*std::min_element(e.begin(), e.end())) + " – " +
                            sig(*std::max_element(e.begin(), e.end())),
                        sig(mean(t) / ex) + "×"});
    }
    s += "\nBetween outliers the estimators' error falls roughly like 1/√samples (slope −½ "
         "on the log–log plot), so each extra digit costs 100× the time, while the exact "
         "diagonal costs K backward passes once. All three estimators difference gradients "
         "along random probes, so a sample whose perturbation straddles a ReLU or max-pool kink "
         "returns the gradient's jump over the step: a huge outlier that then decays only as "
         "1/samples (the jumps in some curves). The exact method has no such failure mode.\n\n";
    s += figure_link(drawn, "e2_error_vs_time", "E2 error vs time");
    return s;
}

std::string e3_section(const std::vector<E3Result>& rows, const std::vector<Correlation>& corr,
                       const std::vector<SeedSpread>& spread,
                       const std::vector<fs::path>& drawn) {
    std::string s = "## E3: randomized labels — does the measure rank the generalization gap?\n\n";
    if (rows.empty()) return s + "No E3 results.\n\n";
    s += "Kendall τ-b and Spearman ρ between each quantity and the gap (train accuracy on the "
         "noisy labels − test accuracy) over all runs of a model. The final training loss is a "
         "baseline: a measure is only interesting where it ranks better than the loss.\n\n";
    s += table_header({"model", "runs", "quantity", "Kendall τ", "Spearman ρ"});
    for (const auto& c : corr)
        s += table_row({c.model, std::to_string(c.runs), c.measure == "train_loss" ? "final train loss (baseline)" : c.measure,
                        fixed2(c.kendall), fixed2(c.spearman)});
    s += "\n" + seed_spread_table(spread);
    s += "Means per label-noise ratio:\n\n";
    s += table_header({"model", "r", "runs", "train acc", "test acc", "gap", "train loss", "Tr H",
                       "MS", "MS node", "normalized", "MS / loss"});
    const auto summary = summarize_e3(rows);
    for (const auto& m : summary)
        s += table_row({m.model, format_double(m.ratio), std::to_string(m.runs),
                        fixed3(m.train_accuracy), fixed3(m.test_accuracy), fixed3(m.gap),
                        sig(m.train_loss), sig(m.trace), sig(m.ms), sig(m.ms_node),
                        sig(m.normalized), sig(m.ms / m.train_loss)});
    double train_s = 0, diag_s = 0, solve_ms = 0, solve_node = 0, solve_norm = 0;
    std::size_t notes = 0;
    for (const auto& r : rows) {
        train_s += r.train_seconds;
        diag_s += r.diag_seconds;
        solve_ms += r.ms_seconds;
        solve_node += r.ms_node_seconds;
        solve_norm += r.normalized_seconds;
        notes += r.notes.size();
    }
    const double n = double(rows.size());
    s += "\nTime per run (mean): training " + sig(train_s / n) + " s, exact diag H (shared by "
         "all measures) " + sig(diag_s / n) + " s, solves: MS " + sig(solve_ms / n) +
         " s, node-wise MS " + sig(solve_node / n) + " s, normalized " + sig(solve_norm / n) +
         " s.\n\n";
    if (notes > 0) {
        // Grouped by measure ("normalized", "ms", "ms_node"): how many runs, one example.
        std::map<std::string, std::pair<std::set<std::string>, std::string>> by_measure;
        for (const auto& r : rows)
            for (const auto& note : r.notes) {
                const std::string measure = note.substr(0, note.find_first_of(" :"));
                auto& entry = by_measure[measure];
                entry.first.insert(r.model + "/" + format_double(r.ratio) + "/" +
                                   std::to_string(r.trial));
                if (entry.second.empty())
                    entry.second = r.model + " r=" + format_double(r.ratio) + " t" +
                                   std::to_string(r.trial) + ": " + note;
            }
        s += "Solver notes (all of them are in the `notes` column of e3.csv):\n\n";
        for (const auto& [measure, entry] : by_measure)
            s += "- " + measure + ": " + std::to_string(entry.first.size()) + " of " +
                 std::to_string(rows.size()) + " runs. Example: " + entry.second + "\n";
        s += "\nAn unattained infimum comes from units that are inactive on every one of the N "
             "inputs (all-zero rows or columns of the Hessian diagonal): their terms can be "
             "scaled away, so they are excluded from the value rather than reported as a "
             "number that depends on when a gradient descent stopped.\n\n";
    }
    std::set<std::string> models;
    for (const auto& r : rows) models.insert(r.model);
    for (const auto& model : models) s += figure_link(drawn, "e3_" + model, "E3 " + model);
    return s;
}

// Whether τ(MS, gap) reaches `goal`: for every base seed when there are several.
std::string goal_verdict(const SeedSpread* spread, double tau, double goal) {
    if (spread && spread->per_seed.size() > 1) {
        std::size_t reached = 0;
        for (double t : spread->per_seed) reached += t >= goal;
        return (reached == spread->per_seed.size() ? "reached for every one of the "
                                                   : "reached for " + std::to_string(reached) +
                                                         " of the ") +
               std::to_string(spread->per_seed.size()) + " base seeds (τ " +
               joined_taus(spread->per_seed) + "; mean " + fixed2(spread->mean) + ", min " +
               fixed2(spread->min) + ")";
    }
    return std::string(tau >= goal ? "reached" : "not reached") + " with this grid (one base "
           "seed: a grid of a dozen runs moves by a swapped pair or two between seeds or CPUs)";
}

std::string paper_section(const std::vector<E3Result>& rows, const std::vector<Correlation>& corr,
                          const std::vector<SeedSpread>& spread, const nlohmann::json& plan) {
    std::string s = "## Side by side with the paper\n\n";
    if (rows.empty()) return s + "No E3 results to compare.\n\n";
    s += "Reference values of the paper (Ibayashi et al., 2021, read from the authors' result "
         "archives: 60,000 MNIST images, 11 ratios × 10 trials, batch 1,024, MLP 3,000 epochs "
         "at lr 0.1, LeNet 1,000 epochs at lr 0.01).\n\n";
    s += table_header({"model", "", "τ(MS, gap)", "τ(normalized, gap)", "τ(train loss, gap)",
                       "mean MS r=0 → r=1", "mean gap r=0 → r=1"});
    const auto summary = summarize_e3(rows);
    std::set<std::string> models;
    for (const auto& r : rows) models.insert(r.model);
    std::string notes;
    for (const auto& model : models) {
        const E3Summary* lo = nullptr;
        const E3Summary* hi = nullptr;
        for (const auto& m : summary)
            if (m.model == model) {
                if (!lo || m.ratio < lo->ratio) lo = &m;
                if (!hi || m.ratio > hi->ratio) hi = &m;
            }
        const double tau_ms = correlation_of(corr, model, "ms");
        const double tau_norm = correlation_of(corr, model, "normalized");
        const double tau_loss = correlation_of(corr, model, "train_loss");
        const PaperReference* ref = paper_reference(model);
        if (ref)
            s += table_row({model, "paper", fixed2(ref->tau_ms), fixed2(ref->tau_normalized), "—",
                            sig(ref->ms_r0) + " → " + sig(ref->ms_r1) + ref->ms_note,
                            fixed2(ref->gap_r0) + " → " + fixed2(ref->gap_r1)});
        s += table_row({model, "ours", fixed2(tau_ms), fixed2(tau_norm), fixed2(tau_loss),
                        sig(lo->ms) + " (r=" + format_double(lo->ratio) + ") → " + sig(hi->ms) +
                            " (r=" + format_double(hi->ratio) + ")",
                        fixed2(lo->gap) + " → " + fixed2(hi->gap)});
        if (!ref) continue;
        // What differs, in settings and in outcome, stated from the data.
        std::string setting;
        if (const auto* g = grid_of(plan, model)) {
            const auto& t = (*g)["train"];
            const std::size_t n = t["train_size"];
            const int epochs = t["epochs"];
            if (n != 60000) setting += "N = " + std::to_string(n) + " instead of 60,000; ";
            if (epochs != ref->epochs)
                setting += std::to_string(epochs) + " epochs instead of " +
                           std::to_string(ref->epochs) + "; ";
            if (t["batch_size"].get<std::size_t>() != 1024)
                setting += "batch " + std::to_string(t["batch_size"].get<std::size_t>()) +
                           " instead of 1,024; ";
            if (t["sgd"]["lr"].get<double>() != ref->lr)
                setting += "lr " + format_double(t["sgd"]["lr"].get<double>()) + " instead of " +
                           format_double(ref->lr) + "; ";
            if ((*g)["ratios"].size() != 11)
                setting += std::to_string((*g)["ratios"].size()) + " ratios instead of 11; ";
            const int runs_per_ratio = (*g)["trials"].get<int>() * (*g).value("base_seeds", 1);
            if (runs_per_ratio != 10)
                setting += std::to_string(runs_per_ratio) + " runs per ratio instead of 10; ";
        }
        notes += "- **" + model + "**: ";
        notes += setting.empty() ? "same settings as the paper. "
                                 : "settings differ: " + setting.substr(0, setting.size() - 2) + ". ";
        const double d = tau_ms - ref->tau_ms;
        if (std::isfinite(d))
            notes += std::string("τ(MS, gap) is ") +
                     (std::abs(d) <= 0.1 ? "close to" : d > 0 ? "higher than" : "lower than") +
                     " the paper's (" + fixed2(tau_ms) + " vs " + fixed2(ref->tau_ms) + "). ";
        if (std::isfinite(tau_loss) && std::isfinite(tau_ms))
            notes += std::abs(tau_ms - tau_loss) <= 0.05
                         ? "The final training loss ranks the runs as well as MS does (τ " +
                               fixed2(tau_loss) + "): in this regime MS adds little over the loss. "
                         : "The final training loss ranks them " +
                               std::string(tau_loss < tau_ms ? "worse" : "better") + " (τ " +
                               fixed2(tau_loss) + "). ";
        const double goal = model == "mlp" ? 0.9 : 0.6;
        if (std::isfinite(tau_ms))
            notes += "The project's goal for this model is τ(MS, gap) ≥ " + fixed2(goal) +
                     (model == "mlp" ? " (quick profile)" : " (standard profile)") + ": " +
                     goal_verdict(spread_of(spread, model, "ms"), tau_ms, goal) + ". ";
        notes += "MS magnitudes depend on N, training length and how far each run got towards "
                 "memorizing its labels, so only the trend, not the values, is comparable; our "
                 "MS is the exact minimum, the authors' 10,000 gradient steps give upper bounds.\n";
    }
    return s + "\n" + notes + "\n";
}

std::string e4_section(const std::optional<E4Result>& r, const std::vector<fs::path>& drawn) {
    std::string s = "## E4: scale invariance\n\n";
    if (!r) return s + "No E4 result.\n\n";
    s += "The " + r->model + " trained on N = " + std::to_string(r->n) + " for " +
         std::to_string(r->epochs) + " epochs (train accuracy " + fixed3(r->train_accuracy) +
         ", test " + fixed3(r->test_accuracy) +
         ") rescaled layer-wise (α₁ = c, α₂ = 1/c, other layers 1; biases by the cumulative "
         "product) and node-wise (unit j of every hidden layer × c for even j, × 1/c for odd "
         "j). Output change = max |z′ − z| / max |z| over the N inputs.\n\n";
    s += table_header({"transform", "factor c", "output change", "Tr H", "MS", "MS node",
                       "normalized"});
    std::map<std::string, std::vector<const E4Row*>> per;
    for (const auto& row : r->rows) {
        per[row.transform].push_back(&row);
        s += table_row({row.transform, sig(row.factor), sci(row.output_change), sig(row.trace),
                        fmt("%.10g", row.ms), fmt("%.10g", row.ms_node), fmt("%.8g", row.normalized)});
    }
    s += "\n";
    for (const auto& [transform, rows] : per) {
        double tmin = INFINITY, tmax = 0, mmin = INFINITY, mmax = 0, nmin = INFINITY, nmax = 0,
               change = 0;
        for (const auto* row : rows) {
            tmin = std::min(tmin, row->trace);
            tmax = std::max(tmax, row->trace);
            mmin = std::min(mmin, row->ms);
            mmax = std::max(mmax, row->ms);
            nmin = std::min(nmin, row->ms_node);
            nmax = std::max(nmax, row->ms_node);
            change = std::max(change, row->output_change);
        }
        s += "- " + transform + "-wise: outputs change by at most " + sci(change) +
             " (relative); Tr H spans a factor " + sig(tmax / tmin) + "; layer-wise MS varies by " +
             sci((mmax - mmin) / mmin) + " (relative), node-wise MS by " +
             sci((nmax - nmin) / nmin) + ".\n";
    }
    s += "\nLayer-wise MS is invariant only under layer-wise transformations: a node-wise "
         "transformation is outside its symmetry group, so it may change (that is what the "
         "node-wise MS fixes). Normalized sharpness is invariant under both, as "
         "Tsuzuku et al. designed it.\n\n" +
         figure_link(drawn, "e4_scale_invariance", "E4 scale invariance");
    return s;
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
    s += "## Files\n\n`e1.csv`, `e2.csv`, `e3.csv`, `e3_correlations.csv`, `e3_tau_by_seed.csv`, "
         "`e4.csv` (one row per trial / run / point / base seed), `results.json` (everything, "
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
    write_json(dir / "results.json", results_json(c, corr, spread, options));

    Figures figures{dir / "figures", find_gnuplot(), {}, {}};
    outcome.gnuplot = !figures.gnuplot.empty();
    if (options.figures && outcome.gnuplot) {
        fs::create_directories(figures.dir);
        if (!c.e1.empty()) e1_figure(figures, c.e1);
        if (!c.e2.empty()) e2_figure(figures, c.e2);
        if (!c.e3.empty()) e3_figures(figures, c.e3);
        if (c.e4) e4_figure(figures, *c.e4);
    }
    outcome.figures = figures.drawn;
    outcome.report = dir / "report.md";
    write_file_atomic(outcome.report,
                      report_markdown(c, corr, spread, outcome, figures.failures, options));
    return outcome;
}

}  // namespace minsharp::experiments
