#define BOOST_TEST_MODULE second_order_measures
#include <boost/test/unit_test.hpp>

// The measures built on exact Hessian-vector products (lambda-max with its per-layer
// values, top-eigenvalues, hutchinson, spectrum, adaptive-lambda-max) and the other
// scale-invariant ones (adaptive, fisher-rao), each against an independent reference: the
// explicit Hessian of a tiny network (built column by column, eigen-decomposed), the exact
// trace, per-example gradients, and invariance under function-preserving rescalings.

#include "minsharp/autograd/hvp.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/loss.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/sharpness/scaling.hpp"
#include "minsharp/sharpness/structure.hpp"
#include "synthetic.hpp"

#include <xtensor-blas/xlinalg.hpp>
#include <xtensor/xtensor.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <string>
#include <vector>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

double relative(double a, double b) { return std::abs(a - b) / std::max(std::abs(a), std::abs(b)); }

Batch<double> synthetic_batch(std::size_t n, std::uint64_t seed) {
    const Dataset d = testing::synthetic_dataset(n, seed, "synthetic");
    Batch<double> b;
    b.x = Tensor4<double>::from_shape(d.images.shape());
    std::copy(d.images.begin(), d.images.end(), b.x.begin());
    b.y = d.labels;
    return b;
}

Batch<double> random_batch(std::size_t n, ActShape shape, std::size_t classes, std::uint64_t seed) {
    Rng rng(seed);
    Batch<double> b;
    b.x = Tensor4<double>::from_shape({n, shape.c, shape.h, shape.w});
    for (auto& v : b.x) v = rng.normal();
    for (std::size_t i = 0; i < n; ++i) b.y.push_back(int(rng.below(classes)));
    return b;
}

// Tiny networks whose Hessian can be written out: an MLP and a CNN with every op kind.
struct Tiny {
    const char* spec;
    ActShape input;
    std::size_t classes;
};
const Tiny tiny_mlp{"flatten,dense:5,relu,dense:4,relu,dense:3", {1, 4, 4}, 3};
const Tiny tiny_cnn{"conv:2:3,relu,maxpool:2:2,flatten,dense:4,relu,dense:3", {1, 6, 6}, 3};

// H, column j = H e_j from the exact product, symmetrised (the product is symmetric only
// up to rounding).
xt::xtensor<double, 2> explicit_hessian(Sequential<double>& model, const Batch<double>& data) {
    autograd::HessianVectorProduct<double> hvp(model, data.x, data.y);
    const std::size_t dim = hvp.dimension();
    xt::xtensor<double, 2> h = xt::zeros<double>({dim, dim});
    std::vector<double> e(dim, 0.0), column(dim);
    for (std::size_t j = 0; j < dim; ++j) {
        e[j] = 1.0;
        hvp.apply(e, column);
        e[j] = 0.0;
        for (std::size_t i = 0; i < dim; ++i) h(i, j) = column[i];
    }
    return 0.5 * (h + xt::transpose(h));
}

// Eigenvalues, largest first.
std::vector<double> eigenvalues_descending(const xt::xtensor<double, 2>& m) {
    const auto [values, vectors] = xt::linalg::eigh(m);
    std::vector<double> v(values.begin(), values.end());
    std::sort(v.rbegin(), v.rend());
    return v;
}

xt::xtensor<double, 2> block(const xt::xtensor<double, 2>& h, const std::vector<std::size_t>& at) {
    xt::xtensor<double, 2> b = xt::zeros<double>({at.size(), at.size()});
    for (std::size_t i = 0; i < at.size(); ++i)
        for (std::size_t j = 0; j < at.size(); ++j) b(i, j) = h(at[i], at[j]);
    return b;
}

// The flat coordinates of each parametric layer's weight and bias.
std::vector<std::vector<std::size_t>> layer_coordinates(Sequential<double>& model) {
    std::map<std::string, std::size_t> offset;
    std::size_t at = 0;
    for (const auto* p : model.parameters()) {
        offset[p->name] = at;
        at += p->size();
    }
    std::vector<std::vector<std::size_t>> layers;
    const ParametricStructure<double> structure(model);  // a range-for over a temporary's member dangles
    for (const auto& l : structure.layers()) {
        std::vector<std::size_t> c;
        for (const auto* p : {l.weight, l.bias})
            if (p)
                for (std::size_t i = 0; i < p->size(); ++i) c.push_back(offset.at(p->name) + i);
        layers.push_back(c);
    }
    return layers;
}

}  // namespace

