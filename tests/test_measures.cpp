#define BOOST_TEST_MODULE measures
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"
#include "synthetic.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

// A LeNet-shaped stack (pad-2 conv, stride-1 pool, three convs, flatten into two dense
// layers) with tiny channel counts, so the exact diagonal is cheap.
const std::string tiny_lenet =
    "conv:2:5:pad2,relu,maxpool:2:1,conv:3:5,relu,maxpool:2:2,conv:4:5,relu,flatten,"
    "dense:6,relu,dense:10";

Batch<double> synthetic_batch(std::size_t n, std::uint64_t seed) {
    const Dataset d = testing::synthetic_dataset(n, seed, "synthetic");
    Batch<double> b;
    b.x = Tensor4<double>::from_shape(d.images.shape());
    std::copy(d.images.begin(), d.images.end(), b.x.begin());
    b.y = d.labels;
    return b;
}

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), std::abs(b)); }

struct Measured {
    double trace, ms, ms_node;
};

Measured measure(Sequential<double>& model, const Tensor4<double>& x) {
    const auto layers = layer_diags(model, exact_diag_hessian(model, x));
    double trace = 0;
    for (const auto& l : layers) trace += l.weight_trace() + l.bias_trace();
    return {trace, layerwise_minimum_sharpness(layers).value, nodewise_minimum_sharpness(layers).value};
}

void check_invariance(const std::string& name, std::size_t n) {
    Rng rng(derive_seed(21, name.size()));
    Sequential<double> model = make_model<double>(name, 5);
    const Batch<double> data = synthetic_batch(n, 8);
    const Measured base = measure(model, data.x);
    BOOST_TEST_INFO(name);
    BOOST_TEST(base.ms_node <= base.ms * (1 + 1e-12));
    BOOST_TEST(base.ms <= base.trace * (1 + 1e-12));
    BOOST_TEST(base.ms_node > 0.0);

    double largest_trace_change = 0.0;  // |log10(Tr H' / Tr H)| over the transforms
    // Trial 0: layer-wise only; 1: node-wise only; 2: both. Layer-wise MS is invariant under
    // the layer-wise group only; node-wise MS under the whole (node-wise) group.
    for (int trial = 0; trial < 3; ++trial) {
        Sequential<double> scaled = model;
        if (trial != 1) scale_layerwise(scaled, random_layer_scales(parametric_layer_indices(model).size(), rng, 1e3));
        if (trial != 0) scale_nodewise(scaled, random_node_scales(model, rng, 1e3));
        const Measured m = measure(scaled, data.x);
        BOOST_TEST_INFO(name << " trial " << trial << ": Tr H " << base.trace << " -> " << m.trace
                             << ", ms " << base.ms << " -> " << m.ms);
        if (trial == 0)
            BOOST_TEST(relative(m.ms, base.ms) <= 1e-9);
        else
            BOOST_TEST(relative(m.ms, base.ms) > 1e-3);  // per-unit scales escape it
        BOOST_TEST(relative(m.ms_node, base.ms_node) <= 1e-9);
        BOOST_TEST(m.ms_node <= m.ms * (1 + 1e-12));
        BOOST_TEST(m.ms <= m.trace * (1 + 1e-12));
        largest_trace_change = std::max(largest_trace_change, std::abs(std::log10(m.trace / base.trace)));
    }
    // Several layer-wise transforms alone: the paper's invariance.
    for (int trial = 0; trial < 3; ++trial) {
        Sequential<double> scaled =
            scaled_layerwise(model, random_layer_scales(parametric_layer_indices(model).size(), rng, 1e3));
        const Measured m = measure(scaled, data.x);
        BOOST_TEST_INFO(name << " layer-wise trial " << trial << ": Tr H " << base.trace << " -> " << m.trace);
        BOOST_TEST(relative(m.ms, base.ms) <= 1e-9);
        BOOST_TEST(relative(m.ms_node, base.ms_node) <= 1e-9);
        largest_trace_change = std::max(largest_trace_change, std::abs(std::log10(m.trace / base.trace)));
    }
    BOOST_TEST_INFO(name);
    BOOST_TEST(largest_trace_change >= 2.0);  // plain Tr H moves by orders of magnitude
}

}  // namespace

BOOST_AUTO_TEST_CASE(minimum_sharpness_is_invariant_where_trace_is_not) {
    check_invariance("small-mlp", 16);
    check_invariance("small-cnn", 8);
    check_invariance(tiny_lenet, 6);
}

