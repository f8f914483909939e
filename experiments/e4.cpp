#include "minsharp/experiments/e4.hpp"

#include "minsharp/clock.hpp"
#include "minsharp/experiments/support.hpp"

#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"

#include <algorithm>
#include <cmath>

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
    nlohmann::json j = r.to_json();
    j["job"] = job.identity();
    write_json(job.result_file(), j);
}

// ---- results ----------------------------------------------------------------------------

std::vector<std::string> E4Row::csv_columns() {
    return {"transform", "factor", "output_change", "trace", "ms", "ms_node", "normalized",
            "diag_seconds"};
}

std::vector<std::string> E4Row::csv_row() const {
    return {transform,          format_double(factor), format_double(output_change),
            format_double(trace), format_double(ms),   format_double(ms_node),
            format_double(normalized), format_double(diag_seconds)};
}

nlohmann::json E4Result::to_json() const {
    nlohmann::json rows_json = nlohmann::json::array();
    for (const auto& row : rows)
        rows_json.push_back({{"transform", row.transform},
                             {"factor", row.factor},
                             {"output_change", row.output_change},
                             {"trace", row.trace},
                             {"ms", row.ms},
                             {"ms_node", row.ms_node},
                             {"normalized", row.normalized},
                             {"diag_seconds", row.diag_seconds}});
    return {{"model", model},
            {"n", n},
            {"epochs", epochs},
            {"train_accuracy", train_accuracy},
            {"test_accuracy", test_accuracy},
            {"rows", rows_json}};
}

E4Result E4Result::from_json(const nlohmann::json& j) {
    E4Result r;
    r.model = j.at("model");
    r.n = j.at("n");
    r.epochs = j.at("epochs");
    r.train_accuracy = j.at("train_accuracy");
    r.test_accuracy = j.at("test_accuracy");
    for (const auto& row : j.at("rows"))
        r.rows.push_back({row.at("transform"), row.at("factor"), row.at("output_change"),
                          row.at("trace"), row.at("ms"), row.at("ms_node"), row.at("normalized"),
                          row.at("diag_seconds")});
    return r;
}

}  // namespace minsharp::experiments
