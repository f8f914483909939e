#define BOOST_TEST_MODULE minimum
#include <boost/test/unit_test.hpp>

#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/core/tensor.hpp"

#include <cmath>
#include <numeric>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

double relative_difference(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), std::abs(b)); }

/// e^{x}, x uniform in [log lo, log hi]: values spread over many magnitudes.
double log_uniform(Rng& rng, double lo, double hi) {
    return std::exp(rng.uniform(std::log(lo), std::log(hi)));
}

/// The paper's layer-wise objective written out independently of the solver.
double layerwise_objective(const std::vector<double>& wt, const std::vector<double>& bt,
                           const std::vector<double>& u) {
    const std::size_t L = wt.size();
    double f = 0.0, s = 0.0;
    for (std::size_t l = 0; l + 1 < L; ++l) {
        s += u[l];
        f += wt[l] * std::exp(-2.0 * u[l]) + bt[l] * std::exp(-2.0 * s);
    }
    return f + wt[L - 1] * std::exp(2.0 * s) + bt[L - 1];
}

std::vector<double> log_of(const std::vector<double>& scales) {
    std::vector<double> u;
    for (std::size_t l = 0; l + 1 < scales.size(); ++l) u.push_back(std::log(scales[l]));
    return u;
}

double total_trace(const std::vector<LayerDiag>& layers) {
    double t = 0.0;
    for (const auto& layer : layers) t += layer.weight_trace() + layer.bias_trace();
    return t;
}

LayerDiag random_layer(Rng& rng, const std::string& name, std::size_t out, std::size_t in,
                       std::size_t group, bool bias) {
    LayerDiag d;
    d.name = name;
    d.out = out;
    d.in = in;
    d.group = group;
    const double layer_scale = log_uniform(rng, 1e-4, 1e4);
    for (std::size_t e = 0; e < out * in * group; ++e)
        d.weight.push_back(layer_scale * std::exp(1.5 * rng.normal()));
    if (bias)
        for (std::size_t j = 0; j < out; ++j) d.bias.push_back(layer_scale * std::exp(1.5 * rng.normal()));
    return d;
}

/// A dense MLP 6-5-4-3 and a conv-like chain: conv 2→4 (3×3), conv 4→5 (3×3), dense fed by
/// flattening 5 channels of 2×2, dense 6→3.
std::vector<LayerDiag> random_mlp(Rng& rng) {
    return {random_layer(rng, "fc1", 5, 6, 1, true), random_layer(rng, "fc2", 4, 5, 1, true),
            random_layer(rng, "fc3", 3, 4, 1, true)};
}

std::vector<LayerDiag> random_convnet(Rng& rng) {
    return {random_layer(rng, "conv1", 4, 2, 9, true), random_layer(rng, "conv2", 5, 4, 9, false),
            random_layer(rng, "fc1", 6, 5, 4, true), random_layer(rng, "fc2", 3, 6, 1, true)};
}

std::vector<std::vector<double>> random_log_scales(Rng& rng, const std::vector<LayerDiag>& layers) {
    std::vector<std::vector<double>> x(layers.size() - 1);
    for (std::size_t k = 0; k + 1 < layers.size(); ++k)
        for (std::size_t j = 0; j < layers[k].out; ++j)
            x[k].push_back(rng.uniform(std::log(1e-3), std::log(1e3)));
    return x;
}

/// Incoming (weights + bias) and outgoing diagonal mass of hidden unit j of layer k.
std::pair<double, double> unit_masses(const std::vector<LayerDiag>& layers, std::size_t k, std::size_t j) {
    const LayerDiag& in = layers[k];
    const LayerDiag& out = layers[k + 1];
    double a = in.bias.empty() ? 0.0 : in.bias[j], c = 0.0;
    for (std::size_t e = 0; e < in.in * in.group; ++e) a += in.weight[j * in.in * in.group + e];
    for (std::size_t r = 0; r < out.out; ++r)
        for (std::size_t g = 0; g < out.group; ++g) c += out.weight[(r * out.in + j) * out.group + g];
    return {a, c};
}

}  // namespace

