#define BOOST_TEST_MODULE scaling
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/sharpness/scaling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

template <class T>
Tensor4<T> random_inputs(std::size_t n, ActShape shape, Rng& rng) {
    Tensor4<T> x = Tensor4<T>::from_shape({n, shape.c, shape.h, shape.w});
    for (auto& v : x) v = static_cast<T>(rng.normal());
    return x;
}

/// max |a − b| / max |a|: a norm-wise relative error that a logit near zero cannot inflate.
template <class T>
double relative_output_change(const Tensor2<T>& a, const Tensor2<T>& b) {
    double diff = 0.0, scale = 0.0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        diff = std::max(diff, std::abs(double(a.data()[k]) - double(b.data()[k])));
        scale = std::max(scale, std::abs(double(a.data()[k])));
    }
    return diff / scale;
}

/// Largest |log(p'/p)| over all parameters: how far the transform moved the weights.
template <class T>
double largest_log_ratio(const Sequential<T>& before, const Sequential<T>& after) {
    const auto a = before.parameters();
    const auto b = after.parameters();
    double largest = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i)
        for (std::size_t k = 0; k < a[i]->size(); ++k)
            if (a[i]->value[k] != 0)
                largest = std::max(largest, std::abs(std::log(double(b[i]->value[k]) /
                                                              double(a[i]->value[k]))));
    return largest;
}

template <class T>
void check_transforms_preserve_outputs(const std::string& name, double tolerance) {
    Rng rng(derive_seed(7, std::hash<std::string>{}(name)));
    Sequential<T> model = make_model<T>(name, 11);
    const Tensor4<T> x = random_inputs<T>(4, model.input_shape(), rng);
    const Tensor2<T> y = model.predict(x);

    const auto alphas = random_layer_scales(parametric_layer_indices(model).size(), rng, 1e3);
    Sequential<T> layerwise = scaled_layerwise(model, alphas);
    BOOST_TEST_INFO(name << " layer-wise");
    BOOST_TEST(relative_output_change(y, layerwise.predict(x)) <= tolerance);
    BOOST_TEST(largest_log_ratio(model, layerwise) >= std::log(1e3) * 0.999);

    const NodeScales gammas = random_node_scales(model, rng, 1e3);
    Sequential<T> nodewise = scaled_nodewise(model, gammas);
    BOOST_TEST_INFO(name << " node-wise");
    BOOST_TEST(relative_output_change(y, nodewise.predict(x)) <= tolerance);
    BOOST_TEST(largest_log_ratio(model, nodewise) >= std::log(1e3));

    // Both at once, in place: the group of function-preserving maps is closed.
    scale_nodewise(model, gammas);
    scale_layerwise(model, alphas);
    BOOST_TEST_INFO(name << " both");
    BOOST_TEST(relative_output_change(y, model.predict(x)) <= tolerance);
}

/// A synthetic "Hessian diagonal" that transforms exactly as a real one would under the
/// rescalings, but inversely: W² (and b²). Diagonal entries scale like 1/W², so
/// apply_*_scales(layer_diags(scaled, W'²)) must give back layer_diags(model, W²) only if
/// the (out, in, group) reading matches the way the transforms touch the weights.
template <class T>
DiagHessian squared_parameters(const Sequential<T>& model) {
    DiagHessian d;
    for (const auto* p : model.parameters()) {
        ParameterDiag pd{p->name, p->shape, {}};
        for (auto v : p->value) pd.values.push_back(double(v) * double(v));
        d.parameters.push_back(std::move(pd));
    }
    return d;
}