BOOST_AUTO_TEST_CASE(normalized_sharpness_is_invariant_to_rescaling) {
    for (const std::string& name : std::vector<std::string>{"small-cnn", tiny_lenet}) {
        Rng rng(13);
        Sequential<double> model = make_model<double>(name, 2);
        const Batch<double> data = synthetic_batch(6, 3);
        const std::vector<Measure> what{Measure::Normalized};
        const auto base = measure_sharpness(model, data, what);
        Sequential<double> scaled = scaled_nodewise(model, random_node_scales(model, rng, 1e3));
        const auto node = measure_sharpness(scaled, data, what);
        scale_layerwise(scaled, random_layer_scales(base.layers.size(), rng, 1e3));
        const auto both = measure_sharpness(scaled, data, what);
        BOOST_TEST_INFO(name << ": " << *base.normalized << " " << *node.normalized << " "
                             << *both.normalized << ", Tr H " << *base.trace << " -> " << *both.trace);
        BOOST_TEST(relative(*node.normalized, *base.normalized) <= 1e-9);
        BOOST_TEST(relative(*both.normalized, *base.normalized) <= 1e-9);
        for (std::size_t l = 0; l < base.layers.size(); ++l)
            BOOST_TEST(relative(node.layers[l].normalized->value, base.layers[l].normalized->value) <= 1e-9);
        BOOST_TEST(relative(*both.trace, *base.trace) > 1e-3);
    }
}

BOOST_AUTO_TEST_CASE(report_agrees_with_the_parts) {
    Sequential<double> model = make_model<double>("small-cnn", 4);
    const Batch<double> data = synthetic_batch(10, 1);
    const auto report = measure_sharpness(model, data, parse_measures("trace,ms,ms-node,normalized"));
    const auto layers = layer_diags(model, exact_diag_hessian(model, data.x));
    BOOST_TEST(report.inputs == 10u);
    BOOST_TEST(report.parameters == model.parameter_count());
    BOOST_TEST_REQUIRE(report.layers.size() == 3u);
    double trace = 0;
    for (std::size_t l = 0; l < 3; ++l) {
        BOOST_TEST(report.layers[l].name == layers[l].name);
        BOOST_TEST(relative(report.layers[l].weight_trace, layers[l].weight_trace()) <= 1e-12);
        BOOST_TEST(relative(report.layers[l].bias_trace, layers[l].bias_trace()) <= 1e-12);
        trace += layers[l].weight_trace() + layers[l].bias_trace();
    }
    BOOST_TEST(report.layers[0].spec == "conv:20:5");
    BOOST_TEST(report.layers[2].spec == "dense:10");
    BOOST_TEST(relative(*report.trace, trace) <= 1e-12);
    BOOST_TEST(relative(report.ms->value, layerwise_minimum_sharpness(layers).value) <= 1e-12);
    BOOST_TEST(relative(report.ms_node->value, nodewise_minimum_sharpness(layers).value) <= 1e-12);
    double normalized = 0;
    for (const auto& l : report.layers) normalized += l.normalized->value;
    BOOST_TEST(relative(*report.normalized, normalized) <= 1e-12);
    BOOST_TEST(!report.hutchinson.has_value());
    BOOST_TEST(report.seconds.diag_hessian > 0.0);
}

BOOST_AUTO_TEST_CASE(normalized_reads_conv_per_channel_and_dense_per_column) {
    // The per-layer matrices built by hand from the parameter shapes: a conv weight
    // (out, in, k, k) summed over its k·k positions, a dense weight (out, in) as it is — here
    // a dense layer reading a conv's (C, H, W) output without a flatten.
    Sequential<double> model = make_model<double>("conv:3:3,relu,conv:2:3,relu,dense:10", 8);
    const Batch<double> data = synthetic_batch(5, 4);
    const auto report = measure_sharpness(model, data, {Measure::Normalized});
    const DiagHessian diag = exact_diag_hessian(model, data.x);
    BOOST_TEST_REQUIRE(report.layers.size() == 3u);
    for (std::size_t l = 0; l < 3; ++l) {
        const auto& w = model.parameter("layer" + std::to_string(l) + ".weight");
        const auto& h = diag.at(w.name).values;
        const std::size_t out = w.shape[0], in = w.shape[1];
        const std::size_t positions = w.shape.size() == 4 ? w.shape[2] * w.shape[3] : 1;
        Tensor2<double> hm = Tensor2<double>::from_shape({out, in}), w2 = hm;
        hm.fill(0.0);
        w2.fill(0.0);
        for (std::size_t k = 0; k < w.size(); ++k) {
            hm.data()[k / positions] += h[k];
            w2.data()[k / positions] += w.value[k] * w.value[k];
        }
        BOOST_TEST_INFO("layer " << l);
        BOOST_TEST(relative(report.layers[l].normalized->value, normalized_sharpness_layer(hm, w2).value) <= 1e-12);
    }
}

