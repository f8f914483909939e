#define BOOST_TEST_MODULE curvature
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/structure.hpp"

#include <algorithm>
#include <cmath>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

const char* const tiny_lenet =
    "conv:2:5:pad2,relu,maxpool:2:1,conv:3:5,relu,maxpool:2:2,conv:4:5,relu,flatten,dense:5,"
    "relu,dense:10";

template <class T>
Tensor4<T> normal_inputs(std::size_t n, ActShape shape, std::uint64_t seed) {
    Rng rng(seed);
    Tensor4<T> x = Tensor4<T>::from_shape({n, shape.c, shape.h, shape.w});
    for (auto& v : x) v = static_cast<T>(rng.normal());
    return x;
}

template <class T>
Tensor4<T> convert(const Tensor4<double>& x) {
    Tensor4<T> y = Tensor4<T>::from_shape({x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]});
    std::copy(x.begin(), x.end(), y.begin());
    return y;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

// Worst |fast − reference| / (|reference| + floor·max|reference|) over one tensor: a
// relative error per entry, with entries tiny next to the tensor's largest judged against
// that largest instead (their finite differences carry the absolute rounding error).
double worst_relative(const std::vector<double>& fast, const std::vector<double>& reference,
                      double floor = 1e-6) {
    BOOST_REQUIRE_EQUAL(fast.size(), reference.size());
    const double scale = floor * max_abs(reference);
    double worst = 0;
    for (std::size_t i = 0; i < fast.size(); ++i)
        worst = std::max(worst, std::abs(fast[i] - reference[i]) /
                                    (std::abs(reference[i]) + scale + 1e-300));
    return worst;
}

void check_against_brute_force(const DiagHessian& fast, const DiagHessian& brute) {
    BOOST_REQUIRE_EQUAL(fast.parameters.size(), brute.parameters.size());
    for (std::size_t j = 0; j < fast.parameters.size(); ++j) {
        BOOST_TEST_CONTEXT(fast.parameters[j].name) {
            BOOST_TEST(fast.parameters[j].name == brute.parameters[j].name);
            BOOST_TEST(max_abs(brute.parameters[j].values) > 0);
            const double worst =
                worst_relative(fast.parameters[j].values, brute.parameters[j].values);
            BOOST_TEST_MESSAGE(fast.parameters[j].name << ": worst relative error " << worst);
            BOOST_TEST(worst <= 1e-6);
        }
    }
}

double relative_difference(double a, double b) { return std::abs(a - b) / std::abs(b); }

double worst_difference(const DiagHessian& a, const DiagHessian& b) {
    const auto fa = a.flat(), fb = b.flat();
    BOOST_REQUIRE_EQUAL(fa.size(), fb.size());
    const double scale = max_abs(fb);
    double worst = 0;
    for (std::size_t i = 0; i < fa.size(); ++i)
        worst = std::max(worst, std::abs(fa[i] - fb[i]) / scale);
    return worst;
}

// Plain SGD on the mean cross-entropy, enough to make a small network confident.
void train(Sequential<double>& model, const Tensor4<double>& x, const std::vector<int>& y,
           std::size_t steps, double lr) {
    const std::size_t batch = 50, n = y.size();
    const auto& s = x.shape();
    const std::size_t per_input = s[1] * s[2] * s[3];
    Tape<double> tape;
    Tensor4<double> xb = Tensor4<double>::from_shape({batch, s[1], s[2], s[3]});
    std::vector<int> yb(batch);
    for (std::size_t step = 0; step < steps; ++step) {
        const std::size_t first = (step * batch) % n;
        for (std::size_t i = 0; i < batch; ++i) {
            const std::size_t from = (first + i) % n;
            std::copy_n(x.data() + from * per_input, per_input, xb.data() + i * per_input);
            yb[i] = y[from];
        }
        model.zero_grad();
        tape.clear();
        tape.backward(cross_entropy(tape, model.forward(tape, xb), yb));
        for (auto* p : model.parameters())
            for (std::size_t j = 0; j < p->size(); ++j) p->value[j] -= lr * p->grad[j];
    }
}

