#include "minsharp/experiments/e3.hpp"

#include "fields.hpp"
#include "report_parts.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/core/stats.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <map>
#include <set>

namespace minsharp::experiments {

namespace {

std::vector<std::string> report_notes(const sharpness::SharpnessReport& report) {
    std::vector<std::string> notes;
    if (report.ms && !report.ms->attained) notes.push_back("ms: " + report.ms->note);
    if (report.ms_node && !report.ms_node->attained) notes.push_back("ms_node: " + report.ms_node->note);
    if (report.ms_node && !report.ms_node->converged)
        notes.push_back("ms_node: not converged after " + std::to_string(report.ms_node->sweeps) +
                        " sweeps (relative change " +
                        format_double(report.ms_node->relative_change) + ")");
    for (const auto& layer : report.layers)
        if (layer.normalized && (!layer.normalized->attained || !layer.normalized->converged))
            notes.push_back("normalized " + layer.name + ": " +
                            (layer.normalized->note.empty() ? std::string("not converged")
                                                            : layer.normalized->note));
    return notes;
}

}  // namespace

E3Result measure_trained_model(const Sequential<float>& model, const PreparedData& data,
                               int threads) {
    Sequential<double> m = convert_model<double>(model);
    E3Result r;
    r.n = data.train.size();
    r.threads = threads;

    const auto t0 = std::chrono::steady_clock::now();
    const Evaluation train = evaluate(m, data.train);
    const Evaluation test = evaluate(m, data.test);
    r.evaluation_seconds = seconds_since(t0);
    r.train_loss = train.loss;
    r.train_accuracy = train.accuracy;
    r.test_accuracy = test.accuracy;

    sharpness::Batch<double> batch{to_double(data.train.images), data.train.labels};
    sharpness::MeasureOptions options;
    options.threads = threads;
    const auto report = sharpness::measure_sharpness(
        m, batch,
        {sharpness::Measure::Trace, sharpness::Measure::Ms, sharpness::Measure::MsNode,
         sharpness::Measure::Normalized},
        options);
    r.trace = report.trace.value();
    r.ms = report.ms->value;
    r.ms_gradient_norm = report.ms->gradient_norm;
    r.ms_node = report.ms_node->value;
    r.normalized = report.normalized.value();
    r.diag_seconds = report.seconds.diag_hessian;
    r.ms_seconds = report.seconds.ms;
    r.ms_node_seconds = report.seconds.ms_node;
    r.normalized_seconds = report.seconds.normalized;
    r.notes = report_notes(report);
    return r;
}

void run_e3_job(const Job& job) {
    const TrainConfig config = job.train_config();
    const PreparedData data = prepare_data(config);
    RunOptions options;
    options.resume = true;
    options.progress = false;
    options.log = true;
    const RunResult run = train_run(config, job.folder(), options, &data);
    E3Result r = measure_trained_model(run.model, data, job.threads);
    r.model = job.model;
    r.ratio = job.ratio;
    r.trial = job.trial;
    r.epochs = job.epochs;
    for (const auto& epoch : run.history) r.train_seconds += epoch.seconds;
    write_result(job, r.to_json());
}

// ---- results ----------------------------------------------------------------------------

namespace {

// A timing: column <name> of e3.csv, key "seconds"/<key> of measures.json.
template <auto M>
fields::Field<E3Result> timing(std::string_view name, std::string_view key,
                               fields::In in = fields::In::json_and_csv) {
    return fields::stored<M>(name, in, "seconds", key);
}

// Every field of E3Result once, in e3.csv's column order. The JSON keeps the timings in a
// "seconds" object, as measures.json has always had them.
const fields::Field<E3Result> e3_fields[] = {
    fields::stored<&E3Result::model>("model"),
    fields::stored<&E3Result::ratio>("ratio"),
    fields::stored<&E3Result::trial>("trial"),
    fields::stored<&E3Result::n>("n"),
    fields::stored<&E3Result::epochs>("epochs"),
    fields::stored<&E3Result::train_loss>("train_loss"),
    fields::stored<&E3Result::train_accuracy>("train_accuracy"),
    fields::stored<&E3Result::test_accuracy>("test_accuracy"),
    fields::derived<&E3Result::gap>("gap"),
    fields::stored<&E3Result::trace>("trace"),
    fields::stored<&E3Result::ms>("ms"),
    fields::stored<&E3Result::ms_node>("ms_node"),
    fields::stored<&E3Result::normalized>("normalized"),
    fields::stored<&E3Result::ms_gradient_norm>("ms_gradient_norm"),
    fields::stored<&E3Result::threads>("threads"),
    timing<&E3Result::train_seconds>("train_seconds", "train"),
    timing<&E3Result::evaluation_seconds>("evaluation_seconds", "evaluation", fields::In::json),
    timing<&E3Result::diag_seconds>("diag_seconds", "diag_hessian"),
    timing<&E3Result::ms_seconds>("ms_seconds", "ms"),
    timing<&E3Result::ms_node_seconds>("ms_node_seconds", "ms_node"),
    timing<&E3Result::normalized_seconds>("normalized_seconds", "normalized"),
    fields::stored<&E3Result::notes>("notes"),
};

}  // namespace

nlohmann::json E3Result::to_json() const { return fields::to_json(*this, e3_fields); }

E3Result E3Result::from_json(const nlohmann::json& j) {
    E3Result r;
    fields::read_json(r, e3_fields, j);
    return r;
}

std::vector<std::string> E3Result::csv_columns() { return fields::csv_columns(e3_fields); }

std::vector<std::string> E3Result::csv_row() const { return fields::csv_row(*this, e3_fields); }

std::vector<std::string> e3_measure_names() {
    return {"train_loss", "trace", "ms", "ms_node", "normalized"};
}

double e3_measure(const E3Result& r, const std::string& name) {
    if (name == "train_loss") return r.train_loss;
    if (name == "trace") return r.trace;
    if (name == "ms") return r.ms;
    if (name == "ms_node") return r.ms_node;
    if (name == "normalized") return r.normalized;
    throw Error("E3: unknown measure '" + name + "' (train_loss, trace, ms, ms_node, normalized)");
}

std::vector<Correlation> e3_correlations(const std::vector<E3Result>& results) {
    std::vector<std::string> models;
    for (const auto& r : results)
        if (std::find(models.begin(), models.end(), r.model) == models.end())
            models.push_back(r.model);
    std::vector<Correlation> out;
    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (const auto& model : models) {
        std::vector<const E3Result*> runs;
        for (const auto& r : results)
            if (r.model == model) runs.push_back(&r);
        std::vector<double> gap;
        for (const auto* r : runs) gap.push_back(r->gap());
        for (const auto& measure : e3_measure_names()) {
            std::vector<double> values;
            for (const auto* r : runs) values.push_back(e3_measure(*r, measure));
            Correlation c{model, measure, runs.size(), nan, nan};
            const bool finite = std::all_of(values.begin(), values.end(),
                                            [](double v) { return std::isfinite(v); });
            if (runs.size() >= 2 && finite) {
                c.kendall = stats::kendall_tau_b(values, gap);
                c.spearman = stats::spearman_rho(values, gap);
            }
            out.push_back(c);
        }
    }
    return out;
}

namespace {

const double no_value = std::numeric_limits<double>::quiet_NaN();

// τ-b of a quantity against the gap over the given runs; NaN when undefined (fewer than two
// runs, a constant side, a non-finite value).
double kendall_of(const std::vector<const E3Result*>& runs, const std::string& measure) {
    std::vector<double> values, gap;
    for (const auto* r : runs) {
        values.push_back(e3_measure(*r, measure));
        gap.push_back(r->gap());
    }
    const bool finite = std::all_of(values.begin(), values.end(),
                                    [](double v) { return std::isfinite(v); });
    return runs.size() >= 2 && finite ? stats::kendall_tau_b(values, gap) : no_value;
}

// The q-quantile (0 ≤ q ≤ 1) of the finite values, by linear interpolation.
double quantile(std::vector<double> v, double q) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return !std::isfinite(x); }),
            v.end());
    if (v.empty()) return no_value;
    std::sort(v.begin(), v.end());
    const double at = q * double(v.size() - 1);
    const std::size_t lo = std::size_t(at);
    const std::size_t hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (at - double(lo)) * (v[hi] - v[lo]);
}

