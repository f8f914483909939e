#include "minsharp/sharpness/measures.hpp"

#include "minsharp/clock.hpp"
#include "minsharp/io.hpp"
#include "minsharp/models.hpp"
#include "minsharp/progress.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/estimators.hpp"
#include "minsharp/sharpness/structure.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <sstream>
#include <utility>

namespace minsharp::sharpness {

namespace {

constexpr std::array<std::pair<Measure, std::string_view>, 5> measure_table{{
    {Measure::Trace, "trace"},
    {Measure::Ms, "ms"},
    {Measure::MsNode, "ms-node"},
    {Measure::Normalized, "normalized"},
    {Measure::Hutchinson, "hutchinson"},
}};

using Clock = std::chrono::steady_clock;


bool wants(const std::vector<Measure>& measures, Measure m) {
    return std::find(measures.begin(), measures.end(), m) != measures.end();
}

std::string trim(std::string_view s) {
    const auto first = s.find_first_not_of(" \t");
    if (first == std::string_view::npos) return {};
    const auto last = s.find_last_not_of(" \t");
    return std::string(s.substr(first, last - first + 1));
}

std::string joined_names() {
    std::string s;
    for (const auto& n : measure_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
}

// A NaN or Inf here (weights or inputs not finite, or a Hessian diagonal that overflowed)
// would otherwise be printed and written like any other number.
void require_finite(double value, std::string_view measure, const std::string& what) {
    if (!std::isfinite(value))
        throw Error("measure '" + std::string(measure) + "' is not finite: " + what + " is " +
                    format_double(value) + " (are the weights and inputs finite?)");
}

// The diag-H pass runs over blocks of whole chunks, so that a long pass can show progress;
// the block size depends only on n and chunk, so results do not depend on the terminal.
std::size_t block_size(std::size_t n, std::size_t chunk) {
    const std::size_t chunks = (n + chunk - 1) / chunk;
    const std::size_t per_block = std::max<std::size_t>(1, (chunks + 19) / 20);
    return per_block * chunk;
}

template <class T>
DiagHessian diag_in_blocks(Sequential<T>& model, const Tensor4<double>& x,
                           const MeasureOptions& options) {
    const auto& s = x.shape();
    const std::size_t n = s[0], per_example = s[1] * s[2] * s[3];
    const std::size_t block = block_size(n, options.chunk);
    const CurvatureOptions curvature{options.chunk, options.threads};
    std::optional<ProgressBar> bar;
    if (options.progress) bar.emplace("diag H", n);
    DiagHessian total;
    Tensor4<T> xb;
    for (std::size_t first = 0; first < n; first += block) {
        const std::size_t count = std::min(block, n - first);
        ensure_shape(xb, {count, s[1], s[2], s[3]});
        std::transform(x.data() + first * per_example, x.data() + (first + count) * per_example,
                       xb.data(), [](double v) { return static_cast<T>(v); });
        DiagHessian part = exact_diag_hessian(model, xb, curvature);
        // Each part is a mean over its block; weighting by count/n makes the sum a mean over n.
        const double weight = double(count) / double(n);
        if (total.parameters.empty()) {
            total.parameters = part.parameters;
            for (auto& p : total.parameters) p.values.assign(p.values.size(), 0.0);
        }
        for (std::size_t p = 0; p < part.parameters.size(); ++p) {
            auto& acc = total.parameters[p].values;
            const auto& v = part.parameters[p].values;
            for (std::size_t k = 0; k < v.size(); ++k) acc[k] += weight * v[k];
        }
        if (bar) bar->update(first + count);
    }
    if (bar) bar->finish();
    total.inputs = n;
    return total;
}

DiagHessian diag_hessian(Sequential<double>& model, const Tensor4<double>& x,
                         const MeasureOptions& options) {
    if (options.precision == Precision::Double) return diag_in_blocks(model, x, options);
    Sequential<float> single = convert_model<float>(model);
    return diag_in_blocks(single, x, options);
}

// normalized_sharpness_layer works on d_out × d_in matrices: a dense weight as it is (even
// when fed by a flattened conv), a conv weight summed over its kernel positions.
Tensor2<double> per_input_matrix(const std::vector<double>& values, const ParametricLayer<double>& layer) {
    const std::size_t out = layer.units, in = layer.input_width, positions = layer.kernel_positions;
    if (positions == 1) {
        Tensor2<double> m = Tensor2<double>::from_shape({out, in});
        std::copy(values.begin(), values.end(), m.begin());
        return m;
    }
    Tensor4<double> t = Tensor4<double>::from_shape({out, in, positions, 1});
    std::copy(values.begin(), values.end(), t.begin());
    return reduce_kernel(t);
}

void add_normalized(SharpnessReport& report, const ParametricStructure<double>& structure,
                    const std::vector<LayerDiag>& diags) {
    const auto start = Clock::now();
    double sum = 0.0;
    for (std::size_t l = 0; l < diags.size(); ++l) {
        const ParametricLayer<double>& layer = structure.layer(l);
        std::vector<double> w2(layer.weight->value.begin(), layer.weight->value.end());
        for (double& w : w2) w *= w;
        report.layers[l].normalized = normalized_sharpness_layer(
            per_input_matrix(diags[l].weight, layer), per_input_matrix(w2, layer));
        require_finite(report.layers[l].normalized->value, "normalized",
                       "the normalized sharpness of " + diags[l].name);
        sum += report.layers[l].normalized->value;
    }
    require_finite(sum, "normalized", "the normalized sharpness");
    report.normalized = sum;
    report.seconds.normalized = seconds_since(start);
}

void add_diag_measures(SharpnessReport& report, Sequential<double>& model, const Batch<double>& data,
                       const MeasureOptions& options) {
    auto start = Clock::now();
    const DiagHessian diag = diag_hessian(model, data.x, options);
    report.seconds.diag_hessian = seconds_since(start);
    const ParametricStructure<double> structure(model);
    const std::vector<LayerDiag> diags = structure.layer_diags(diag);
    double trace = 0.0;
    for (std::size_t l = 0; l < diags.size(); ++l) {
        LayerRow row;
        row.name = diags[l].name;
        row.spec = structure.layer(l).spec;
        row.parameters = diags[l].weight.size() + diags[l].bias.size();
        row.weight_trace = diags[l].weight_trace();
        row.bias_trace = diags[l].bias_trace();
        require_finite(row.weight_trace, "trace", "Tr H of " + row.name + ".weight");
        require_finite(row.bias_trace, "trace", "Tr H of " + row.name + ".bias");
        trace += row.weight_trace + row.bias_trace;
        report.layers.push_back(std::move(row));
    }
    require_finite(trace, "trace", "Tr H");
    report.trace = trace;
    if (wants(report.measures, Measure::Ms)) {
        start = Clock::now();
        report.ms = layerwise_minimum_sharpness(diags);
        require_finite(report.ms->value, "ms", "the layer-wise minimum sharpness");
        report.seconds.ms = seconds_since(start);
    }
    if (wants(report.measures, Measure::MsNode)) {
        start = Clock::now();
        report.ms_node = nodewise_minimum_sharpness(diags);
        require_finite(report.ms_node->value, "ms-node", "the node-wise minimum sharpness");
        report.seconds.ms_node = seconds_since(start);
    }
    if (wants(report.measures, Measure::Normalized)) add_normalized(report, structure, diags);
}

void add_hutchinson(SharpnessReport& report, Sequential<double>& model, const Batch<double>& data,
                    const MeasureOptions& options) {
    const auto start = Clock::now();
    Rng rng(options.seed);
    std::optional<ProgressBar> bar;
    if (options.progress) bar.emplace("Hutchinson", options.hutchinson_samples);
    // Welford's running mean and variance, for the standard error of the estimate.
    double mean = 0.0, m2 = 0.0;
    std::size_t k = 0;
    while (k < options.hutchinson_samples) {
        const double v = hutchinson_sample(model, data, rng, 1e-5, options.chunk);
        ++k;
        const double delta = v - mean;
        mean += delta / double(k);
        m2 += delta * (v - mean);
        if (bar) bar->update(k);
    }
    if (bar) bar->finish();
    const double variance = k > 1 ? m2 / double(k - 1) : 0.0;
    require_finite(mean, "hutchinson", "the Hutchinson estimate");
    require_finite(variance, "hutchinson", "the variance of the Hutchinson samples");
    report.hutchinson = HutchinsonResult{mean, std::sqrt(variance / double(k)), k};
    report.seconds.hutchinson = seconds_since(start);
}

// ---- JSON -----------------------------------------------------------------------------

nlohmann::json ms_json(const MinimumSharpness& ms) {
    return {{"value", ms.value},
            {"scales", ms.scales},
            {"gradient_norm", ms.gradient_norm},
            {"iterations", ms.iterations},
            {"attained", ms.attained},
            {"note", ms.note},
            {"trace_before", ms.trace_before}};
}

nlohmann::json ms_node_json(const NodewiseMinimumSharpness& ms) {
    return {{"value", ms.value},
            {"sweeps", ms.sweeps},
            {"relative_change", ms.relative_change},
            {"converged", ms.converged},
            {"attained", ms.attained},
            {"note", ms.note},
            {"trace_before", ms.trace_before}};
}

nlohmann::json normalized_json(const NormalizedSharpness& n) {
    return {{"value", n.value},
            {"iterations", n.iterations},
            {"converged", n.converged},
            {"attained", n.attained},
            {"note", n.note}};
}

// ---- table ----------------------------------------------------------------------------

std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.6g", v);
    return buf;
}

std::string pad(const std::string& s, std::size_t width) {
    return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

std::string rpad(const std::string& s, std::size_t width) {
    return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

std::string time_text(double seconds) {
    char buf[32];
    if (seconds < 1.0)
        std::snprintf(buf, sizeof buf, "%.1f ms", seconds * 1e3);
    else
        std::snprintf(buf, sizeof buf, "%.2f s", seconds);
    return buf;
}

void layer_table(std::ostringstream& out, const SharpnessReport& r) {
    const bool normalized = r.normalized.has_value();
    out << pad("layer", 9) << pad("spec", 16) << rpad("params", 9) << rpad("Tr H weights", 15)
        << rpad("Tr H bias", 15) << rpad("Tr H", 15) << (normalized ? rpad("normalized", 15) : "")
        << "\n";
    double w = 0, b = 0;
    std::size_t params = 0;
    for (const auto& l : r.layers) {
        out << pad(l.name, 9) << pad(l.spec, 16) << rpad(std::to_string(l.parameters), 9)
            << rpad(num(l.weight_trace), 15) << rpad(num(l.bias_trace), 15)
            << rpad(num(l.weight_trace + l.bias_trace), 15)
            << (l.normalized ? rpad(num(l.normalized->value), 15) : "") << "\n";
        w += l.weight_trace;
        b += l.bias_trace;
        params += l.parameters;
    }
    out << pad("total", 25) << rpad(std::to_string(params), 9) << rpad(num(w), 15)
        << rpad(num(b), 15) << rpad(num(w + b), 15) << (normalized ? rpad(num(*r.normalized), 15) : "")
        << "\n\n";
}

void measure_line(std::ostringstream& out, const std::string& label, const std::string& value,
                  const std::string& time) {
    out << "  " << pad(label, 38) << rpad(value, 20) << "   " << time << "\n";
}

}  // namespace

std::string_view measure_name(Measure measure) {
    for (const auto& [m, name] : measure_table)
        if (m == measure) return name;
    throw Error("measure_name: unknown measure value " + std::to_string(int(measure)));
}

std::vector<std::string> measure_names() {
    std::vector<std::string> names;
    for (const auto& entry : measure_table) names.emplace_back(entry.second);
    return names;
}

Measure parse_measure(std::string_view name) {
    for (const auto& [m, n] : measure_table)
        if (n == name) return m;
    throw Error("unknown measure '" + std::string(name) + "' (valid: " + joined_names() + ")");
}

std::vector<Measure> parse_measures(std::string_view list) {
    std::vector<Measure> measures;
    std::size_t start = 0;
    while (start <= list.size()) {
        const std::size_t end = std::min(list.find(',', start), list.size());
        const std::string name = trim(list.substr(start, end - start));
        if (name.empty())
            throw Error("measure list '" + std::string(list) + "' has an empty entry (valid: " +
                        joined_names() + ")");
        const Measure m = parse_measure(name);
        if (!wants(measures, m)) measures.push_back(m);
        start = end + 1;
    }
    return measures;
}

std::string_view precision_name(Precision precision) {
    return precision == Precision::Float ? "float" : "double";
}

Precision parse_precision(std::string_view name) {
    if (name == "double") return Precision::Double;
    if (name == "float") return Precision::Float;
    throw Error("unknown precision '" + std::string(name) + "' (valid: double, float)");
}

SharpnessReport measure_sharpness(Sequential<double>& model, const Batch<double>& data,
                                  const std::vector<Measure>& measures,
                                  const MeasureOptions& options) {
    if (measures.empty()) throw Error("measure_sharpness: no measure asked for");
    if (data.x.shape()[0] == 0) throw Error("measure_sharpness: no inputs (empty dataset)");
    if (data.size() != 0 && data.size() != data.x.shape()[0])
        throw ShapeError("measure_sharpness: " + std::to_string(data.x.shape()[0]) +
                         " inputs but " + std::to_string(data.size()) + " labels");
    if (options.chunk == 0) throw Error("measure_sharpness: chunk must be positive");
    require_piecewise_linear(model);
    SharpnessReport report;
    report.model_spec = model.spec();
    report.inputs = data.x.shape()[0];
    report.parameters = model.parameter_count();
    report.measures = measures;
    report.precision = options.precision;
    const bool diag = std::any_of(measures.begin(), measures.end(),
                                  [](Measure m) { return m != Measure::Hutchinson; });
    if (diag) add_diag_measures(report, model, data, options);
    if (wants(measures, Measure::Hutchinson)) {
        if (data.size() == 0)
            throw Error("measure_sharpness: the Hutchinson estimate needs the labels of the inputs");
        if (options.hutchinson_samples == 0)
            throw Error("measure_sharpness: the Hutchinson estimate needs at least one sample");
        add_hutchinson(report, model, data, options);
    }
    return report;
}

nlohmann::json SharpnessReport::to_json() const {
    nlohmann::json j;
    j["model"] = model_spec;
    j["inputs"] = inputs;
    j["parameters"] = parameters;
    j["precision"] = std::string(precision_name(precision));
    j["measures"] = nlohmann::json::array();
    for (Measure m : measures) j["measures"].push_back(std::string(measure_name(m)));
    j["layers"] = nlohmann::json::array();
    for (const auto& l : layers) {
        nlohmann::json row{{"name", l.name},
                           {"spec", l.spec},
                           {"parameters", l.parameters},
                           {"weight_trace", l.weight_trace},
                           {"bias_trace", l.bias_trace}};
        if (l.normalized) row["normalized"] = normalized_json(*l.normalized);
        j["layers"].push_back(std::move(row));
    }
    if (trace) j["trace"] = *trace;
    if (ms) j["ms"] = ms_json(*ms);
    if (ms_node) j["ms_node"] = ms_node_json(*ms_node);
    if (normalized) j["normalized"] = *normalized;
    if (hutchinson)
        j["hutchinson"] = {{"estimate", hutchinson->estimate},
                           {"standard_error", hutchinson->standard_error},
                           {"samples", hutchinson->samples}};
    j["seconds"] = {{"diag_hessian", seconds.diag_hessian}, {"ms", seconds.ms},
                    {"ms_node", seconds.ms_node},           {"normalized", seconds.normalized},
                    {"hutchinson", seconds.hutchinson},     {"total", seconds.total()}};
    return j;
}

std::string format_report(const SharpnessReport& r) {
    std::ostringstream out;
    out << "model   " << r.model_spec << "  (" << r.parameters << " parameters)\n";
    out << "inputs  " << r.inputs << "  (Hessian of the mean cross-entropy over them)\n\n";
    if (!r.layers.empty()) layer_table(out, r);

    const std::string diag_time =
        time_text(r.seconds.diag_hessian) + " (exact diag H, " +
        std::string(precision_name(r.precision)) + ")";
    std::vector<std::string> notes;
    out << "  " << pad("measure", 38) << rpad("value", 20) << "   time\n";
    if (r.trace && wants(r.measures, Measure::Trace))
        measure_line(out, "Tr H                     [trace]", num(*r.trace), diag_time);
    if (r.ms) {
        const std::string v = num(r.ms->value) + (r.ms->attained ? "" : "*");
        measure_line(out, "minimum sharpness        [ms]", v,
                     time_text(r.seconds.ms) + " + diag H");
        if (!r.ms->attained) notes.push_back("* ms is an infimum, not attained: " + r.ms->note);
    }
    if (r.ms_node) {
        const std::string v = num(r.ms_node->value) + (r.ms_node->attained ? "" : "*");
        measure_line(out, "node-wise min. sharpness [ms-node]", v,
                     time_text(r.seconds.ms_node) + " + diag H");
        if (!r.ms_node->attained)
            notes.push_back("* ms-node is an infimum, not attained: " + r.ms_node->note);
        if (!r.ms_node->converged)
            notes.push_back("ms-node stopped after " + std::to_string(r.ms_node->sweeps) +
                            " sweeps, relative change " + num(r.ms_node->relative_change));
    }
    if (r.normalized) {
        measure_line(out, "normalized sharpness     [normalized]", num(*r.normalized),
                     time_text(r.seconds.normalized) + " + diag H");
        for (const auto& l : r.layers)
            if (l.normalized && (!l.normalized->attained || !l.normalized->converged))
                notes.push_back("normalized, " + l.name + ": " +
                                (l.normalized->note.empty() ? "not converged" : l.normalized->note));
    }
    if (r.hutchinson)
        measure_line(out, "Hutchinson Tr H estimate [hutchinson]",
                     num(r.hutchinson->estimate) + " +- " + num(r.hutchinson->standard_error),
                     time_text(r.seconds.hutchinson) + " (" +
                         std::to_string(r.hutchinson->samples) + " probes)");
    out << "  " << pad("total time", 58) << "   " << time_text(r.seconds.total()) << "\n";
    if (r.trace && r.ms && *r.trace > 0)
        out << "\nTr H is " << num(*r.trace / r.ms->value)
            << " x its minimum over layer-wise rescalings (the same function)\n";
    for (const auto& n : notes) out << "note: " << n << "\n";
    return out.str();
}

}  // namespace minsharp::sharpness