void check_same_diags(const std::vector<LayerDiag>& a, const std::vector<LayerDiag>& b, double tol) {
    BOOST_TEST_REQUIRE(a.size() == b.size());
    for (std::size_t l = 0; l < a.size(); ++l) {
        BOOST_TEST_REQUIRE(a[l].weight.size() == b[l].weight.size());
        BOOST_TEST_REQUIRE(a[l].bias.size() == b[l].bias.size());
        double worst = 0.0;
        for (std::size_t k = 0; k < a[l].weight.size(); ++k)
            worst = std::max(worst, std::abs(a[l].weight[k] - b[l].weight[k]) /
                                        std::max(std::abs(a[l].weight[k]), 1e-300));
        for (std::size_t k = 0; k < a[l].bias.size(); ++k)
            worst = std::max(worst, std::abs(a[l].bias[k] - b[l].bias[k]) /
                                        std::max(std::abs(a[l].bias[k]), 1e-300));
        BOOST_TEST_INFO("layer " << a[l].name);
        BOOST_TEST(worst <= tol);
    }
}

std::vector<std::vector<double>> logs_of(const NodeScales& gammas) {
    std::vector<std::vector<double>> out;
    for (const auto& layer : gammas) {
        std::vector<double> l;
        for (double g : layer) l.push_back(std::log(g));
        out.push_back(l);
    }
    return out;
}

}  // namespace

BOOST_AUTO_TEST_CASE(transforms_preserve_outputs_double) {
    for (const auto& name : zoo_names()) check_transforms_preserve_outputs<double>(name, 1e-12);
}

BOOST_AUTO_TEST_CASE(transforms_preserve_outputs_float) {
    for (const auto& name : zoo_names()) check_transforms_preserve_outputs<float>(name, 1e-5);
}

BOOST_AUTO_TEST_CASE(a_wrong_rescaling_changes_outputs) {
    // The same tolerance check must fail for a map that is not in the symmetry group.
    Rng rng(3);
    Sequential<double> model = make_model<double>("small-cnn", 5);
    const Tensor4<double> x = random_inputs<double>(3, model.input_shape(), rng);
    const Tensor2<double> y = model.predict(x);
    Sequential<double> wrong = model;
    auto& w = wrong.parameter("layer0.weight");
    for (std::size_t k = 0; k < 25; ++k) w.value[k] *= 10.0;  // channel 0, outgoing untouched
    BOOST_TEST(relative_output_change(y, wrong.predict(x)) > 1e-3);
}

BOOST_AUTO_TEST_CASE(layerwise_scales_weights_and_cumulative_biases) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    const Sequential<double> scaled = scaled_layerwise(model, {4.0, 0.5, 0.5});
    const double expected[3][2] = {{4.0, 4.0}, {0.5, 2.0}, {0.5, 1.0}};  // {weight, bias}
    for (int l = 0; l < 3; ++l) {
        const std::string p = "layer" + std::to_string(l);
        const auto& w0 = model.parameter(p + ".weight");
        const auto& b0 = model.parameter(p + ".bias");
        const auto params = scaled.parameters();
        const auto& w1 = *params[2 * l];
        const auto& b1 = *params[2 * l + 1];
        for (std::size_t k = 0; k < w0.size(); ++k) BOOST_TEST(w1.value[k] == expected[l][0] * w0.value[k]);
        for (std::size_t k = 0; k < b0.size(); ++k) BOOST_TEST(b1.value[k] == expected[l][1] * b0.value[k]);
    }
    // The copy left the original alone.
    BOOST_TEST(largest_log_ratio(make_model<double>("small-mlp", 1), model) == 0.0);
}

BOOST_AUTO_TEST_CASE(nodewise_conv_channel_feeds_its_flattened_columns) {
    // conv 1→3 on 6×6 → 4×4 maps, flatten, dense 48→2: channel 1 owns columns 16..31.
    Sequential<double> model = make_model<double>("conv:3:3,relu,flatten,dense:2", 2, {1, 6, 6});
    NodeScales gammas{{1.0, 8.0, 1.0}};
    const Sequential<double> scaled = scaled_nodewise(model, gammas);
    const auto& w = model.parameter("layer1.weight");
    const auto params = scaled.parameters();
    const auto& w1 = *params[2];
    for (std::size_t o = 0; o < 2; ++o)
        for (std::size_t c = 0; c < 48; ++c) {
            const double factor = (c >= 16 && c < 32) ? 1.0 / 8.0 : 1.0;
            BOOST_TEST(w1.value[o * 48 + c] == w.value[o * 48 + c] * factor);
        }
    const auto& b0 = *params[1];
    BOOST_TEST(b0.value[1] == 8.0 * model.parameter("layer0.bias").value[1]);
    BOOST_TEST(b0.value[0] == model.parameter("layer0.bias").value[0]);
}