BOOST_AUTO_TEST_CASE(diag_blocks_and_float_precision_agree_with_one_double_pass) {
    Sequential<double> model = make_model<double>("small-mlp", 6);
    const Batch<double> data = synthetic_batch(90, 2);
    const double exact = exact_diag_hessian(model, data.x).trace();
    MeasureOptions small_chunks;
    small_chunks.chunk = 4;  // 23 chunks: the pass runs in several blocks
    const auto blocked = measure_sharpness(model, data, {Measure::Trace}, small_chunks);
    BOOST_TEST(relative(*blocked.trace, exact) <= 1e-12);
    MeasureOptions single;
    single.precision = Precision::Float;
    const auto f = measure_sharpness(model, data, {Measure::Trace, Measure::Ms}, single);
    BOOST_TEST(relative(*f.trace, exact) <= 1e-4);
    BOOST_TEST((f.precision == Precision::Float));
}

BOOST_AUTO_TEST_CASE(hutchinson_estimate_is_near_the_exact_trace) {
    Sequential<double> model = make_model<double>("small-mlp", 7);
    const Batch<double> data = synthetic_batch(20, 5);
    MeasureOptions options;
    options.hutchinson_samples = 200;
    options.seed = 3;
    const auto r = measure_sharpness(model, data, {Measure::Hutchinson, Measure::Trace}, options);
    BOOST_TEST_REQUIRE(r.hutchinson.has_value());
    BOOST_TEST(r.hutchinson->samples == 200u);
    BOOST_TEST(r.hutchinson->standard_error > 0.0);
    BOOST_TEST_INFO("estimate " << r.hutchinson->estimate << " ± " << r.hutchinson->standard_error
                                << ", exact " << *r.trace);
    BOOST_TEST(std::abs(r.hutchinson->estimate - *r.trace) <= 5 * r.hutchinson->standard_error);
    // Only the estimate asked for: no diag-H pass, no per-layer rows.
    const auto alone = measure_sharpness(model, data, {Measure::Hutchinson}, options);
    BOOST_TEST(alone.layers.empty());
    BOOST_TEST(!alone.trace.has_value());
    BOOST_TEST(alone.hutchinson->estimate == r.hutchinson->estimate);  // same seed, same probes
}

BOOST_AUTO_TEST_CASE(measure_names_parse) {
    BOOST_TEST(measure_names() ==
               (std::vector<std::string>{"trace", "ms", "ms-node", "normalized", "hutchinson",
                                         "lambda-max", "top-eigenvalues", "spectrum", "adaptive",
                                         "adaptive-lambda-max", "fisher-rao"}));
    for (const auto& name : measure_names()) BOOST_TEST(measure_name(parse_measure(name)) == name);
    BOOST_TEST((parse_measures("trace, ms ,ms,ms-node") ==
                std::vector<Measure>{Measure::Trace, Measure::Ms, Measure::MsNode}));
    try {
        parse_measure("bogus");
        BOOST_FAIL("accepted 'bogus'");
    } catch (const Error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find("'bogus'") != std::string::npos);
        BOOST_TEST(what.find("ms-node") != std::string::npos);  // lists the valid names
        BOOST_TEST(what.find("hutchinson") != std::string::npos);
    }
    BOOST_CHECK_THROW(parse_measures(""), Error);
    BOOST_CHECK_THROW(parse_measures("trace,,ms"), Error);
    BOOST_CHECK_THROW(parse_measures("trace,Ms"), Error);
    BOOST_TEST((parse_precision("float") == Precision::Float));
    BOOST_TEST((parse_precision("double") == Precision::Double));
    BOOST_CHECK_THROW(parse_precision("half"), Error);
}

