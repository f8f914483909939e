#include "minsharp/experiments/e5.hpp"

#include "fields.hpp"
#include "report_parts.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io/files.hpp"

#include <algorithm>
#include <cmath>
#include <map>

namespace minsharp::experiments {

// ---- the run ------------------------------------------------------------------------------

E5Result e5_result(const Job& job, const RunResult& run) {
    E5Result r;
    r.model = job.model;
    r.lr = job.sgd.lr;
    r.n = job.n;
    r.steps = job.epochs;
    r.measures = job.measures;
    if (!run.history.empty()) {
        r.train_accuracy = run.history.back().train.accuracy;
        r.test_accuracy = run.history.back().test.accuracy;
    }
    for (const auto& tracked : run.tracked) {
        E5Point p;
        p.step = int(tracked.step);
        // One step per epoch: epoch s + 1's loss is the full-batch loss at the weights after
        // s steps; after the last step, the final evaluation's.
        const std::size_t s = tracked.step;
        if (s < run.history.size())
            p.loss = run.history[s].batch_loss;
        else if (!run.history.empty() && run.history.back().evaluated)
            p.loss = run.history.back().train.loss;
        p.lambda_max = tracked.value("lambda-max").value_or(E5Point::none);
        p.trace = tracked.value("trace").value_or(E5Point::none);
        p.ms = tracked.value("ms").value_or(E5Point::none);
        p.seconds = tracked.seconds;
        r.points.push_back(p);
    }
    return r;
}

void run_e5_job(const Job& job) {
    const TrainConfig config = job.train_config();
    const PreparedData data = prepare_data(config);
    if (config.batch_size != data.train.size())
        throw Error("E5 job " + job.name() + ": batch size " + std::to_string(config.batch_size) +
                    " is not the training set's " + std::to_string(data.train.size()) +
                    " images (full-batch gradient descent)");
    RunOptions options;
    options.resume = true;
    options.progress = false;
    options.track.measures = job.measures;
    options.track.interval = {std::size_t(job.track_every), TrackInterval::Unit::Steps};
    options.track.inputs = data.train.size();
    const RunResult run = train_run(config, job.folder(), options, &data);
    write_result(job, e5_result(job, run).to_json());
}

EdgeSummary summarize_edge(const E5Result& run, double threshold) {
    EdgeSummary s;
    const double edge = run.two_over_lr();
    for (const auto& p : run.points) {
        if (std::isnan(p.lambda_max)) continue;
        const double ratio = p.lambda_max / edge;
        if (!s.measured) {
            s.measured = true;
            s.start_ratio = ratio;
        }
        if (ratio > s.peak_ratio) {
            s.peak_ratio = ratio;
            s.peak_step = p.step;
        }
        if (s.reached_step && p.step > *s.reached_step) {
            s.deviation_after = std::max(s.deviation_after, std::abs(ratio - 1.0));
            ++s.points_after;
        }
        if (!s.reached_step && ratio >= threshold) {
            s.reached_step = p.step;
            s.reached_ratio = ratio;
        }
    }
    return s;
}

// ---- results ----------------------------------------------------------------------------

namespace {

const fields::Field<E5Point> e5_point_fields[] = {
    fields::stored<&E5Point::step>("step"),
    fields::optional_number<&E5Point::loss>("loss"),
    fields::optional_number<&E5Point::lambda_max>("lambda_max"),
    fields::optional_number<&E5Point::trace>("trace"),
    fields::optional_number<&E5Point::ms>("ms"),
    fields::stored<&E5Point::seconds>("seconds"),
};

// The run's columns lead every row of e5.csv; the rest is JSON only.
const fields::Field<E5Result> e5_fields[] = {
    fields::stored<&E5Result::model>("model"),
    fields::stored<&E5Result::lr>("lr"),
    fields::derived<&E5Result::two_over_lr>("two_over_lr"),
    fields::stored<&E5Result::n>("n"),
    fields::stored<&E5Result::steps>("steps", fields::In::json),
    fields::stored<&E5Result::measures>("measures", fields::In::json),
    fields::stored<&E5Result::train_accuracy>("train_accuracy", fields::In::json),
    fields::stored<&E5Result::test_accuracy>("test_accuracy", fields::In::json),
};

}  // namespace

nlohmann::json E5Result::to_json() const {
    nlohmann::json j = fields::to_json(*this, e5_fields);
    j["points"] = nlohmann::json::array();
    for (const auto& p : points) j["points"].push_back(fields::to_json(p, e5_point_fields));
    return j;
}

E5Result E5Result::from_json(const nlohmann::json& j) {
    E5Result r;
    fields::read_json(r, e5_fields, j);
    for (const auto& point_json : j.at("points")) {
        E5Point p;
        fields::read_json(p, e5_point_fields, point_json);
        r.points.push_back(p);
    }
    return r;
}

std::vector<std::string> E5Result::csv_columns() {
    auto columns = fields::csv_columns(e5_fields);
    for (auto& c : fields::csv_columns(e5_point_fields)) columns.push_back(c);
    return columns;
}

std::vector<std::vector<std::string>> E5Result::csv_rows() const {
    std::vector<std::vector<std::string>> rows;
    const auto run = fields::csv_row(*this, e5_fields);
    for (const auto& p : points) {
        auto row = run;
        for (auto& c : fields::csv_row(p, e5_point_fields)) row.push_back(c);
        rows.push_back(std::move(row));
    }
    return rows;
}

// ---- report: CSV, figure, section -------------------------------------------------------

namespace report_parts {

namespace {

// The measures plotted against the step, one row of panels each, and their titles.
struct E5Panel {
    double E5Point::*value;
    const char* title;
    bool with_edge;  ///< draw 2/η beside it
};

const E5Panel e5_panels[] = {
    {&E5Point::lambda_max, "λ_{max} (top Hessian eigenvalue)", true},
    {&E5Point::trace, "Tr H", false},
    {&E5Point::ms, "minimum sharpness (layer-wise)", false},
};

bool any_value(const std::vector<const E5Result*>& runs, double E5Point::*value) {
    for (const auto* r : runs)
        for (const auto& p : r->points)
            if (!std::isnan(p.*value)) return true;
    return false;
}

std::map<std::string, std::vector<const E5Result*>> runs_by_model(const std::vector<E5Result>& runs) {
    std::map<std::string, std::vector<const E5Result*>> out;
    for (const auto& r : runs) out[r.model].push_back(&r);
    return out;
}

std::string percent(double ratio) { return fmt("%.0f%%", 100.0 * ratio); }

}  // namespace

std::string e5_csv(const std::vector<E5Result>& runs) {
    CsvWriter csv(E5Result::csv_columns());
    for (const auto& r : runs)
        for (const auto& row : r.csv_rows()) csv.add_row(row);
    return csv.str();
}

void e5_figure(Figures& f, const std::vector<E5Result>& runs) {
    const auto models = runs_by_model(runs);
    std::vector<const E5Result*> all;
    for (const auto& r : runs) all.push_back(&r);
    std::vector<const E5Panel*> panels;
    for (const auto& panel : e5_panels)
        if (any_value(all, panel.value)) panels.push_back(&panel);
    if (panels.empty()) return;
    std::vector<std::pair<std::string, std::string>> data;
    std::string script = "set multiplot layout " + std::to_string(panels.size()) + "," +
                         std::to_string(models.size()) +
                         " title 'E5: full-batch gradient descent, sharpness against 2/η'\n"
                         "set grid\nset key top right font ',8'\nset xlabel 'step'\n";
    for (const auto* panel : panels)
        for (const auto& [model, model_runs] : models) {
            script += "set title '" + model + ": " + panel->title + "'\nplot ";
            std::string plots;
            for (std::size_t i = 0; i < model_runs.size(); ++i) {
                const E5Result& r = *model_runs[i];
                std::string text;
                for (const auto& p : r.points)
                    if (!std::isnan(p.*(panel->value)))
                        text += std::to_string(p.step) + " " + format_double(p.*(panel->value)) + "\n";
                if (text.empty()) continue;
                const std::string file = "e5_" + model + "_lr" + format_double(r.lr) + "_" +
                                         std::to_string(panel - e5_panels) + ".dat";
                data.push_back({file, text});
                const std::string colour = " lc " + std::to_string(i + 1);
                plots += (plots.empty() ? "" : ", ") + quoted(f.dir / file) + " u 1:2 w lp pt 7 ps 0.6" +
                         colour + " title 'η = " + format_double(r.lr) + "'";
                if (panel->with_edge)
                    plots += ", " + format_double(r.two_over_lr()) + " w l dt 2" + colour +
                             " title '2/η = " + sig(r.two_over_lr()) + "'";
            }
            script += plots + "\n";
        }
    script += "unset multiplot";
    f.draw("e5_edge_of_stability", data, script,
           std::to_string(560 * models.size()) + "," + std::to_string(380 * panels.size()));
}

namespace {

// The first and last value of a measure over a run, and its peak, as "a → b (peak c at step s)".
std::string course(const E5Result& r, double E5Point::*value) {
    const E5Point* first = nullptr;
    const E5Point* last = nullptr;
    const E5Point* peak = nullptr;
    for (const auto& p : r.points) {
        if (std::isnan(p.*value)) continue;
        if (!first) first = &p;
        last = &p;
        if (!peak || p.*value > peak->*value) peak = &p;
    }
    if (!first) return "n/a";
    return sig(first->*value) + " → " + sig(last->*value) + " (peak " + sig(peak->*value) +
           " at step " + std::to_string(peak->step) + ")";
}

// One sentence on a run's λ_max against 2/η, made of its numbers.
std::string edge_sentence(const E5Result& r, const EdgeSummary& e, double threshold) {
    const std::string run = r.model + " at η = " + format_double(r.lr) + " (2/η = " +
                            sig(r.two_over_lr()) + ")";
    if (!e.reached_step)
        return run + ": λ_max stayed below " + percent(threshold) + " of 2/η; it rose from " +
               percent(e.start_ratio) + " to at most " + percent(e.peak_ratio) + " (step " +
               std::to_string(e.peak_step) + ") in " + std::to_string(r.steps) + " steps.";
    std::string s = run + ": λ_max went from " + percent(e.start_ratio) + " of 2/η at step 0 to " +
                    percent(e.reached_ratio) + " at step " + std::to_string(*e.reached_step);
    if (e.points_after == 0) return s + ", the last point measured.";
    return s + " and stayed within ±" + percent(e.deviation_after) + " of 2/η over the " +
           std::to_string(e.points_after) + " later points (peak " + percent(e.peak_ratio) +
           " at step " + std::to_string(e.peak_step) + ").";
}

}  // namespace

std::string e5_section(const std::vector<E5Result>& runs, const std::vector<fs::path>& drawn) {
    std::string s = "## E5: the edge of stability\n\n";
    if (runs.empty()) return s + "No E5 result.\n\n";
    const double threshold = 0.9;
    s += "Full-batch gradient descent (one step per epoch over all N training images, momentum "
         "0, no weight decay, constant η) with the sharpness of the full-batch loss tracked "
         "every few steps on all N images (`train --track`, docs/tracking.md). Cohen et al. "
         "(2021) observe that λ_max rises during training until it reaches ≈ 2/η, the "
         "largest sharpness at which gradient descent on a quadratic is stable, and then "
         "hovers there while the loss keeps decreasing.\n\n";
    s += table_header({"model", "N", "η", "2/η", "steps", "λ_max start → end (peak)",
                       "Tr H start → end (peak)", "MS start → end (peak)", "train acc",
                       "test acc"});
    for (const auto& r : runs)
        s += table_row({r.model, std::to_string(r.n), format_double(r.lr), sig(r.two_over_lr()),
                        std::to_string(r.steps), course(r, &E5Point::lambda_max),
                        course(r, &E5Point::trace), course(r, &E5Point::ms),
                        fixed3(r.train_accuracy), fixed3(r.test_accuracy)});
    s += "\n";
    std::size_t measured = 0, reached = 0;
    double worst_after = 0;
    std::string sentences;
    for (const auto& r : runs) {
        const EdgeSummary e = summarize_edge(r, threshold);
        if (!e.measured) continue;
        ++measured;
        sentences += "- " + edge_sentence(r, e, threshold) + "\n";
        if (e.reached_step) {
            ++reached;
            worst_after = std::max(worst_after, e.deviation_after);
        }
    }
    if (measured == 0) {
        s += "λ_max was not measured (tracked: " + runs.front().measures +
             "), so this section cannot compare the sharpness with 2/η; the table shows how "
             "Tr H and minimum sharpness evolved. A profile whose E5 measures include "
             "`lambda-max` makes the comparison.\n\n";
    } else {
        s += sentences + "\n";
        s += "In " + std::to_string(reached) + " of " + std::to_string(measured) +
             " runs λ_max reached " + percent(threshold) + " of 2/η";
        if (reached > 0)
            s += "; after that it stayed within ±" + percent(worst_after) + " of 2/η in every "
                 "one of them. Cohen et al. report λ_max hovering at or slightly above 2/η: " +
                 std::string(worst_after <= 0.25
                                 ? "these runs show the same"
                                 : "these runs move further from it than that (a coarse "
                                   "tracking interval also catches the spikes of the "
                                   "unstable phase)");
        s += ".\n\n";
    }
    return s + figure_link(drawn, "e5_edge_of_stability", "E5 edge of stability");
}

}  // namespace report_parts

}  // namespace minsharp::experiments