BOOST_AUTO_TEST_CASE(eigenvalues_match_the_explicit_hessian) {
    for (const Tiny& t : {tiny_mlp, tiny_cnn}) {
        Sequential<double> model = make_model<double>(t.spec, 4, t.input);
        const Batch<double> data = random_batch(12, t.input, t.classes, 9);
        const xt::xtensor<double, 2> h = explicit_hessian(model, data);
        const std::vector<double> exact = eigenvalues_descending(h);
        MeasureOptions options;
        options.top_k = 4;
        options.lanczos_iterations = 40;
        const auto r = measure_sharpness(
            model, data, parse_measures("lambda-max,top-eigenvalues,adaptive,adaptive-lambda-max"), options);
        BOOST_TEST_INFO(t.spec << ": λ_max " << r.lambda_max->values[0] << ", explicit " << exact[0]);
        BOOST_TEST(relative(r.lambda_max->values.at(0), exact[0]) <= 1e-9);
        BOOST_TEST(r.lambda_max->residuals.at(0) <= 1e-7 * std::abs(exact[0]));
        BOOST_TEST_REQUIRE(r.top_eigenvalues->values.size() == 4u);
        for (std::size_t i = 0; i < 4; ++i) {
            BOOST_TEST_INFO(t.spec << ": eigenvalue " << i);
            BOOST_TEST(std::abs(r.top_eigenvalues->values[i] - exact[i]) <= 1e-8 * std::abs(exact[0]));
        }
        // Each layer's λ_max is that of its diagonal block of the explicit H.
        const auto coordinates = layer_coordinates(model);
        BOOST_TEST_REQUIRE(r.layers.size() == coordinates.size());
        for (std::size_t l = 0; l < coordinates.size(); ++l) {
            const double block_max = eigenvalues_descending(block(h, coordinates[l]))[0];
            BOOST_TEST_INFO(t.spec << ": layer " << l << " λ_max " << *r.layers[l].lambda_max
                                   << ", explicit block " << block_max);
            BOOST_TEST(relative(*r.layers[l].lambda_max, block_max) <= 1e-9);
        }
        // T H T with T = diag(|θ|), its trace and its top eigenvalue.
        const std::vector<double> theta = get_flat_parameters(model);
        xt::xtensor<double, 2> tht = h;
        double adaptive = 0.0;
        for (std::size_t i = 0; i < theta.size(); ++i) {
            adaptive += theta[i] * theta[i] * h(i, i);
            for (std::size_t j = 0; j < theta.size(); ++j) tht(i, j) *= std::abs(theta[i] * theta[j]);
        }
        BOOST_TEST(relative(*r.adaptive, adaptive) <= 1e-10);
        BOOST_TEST(relative(r.adaptive_lambda_max->values.at(0), eigenvalues_descending(tht)[0]) <= 1e-9);
    }
}

BOOST_AUTO_TEST_CASE(adaptive_measures_and_fisher_rao_are_invariant_where_lambda_max_is_not) {
    for (const std::string name : {"small-mlp", "small-cnn"}) {
        Rng rng(derive_seed(5, name.size()));
        Sequential<double> model = make_model<double>(name, 6);
        const Batch<double> data = synthetic_batch(8, 2);
        const auto what = parse_measures("adaptive,adaptive-lambda-max,fisher-rao,lambda-max");
        const auto base = measure_sharpness(model, data, what);
        const std::size_t layers = parametric_layer_indices(model).size();
        double largest_lambda_change = 0.0;  // |log10(λ'/λ)| over the rescalings
        // Trial 0: layer-wise; 1: node-wise; 2: both (factors in [1e-3, 1e3]).
        for (int trial = 0; trial < 3; ++trial) {
            Sequential<double> scaled = model;
            if (trial != 1) scale_layerwise(scaled, random_layer_scales(layers, rng, 1e3));
            if (trial != 0) scale_nodewise(scaled, random_node_scales(model, rng, 1e3));
            const auto r = measure_sharpness(scaled, data, what);
            BOOST_TEST_INFO(name << " trial " << trial << ": adaptive " << *base.adaptive << " -> "
                                 << *r.adaptive << ", adaptive λ_max "
                                 << base.adaptive_lambda_max->values[0] << " -> "
                                 << r.adaptive_lambda_max->values[0] << ", Fisher-Rao "
                                 << base.fisher_rao->value << " -> " << r.fisher_rao->value
                                 << ", λ_max " << base.lambda_max->values[0] << " -> "
                                 << r.lambda_max->values[0]);
            BOOST_TEST(relative(*r.adaptive, *base.adaptive) <= 1e-9);
            BOOST_TEST(relative(r.adaptive_lambda_max->values[0], base.adaptive_lambda_max->values[0]) <= 1e-9);
            BOOST_TEST(relative(r.fisher_rao->value, base.fisher_rao->value) <= 1e-9);
            largest_lambda_change = std::max(
                largest_lambda_change, std::abs(std::log10(r.lambda_max->values[0] / base.lambda_max->values[0])));
        }
        BOOST_TEST_INFO(name);
        BOOST_TEST(largest_lambda_change >= 1.0);  // λ_max moves by at least a factor 10
    }
}