BOOST_AUTO_TEST_CASE(report_json_has_the_fields) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    const Batch<double> data = synthetic_batch(12, 4);
    MeasureOptions options;
    options.hutchinson_samples = 5;
    const auto j = measure_sharpness(model, data, parse_measures("trace,ms,ms-node,normalized,hutchinson"),
                                     options)
                       .to_json();
    for (const char* key : {"model", "inputs", "parameters", "precision", "measures", "layers", "trace",
                            "ms", "ms_node", "normalized", "hutchinson", "seconds"})
        BOOST_TEST(j.contains(key), key);
    BOOST_TEST(j["inputs"] == 12);
    BOOST_TEST(j["layers"].size() == 3u);
    for (const char* key : {"name", "spec", "parameters", "weight_trace", "bias_trace", "normalized"})
        BOOST_TEST(j["layers"][0].contains(key), key);
    for (const char* key : {"value", "scales", "gradient_norm", "attained"})
        BOOST_TEST(j["ms"].contains(key), key);
    BOOST_TEST(j["ms"]["scales"].size() == 3u);
    for (const char* key : {"value", "sweeps", "converged", "attained"})
        BOOST_TEST(j["ms_node"].contains(key), key);
    for (const char* key : {"estimate", "standard_error", "samples"})
        BOOST_TEST(j["hutchinson"].contains(key), key);
    for (const char* key : {"diag_hessian", "ms", "ms_node", "normalized", "hutchinson", "total"})
        BOOST_TEST(j["seconds"].contains(key), key);
    BOOST_TEST(j["trace"].get<double>() > 0.0);
    BOOST_TEST(j["measures"][2] == "ms-node");
}

BOOST_AUTO_TEST_CASE(table_names_each_measure_and_dead_layers) {
    Sequential<double> model = make_model<double>("small-mlp", 3);
    const Batch<double> data = synthetic_batch(8, 6);
    auto text = format_report(measure_sharpness(model, data, parse_measures("trace,ms,ms-node,normalized")));
    for (const char* part : {"layer0", "layer2", "dense:20", "total", "[trace]", "[ms]", "[ms-node]",
                             "[normalized]", "exact diag H, double"})
        BOOST_TEST(text.find(part) != std::string::npos, part);
    // A zero last layer blocks every gradient below it: the earlier layers' traces are 0 and
    // minimum sharpness is an infimum that no rescaling attains. The table must say so.
    auto& w = model.parameter("layer2.weight");
    w.value.fill(0.0);
    const auto dead = measure_sharpness(model, data, parse_measures("ms"));
    BOOST_TEST(!dead.ms->attained);
    text = format_report(dead);
    BOOST_TEST(text.find("not attained") != std::string::npos, text);
}

BOOST_AUTO_TEST_CASE(bad_requests_are_errors) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    Batch<double> empty;
    empty.x = Tensor4<double>::from_shape({0, 1, 28, 28});
    BOOST_CHECK_THROW(measure_sharpness(model, empty, {Measure::Trace}), Error);
    const Batch<double> data = synthetic_batch(4, 1);
    BOOST_CHECK_THROW(measure_sharpness(model, data, {}), Error);
    Batch<double> wrong = data;
    wrong.y.pop_back();
    BOOST_CHECK_THROW(measure_sharpness(model, wrong, {Measure::Trace}), ShapeError);
}

BOOST_AUTO_TEST_CASE(a_non_finite_measure_is_an_error_naming_it) {
    const Batch<double> data = synthetic_batch(8, 3);
    const auto refused = [&](Sequential<double>& model, const std::string& measures,
                             const std::string& name) {
        BOOST_CHECK_EXCEPTION(measure_sharpness(model, data, parse_measures(measures)), Error,
                              [&](const Error& e) {
                                  return std::string(e.what()).find("measure '" + name + "' is not finite") !=
                                         std::string::npos;
                              });
    };
    Sequential<double> nan_weight = make_model<double>("small-mlp", 2);
    nan_weight.parameter("layer1.weight").value.data()[3] = std::numeric_limits<double>::quiet_NaN();
    refused(nan_weight, "trace,ms,ms-node,normalized", "trace");
    refused(nan_weight, "hutchinson", "hutchinson");
    // Finite weights but a non-finite input (ReLU would map a NaN pre-activation to 0, so
    // the NaN is put where no ReLU follows: the last layer's bias).
    Sequential<double> nan_bias = make_model<double>("small-mlp", 2);
    nan_bias.parameter("layer2.bias").value.data()[0] = std::numeric_limits<double>::quiet_NaN();
    refused(nan_bias, "ms", "trace");
}
