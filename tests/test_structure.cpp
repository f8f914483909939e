#define BOOST_TEST_MODULE structure
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/sharpness/scaling.hpp"
#include "minsharp/sharpness/structure.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <string>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

struct ExpectedLayer {
    std::size_t index;
    LayerKind kind;
    std::size_t units, inputs, group, kernel_positions, positions_per_unit;
};

struct ExpectedEdge {
    std::size_t inputs_per_unit;
    bool through_flatten;
};

void check_structure(const std::string& spec, ActShape input, const std::vector<ExpectedLayer>& layers,
                     const std::vector<ExpectedEdge>& edges) {
    const auto model = make_model<double>(spec, 0, input);
    const ParametricStructure<double> s(model);
    BOOST_TEST_INFO(spec);
    BOOST_TEST_REQUIRE(s.size() == layers.size());
    for (std::size_t l = 0; l < layers.size(); ++l) {
        const auto& got = s.layer(l);
        const auto& want = layers[l];
        BOOST_TEST_INFO(spec << " layer " << l);
        BOOST_TEST(got.index == want.index);
        BOOST_TEST((got.kind == want.kind));
        BOOST_TEST(got.name == "layer" + std::to_string(l));
        BOOST_TEST(got.spec == model.layer(want.index).spec());
        BOOST_TEST(got.weight->name == got.name + ".weight");
        BOOST_TEST(got.bias->name == got.name + ".bias");
        BOOST_TEST(got.units == want.units);
        BOOST_TEST(got.inputs == want.inputs);
        BOOST_TEST(got.group == want.group);
        BOOST_TEST(got.kernel_positions == want.kernel_positions);
        BOOST_TEST(got.positions_per_unit == want.positions_per_unit);
        BOOST_TEST(got.units * got.weight_per_unit() == got.weight->size());
        BOOST_TEST((got.input_shape == model.shape_before(want.index)));
        BOOST_TEST((got.output_shape == model.shape_before(want.index + 1)));
    }
    BOOST_TEST_REQUIRE(s.edges().size() == edges.size());
    for (std::size_t e = 0; e < edges.size(); ++e) {
        BOOST_TEST_INFO(spec << " edge " << e);
        BOOST_TEST(s.edges()[e].from == e);
        BOOST_TEST(s.edges()[e].to == e + 1);
        BOOST_TEST(s.edges()[e].inputs_per_unit == edges[e].inputs_per_unit);
        BOOST_TEST(s.edges()[e].through_flatten == edges[e].through_flatten);
    }
}

constexpr auto Dense_ = LayerKind::Dense;
constexpr auto Conv_ = LayerKind::Conv2d;

/// The entries of the next weight that read unit j of layer 0, found by brute force: only
/// unit j is switched on (zero incoming weights, bias 1: a constant map of ones through
/// ReLU and pooling), every other unit outputs 0; an entry of the next weight reads unit j
/// exactly when changing it changes the logits.
std::set<std::size_t> entries_reading_unit(const std::string& spec, ActShape input, std::size_t j) {
    Sequential<double> model = make_model<double>(spec, 5, input);
    auto& w0 = model.parameter("layer0.weight");
    auto& b0 = model.parameter("layer0.bias");
    std::fill(w0.value.begin(), w0.value.end(), 0.0);
    std::fill(b0.value.begin(), b0.value.end(), 0.0);
    b0.value[j] = 1.0;
    Rng rng(2);
    Tensor4<double> x = Tensor4<double>::from_shape({1, input.c, input.h, input.w});
    for (auto& v : x) v = rng.normal();
    const Tensor2<double> y = model.predict(x);
    auto& w1 = model.parameter("layer1.weight");
    std::set<std::size_t> reading;
    for (std::size_t k = 0; k < w1.size(); ++k) {
        const double saved = w1.value[k];
        w1.value[k] = saved + 1.0;
        const Tensor2<double> z = model.predict(x);
        w1.value[k] = saved;
        double change = 0.0;
        for (std::size_t i = 0; i < y.size(); ++i)
            change = std::max(change, std::abs(z.data()[i] - y.data()[i]));
        if (change > 1e-12) reading.insert(k);
    }
    return reading;
}