BOOST_AUTO_TEST_CASE(directional_derivatives_match_per_example_gradients) {
    // With biases and every op kind: s_i = ⟨θ, ∇ℓ_i⟩ from a gradient of input i alone.
    for (const Tiny& t : {tiny_mlp, tiny_cnn}) {
        Sequential<double> model = make_model<double>(t.spec, 2, t.input);
        const Batch<double> data = random_batch(7, t.input, t.classes, 4);
        const std::vector<double> s = parameter_directional_derivatives(model, data, 3);  // 3 chunks
        const std::vector<double> theta = get_flat_parameters(model);
        const std::size_t per = t.input.size();
        BOOST_TEST_REQUIRE(s.size() == 7u);
        for (std::size_t i = 0; i < 7; ++i) {
            Batch<double> one;
            one.x = Tensor4<double>::from_shape({1, t.input.c, t.input.h, t.input.w});
            std::copy_n(data.x.data() + i * per, per, one.x.data());
            one.y = {data.y[i]};
            std::vector<double> g;
            loss_and_gradient(model, one, &g);
            const double reference = std::inner_product(theta.begin(), theta.end(), g.begin(), 0.0);
            BOOST_TEST_INFO(t.spec << " input " << i << ": " << s[i] << " vs " << reference);
            BOOST_TEST(std::abs(s[i] - reference) <= 1e-12 * std::max(1.0, std::abs(reference)));
        }
    }
}

BOOST_AUTO_TEST_CASE(fisher_rao_has_the_closed_form_of_a_bias_free_relu_network) {
    // Liang et al. 2019: ‖θ‖²_fr = (L+1)² E[⟨∂ℓ/∂f, f⟩²] for L+1 bias-free layers.
    const char* spec = "conv:3:3:nobias,relu,maxpool:2:2,flatten,dense:6:nobias,relu,dense:4:nobias";
    const ActShape input{1, 8, 8};
    Sequential<double> model = make_model<double>(spec, 3, input);
    const Batch<double> data = random_batch(9, input, 4, 1);
    const auto r = measure_sharpness(model, data, {Measure::FisherRao});
    const Tensor2<double> f = model.predict(data.x);
    double sum = 0.0;
    for (std::size_t i = 0; i < 9; ++i) {
        double top = f(i, 0), z = 0.0, dot = 0.0;
        for (std::size_t k = 0; k < 4; ++k) top = std::max(top, f(i, k));
        for (std::size_t k = 0; k < 4; ++k) z += std::exp(f(i, k) - top);
        for (std::size_t k = 0; k < 4; ++k) {
            const double p = std::exp(f(i, k) - top) / z;
            dot += (p - (int(k) == data.y[i] ? 1.0 : 0.0)) * f(i, k);
        }
        sum += 9.0 * dot * dot;  // (L+1)² = 3²
    }
    BOOST_TEST(relative(r.fisher_rao->value, sum / 9.0) <= 1e-10);
}

BOOST_AUTO_TEST_CASE(exact_hutchinson_lands_near_the_exact_trace_of_small_cnn) {
    // Trained a little by full-batch gradient descent: at initialisation Tr H is near 0
    // against large off-diagonal entries, so any Hutchinson estimate has a large relative
    // error there; a trained network is the case users measure (and the example).
    Sequential<double> model = make_model<double>("small-cnn", 3);
    const Batch<double> data = synthetic_batch(40, 7);
    std::vector<double> theta = get_flat_parameters(model), gradient;
    for (int step = 0; step < 60; ++step) {
        loss_and_gradient(model, data, &gradient);
        for (std::size_t i = 0; i < theta.size(); ++i) theta[i] -= 0.1 * gradient[i];
        set_flat_parameters(model, theta);
    }
    MeasureOptions options;
    options.hutchinson_samples = 100;
    options.seed = 1;
    const auto r = measure_sharpness(model, data, {Measure::Trace, Measure::Hutchinson}, options);
    BOOST_TEST_MESSAGE("Hutchinson " << r.hutchinson->estimate << " ± " << r.hutchinson->standard_error
                                  << ", exact Tr H " << *r.trace);
    BOOST_TEST(r.hutchinson->samples == 100u);
    BOOST_TEST(std::abs(r.hutchinson->estimate - *r.trace) <= 4 * r.hutchinson->standard_error);
    BOOST_TEST(r.hutchinson->standard_error <= 0.1 * *r.trace);
}

