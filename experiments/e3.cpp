#include "minsharp/experiments/e3.hpp"

#include "minsharp/clock.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/random.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/stats.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

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
    nlohmann::json j = r.to_json();
    j["job"] = job.identity();
    write_json(job.result_file(), j);
}

// ---- results ----------------------------------------------------------------------------

nlohmann::json E3Result::to_json() const {
    return {{"model", model},
            {"ratio", ratio},
            {"trial", trial},
            {"n", n},
            {"epochs", epochs},
            {"threads", threads},
            {"train_loss", train_loss},
            {"train_accuracy", train_accuracy},
            {"test_accuracy", test_accuracy},
            {"gap", gap()},
            {"trace", trace},
            {"ms", ms},
            {"ms_node", ms_node},
            {"normalized", normalized},
            {"ms_gradient_norm", ms_gradient_norm},
            {"seconds",
             {{"train", train_seconds},
              {"evaluation", evaluation_seconds},
              {"diag_hessian", diag_seconds},
              {"ms", ms_seconds},
              {"ms_node", ms_node_seconds},
              {"normalized", normalized_seconds}}},
            {"notes", notes}};
}

E3Result E3Result::from_json(const nlohmann::json& j) {
    E3Result r;
    r.model = j.at("model");
    r.ratio = j.at("ratio");
    r.trial = j.at("trial");
    r.n = j.at("n");
    r.epochs = j.at("epochs");
    r.threads = j.at("threads");
    r.train_loss = j.at("train_loss");
    r.train_accuracy = j.at("train_accuracy");
    r.test_accuracy = j.at("test_accuracy");
    r.trace = j.at("trace");
    r.ms = j.at("ms");
    r.ms_node = j.at("ms_node");
    r.normalized = j.at("normalized");
    r.ms_gradient_norm = j.at("ms_gradient_norm");
    const auto& s = j.at("seconds");
    r.train_seconds = s.at("train");
    r.evaluation_seconds = s.at("evaluation");
    r.diag_seconds = s.at("diag_hessian");
    r.ms_seconds = s.at("ms");
    r.ms_node_seconds = s.at("ms_node");
    r.normalized_seconds = s.at("normalized");
    r.notes = j.at("notes").get<std::vector<std::string>>();
    return r;
}

std::vector<std::string> E3Result::csv_columns() {
    return {"model",           "ratio",         "trial",         "n",
            "epochs",          "train_loss",    "train_accuracy", "test_accuracy",
            "gap",             "trace",         "ms",            "ms_node",
            "normalized",      "ms_gradient_norm", "threads",    "train_seconds",
            "diag_seconds",    "ms_seconds",    "ms_node_seconds", "normalized_seconds",
            "notes"};
}

std::vector<std::string> E3Result::csv_row() const {
    std::string joined;
    for (const auto& note : notes) joined += (joined.empty() ? "" : "; ") + note;
    return {model,
            format_double(ratio),
            std::to_string(trial),
            std::to_string(n),
            std::to_string(epochs),
            format_double(train_loss),
            format_double(train_accuracy),
            format_double(test_accuracy),
            format_double(gap()),
            format_double(trace),
            format_double(ms),
            format_double(ms_node),
            format_double(normalized),
            format_double(ms_gradient_norm),
            std::to_string(threads),
            format_double(train_seconds),
            format_double(diag_seconds),
            format_double(ms_seconds),
            format_double(ms_node_seconds),
            format_double(normalized_seconds),
            joined};
}

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

}  // namespace minsharp::experiments
