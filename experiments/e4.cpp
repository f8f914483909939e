#include "minsharp/experiments/e4.hpp"

#include "fields.hpp"
#include "report_parts.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"

#include <algorithm>
#include <cmath>
#include <map>

namespace minsharp::experiments {

std::vector<double> e4_layer_scales(std::size_t layers, double c) {
    if (layers < 2)
        throw Error("E4: a layer-wise transformation needs at least 2 parametric layers, the "
                    "model has " + std::to_string(layers));
    std::vector<double> alphas(layers, 1.0);
    alphas[0] = c;
    alphas[1] = 1.0 / c;
    return alphas;
}

std::vector<std::vector<double>> e4_node_scales(const std::vector<std::size_t>& units, double c) {
    std::vector<std::vector<double>> gammas;
    for (std::size_t count : units) {
        std::vector<double> layer(count);
        for (std::size_t j = 0; j < count; ++j) layer[j] = j % 2 == 0 ? c : 1.0 / c;
        gammas.push_back(std::move(layer));
    }
    return gammas;
}

namespace {

Tensor2<double> logits(Sequential<double>& model, const Tensor4<double>& x) {
    return model.predict(x);
}

double relative_change(const Tensor2<double>& reference, const Tensor2<double>& changed) {
    double diff = 0, scale = 0;
    for (std::size_t i = 0; i < reference.size(); ++i) {
        diff = std::max(diff, std::abs(changed.data()[i] - reference.data()[i]));
        scale = std::max(scale, std::abs(reference.data()[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

E4Row measure_row(Sequential<double>& model, const Tensor4<double>& x,
                  const Tensor2<double>& reference, int threads) {
    E4Row row;
    row.output_change = relative_change(reference, logits(model, x));
    sharpness::Batch<double> batch{x, std::vector<int>(x.shape()[0], 0)};
    sharpness::MeasureOptions options;
    options.threads = threads;
    const auto report = sharpness::measure_sharpness(
        model, batch,
        {sharpness::Measure::Trace, sharpness::Measure::Ms, sharpness::Measure::MsNode,
         sharpness::Measure::Normalized},
        options);
    row.trace = report.trace.value();
    row.ms = report.ms->value;
    row.ms_node = report.ms_node->value;
    row.normalized = report.normalized.value();
    row.diag_seconds = report.seconds.diag_hessian;
    return row;
}

}  // namespace

std::vector<E4Row> scale_invariance_rows(const Sequential<double>& model, const Tensor4<double>& x,
                                         const std::vector<double>& factors, int threads) {
    Sequential<double> base = model;
    const Tensor2<double> reference = logits(base, x);
    const std::size_t layers = sharpness::parametric_layer_indices(model).size();
    const auto units = sharpness::hidden_unit_counts(model);
    std::vector<E4Row> rows;
    for (const char* transform : {"layer", "node"})
        for (double c : factors) {
            Sequential<double> scaled =
                std::string(transform) == "layer"
                    ? sharpness::scaled_layerwise(model, e4_layer_scales(layers, c))
                    : sharpness::scaled_nodewise(model, e4_node_scales(units, c));
            E4Row row = measure_row(scaled, x, reference, threads);
            row.transform = transform;
            row.factor = c;
            rows.push_back(row);
        }
    return rows;
}

void run_e4_job(const Job& job) {
    const TrainConfig config = job.train_config();
    const PreparedData data = prepare_data(config);
    RunOptions options;
    options.resume = true;
    options.progress = false;
    const RunResult run = train_run(config, job.folder(), options, &data);
    E4Result r;
    r.model = job.model;
    r.n = data.train.size();
    r.epochs = job.epochs;
    if (!run.history.empty()) {
        r.train_accuracy = run.history.back().train.accuracy;
        r.test_accuracy = run.history.back().test.accuracy;
    }
    const Sequential<double> model = convert_model<double>(run.model);
    r.rows = scale_invariance_rows(model, to_double(data.train.images), job.factors, job.threads);
    write_result(job, r.to_json());
}

// ---- results ----------------------------------------------------------------------------

namespace {

// Every field of a row once, in e4.csv's column order (the JSON rows hold the same).
const fields::Field<E4Row> e4_row_fields[] = {
    fields::stored<&E4Row::transform>("transform"),
    fields::stored<&E4Row::factor>("factor"),
    fields::stored<&E4Row::output_change>("output_change"),
    fields::stored<&E4Row::trace>("trace"),
    fields::stored<&E4Row::ms>("ms"),
    fields::stored<&E4Row::ms_node>("ms_node"),
    fields::stored<&E4Row::normalized>("normalized"),
    fields::stored<&E4Row::diag_seconds>("diag_seconds"),
};

// The trained network the rows transform (JSON only; "rows" holds the rows).
const fields::Field<E4Result> e4_fields[] = {
    fields::stored<&E4Result::model>("model", fields::In::json),
    fields::stored<&E4Result::n>("n", fields::In::json),
    fields::stored<&E4Result::epochs>("epochs", fields::In::json),
    fields::stored<&E4Result::train_accuracy>("train_accuracy", fields::In::json),
    fields::stored<&E4Result::test_accuracy>("test_accuracy", fields::In::json),
};

}  // namespace

std::vector<std::string> E4Row::csv_columns() { return fields::csv_columns(e4_row_fields); }

std::vector<std::string> E4Row::csv_row() const { return fields::csv_row(*this, e4_row_fields); }

nlohmann::json E4Result::to_json() const {
    nlohmann::json j = fields::to_json(*this, e4_fields);
    j["rows"] = nlohmann::json::array();
    for (const auto& row : rows) j["rows"].push_back(fields::to_json(row, e4_row_fields));
    return j;
}

E4Result E4Result::from_json(const nlohmann::json& j) {
    E4Result r;
    fields::read_json(r, e4_fields, j);
    for (const auto& row_json : j.at("rows")) {
        E4Row row;
        fields::read_json(row, e4_row_fields, row_json);
        r.rows.push_back(row);
    }
    return r;
}

// ---- report: CSV, figure, section -------------------------------------------------------

namespace report_parts {

std::string e4_csv(const E4Result& r) {
    CsvWriter csv(E4Row::csv_columns());
    for (const auto& row : r.rows) csv.add_row(row.csv_row());
    return csv.str();
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

}  // namespace report_parts

}  // namespace minsharp::experiments