// Percentile bootstrap of τ over runs drawn with replacement.
std::pair<double, double> bootstrap_interval(const std::vector<const E3Result*>& runs,
                                             const std::string& measure, int resamples) {
    if (runs.size() < 2 || resamples < 1) return {no_value, no_value};
    Rng rng(0x5eedb007);  // fixed: the report must not change from one collect to the next
    std::vector<double> taus;
    std::vector<const E3Result*> sample(runs.size());
    for (int b = 0; b < resamples; ++b) {
        for (auto& s : sample) s = runs[rng.below(runs.size())];
        taus.push_back(kendall_of(sample, measure));
    }
    return {quantile(taus, 0.025), quantile(taus, 0.975)};
}

void summarize_seeds(SeedSpread& s) {
    std::vector<double> defined;
    for (double t : s.per_seed)
        if (std::isfinite(t)) defined.push_back(t);
    if (defined.empty()) {
        s.mean = s.min = s.max = no_value;
        return;
    }
    s.mean = std::accumulate(defined.begin(), defined.end(), 0.0) / double(defined.size());
    s.min = *std::min_element(defined.begin(), defined.end());
    s.max = *std::max_element(defined.begin(), defined.end());
}

}  // namespace

std::vector<SeedSpread> e3_seed_spread(const std::vector<E3Result>& results,
                                       const std::map<std::string, int>& trials_per_seed,
                                       int resamples) {
    std::vector<std::string> models;
    for (const auto& r : results)
        if (std::find(models.begin(), models.end(), r.model) == models.end())
            models.push_back(r.model);
    std::vector<SeedSpread> out;
    for (const auto& model : models) {
        const auto found = trials_per_seed.find(model);
        const int per_seed = found == trials_per_seed.end() ? 0 : found->second;
        std::vector<const E3Result*> runs;
        std::map<int, std::vector<const E3Result*>> by_seed;
        for (const auto& r : results)
            if (r.model == model) {
                runs.push_back(&r);
                by_seed[base_seed_index(r.trial, per_seed)].push_back(&r);
            }
        for (const auto& measure : e3_measure_names()) {
            SeedSpread s;
            s.model = model;
            s.measure = measure;
            s.runs = runs.size();
            for (const auto& [seed, seed_runs] : by_seed)
                s.per_seed.push_back(kendall_of(seed_runs, measure));
            summarize_seeds(s);
            s.pooled = kendall_of(runs, measure);
            std::tie(s.low, s.high) = bootstrap_interval(runs, measure, resamples);
            out.push_back(s);
        }
    }
    return out;
}