BOOST_AUTO_TEST_CASE(random_factors_span_the_range) {
    Rng rng(9);
    for (std::size_t L : {1, 2, 3, 5}) {
        const auto a = random_layer_scales(L, rng, 1e3);
        BOOST_TEST(a.size() == L);
        double log_sum = 0.0, extreme = 0.0;
        for (double v : a) {
            log_sum += std::log(v);
            extreme = std::max(extreme, std::abs(std::log(v)));
        }
        BOOST_TEST(std::abs(log_sum) <= 1e-12);
        BOOST_TEST(extreme <= std::log(1e3) * (1 + 1e-12));
        if (L > 1) BOOST_TEST(extreme >= std::log(1e3) * (1 - 1e-12));
    }
    const auto model = make_model<double>("lenet", 0);
    const NodeScales g = random_node_scales(model, rng, 1e3);
    BOOST_TEST((hidden_unit_counts(model) == std::vector<std::size_t>{6, 16, 120, 84}));
    double lo = 1.0, hi = 1.0;
    for (std::size_t l = 0; l < g.size(); ++l) {
        BOOST_TEST(g[l].size() == hidden_unit_counts(model)[l]);
        for (double v : g[l]) lo = std::min(lo, v), hi = std::max(hi, v);
    }
    BOOST_TEST(lo >= 1e-3);
    BOOST_TEST(hi <= 1e3);
    BOOST_TEST(lo < 1e-2);  // 226 draws: the extremes are near the bounds
    BOOST_TEST(hi > 1e2);
}

BOOST_AUTO_TEST_CASE(invalid_factors_are_rejected) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    BOOST_CHECK_THROW(scale_layerwise(model, {2.0, 2.0, 2.0}), Error);        // Π ≠ 1
    BOOST_CHECK_THROW(scale_layerwise(model, {2.0, 0.5}), Error);             // count
    BOOST_CHECK_THROW(scale_layerwise(model, {-1.0, -1.0, 1.0}), Error);      // sign
    BOOST_CHECK_THROW(scale_nodewise(model, {{1.0}}), Error);                 // layer count
    BOOST_CHECK_THROW(scale_nodewise(model, NodeScales{std::vector<double>(20, 1.0),
                                                        std::vector<double>(19, 1.0)}),
                      Error);                                                 // unit count
    NodeScales zero{std::vector<double>(20, 1.0), std::vector<double>(20, 1.0)};
    zero[1][3] = 0.0;
    BOOST_CHECK_THROW(scale_nodewise(model, zero), Error);
    try {
        scale_layerwise(model, {2.0, 2.0, 2.0});
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("multiply to 1") != std::string::npos);
    }
    Rng rng(1);
    BOOST_CHECK_THROW(random_layer_scales(3, rng, 0.5), Error);
}