std::set<std::size_t> slice_entries(const UnitSlice& s) {
    std::set<std::size_t> entries;
    for (std::size_t o = 0; o < s.rows; ++o)
        for (std::size_t k = 0; k < s.count; ++k) entries.insert(s.first + o * s.stride + k);
    return entries;
}

template <class T>
double relative_output_change(const Tensor2<T>& a, const Tensor2<T>& b) {
    double diff = 0.0, scale = 0.0;
    for (std::size_t k = 0; k < a.size(); ++k) {
        diff = std::max(diff, std::abs(double(a.data()[k]) - double(b.data()[k])));
        scale = std::max(scale, std::abs(double(a.data()[k])));
    }
    return diff / scale;
}

}  // namespace

BOOST_AUTO_TEST_CASE(zoo_models_have_the_expected_layers_units_and_edges) {
    check_structure("lenet", mnist_input,
                    {{0, Conv_, 6, 1, 25, 25, 28 * 28},
                     {3, Conv_, 16, 6, 25, 25, 23 * 23},
                     {6, Conv_, 120, 16, 25, 25, 7 * 7},
                     {9, Dense_, 84, 120, 49, 1, 1},
                     {11, Dense_, 10, 84, 1, 1, 1}},
                    {{1, false}, {1, false}, {49, true}, {1, false}});
    check_structure("small-cnn", mnist_input,
                    {{0, Conv_, 20, 1, 25, 25, 24 * 24},
                     {3, Conv_, 20, 20, 25, 25, 8 * 8},
                     {7, Dense_, 10, 20, 16, 1, 1}},
                    {{1, false}, {16, true}});
    check_structure("mlp", mnist_input,
                    {{1, Dense_, 512, 784, 1, 1, 1},
                     {3, Dense_, 128, 512, 1, 1, 1},
                     {5, Dense_, 512, 128, 1, 1, 1},
                     {7, Dense_, 10, 512, 1, 1, 1}},
                    {{1, false}, {1, false}, {1, false}});
    // conv 1→4 on 28×28 → 26×26, pool → 13×13, flatten: each channel feeds 169 columns.
    check_structure("conv:4:3,relu,maxpool:2:2,flatten,dense:16,relu,dense:10", mnist_input,
                    {{0, Conv_, 4, 1, 9, 9, 26 * 26},
                     {4, Dense_, 16, 4, 169, 1, 1},
                     {6, Dense_, 10, 16, 1, 1, 1}},
                    {{169, true}, {1, false}});
    // A dense layer may read a conv's (C, H, W) output without a flatten: same columns.
    check_structure("conv:3:3,relu,dense:2", {1, 6, 6},
                    {{0, Conv_, 3, 1, 9, 9, 16}, {2, Dense_, 2, 3, 16, 1, 1}}, {{1, false}});
    BOOST_TEST((ParametricStructure<double>(make_model<double>("lenet", 0)).hidden_unit_counts() ==
                std::vector<std::size_t>{6, 16, 120, 84}));
}

BOOST_AUTO_TEST_CASE(unit_slices_are_the_entries_that_read_the_unit) {
    const std::vector<std::pair<std::string, ActShape>> cases{
        {"conv:3:3,relu,maxpool:2:2,flatten,dense:2", {1, 8, 8}},   // conv → pool → flatten → dense
        {"conv:3:3,relu,dense:2", {1, 6, 6}},                       // conv → dense, no flatten
        {"conv:2:3,relu,conv:3:3,flatten,dense:2", {2, 7, 7}},      // conv → conv
        {"conv:2:3:pad1,relu,maxpool:2:2,conv:3:2,flatten,dense:2", {1, 8, 8}},     // conv → pool → conv
        {"flatten,dense:4,relu,dense:3", {1, 3, 3}},                // dense → dense
    };
    for (const auto& [spec, input] : cases) {
        const auto model = make_model<double>(spec, 0, input);
        const ParametricStructure<double> s(model);
        for (std::size_t j = 0; j < s.layer(0).units; ++j) {
            BOOST_TEST_INFO(spec << " unit " << j);
            BOOST_TEST((slice_entries(s.unit_slice(0, j)) == entries_reading_unit(spec, input, j)));
        }
    }
}