// Ten well separated Gaussian classes.
void separable_data(std::size_t n, ActShape shape, Tensor4<double>& x, std::vector<int>& y) {
    Rng rng(11);
    const std::size_t d = shape.size();
    std::vector<double> means(10 * d);
    for (auto& m : means) m = rng.normal();
    x = Tensor4<double>::from_shape({n, shape.c, shape.h, shape.w});
    y.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
        y[i] = int(i % 10);
        for (std::size_t j = 0; j < d; ++j)
            x.data()[i * d + j] = means[std::size_t(y[i]) * d + j] + 0.5 * rng.normal();
    }
}

// Indices spread evenly over every parameter tensor (all entries of small ones).
std::vector<std::size_t> spread_indices(const Sequential<double>& model, std::size_t per_tensor) {
    std::vector<std::size_t> indices;
    std::size_t offset = 0;
    for (const auto* p : model.parameters()) {
        const std::size_t stride = std::max<std::size_t>(1, p->size() / per_tensor);
        for (std::size_t j = 0; j < p->size(); j += stride) indices.push_back(offset + j);
        offset += p->size();
    }
    return indices;
}

// A layer kind the exact identity does not cover (stands in for, e.g., a tanh).
class SmoothLayer final : public Layer<double> {
public:
    LayerKind kind() const override { return static_cast<LayerKind>(200); }  // unregistered
    std::string spec() const override { return "smooth"; }
    NodeId forward(Tape<double>&, NodeId x) override { return x; }
    ActShape output_shape(const ActShape& in) const override { return in; }
    std::unique_ptr<Layer<double>> clone() const override {
        return std::make_unique<SmoothLayer>(*this);
    }
};

}  // namespace

BOOST_AUTO_TEST_CASE(small_mlp_matches_brute_force) {
    auto model = make_model<double>("small-mlp", 1);
    const auto x = normal_inputs<double>(2, mnist_input, 2);
    const DiagHessian fast = exact_diag_hessian(model, x);
    check_against_brute_force(fast, brute_force_diag_hessian(model, x, 1e-5));
    BOOST_TEST(fast.inputs == 2u);
}

BOOST_AUTO_TEST_CASE(tiny_lenet_matches_brute_force) {
    auto model = make_model<double>(tiny_lenet, 3);
    const auto x = normal_inputs<double>(2, mnist_input, 4);
    check_against_brute_force(exact_diag_hessian(model, x),
                              brute_force_diag_hessian(model, x, 1e-5));
}

// Average pooling is linear, so the identity covers it: overlapping and non-overlapping
// windows, after a fused conv + relu and before a dense layer.
BOOST_AUTO_TEST_CASE(avgpool_network_matches_brute_force) {
    const char* const spec = "conv:2:5,relu,avgpool:2:2,conv:3:3,avgpool:3:1,flatten,dense:10";
    auto model = make_model<double>(spec, 25);
    BOOST_CHECK_NO_THROW(require_piecewise_linear(model));
    const auto x = normal_inputs<double>(2, mnist_input, 26);
    check_against_brute_force(exact_diag_hessian(model, x),
                              brute_force_diag_hessian(model, x, 1e-5));
}

BOOST_AUTO_TEST_CASE(small_cnn_matches_brute_force_on_spread_entries) {
    // Differencing all 13,750 coordinates would take minutes; every bias entry and an even
    // spread of ~60 entries of each weight tensor are checked.
    auto model = make_model<double>("small-cnn", 5);
    const auto x = normal_inputs<double>(2, mnist_input, 6);
    const auto fast = exact_diag_hessian(model, x).flat();
    const auto indices = spread_indices(model, 60);
    const auto brute = brute_force_diag_entries(model, x, indices, 1e-5);
    const double scale = 1e-4 * max_abs(brute);
    for (std::size_t i = 0; i < indices.size(); ++i)
        BOOST_TEST(std::abs(fast[indices[i]] - brute[i]) <= 1e-6 * (std::abs(brute[i]) + scale),
                   "entry " << indices[i] << ": fast " << fast[indices[i]] << ", brute "
                            << brute[i]);
}

