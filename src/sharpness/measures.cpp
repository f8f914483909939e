#include "minsharp/sharpness/measures.hpp"

#include "minsharp/autograd/hvp.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/ops/all.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/progress.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/estimators.hpp"
#include "minsharp/sharpness/structure.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <sstream>
#include <utility>

namespace minsharp::sharpness {

namespace {

constexpr std::array<std::pair<Measure, std::string_view>, 11> measure_table{{
    {Measure::Trace, "trace"},
    {Measure::Ms, "ms"},
    {Measure::MsNode, "ms-node"},
    {Measure::Normalized, "normalized"},
    {Measure::Hutchinson, "hutchinson"},
    {Measure::LambdaMax, "lambda-max"},
    {Measure::TopEigenvalues, "top-eigenvalues"},
    {Measure::Spectrum, "spectrum"},
    {Measure::Adaptive, "adaptive"},
    {Measure::AdaptiveLambdaMax, "adaptive-lambda-max"},
    {Measure::FisherRao, "fisher-rao"},
}};

// The measures computed from the exact diagonal, and those from Hessian-vector products.
bool needs_diag(Measure m) {
    return m == Measure::Trace || m == Measure::Ms || m == Measure::MsNode ||
           m == Measure::Normalized || m == Measure::Adaptive;
}

bool needs_hvp(Measure m) {
    return m == Measure::Hutchinson || m == Measure::LambdaMax || m == Measure::TopEigenvalues ||
           m == Measure::Spectrum || m == Measure::AdaptiveLambdaMax;
}

// Independent random streams per measure (derive_seed), so that adding a measure to a run
// leaves the others' numbers as they were.
enum SeedStream : std::uint64_t {
    lambda_max_stream = 11,
    top_eigenvalues_stream,
    spectrum_stream,
    adaptive_lambda_max_stream,
    layer_lambda_max_stream = 100,  // + layer index
};

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

// Σ_i θ_i² H_ii over every parameter, weights and biases.
void add_adaptive(SharpnessReport& report, Sequential<double>& model, const DiagHessian& diag) {
    const auto start = Clock::now();
    const auto parameters = model.parameters();
    if (parameters.size() != diag.parameters.size())
        throw Error("adaptive: the diagonal has " + std::to_string(diag.parameters.size()) +
                    " parameters, the model " + std::to_string(parameters.size()));
    double sum = 0.0;
    for (std::size_t p = 0; p < parameters.size(); ++p) {
        const auto& h = diag.parameters[p].values;
        const auto& theta = parameters[p]->value;
        if (diag.parameters[p].name != parameters[p]->name || h.size() != theta.size())
            throw Error("adaptive: diagonal entry '" + diag.parameters[p].name +
                        "' does not match parameter '" + parameters[p]->name + "'");
        for (std::size_t k = 0; k < h.size(); ++k) sum += theta.data()[k] * theta.data()[k] * h[k];
    }
    require_finite(sum, "adaptive", "Σ θ² H_ii");
    report.adaptive = sum;
    report.seconds.adaptive = seconds_since(start);
}

void add_diag_measures(SharpnessReport& report, Sequential<double>& model,
                       const ParametricStructure<double>& structure, const Batch<double>& data,
                       const MeasureOptions& options) {
    auto start = Clock::now();
    const DiagHessian diag = diag_hessian(model, data.x, options);
    report.seconds.diag_hessian = seconds_since(start);
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
    if (wants(report.measures, Measure::Adaptive)) add_adaptive(report, model, diag);
}

// The exact Hessian-vector product in double, recorded once for every Hv measure.
struct ExactHvp {
    autograd::HessianVectorProduct<double> product;
    HessianVectorProduct callback() {
        return [this](std::span<const double> v, std::span<double> hv) { product.apply(v, hv); };
    }
};

// The product as a measure uses it: an error naming the measure when a product is NaN or
// Inf (as for the diag-H measures), and one progress tick per product when a bar is wanted.
HessianVectorProduct counted(HessianVectorProduct hvp, std::optional<ProgressBar>& bar,
                             std::string_view measure) {
    auto done = std::make_shared<std::size_t>(0);
    return [hvp = std::move(hvp), &bar, done, measure](std::span<const double> v, std::span<double> hv) {
        hvp(v, hv);
        for (double x : hv)
            if (!std::isfinite(x)) require_finite(x, measure, "an entry of a Hessian-vector product");
        if (bar) bar->update(++*done);
    };
}

EigenvalueResult eigenvalue_result(const EigenResult& e) {
    return {e.values, e.residuals, e.iterations, e.invariant_subspace};
}

void require_finite_values(const EigenvalueResult& r, std::string_view measure) {
    for (std::size_t i = 0; i < r.values.size(); ++i) {
        require_finite(r.values[i], measure, "eigenvalue " + std::to_string(i + 1));
        require_finite(r.residuals[i], measure, "the residual of eigenvalue " + std::to_string(i + 1));
    }
}

std::size_t lanczos_steps(const MeasureOptions& options, std::size_t k) {
    if (options.lanczos_iterations > 0) return options.lanczos_iterations;
    return std::max<std::size_t>(20, 2 * k + 10);
}

void add_hutchinson(SharpnessReport& report, ExactHvp& hvp, const MeasureOptions& options) {
    const auto start = Clock::now();
    std::optional<ProgressBar> bar;
    if (options.progress) bar.emplace("Hutchinson", options.hutchinson_samples);
    const TraceEstimate t = hutchinson_trace(counted(hvp.callback(), bar, "hutchinson"), hvp.product.dimension(),
                                             options.hutchinson_samples, options.seed);
    if (bar) bar->finish();
    require_finite(t.value, "hutchinson", "the Hutchinson estimate");
    require_finite(t.standard_error, "hutchinson", "the standard error of the Hutchinson estimate");
    report.hutchinson = HutchinsonResult{t.value, t.standard_error, t.samples};
    report.seconds.hutchinson = seconds_since(start);
}

EigenvalueResult top_of(const HessianVectorProduct& product, std::size_t dim, std::size_t k,
                        std::size_t steps, std::uint64_t seed, std::string_view measure, bool progress) {
    std::optional<ProgressBar> bar;
    if (progress) bar.emplace(std::string(measure), steps);
    const EigenResult e = top_eigenvalues(counted(product, bar, measure), dim, k, steps, seed);
    if (bar) bar->finish();
    return eigenvalue_result(e);
}

// Where each parameter starts in the flat layout of model.parameters().
std::map<const Parameter<double>*, std::size_t> parameter_offsets(Sequential<double>& model) {
    std::map<const Parameter<double>*, std::size_t> offsets;
    std::size_t at = 0;
    for (const Parameter<double>* p : model.parameters()) {
        offsets[p] = at;
        at += p->size();
    }
    return offsets;
}

// The flat coordinates of one layer's weight and bias, in flat order.
std::vector<std::size_t> layer_coordinates(const ParametricLayer<double>& layer,
                                           const std::map<const Parameter<double>*, std::size_t>& offsets) {
    std::vector<std::size_t> coordinates;
    for (const Parameter<double>* p : {layer.weight, layer.bias}) {
        if (!p) continue;
        const std::size_t first = offsets.at(p);
        for (std::size_t i = 0; i < p->size(); ++i) coordinates.push_back(first + i);
    }
    return coordinates;
}

// λ_max of layer l's block H_ll: the product with a direction zero outside the layer,
// read back on the layer's coordinates only.
void add_layer_lambda_max(SharpnessReport& report, ExactHvp& hvp, Sequential<double>& model,
                          const ParametricStructure<double>& structure,
                          const MeasureOptions& options) {
    const auto offsets = parameter_offsets(model);
    const std::size_t dim = hvp.product.dimension();
    std::vector<double> full_v(dim, 0.0), full_hv(dim);
    for (std::size_t l = 0; l < structure.size(); ++l) {
        const std::vector<std::size_t> at = layer_coordinates(structure.layer(l), offsets);
        const HessianVectorProduct block = [&](std::span<const double> v, std::span<double> hv) {
            for (std::size_t i = 0; i < at.size(); ++i) full_v[at[i]] = v[i];
            hvp.product.apply(full_v, full_hv);
            for (std::size_t i = 0; i < at.size(); ++i) {
                hv[i] = full_hv[at[i]];
                full_v[at[i]] = 0.0;
            }
        };
        const std::size_t steps = std::min(lanczos_steps(options, 1), at.size());
        const EigenResult e = top_eigenvalues(block, at.size(), 1, steps,
                                              derive_seed(options.seed, layer_lambda_max_stream + l));
        LayerRow& row = report.layers.at(l);
        row.lambda_max = e.values.at(0);
        row.lambda_max_residual = e.residuals.at(0);
        require_finite(*row.lambda_max, "lambda-max", "λ_max of " + row.name);
    }
}

void add_lambda_max(SharpnessReport& report, ExactHvp& hvp, Sequential<double>& model,
                    const ParametricStructure<double>& structure, const MeasureOptions& options) {
    const auto start = Clock::now();
    report.lambda_max = top_of(hvp.callback(), hvp.product.dimension(), 1, lanczos_steps(options, 1),
                               derive_seed(options.seed, lambda_max_stream), "lambda-max",
                               options.progress);
    require_finite_values(*report.lambda_max, "lambda-max");
    if (options.layer_lambda_max) add_layer_lambda_max(report, hvp, model, structure, options);
    report.seconds.lambda_max = seconds_since(start);
}

void add_top_eigenvalues(SharpnessReport& report, ExactHvp& hvp, const MeasureOptions& options) {
    const auto start = Clock::now();
    report.top_eigenvalues =
        top_of(hvp.callback(), hvp.product.dimension(), options.top_k,
               lanczos_steps(options, options.top_k), derive_seed(options.seed, top_eigenvalues_stream),
               "top-eigenvalues", options.progress);
    require_finite_values(*report.top_eigenvalues, "top-eigenvalues");
    report.seconds.top_eigenvalues = seconds_since(start);
}

void add_spectrum(SharpnessReport& report, ExactHvp& hvp, const MeasureOptions& options) {
    const auto start = Clock::now();
    std::optional<ProgressBar> bar;
    if (options.progress) bar.emplace("spectrum", options.spectrum_probes * options.spectrum_steps);
    report.spectrum = spectral_density(counted(hvp.callback(), bar, "spectrum"), hvp.product.dimension(),
                                       options.spectrum_probes, options.spectrum_steps,
                                       derive_seed(options.seed, spectrum_stream));
    if (bar) bar->finish();
    for (const auto& nodes : report.spectrum->nodes)
        for (double node : nodes) require_finite(node, "spectrum", "a quadrature node");
    report.seconds.spectrum = seconds_since(start);
}

// λ_max(T H T), T = diag(|θ|): the operator v ↦ T H (T v).
void add_adaptive_lambda_max(SharpnessReport& report, ExactHvp& hvp, Sequential<double>& model,
                             const MeasureOptions& options) {
    const auto start = Clock::now();
    std::vector<double> t = get_flat_parameters(model);
    for (double& x : t) x = std::abs(x);
    std::vector<double> scaled(t.size());
    const HessianVectorProduct product = [&](std::span<const double> v, std::span<double> hv) {
        for (std::size_t i = 0; i < t.size(); ++i) scaled[i] = t[i] * v[i];
        hvp.product.apply(scaled, hv);
        for (std::size_t i = 0; i < t.size(); ++i) hv[i] *= t[i];
    };
    report.adaptive_lambda_max =
        top_of(product, t.size(), 1, lanczos_steps(options, 1),
               derive_seed(options.seed, adaptive_lambda_max_stream), "adaptive-lambda-max",
               options.progress);
    require_finite_values(*report.adaptive_lambda_max, "adaptive-lambda-max");
    report.seconds.adaptive_lambda_max = seconds_since(start);
}

// `structure` is set when lambda-max is asked for (its per-layer rows and blocks need it).
void add_hvp_measures(SharpnessReport& report, Sequential<double>& model,
                      const std::optional<ParametricStructure<double>>& structure,
                      const Batch<double>& data, const MeasureOptions& options) {
    auto start = Clock::now();
    autograd::HvpOptions hvp_options;
    hvp_options.chunk = options.chunk;
    ExactHvp hvp{autograd::HessianVectorProduct<double>(model, data.x, data.y, hvp_options)};
    report.seconds.hvp_recording = seconds_since(start);
    if (wants(report.measures, Measure::Hutchinson)) add_hutchinson(report, hvp, options);
    if (wants(report.measures, Measure::LambdaMax))
        add_lambda_max(report, hvp, model, structure.value(), options);
    if (wants(report.measures, Measure::TopEigenvalues)) add_top_eigenvalues(report, hvp, options);
    if (wants(report.measures, Measure::Spectrum)) add_spectrum(report, hvp, options);
    if (wants(report.measures, Measure::AdaptiveLambdaMax))
        add_adaptive_lambda_max(report, hvp, model, options);
}

void add_fisher_rao(SharpnessReport& report, Sequential<double>& model, const Batch<double>& data,
                    const MeasureOptions& options) {
    const auto start = Clock::now();
    const std::vector<double> s = parameter_directional_derivatives(model, data, options.chunk);
    double squares = 0.0, sum = 0.0;
    for (double v : s) {
        squares += v * v;
        sum += v;
    }
    const double n = double(s.size());
    report.fisher_rao = FisherRaoResult{squares / n, sum / n};
    require_finite(report.fisher_rao->value, "fisher-rao", "the Fisher-Rao norm");
    report.seconds.fisher_rao = seconds_since(start);
}

// Layer rows (name, spec, parameters) without traces, for per-layer λ_max when no diag-H
// measure was asked for.
void add_layer_rows(SharpnessReport& report, const ParametricStructure<double>& structure) {
    for (const auto& layer : structure.layers()) {
        LayerRow row;
        row.name = layer.name;
        row.spec = layer.spec;
        row.parameters = layer.weight->size() + (layer.bias ? layer.bias->size() : 0);
        report.layers.push_back(std::move(row));
    }
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

// `single`: a one-value measure, whose "value" is that eigenvalue; otherwise "values".
nlohmann::json eigenvalue_json(const EigenvalueResult& r, bool single) {
    nlohmann::json j{{"residuals", r.residuals},
                     {"iterations", r.iterations},
                     {"invariant_subspace", r.invariant_subspace}};
    if (single) {
        j["value"] = r.values.at(0);
        j["residual"] = r.residuals.at(0);
    } else {
        j["value"] = r.values.at(0);  // the largest, so that "value" means the same everywhere
        j["values"] = r.values;
    }
    return j;
}

nlohmann::json spectrum_json(const SpectralDensity& d) {
    return {{"nodes", d.nodes},   {"weights", d.weights}, {"steps", d.steps},
            {"sigma", d.sigma},   {"grid", d.grid},       {"density", d.density},
            {"probes", d.nodes.size()}};
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
    const bool traces = r.trace.has_value();
    const bool normalized = r.normalized.has_value();
    const bool lambda = r.lambda_max.has_value();
    out << pad("layer", 9) << pad("spec", 16) << rpad("params", 9);
    if (traces) out << rpad("Tr H weights", 15) << rpad("Tr H bias", 15) << rpad("Tr H", 15);
    out << (normalized ? rpad("normalized", 15) : "") << (lambda ? rpad("lambda_max", 15) : "")
        << "\n";
    double w = 0, b = 0;
    std::size_t params = 0;
    for (const auto& l : r.layers) {
        out << pad(l.name, 9) << pad(l.spec, 16) << rpad(std::to_string(l.parameters), 9);
        if (traces)
            out << rpad(num(l.weight_trace), 15) << rpad(num(l.bias_trace), 15)
                << rpad(num(l.weight_trace + l.bias_trace), 15);
        out << (l.normalized ? rpad(num(l.normalized->value), 15) : "")
            << (l.lambda_max ? rpad(num(*l.lambda_max), 15) : "") << "\n";
        w += l.weight_trace;
        b += l.bias_trace;
        params += l.parameters;
    }
    out << pad("total", 25) << rpad(std::to_string(params), 9);
    if (traces) out << rpad(num(w), 15) << rpad(num(b), 15) << rpad(num(w + b), 15);
    out << (normalized ? rpad(num(*r.normalized), 15) : "")
        << (lambda ? rpad(num(r.lambda_max->values.at(0)), 15) : "") << "\n\n";
}

std::string values_text(const std::vector<double>& values) {
    std::string s;
    for (double v : values) s += (s.empty() ? "" : ", ") + num(v);
    return s;
}

std::string lanczos_time(double seconds, const EigenvalueResult& e) {
    return time_text(seconds) + " (" + std::to_string(e.iterations) + " steps, residual " +
           num(*std::max_element(e.residuals.begin(), e.residuals.end())) + ")";
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
    const bool diag = std::any_of(measures.begin(), measures.end(), needs_diag);
    const bool hvp = std::any_of(measures.begin(), measures.end(), needs_hvp);
    const bool labels = hvp || wants(measures, Measure::FisherRao);
    if (labels && data.size() == 0)
        throw Error("measure_sharpness: " +
                    std::string(hvp ? "Hessian-vector products" : "the Fisher-Rao norm") +
                    " need the labels of the inputs");
    if (wants(measures, Measure::Hutchinson) && options.hutchinson_samples == 0)
        throw Error("measure_sharpness: the Hutchinson estimate needs at least one sample");
    if (wants(measures, Measure::TopEigenvalues)) {
        if (options.top_k == 0) throw Error("measure_sharpness: top-eigenvalues needs top_k ≥ 1");
        if (options.top_k > lanczos_steps(options, options.top_k))
            throw Error("measure_sharpness: top_k " + std::to_string(options.top_k) +
                        " eigenvalues need at least as many Lanczos iterations (have " +
                        std::to_string(options.lanczos_iterations) + ")");
    }
    if (wants(measures, Measure::Spectrum) && (options.spectrum_probes == 0 || options.spectrum_steps == 0))
        throw Error("measure_sharpness: the spectrum needs at least one probe and one Lanczos step");
    // Built once, for the measures that read the layers: the diagonal's per-layer blocks
    // and λ_max's per-layer rows.
    std::optional<ParametricStructure<double>> structure;
    if (diag || wants(measures, Measure::LambdaMax)) structure.emplace(model);
    if (diag) add_diag_measures(report, model, *structure, data, options);
    if (wants(measures, Measure::LambdaMax) && report.layers.empty()) add_layer_rows(report, *structure);
    if (hvp) add_hvp_measures(report, model, structure, data, options);
    if (wants(measures, Measure::FisherRao)) add_fisher_rao(report, model, data, options);
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
        nlohmann::json row{{"name", l.name}, {"spec", l.spec}, {"parameters", l.parameters}};
        if (trace) {
            row["weight_trace"] = l.weight_trace;
            row["bias_trace"] = l.bias_trace;
        }
        if (l.normalized) row["normalized"] = normalized_json(*l.normalized);
        if (l.lambda_max)
            row["lambda_max"] = {{"value", *l.lambda_max}, {"residual", *l.lambda_max_residual}};
        j["layers"].push_back(std::move(row));
    }
    if (trace) j["trace"] = *trace;
    if (ms) j["ms"] = ms_json(*ms);
    if (ms_node) j["ms_node"] = ms_node_json(*ms_node);
    if (normalized) j["normalized"] = *normalized;
    // "estimate" is the name of the same number in earlier reports.
    if (hutchinson)
        j["hutchinson"] = {{"value", hutchinson->estimate},
                           {"estimate", hutchinson->estimate},
                           {"standard_error", hutchinson->standard_error},
                           {"samples", hutchinson->samples},
                           {"products", "exact"}};
    if (lambda_max) j["lambda_max"] = eigenvalue_json(*lambda_max, true);
    if (top_eigenvalues) j["top_eigenvalues"] = eigenvalue_json(*top_eigenvalues, false);
    if (spectrum) j["spectrum"] = spectrum_json(*spectrum);
    if (adaptive) j["adaptive"] = *adaptive;
    if (adaptive_lambda_max) j["adaptive_lambda_max"] = eigenvalue_json(*adaptive_lambda_max, true);
    if (fisher_rao)
        j["fisher_rao"] = {{"value", fisher_rao->value},
                           {"norm", std::sqrt(fisher_rao->value)},
                           {"mean_directional_derivative", fisher_rao->mean_directional},
                           {"definition", "mean over inputs of <theta, grad_theta loss_i>^2"}};
    j["seconds"] = {{"diag_hessian", seconds.diag_hessian}, {"ms", seconds.ms},
                    {"ms_node", seconds.ms_node},           {"normalized", seconds.normalized},
                    {"hutchinson", seconds.hutchinson},     {"hvp_recording", seconds.hvp_recording},
                    {"lambda_max", seconds.lambda_max},     {"top_eigenvalues", seconds.top_eigenvalues},
                    {"spectrum", seconds.spectrum},         {"adaptive", seconds.adaptive},
                    {"adaptive_lambda_max", seconds.adaptive_lambda_max},
                    {"fisher_rao", seconds.fisher_rao},     {"total", seconds.total()}};
    return j;
}

std::vector<double> parameter_directional_derivatives(Sequential<double>& model,
                                                      const Batch<double>& data,
                                                      std::size_t chunk) {
    const std::size_t n = data.x.shape()[0];
    if (n == 0) throw Error("parameter_directional_derivatives: no inputs");
    if (data.size() != n)
        throw ShapeError("parameter_directional_derivatives: " + std::to_string(n) + " inputs but " +
                         std::to_string(data.size()) + " labels");
    if (chunk == 0) throw Error("parameter_directional_derivatives: chunk must be positive");
    const auto& s = data.x.shape();
    const std::size_t per_example = s[1] * s[2] * s[3];
    std::vector<double> directional(n, 0.0);
    Tape<double> tape;
    Tensor4<double> xb;
    Tensor4<double> seed = Tensor4<double>::from_shape({1, 1, 1, 1});
    for (std::size_t first = 0; first < n; first += chunk) {
        const std::size_t count = std::min(chunk, n - first);
        ensure_shape(xb, {count, s[1], s[2], s[3]});
        std::copy_n(data.x.data() + first * per_example, count * per_example, xb.data());
        const std::vector<int> labels(data.y.begin() + long(first), data.y.begin() + long(first + count));
        tape.clear();
        const NodeId loss = cross_entropy(tape, model.forward(tape, xb), labels);
        // The loss node is the chunk's mean; seeding with `count` makes every node's grad
        // the per-example ∂ℓ_i/∂value.
        seed(0, 0, 0, 0) = double(count);
        tape.backward(loss, seed, false);
        for (NodeId id = 0; id < tape.size(); ++id) {
            const Node<double>& node = tape.node(id);
            if (!node.weight) continue;
            // With a fused ReLU the value is relu(z) while grad is ∂ℓ/∂z, which vanishes
            // where z < 0, so ⟨grad, value⟩ = ⟨grad, z⟩ all the same.
            const std::size_t per = node.value.size() / count;
            const double* z = node.value.data();
            const double* g = node.grad.data();
            for (std::size_t i = 0; i < count; ++i) {
                double dot = 0.0;
                for (std::size_t k = i * per; k < (i + 1) * per; ++k) dot += g[k] * z[k];
                directional[first + i] += dot;
            }
        }
    }
    return directional;
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
    if (r.adaptive)
        measure_line(out, "adaptive sharpness       [adaptive]", num(*r.adaptive),
                     time_text(r.seconds.adaptive) + " + diag H");
    if (r.hutchinson)
        measure_line(out, "Hutchinson Tr H estimate [hutchinson]",
                     num(r.hutchinson->estimate) + " +- " + num(r.hutchinson->standard_error),
                     time_text(r.seconds.hutchinson) + " (" +
                         std::to_string(r.hutchinson->samples) + " exact Hv probes)");
    if (r.lambda_max)
        measure_line(out, "top eigenvalue of H      [lambda-max]", num(r.lambda_max->values.at(0)),
                     lanczos_time(r.seconds.lambda_max, *r.lambda_max) + " + layers'");
    if (r.adaptive_lambda_max)
        measure_line(out, "adaptive l_max  [adaptive-lambda-max]",
                     num(r.adaptive_lambda_max->values.at(0)),
                     lanczos_time(r.seconds.adaptive_lambda_max, *r.adaptive_lambda_max));
    if (r.fisher_rao)
        measure_line(out, "Fisher-Rao norm squared  [fisher-rao]", num(r.fisher_rao->value),
                     time_text(r.seconds.fisher_rao) + " (one gradient pass)");
    if (r.top_eigenvalues) {
        measure_line(out, "top eigenvalues          [top-eigenvalues]",
                     num(r.top_eigenvalues->values.at(0)),
                     lanczos_time(r.seconds.top_eigenvalues, *r.top_eigenvalues));
        out << "    all " << r.top_eigenvalues->values.size() << ": "
            << values_text(r.top_eigenvalues->values) << "\n";
    }
    if (r.spectrum) {
        double lo = r.spectrum->nodes.at(0).front(), hi = lo;
        for (const auto& nodes : r.spectrum->nodes) {
            lo = std::min(lo, nodes.front());
            hi = std::max(hi, nodes.back());
        }
        measure_line(out, "spectral density (SLQ)   [spectrum]",
                     "[" + num(lo) + ", " + num(hi) + "]",
                     time_text(r.seconds.spectrum) + " (" + std::to_string(r.spectrum->nodes.size()) +
                         " probes, node range)");
    }
    if (r.seconds.hvp_recording > 0)
        measure_line(out, "(recording for exact Hv products)", "",
                     time_text(r.seconds.hvp_recording));
    out << "  " << pad("total time", 58) << "   " << time_text(r.seconds.total()) << "\n";
    if (r.trace && r.ms && *r.trace > 0)
        out << "\nTr H is " << num(*r.trace / r.ms->value)
            << " x its minimum over layer-wise rescalings (the same function)\n";
    for (const auto& n : notes) out << "note: " << n << "\n";
    return out.str();
}

}  // namespace minsharp::sharpness