BOOST_AUTO_TEST_CASE(spectrum_weights_sum_to_one_per_probe) {
    Sequential<double> model = make_model<double>("small-mlp", 2);
    const Batch<double> data = synthetic_batch(10, 3);
    MeasureOptions options;
    options.spectrum_probes = 3;
    options.spectrum_steps = 15;
    const auto r = measure_sharpness(model, data, {Measure::Spectrum, Measure::LambdaMax}, options);
    BOOST_TEST_REQUIRE(r.spectrum->weights.size() == 3u);
    for (std::size_t p = 0; p < 3; ++p) {
        const auto& w = r.spectrum->weights[p];
        BOOST_TEST(std::abs(std::accumulate(w.begin(), w.end(), 0.0) - 1.0) <= 1e-12);
        BOOST_TEST(r.spectrum->nodes[p].size() == r.spectrum->steps[p]);
        // No quadrature node beyond the top eigenvalue (Ritz values lie inside the spectrum).
        BOOST_TEST(r.spectrum->nodes[p].back() <= r.lambda_max->values[0] * (1 + 1e-9));
    }
    const auto j = r.to_json();
    for (const char* key : {"nodes", "weights", "grid", "density", "sigma", "steps"})
        BOOST_TEST(j["spectrum"].contains(key), key);
}

BOOST_AUTO_TEST_CASE(json_keys_and_errors_of_the_new_measures) {
    Sequential<double> model = make_model<double>("small-mlp", 1);
    const Batch<double> data = synthetic_batch(6, 4);
    MeasureOptions options;
    options.hutchinson_samples = 3;
    options.top_k = 2;
    options.spectrum_probes = 1;
    options.spectrum_steps = 5;
    const auto j = measure_sharpness(model, data,
                                     parse_measures("lambda-max,top-eigenvalues,hutchinson,spectrum,"
                                                    "adaptive,adaptive-lambda-max,fisher-rao"),
                                     options)
                       .to_json();
    for (const char* key : {"lambda_max", "top_eigenvalues", "adaptive_lambda_max"}) {
        BOOST_TEST(j[key].contains("value"), key);
        BOOST_TEST(j[key].contains("residuals"), key);
        BOOST_TEST(j[key].contains("iterations"), key);
    }
    BOOST_TEST(j["top_eigenvalues"]["values"].size() == 2u);
    BOOST_TEST(j["adaptive"].is_number());
    for (const char* key : {"value", "estimate", "standard_error", "samples"})
        BOOST_TEST(j["hutchinson"].contains(key), key);
    BOOST_TEST(j["fisher_rao"].contains("value"));
    for (const auto& layer : j["layers"]) {
        BOOST_TEST(layer["lambda_max"].contains("value"));
        BOOST_TEST(layer.contains("weight_trace"));  // adaptive ran the diag-H pass
    }
    // lambda-max alone: layer rows without traces, and no trace at all.
    const auto alone = measure_sharpness(model, data, {Measure::LambdaMax}).to_json();
    BOOST_TEST(alone["layers"].size() == 3u);
    BOOST_TEST(!alone["layers"][0].contains("weight_trace"));
    BOOST_TEST(!alone.contains("trace"));
    BOOST_TEST(format_report(measure_sharpness(model, data, {Measure::LambdaMax})).find("Tr H") ==
               std::string::npos);

    MeasureOptions too_many;
    too_many.top_k = 8;
    too_many.lanczos_iterations = 5;
    BOOST_CHECK_THROW(measure_sharpness(model, data, {Measure::TopEigenvalues}, too_many), Error);
    Batch<double> unlabelled = data;
    unlabelled.y.clear();
    for (Measure m : {Measure::LambdaMax, Measure::FisherRao, Measure::Hutchinson})
        BOOST_CHECK_THROW(measure_sharpness(model, unlabelled, {m}), Error);
    // A NaN weight: an error naming the measure, not a NaN eigenvalue.
    model.parameter("layer2.weight").value.data()[0] = std::nan("");
    BOOST_CHECK_EXCEPTION(measure_sharpness(model, data, {Measure::LambdaMax}), Error, [](const Error& e) {
        return std::string(e.what()).find("measure 'lambda-max' is not finite") != std::string::npos;
    });
}