BOOST_AUTO_TEST_CASE(nodewise_rescaling_through_the_view_keeps_the_function_and_ms_node) {
    for (const std::string spec : {"conv:4:3,relu,maxpool:2:2,flatten,dense:16,relu,dense:10",
                                   "conv:3:3,relu,conv:4:3,relu,dense:6,relu,dense:10"}) {
        const ActShape input{1, 10, 10};
        Rng rng(derive_seed(17, spec.size()));
        const Sequential<double> model = make_model<double>(spec, 4, input);
        Tensor4<double> x = Tensor4<double>::from_shape({6, 1, 10, 10});
        for (auto& v : x) v = rng.normal();
        Sequential<double> reference = model;
        const Tensor2<double> y = reference.predict(x);
        const auto base = ParametricStructure<double>(reference).layer_diags(exact_diag_hessian(reference, x));

        Sequential<double> scaled = scaled_nodewise(model, random_node_scales(model, rng, 1e3));
        BOOST_TEST_INFO(spec);
        BOOST_TEST(relative_output_change(y, scaled.predict(x)) <= 1e-12);
        const auto moved = ParametricStructure<double>(scaled).layer_diags(exact_diag_hessian(scaled, x));
        const double before = nodewise_minimum_sharpness(base).value;
        const double after = nodewise_minimum_sharpness(moved).value;
        BOOST_TEST(std::abs(after - before) / before <= 1e-9);
        double trace_before = 0.0, trace_after = 0.0;
        for (const auto& l : base) trace_before += l.weight_trace() + l.bias_trace();
        for (const auto& l : moved) trace_after += l.weight_trace() + l.bias_trace();
        BOOST_TEST(std::abs(std::log10(trace_after / trace_before)) > 0.5);  // Tr H is not invariant
    }
}

BOOST_AUTO_TEST_CASE(diag_blocks_are_found_in_any_order) {
    Sequential<double> model = make_model<double>("small-cnn", 1, {1, 16, 16});
    DiagHessian diag;
    double tensor = 0;
    for (const auto* p : model.parameters()) {
        ParameterDiag d{p->name, p->shape, std::vector<double>(p->size())};
        for (std::size_t k = 0; k < p->size(); ++k) d.values[k] = double(k) + 1e6 * tensor;
        diag.parameters.push_back(std::move(d));
        tensor += 1;
    }
    const ParametricStructure<double> s(model);
    const auto in_order = s.layer_diags(diag);
    std::reverse(diag.parameters.begin(), diag.parameters.end());
    const auto reversed = s.layer_diags(diag);
    for (std::size_t l = 0; l < s.size(); ++l) {
        BOOST_TEST(in_order[l].weight == diag.at(s.layer(l).weight->name).values);
        BOOST_TEST(in_order[l].bias == diag.at(s.layer(l).bias->name).values);
        BOOST_TEST(reversed[l].weight == in_order[l].weight);
        BOOST_TEST(reversed[l].bias == in_order[l].bias);
        BOOST_TEST(s.weight_diag(diag, l).name == s.layer(l).weight->name);
    }
}

BOOST_AUTO_TEST_CASE(misuse_is_an_error_naming_the_problem) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    Sequential<double> other = model;
    const ParametricStructure<double> s(model);
    BOOST_CHECK_THROW(s.unit_slice(2, 0), Error);  // the output layer feeds nothing
    try {
        s.weight(other, 0);
        BOOST_FAIL("no error for another model");
    } catch (const Error& e) {
        BOOST_TEST(std::string(e.what()).find("not built from") != std::string::npos);
    }
    BOOST_TEST(&s.weight(model, 1) == &model.parameter("layer1.weight"));
    BOOST_TEST(s.bias(model, 2) == &model.parameter("layer2.bias"));
    const auto nobias = make_model<double>("flatten,dense:3:nobias,relu,dense:2", 1);
    const ParametricStructure<double> n(nobias);
    BOOST_TEST(n.layer(0).bias == nullptr);
    DiagHessian diag;
    for (const auto* p : nobias.parameters())
        diag.parameters.push_back({p->name, p->shape, std::vector<double>(p->size(), 1.0)});
    BOOST_TEST(n.bias_diag(diag, 0) == nullptr);
    BOOST_TEST(n.layer_diags(diag)[0].bias.empty());
}