BOOST_AUTO_TEST_CASE(brute_force_entries_reject_out_of_range_index) {
    auto model = make_model<double>("small-mlp", 1);
    const auto x = normal_inputs<double>(1, mnist_input, 2);
    BOOST_CHECK_THROW(brute_force_diag_entries(model, x, {model.parameter_count()}), Error);
}

BOOST_AUTO_TEST_CASE(float_agrees_with_double_at_random_init) {
    for (const char* spec : {"small-mlp", "small-cnn", tiny_lenet}) {
        BOOST_TEST_CONTEXT(spec) {
            auto model = make_model<double>(spec, 7);
            auto model_f = convert_model<float>(model);
            const auto x = normal_inputs<double>(20, mnist_input, 8);
            const DiagHessian d = exact_diag_hessian(model, x);
            const DiagHessian f = exact_diag_hessian(model_f, convert<float>(x));
            BOOST_TEST(relative_difference(f.trace(), d.trace()) <= 1e-4);
            for (std::size_t j = 0; j < d.parameters.size(); ++j)
                BOOST_TEST(relative_difference(f.parameters[j].trace(),
                                               d.parameters[j].trace()) <= 1e-4);
        }
    }
}

BOOST_AUTO_TEST_CASE(float_agrees_with_double_on_a_confident_trained_network) {
    Tensor4<double> x;
    std::vector<int> y;
    separable_data(200, mnist_input, x, y);
    auto model = make_model<double>("small-mlp", 9);
    train(model, x, y, 400, 0.1);

    // Confident: the largest probability exceeds 0.999 for most inputs.
    const Tensor2<double> logits = model.predict(x);
    Tensor2<double> p = Tensor2<double>::from_shape(logits.shape());
    softmax_rows(logits.data(), 200, 10, p.data());
    std::size_t confident = 0;
    for (std::size_t i = 0; i < 200; ++i)
        confident += *std::max_element(p.data() + i * 10, p.data() + (i + 1) * 10) > 0.999;
    BOOST_TEST_REQUIRE(confident >= 180u);

    auto model_f = convert_model<float>(model);
    const auto xf = convert<float>(x);
    const DiagHessian d = exact_diag_hessian(model, x);
    const DiagHessian f = exact_diag_hessian(model_f, xf);
    BOOST_TEST(d.trace() > 0);
    BOOST_TEST(relative_difference(f.trace(), d.trace()) <= 1e-4);
    for (std::size_t j = 0; j < d.parameters.size(); ++j)
        BOOST_TEST(relative_difference(f.parameters[j].trace(), d.parameters[j].trace()) <= 1e-4,
                   d.parameters[j].name);

    // What the factored form avoids: the last bias's diagonal is Σ_i p_ij(1 − p_ij), which
    // the subtracted form computes in float as p_ij − p_ij², losing all digits of a
    // probability close to one.
    const Tensor2<float> logits_f = model_f.predict(xf);
    std::vector<float> pf(200 * 10);
    softmax_rows(logits_f.data(), 200, 10, pf.data());
    const auto& exact = d.at("layer2.bias").values;
    const auto& factored = f.at("layer2.bias").values;
    double factored_error = 0, subtracted_error = 0;
    for (std::size_t j = 0; j < 10; ++j) {
        float subtracted = 0;
        for (std::size_t i = 0; i < 200; ++i) {
            const float pij = pf[i * 10 + j];
            subtracted += pij - pij * pij;
        }
        subtracted /= 200;
        factored_error = std::max(factored_error, relative_difference(factored[j], exact[j]));
        subtracted_error = std::max(subtracted_error, relative_difference(subtracted, exact[j]));
    }
    BOOST_TEST_MESSAGE("last bias, worst relative error in float: factored "
                       << factored_error << ", subtracted " << subtracted_error);
    BOOST_TEST(factored_error <= 1e-4);
    BOOST_TEST(subtracted_error > 10 * factored_error);
}