BOOST_AUTO_TEST_CASE(closed_form_matches_newton_without_biases) {
    Rng rng(11);
    for (std::size_t L = 2; L <= 6; ++L)
        for (int trial = 0; trial < 40; ++trial) {
            std::vector<double> wt;
            for (std::size_t l = 0; l < L; ++l) wt.push_back(log_uniform(rng, 1e-8, 1e8));
            const double closed = closed_form_minimum_sharpness(wt);
            const MinimumSharpness empty_bias = layerwise_minimum_sharpness(wt, {});
            const MinimumSharpness zero_bias = layerwise_minimum_sharpness(wt, std::vector<double>(L, 0.0));
            BOOST_TEST(relative_difference(closed, empty_bias.value) < 1e-12);
            BOOST_TEST(relative_difference(closed, zero_bias.value) < 1e-12);
            BOOST_TEST(empty_bias.gradient_norm <= 1e-10);
            BOOST_TEST(empty_bias.attained);
            // At the optimum every layer carries the same weight mass T^W_l / α_l².
            for (std::size_t l = 0; l < L; ++l)
                BOOST_TEST(relative_difference(wt[l] / std::pow(empty_bias.scales[l], 2), closed / L) < 1e-10);
        }
}

BOOST_AUTO_TEST_CASE(closed_form_by_hand) {
    // L·(Π T)^{1/L}: (2, 8) → 2·4 = 8; (1, 8, 27) → 3·6 = 18.
    BOOST_TEST(closed_form_minimum_sharpness({2.0, 8.0}) == 8.0, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(closed_form_minimum_sharpness({1.0, 8.0, 27.0}) == 18.0, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(closed_form_minimum_sharpness({5.0}) == 5.0);
    BOOST_TEST(closed_form_minimum_sharpness({3.0, 0.0, 2.0}) == 0.0);
}

BOOST_AUTO_TEST_CASE(two_layers_with_biases_by_hand) {
    // f(u) = a e^{−2u} + c e^{−2u} + b e^{2u} + d; setting f' = 0 gives e^{4u} = (a+c)/b and
    // min f = 2·sqrt((a+c)·b) + d. With a=3, b=5, c=1, d=2: 2·sqrt(20) + 2 = 2 + 4·sqrt(5).
    const MinimumSharpness r = layerwise_minimum_sharpness({3.0, 5.0}, {1.0, 2.0});
    BOOST_TEST(r.value == 2.0 + 4.0 * std::sqrt(5.0), boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r.scales.size() == 2u);
    BOOST_TEST(r.scales[0] == std::pow(4.0 / 5.0, 0.25), boost::test_tools::tolerance(1e-12));
    BOOST_TEST(r.scales[0] * r.scales[1] == 1.0, boost::test_tools::tolerance(1e-14));
    BOOST_TEST(r.trace_before == 11.0);
    BOOST_TEST(r.gradient_norm <= 1e-10);
    BOOST_TEST(r.attained);
    BOOST_TEST(r.note.empty());
}

BOOST_AUTO_TEST_CASE(single_layer_has_nothing_to_optimise) {
    const MinimumSharpness r = layerwise_minimum_sharpness({4.0}, {1.5});
    BOOST_TEST(r.value == 5.5);
    BOOST_TEST(r.scales == std::vector<double>{1.0});
    BOOST_TEST(r.iterations == 0);
    BOOST_TEST(r.attained);
}

BOOST_AUTO_TEST_CASE(newton_reaches_a_stationary_point_with_biases) {
    // Checked against an independent evaluation of the objective: the value matches f(u*),
    // central differences of f vanish and random perturbations never go lower (f is convex).
    Rng rng(12);
    for (std::size_t L = 2; L <= 8; ++L)
        for (int trial = 0; trial < 30; ++trial) {
            std::vector<double> wt, bt;
            for (std::size_t l = 0; l < L; ++l) {
                wt.push_back(log_uniform(rng, 1e-6, 1e6));
                bt.push_back(log_uniform(rng, 1e-6, 1e6));
            }
            const MinimumSharpness r = layerwise_minimum_sharpness(wt, bt);
            const std::vector<double> u = log_of(r.scales);
            const double f = layerwise_objective(wt, bt, u);
            BOOST_TEST(relative_difference(f, r.value) < 1e-12);
            BOOST_TEST(r.gradient_norm <= 1e-10);
            BOOST_TEST(r.iterations <= 8);
            BOOST_TEST(r.coordinate_sweeps <= 30);
            for (std::size_t k = 0; k < u.size(); ++k) {
                const double h = 1e-5;
                std::vector<double> up = u, down = u;
                up[k] += h;
                down[k] -= h;
                const double derivative =
                    (layerwise_objective(wt, bt, up) - layerwise_objective(wt, bt, down)) / (2 * h);
                BOOST_TEST(std::abs(derivative) / f < 1e-7);
            }
            for (int probe = 0; probe < 5; ++probe) {
                std::vector<double> v = u;
                for (double& x : v) x += 1e-3 * rng.normal();
                BOOST_TEST(layerwise_objective(wt, bt, v) >= f * (1 - 1e-14));
            }
        }
}

BOOST_AUTO_TEST_CASE(layerwise_value_is_invariant_under_layerwise_scaling) {
    Rng rng(13);
    for (std::size_t L = 2; L <= 6; ++L)
        for (int trial = 0; trial < 30; ++trial) {
            std::vector<double> wt, bt, log_alpha;
            for (std::size_t l = 0; l < L; ++l) {
                wt.push_back(log_uniform(rng, 1e-4, 1e4));
                bt.push_back(log_uniform(rng, 1e-4, 1e4));
            }
            double sum = 0.0;
            for (std::size_t l = 0; l + 1 < L; ++l) {
                log_alpha.push_back(rng.uniform(std::log(1e-3), std::log(1e3)));
                sum += log_alpha.back();
            }
            log_alpha.push_back(-sum);  // Π α = 1
            std::vector<double> wt2, bt2;
            double cumulative = 0.0;
            for (std::size_t l = 0; l < L; ++l) {
                cumulative += log_alpha[l];
                wt2.push_back(wt[l] * std::exp(-2 * log_alpha[l]));
                bt2.push_back(bt[l] * std::exp(-2 * cumulative));
            }
            const double before = layerwise_minimum_sharpness(wt, bt).value;
            const double after = layerwise_minimum_sharpness(wt2, bt2).value;
            BOOST_TEST(relative_difference(before, after) < 1e-9);
        }
}

BOOST_AUTO_TEST_CASE(apply_layerwise_scales_changes_trace_not_minimum) {
    Rng rng(14);
    const std::vector<LayerDiag> layers = random_convnet(rng);
    const MinimumSharpness r = layerwise_minimum_sharpness(layers);
    // The solver's own scales realise the minimum.
    BOOST_TEST(relative_difference(total_trace(apply_layerwise_scales(layers, r.scales)), r.value) < 1e-12);
    const std::vector<double> alpha = {1e3, 1e-3, 50.0, 1.0 / 50.0};
    const std::vector<LayerDiag> scaled = apply_layerwise_scales(layers, alpha);
    BOOST_TEST(relative_difference(total_trace(scaled), r.trace_before) > 0.5);
    BOOST_TEST(relative_difference(layerwise_minimum_sharpness(scaled).value, r.value) < 1e-9);
    BOOST_CHECK_THROW(apply_layerwise_scales(layers, {2.0, 1.0, 1.0, 1.0}), Error);
    BOOST_CHECK_THROW(apply_layerwise_scales(layers, {1.0, 1.0, 1.0}), Error);
}

BOOST_AUTO_TEST_CASE(nodewise_value_is_invariant_under_nodewise_scaling) {
    Rng rng(15);
    for (int trial = 0; trial < 10; ++trial)
        for (bool conv : {false, true}) {
            const std::vector<LayerDiag> layers = conv ? random_convnet(rng) : random_mlp(rng);
            const std::vector<LayerDiag> scaled = apply_nodewise_scales(layers, random_log_scales(rng, layers));
            const NodewiseMinimumSharpness a = nodewise_minimum_sharpness(layers);
            const NodewiseMinimumSharpness b = nodewise_minimum_sharpness(scaled);
            BOOST_TEST(a.converged);
            BOOST_TEST(b.converged);
            BOOST_TEST(a.attained);
            BOOST_TEST(relative_difference(total_trace(scaled), total_trace(layers)) > 1e-3);
            BOOST_TEST(relative_difference(a.value, b.value) < 1e-9);
        }
}

BOOST_AUTO_TEST_CASE(nodewise_below_layerwise_below_trace) {
    Rng rng(16);
    for (int trial = 0; trial < 10; ++trial)
        for (bool conv : {false, true}) {
            const std::vector<LayerDiag> layers = conv ? random_convnet(rng) : random_mlp(rng);
            const NodewiseMinimumSharpness node = nodewise_minimum_sharpness(layers);
            const MinimumSharpness layer = layerwise_minimum_sharpness(layers);
            BOOST_TEST(node.trace_before == layer.trace_before, boost::test_tools::tolerance(1e-12));
            BOOST_TEST(node.value <= layer.value * (1 + 1e-12));
            BOOST_TEST(layer.value <= layer.trace_before * (1 + 1e-12));
            BOOST_TEST(node.sweeps < 100);
        }
}

BOOST_AUTO_TEST_CASE(nodewise_solution_balances_every_unit) {
    // Stationarity in log γ_{l,j}: the unit's incoming mass equals its outgoing mass.
    Rng rng(17);
    for (bool conv : {false, true}) {
        const std::vector<LayerDiag> layers = conv ? random_convnet(rng) : random_mlp(rng);
        const NodewiseMinimumSharpness r = nodewise_minimum_sharpness(layers);
        const std::vector<LayerDiag> optimal = apply_nodewise_scales(layers, r.log_scales);
        BOOST_TEST(relative_difference(total_trace(optimal), r.value) < 1e-12);
        for (std::size_t k = 0; k + 1 < layers.size(); ++k)
            for (std::size_t j = 0; j < layers[k].out; ++j) {
                const auto [a, c] = unit_masses(optimal, k, j);
                BOOST_TEST(relative_difference(a, c) < 1e-5);
            }
    }
}

BOOST_AUTO_TEST_CASE(nodewise_equals_layerwise_for_single_unit_layers) {
    Rng rng(18);
    const std::vector<LayerDiag> layers = {random_layer(rng, "a", 1, 3, 1, true),
                                           random_layer(rng, "b", 1, 1, 4, true),
                                           random_layer(rng, "c", 2, 1, 1, true)};
    const double node = nodewise_minimum_sharpness(layers).value;
    const double layer = layerwise_minimum_sharpness(layers).value;
    BOOST_TEST(relative_difference(node, layer) < 1e-10);
}

BOOST_AUTO_TEST_CASE(nodewise_converges_on_a_deep_chain) {
    Rng rng(19);
    std::vector<LayerDiag> layers;
    std::size_t in = 7;
    for (int l = 0; l < 12; ++l) {
        const std::size_t out = l == 11 ? 3 : 6;
        layers.push_back(random_layer(rng, "fc" + std::to_string(l), out, in, 1, true));
        in = out;
    }
    const NodewiseMinimumSharpness r = nodewise_minimum_sharpness(layers, 1e-13);
    BOOST_TEST(r.converged);
    BOOST_TEST(r.sweeps < 200);
    BOOST_TEST(r.relative_change <= 1e-13);
    const NodewiseMinimumSharpness shifted =
        nodewise_minimum_sharpness(apply_nodewise_scales(layers, random_log_scales(rng, layers)), 1e-13);
    BOOST_TEST(relative_difference(r.value, shifted.value) < 1e-9);
}

BOOST_AUTO_TEST_CASE(dead_layer_is_flagged) {
    // T^W = (3, 0), T^b = (1, 2): α_1 → ∞ sends both terms of layer 0 to zero; infimum = 2.
    const MinimumSharpness a = layerwise_minimum_sharpness({3.0, 0.0}, {1.0, 2.0});
    BOOST_TEST(!a.attained);
    BOOST_TEST(a.value == 2.0);
    BOOST_TEST(a.note.find("layer 1") != std::string::npos);
    for (double s : a.scales) BOOST_TEST(std::isfinite(s));
    // T^W = (0, 5), T^b = (1, 2): the bias keeps layer 0 balanced: 2·sqrt(5·1) + 2, attained.
    const MinimumSharpness b = layerwise_minimum_sharpness({0.0, 5.0}, {1.0, 2.0});
    BOOST_TEST(b.attained);
    BOOST_TEST(b.value == 2.0 * std::sqrt(5.0) + 2.0, boost::test_tools::tolerance(1e-13));
    // A zero trace in the middle without biases: everything can be scaled away.
    const MinimumSharpness c = layerwise_minimum_sharpness({3.0, 0.0, 2.0}, {});
    BOOST_TEST(!c.attained);
    BOOST_TEST(c.value == 0.0);
    // Everything zero: f ≡ 0, trivially attained.
    const MinimumSharpness d = layerwise_minimum_sharpness({0.0, 0.0, 0.0}, {0.0, 0.0, 0.0});
    BOOST_TEST(d.attained);
    BOOST_TEST(d.value == 0.0);
}

BOOST_AUTO_TEST_CASE(dead_units_are_flagged_and_dropped) {
    Rng rng(20);
    std::vector<LayerDiag> layers = random_mlp(rng);
    // Unit 2 of fc1 gets no curvature from the input side (incoming weights and bias zero) but
    // keeps outgoing curvature: sending γ → 0 removes that, so the infimum equals the minimum
    // of the chain without the unit.
    LayerDiag& fc1 = layers[0];
    for (std::size_t i = 0; i < fc1.in; ++i) fc1.weight[2 * fc1.in + i] = 0.0;
    fc1.bias[2] = 0.0;
    std::vector<LayerDiag> reduced = layers;
    reduced[0].out = 4;
    reduced[0].weight.erase(reduced[0].weight.begin() + 2 * fc1.in, reduced[0].weight.begin() + 3 * fc1.in);
    reduced[0].bias.erase(reduced[0].bias.begin() + 2);
    reduced[1].in = 4;
    for (std::size_t r = reduced[1].out; r-- > 0;) reduced[1].weight.erase(reduced[1].weight.begin() + r * 5 + 2);

    const NodewiseMinimumSharpness dead = nodewise_minimum_sharpness(layers);
    const NodewiseMinimumSharpness expected = nodewise_minimum_sharpness(reduced);
    BOOST_TEST(!dead.attained);
    BOOST_TEST(dead.note.find("fc1") != std::string::npos);
    BOOST_TEST(std::isfinite(dead.value));
    BOOST_TEST(relative_difference(dead.value, expected.value) < 1e-9);
    for (const auto& layer : dead.log_scales)
        for (double x : layer) BOOST_TEST(std::isfinite(x));

    // A truly dead ReLU carries no curvature on either side: nothing vanishes, attained.
    for (std::size_t r = 0; r < layers[1].out; ++r) layers[1].weight[r * 5 + 2] = 0.0;
    const NodewiseMinimumSharpness silent = nodewise_minimum_sharpness(layers);
    BOOST_TEST(silent.attained);
    BOOST_TEST(relative_difference(silent.value, expected.value) < 1e-9);

    // A whole hidden layer without incoming curvature: only the output bias survives.
    for (double& w : layers[1].weight) w = 0.0;
    for (double& b : layers[1].bias) b = 0.0;
    const NodewiseMinimumSharpness cut = nodewise_minimum_sharpness(layers);
    BOOST_TEST(!cut.attained);
    BOOST_TEST(cut.value == layers[2].bias_trace(), boost::test_tools::tolerance(1e-14));
}

BOOST_AUTO_TEST_CASE(bad_input_is_rejected) {
    BOOST_CHECK_THROW(layerwise_minimum_sharpness({}, {}), Error);
    BOOST_CHECK_THROW(layerwise_minimum_sharpness({1.0, -1.0}, {}), Error);
    BOOST_CHECK_THROW(layerwise_minimum_sharpness({1.0, NAN}, {}), Error);
    BOOST_CHECK_THROW(layerwise_minimum_sharpness({1.0, INFINITY}, {}), Error);
    BOOST_CHECK_THROW(layerwise_minimum_sharpness({1.0, 2.0}, {1.0}), Error);
    BOOST_CHECK_THROW(closed_form_minimum_sharpness({1.0, -2.0}), Error);

    Rng rng(21);
    std::vector<LayerDiag> layers = random_mlp(rng);
    layers[1].in = 7;
    try {
        nodewise_minimum_sharpness(layers);
        BOOST_FAIL("mismatched chain accepted");
    } catch (const Error& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find("fc2") != std::string::npos);
        BOOST_TEST(what.find("fc1") != std::string::npos);
    }
    layers = random_mlp(rng);
    layers[2].weight.pop_back();
    BOOST_CHECK_THROW(layerwise_minimum_sharpness(layers), Error);
    layers = random_mlp(rng);
    layers[0].bias.push_back(1.0);
    BOOST_CHECK_THROW(nodewise_minimum_sharpness(layers), Error);
    layers = random_mlp(rng);
    layers[1].weight[3] = -1e-9;
    BOOST_CHECK_THROW(nodewise_minimum_sharpness(layers), Error);
    layers = random_mlp(rng);
    BOOST_CHECK_THROW(nodewise_minimum_sharpness(layers, -1.0), Error);
    BOOST_CHECK_THROW(nodewise_minimum_sharpness(layers, 1e-12, 0), Error);
    BOOST_CHECK_THROW(nodewise_minimum_sharpness({}), Error);
    BOOST_CHECK_THROW(apply_nodewise_scales(layers, {{0.0}}), Error);
}