BOOST_AUTO_TEST_CASE(layer_diags_shapes_small_cnn_and_lenet) {
    struct Expect {
        std::size_t out, in, group;
        bool bias;
    };
    const std::vector<std::pair<std::string, std::vector<Expect>>> cases{
        {"small-mlp", {{20, 784, 1, true}, {20, 20, 1, true}, {10, 20, 1, true}}},
        {"small-cnn", {{20, 1, 25, true}, {20, 20, 25, true}, {10, 20, 16, true}}},
        {"lenet",
         {{6, 1, 25, true}, {16, 6, 25, true}, {120, 16, 25, true}, {84, 120, 49, true},
          {10, 84, 1, true}}},
        {"conv:4:3:nobias,relu,flatten,dense:3:nobias", {{4, 1, 9, false}, {3, 4, 676, false}}},
    };
    for (const auto& [name, expect] : cases) {
        const auto model = make_model<double>(name, 0);
        // Distinct values per entry: index + 1000·tensor, so a misplaced copy is visible.
        DiagHessian diag;
        double tensor = 0;
        for (const auto* p : model.parameters()) {
            ParameterDiag pd{p->name, p->shape, std::vector<double>(p->size())};
            for (std::size_t k = 0; k < p->size(); ++k) pd.values[k] = double(k) + 1e6 * tensor;
            diag.parameters.push_back(pd);
            tensor += 1;
        }
        const auto layers = layer_diags(model, diag);
        BOOST_TEST_REQUIRE(layers.size() == expect.size());
        for (std::size_t l = 0; l < layers.size(); ++l) {
            BOOST_TEST_INFO(name << " layer " << l);
            BOOST_TEST(layers[l].name == "layer" + std::to_string(l));
            BOOST_TEST(layers[l].out == expect[l].out);
            BOOST_TEST(layers[l].in == expect[l].in);
            BOOST_TEST(layers[l].group == expect[l].group);
            BOOST_TEST(layers[l].weight.size() == expect[l].out * expect[l].in * expect[l].group);
            BOOST_TEST(layers[l].bias.size() == (expect[l].bias ? expect[l].out : 0u));
            const auto w = std::find_if(diag.parameters.begin(), diag.parameters.end(),
                                        [&](const auto& p) { return p.name == layers[l].name + ".weight"; });
            BOOST_TEST(layers[l].weight == w->values);
        }
        // The (out, in, group) view is what the node-wise solver needs: it accepts the chain.
        Rng rng(1);
        BOOST_CHECK_NO_THROW(apply_nodewise_scales(layers, logs_of(random_node_scales(model, rng))));
    }
}

BOOST_AUTO_TEST_CASE(layer_diags_reading_matches_the_transforms) {
    // Diagonal-Hessian entries scale like 1/(parameter)², exactly as squared parameters scale
    // inversely; so undoing a transform on the "diagonal" W'² with the solver's own
    // apply_*_scales must restore W² entry by entry — only if (out, in, group) is read right.
    for (const std::string name : {"small-cnn", "lenet", "small-mlp"}) {
        Rng rng(derive_seed(4, name.size()));
        const auto model = make_model<double>(name, 3);
        const auto reference = layer_diags(model, squared_parameters(model));

        const NodeScales gammas = random_node_scales(model, rng, 1e3);
        const auto node_scaled = scaled_nodewise(model, gammas);
        auto undone = apply_nodewise_scales(layer_diags(node_scaled, squared_parameters(node_scaled)),
                                            logs_of(gammas));
        BOOST_TEST_INFO(name << " node-wise");
        check_same_diags(reference, undone, 1e-12);

        const auto alphas = random_layer_scales(reference.size(), rng, 1e3);
        const auto layer_scaled = scaled_layerwise(model, alphas);
        undone = apply_layerwise_scales(layer_diags(layer_scaled, squared_parameters(layer_scaled)),
                                        alphas);
        BOOST_TEST_INFO(name << " layer-wise");
        check_same_diags(reference, undone, 1e-12);
    }
}

BOOST_AUTO_TEST_CASE(missing_or_misfit_diagonal_is_an_error) {
    const auto model = make_model<double>("small-mlp", 0);
    DiagHessian d = squared_parameters(model);
    d.parameters[2].values.pop_back();
    try {
        layer_diags(model, d);
        BOOST_FAIL("no error for a short diagonal");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("layer1.weight") != std::string::npos);
    }
    d.parameters.erase(d.parameters.begin() + 2);
    BOOST_CHECK_THROW(layer_diags(model, d), Error);
}