BOOST_AUTO_TEST_CASE(chunking_does_not_change_the_result) {
    for (const char* spec : {"small-mlp", "small-cnn"}) {
        BOOST_TEST_CONTEXT(spec) {
            auto model = make_model<double>(spec, 12);
            const auto x = normal_inputs<double>(15, mnist_input, 13);
            const DiagHessian all = exact_diag_hessian(model, x);
            for (std::size_t chunk : {1, 7}) {
                CurvatureOptions options;
                options.chunk = chunk;
                BOOST_TEST(worst_difference(exact_diag_hessian(model, x, options), all) <= 1e-13);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(conv_buffer_bound_shrinks_the_chunk_not_the_result) {
    auto model = make_model<double>(tiny_lenet, 14);
    const auto x = normal_inputs<double>(9, mnist_input, 15);
    CurvatureOptions small;
    // One input's conv gradients over 10 passes: 10 × (2·784 + 3·529 + 4·49) doubles.
    small.conv_buffer_bytes = 10 * (2 * 784 + 3 * 529 + 4 * 49) * sizeof(double) * 2;
    BOOST_TEST(effective_chunk(model, 9, small) == 2u);
    BOOST_TEST(effective_chunk(model, 9, CurvatureOptions{}) == 9u);
    BOOST_TEST(worst_difference(exact_diag_hessian(model, x, small),
                                exact_diag_hessian(model, x)) <= 1e-13);
}

BOOST_AUTO_TEST_CASE(thread_count_changes_only_rounding_and_is_reproducible) {
    auto model = make_model<double>("small-cnn", 16);
    const auto x = normal_inputs<double>(11, mnist_input, 17);
    CurvatureOptions one, two, three;
    one.threads = 1;
    two.threads = 2;
    three.threads = 3;
    const DiagHessian reference = exact_diag_hessian(model, x, one);
    BOOST_TEST(worst_difference(exact_diag_hessian(model, x, two), reference) <= 1e-13);
    BOOST_TEST(worst_difference(exact_diag_hessian(model, x, three), reference) <= 1e-13);
    auto model_f = convert_model<float>(model);
    const auto xf = convert<float>(x);
    const auto first = exact_diag_hessian(model_f, xf, two).flat();
    const auto second = exact_diag_hessian(model_f, xf, two).flat();
    BOOST_TEST(first == second);  // bit for bit
}

BOOST_AUTO_TEST_CASE(labels_do_not_matter) {
    // Differencing the gradient of the loss with random labels gives the same diagonal
    // as the label-free exact computation.
    auto model = make_model<double>("small-mlp", 18);
    const auto x = normal_inputs<double>(4, mnist_input, 19);
    const auto fast = exact_diag_hessian(model, x).flat();
    Rng rng(20);
    for (int trial = 0; trial < 2; ++trial) {
        Batch<double> batch{x, {}};
        for (int i = 0; i < 4; ++i) batch.y.push_back(int(rng.below(10)));
        const std::vector<double> theta = get_flat_parameters(model);
        for (std::size_t j = 15600; j < theta.size(); j += 37) {  // layer0 tail onwards
            std::vector<double> plus, minus, shifted = theta;
            const double h = 1e-5;
            shifted[j] = theta[j] + h;
            set_flat_parameters(model, shifted);
            loss_and_gradient(model, batch, &plus);
            shifted[j] = theta[j] - h;
            set_flat_parameters(model, shifted);
            loss_and_gradient(model, batch, &minus);
            set_flat_parameters(model, theta);
            const double numeric = (plus[j] - minus[j]) / (2 * h);
            BOOST_TEST(std::abs(numeric - fast[j]) <= 1e-6 * std::abs(fast[j]) + 1e-10,
                       "entry " << j);
        }
    }
}

BOOST_AUTO_TEST_CASE(results_report_traces_per_tensor_and_layer) {
    auto model = make_model<double>("small-cnn", 21);
    const auto x = normal_inputs<double>(4, mnist_input, 22);
    const DiagHessian h = exact_diag_hessian(model, x);
    BOOST_TEST(h.parameters.size() == 6u);
    BOOST_TEST(h.at("layer1.weight").shape == Shape({20, 20, 5, 5}));
    BOOST_TEST(h.at("layer1.weight").values.size() == 10000u);
    BOOST_CHECK_THROW(h.at("layer9.weight"), Error);
    // Per layer, the structure's view holds exactly the diagonal of its weight and bias.
    const auto layers = ParametricStructure<double>(model).layer_diags(h);
    BOOST_REQUIRE_EQUAL(layers.size(), 3u);
    BOOST_TEST(layers[1].name == "layer1");
    BOOST_TEST(layers[1].weight == h.at("layer1.weight").values);
    BOOST_TEST(layers[1].bias == h.at("layer1.bias").values);
    BOOST_TEST(layers[1].weight_trace() == h.at("layer1.weight").trace(),
               boost::test_tools::tolerance(1e-12));
    double total = 0;
    for (const auto& l : layers) total += l.weight_trace() + l.bias_trace();
    BOOST_TEST(total == h.trace(), boost::test_tools::tolerance(1e-12));
    for (const double v : h.flat()) BOOST_TEST_REQUIRE(v >= 0);  // a sum of squares
    BOOST_TEST(h.seconds > 0);
}

BOOST_AUTO_TEST_CASE(zoo_is_piecewise_linear_and_other_layers_are_refused) {
    for (const auto& name : zoo_names())
        BOOST_CHECK_NO_THROW(require_piecewise_linear(build_model<double>(name)));
    Sequential<double> model(ActShape{4, 1, 1});
    model.add(std::make_unique<Dense<double>>(4, 3));
    model.add(std::make_unique<ReLU<double>>());
    model.add(std::make_unique<SmoothLayer>());
    model.add(std::make_unique<Dense<double>>(3, 2));
    try {
        require_piecewise_linear(model);
        BOOST_FAIL("a smooth layer was accepted");
    } catch (const NotPiecewiseLinearError& e) {
        const std::string what = e.what();
        BOOST_TEST(what.find("layer 2") != std::string::npos, what);
        BOOST_TEST(what.find("smooth") != std::string::npos, what);
    }
    const auto x = normal_inputs<double>(2, ActShape{4, 1, 1}, 23);
    BOOST_CHECK_THROW(exact_diag_hessian(model, x), NotPiecewiseLinearError);
}

BOOST_AUTO_TEST_CASE(bad_arguments_are_refused) {
    auto model = make_model<double>("small-mlp", 24);
    BOOST_CHECK_THROW(exact_diag_hessian(model, Tensor4<double>::from_shape({0, 1, 28, 28})),
                      Error);
    CurvatureOptions zero;
    zero.chunk = 0;
    BOOST_CHECK_THROW(exact_diag_hessian(model, normal_inputs<double>(2, mnist_input, 1), zero),
                      Error);
    BOOST_CHECK_THROW(exact_diag_hessian(model, normal_inputs<double>(2, ActShape{1, 8, 8}, 1)),
                      ShapeError);
    BOOST_CHECK_THROW(brute_force_diag_hessian(model, Tensor4<double>::from_shape({0, 1, 28, 28})),
                      Error);
}