std::vector<E3Summary> summarize_e3(const std::vector<E3Result>& results) {
    using report_parts::mean_of;
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

// ---- report: CSV, figure, section -------------------------------------------------------

namespace report_parts {

namespace {

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

const nlohmann::json* grid_of(const nlohmann::json& plan, const std::string& model) {
    if (!plan.is_object() || !plan.contains("profile")) return nullptr;
    for (const auto& g : plan["profile"]["e3"])
        if (g["train"]["model"] == model) return &g;
    return nullptr;
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

}  // namespace

std::string correlations_csv(const std::vector<Correlation>& rows) {
    CsvWriter csv({"model", "measure", "runs", "kendall_tau", "spearman_rho"});
    for (const auto& c : rows)
        csv.add_row({c.model, c.measure, std::to_string(c.runs), format_double(c.kendall),
                     format_double(c.spearman)});
    return csv.str();
}

nlohmann::json correlations_json(const std::vector<Correlation>& rows) {
    nlohmann::json j = nlohmann::json::array();
    for (const auto& c : rows)
        j.push_back({{"model", c.model},
                     {"measure", c.measure},
                     {"runs", c.runs},
                     {"kendall_tau", finite_or_null(c.kendall)},
                     {"spearman_rho", finite_or_null(c.spearman)}});
    return j;
}

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

// model → trials per base seed, from the plan's E3 grids (empty without a plan).
std::map<std::string, int> trials_per_seed(const nlohmann::json& plan) {
    std::map<std::string, int> out;
    if (!plan.is_object() || !plan.contains("profile")) return out;
    for (const auto& g : plan["profile"]["e3"]) out[g["train"]["model"]] = g["trials"].get<int>();
    return out;
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
            notes += "The target for this model in docs/experiments.md is τ(MS, gap) ≥ " + fixed2(goal) +
                     (model == "mlp" ? " (quick profile)" : " (standard profile)") + ": " +
                     goal_verdict(spread_of(spread, model, "ms"), tau_ms, goal) + ". ";
        notes += "MS magnitudes depend on N, training length and how far each run got towards "
                 "memorizing its labels, so only the trend, not the values, is comparable; our "
                 "MS is the exact minimum, the authors' 10,000 gradient steps give upper bounds.\n";
    }
    return s + "\n" + notes + "\n";
}

}  // namespace report_parts

}  // namespace minsharp::experiments
