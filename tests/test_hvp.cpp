#define BOOST_TEST_MODULE hvp
#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"

#include "minsharp/autograd/hvp.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/loss.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

using namespace minsharp;
using namespace minsharp::autograd;
using sharpness::Batch;

namespace {

// Every op kind: conv with a fused ReLU, a plain conv, max-pooling of both, a standalone
// ReLU on conv activations, a recorded flatten (it is followed by a ReLU, not a dense
// layer), a dense layer reading it, and layers without bias.
const char* const all_ops_cnn =
    "conv:3:3:pad1,relu,maxpool:2:2,conv:4:3:nobias,maxpool:2:1,relu,flatten,relu,dense:5,"
    "relu,dense:3";
const ActShape all_ops_input{2, 8, 8};
// A strided, padded conv and a dense layer reading a conv's output directly.
const char* const strided_cnn = "conv:4:3:stride2:pad1,relu,conv:3:2,relu,flatten,dense:6:nobias,relu,dense:4";
const ActShape strided_input{1, 9, 9};
// Average pooling, with non-overlapping and overlapping windows, before a conv and before
// a dense layer.
const char* const avgpool_cnn =
    "conv:3:3:pad1,relu,avgpool:2:2,conv:4:2,relu,avgpool:2:1,flatten,dense:5,relu,dense:3";
const ActShape avgpool_input{2, 8, 8};
const char* const small_mlp = "flatten,dense:7,relu,dense:6,relu,dense:4";
const ActShape small_mlp_input{1, 4, 4};

template <class T>
Tensor4<T> normal_inputs(std::size_t n, ActShape shape, std::uint64_t seed) {
    Rng rng(seed);
    Tensor4<T> x = Tensor4<T>::from_shape({n, shape.c, shape.h, shape.w});
    for (auto& v : x) v = static_cast<T>(rng.normal());
    return x;
}

Tensor4<float> to_float(const Tensor4<double>& x) {
    Tensor4<float> y = Tensor4<float>::from_shape({x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]});
    std::copy(x.begin(), x.end(), y.begin());
    return y;
}

std::vector<int> random_labels(std::size_t n, std::size_t classes, std::uint64_t seed) {
    Rng rng(seed);
    std::vector<int> y(n);
    for (auto& v : y) v = int(rng.below(classes));
    return y;
}

std::vector<double> normal_vector(std::size_t n, std::uint64_t seed) {
    Rng rng(seed);
    std::vector<double> v(n);
    for (auto& x : v) x = rng.normal();
    return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
    return std::inner_product(a.begin(), a.end(), b.begin(), 0.0);
}

double norm(const std::vector<double>& a) { return std::sqrt(dot(a, a)); }

// ‖a − b‖ / ‖b‖.
double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
    BOOST_REQUIRE_EQUAL(a.size(), b.size());
    double d2 = 0;
    for (std::size_t i = 0; i < a.size(); ++i) d2 += (a[i] - b[i]) * (a[i] - b[i]);
    return std::sqrt(d2) / norm(b);
}

template <class T>
std::vector<double> hv_of(Sequential<T>& model, const Batch<T>& batch, const std::vector<double>& v,
                          const HvpOptions& options = {}) {
    std::vector<double> hv(v.size());
    hessian_vector_product(model, batch.x, batch.y, v, hv, options);
    return hv;
}

// Which side of every ReLU and max-pool kink the forward of x is on.
std::vector<std::uint32_t> kinks_of(Sequential<double>& model, const Tensor4<double>& x) {
    Tape<double> tape;
    model.forward(tape, x);
    return testing::kink_pattern(tape);
}

// The gradient's central difference along v, (∇L(θ + h v) − ∇L(θ − h v)) / 2h, or nothing
// when a step crosses a ReLU or max-pool kink (the gradient jumps there).
std::optional<std::vector<double>> gradient_difference(Sequential<double>& model,
                                                       const Batch<double>& batch,
                                                       const std::vector<double>& v, double h) {
    const auto theta = sharpness::get_flat_parameters(model);
    const auto kinks = kinks_of(model, batch.x);
    auto gradient_at = [&](double t, std::vector<double>& g) {
        auto moved = theta;
        for (std::size_t i = 0; i < v.size(); ++i) moved[i] += t * v[i];
        sharpness::set_flat_parameters(model, moved);
        sharpness::loss_and_gradient(model, batch, &g);
        return kinks_of(model, batch.x) == kinks;
    };
    std::vector<double> plus, minus;
    const bool smooth = gradient_at(h, plus) && gradient_at(-h, minus);
    sharpness::set_flat_parameters(model, theta);
    if (!smooth) return std::nullopt;
    std::vector<double> d(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) d[i] = (plus[i] - minus[i]) / (2 * h);
    return d;
}

Batch<double> random_batch(std::size_t n, ActShape shape, std::size_t classes,
                           std::uint64_t seed) {
    return {normal_inputs<double>(n, shape, seed), random_labels(n, classes, seed + 1)};
}

// Hv against central differences of the exact gradient for a few random directions (each
// direction whose steps stay between kinks; at least three must).
void check_against_differences(const char* spec, ActShape input, std::size_t classes) {
    auto model = make_model<double>(spec, 3, input);
    const auto batch = random_batch(10, input, classes, 11);
    std::size_t checked = 0;
    for (std::uint64_t seed = 0; seed < 10 && checked < 3; ++seed) {
        auto v = normal_vector(model.parameter_count(), 100 + seed);
        const double scale = 1 / norm(v);
        for (auto& x : v) x *= scale;
        const auto numeric = gradient_difference(model, batch, v, 1e-5);
        if (!numeric) continue;
        ++checked;
        const auto exact = hv_of(model, batch, v);
        const double error = relative_error(exact, *numeric);
        BOOST_TEST_MESSAGE(spec << ": ‖Hv − differences‖/‖differences‖ = " << error);
        BOOST_TEST(error <= 1e-6);
    }
    BOOST_TEST(checked == 3u);
}

}  // namespace

BOOST_AUTO_TEST_CASE(mlp_matches_central_differences_of_the_gradient) {
    check_against_differences(small_mlp, small_mlp_input, 4);
}

BOOST_AUTO_TEST_CASE(cnn_matches_central_differences_of_the_gradient) {
    check_against_differences(all_ops_cnn, all_ops_input, 3);
    check_against_differences(strided_cnn, strided_input, 4);
}

// Every column H e_j of a tiny CNN against the brute-force Hessian built column by column
// from central differences of the exact gradient.
BOOST_AUTO_TEST_CASE(columns_match_a_brute_force_hessian) {
    const ActShape input{1, 6, 6};
    auto model = make_model<double>("conv:2:3,relu,maxpool:2:2,flatten,dense:3", 5, input);
    const auto batch = random_batch(6, input, 3, 21);
    const std::size_t p = model.parameter_count();
    BOOST_REQUIRE_EQUAL(p, 47u);
    HessianVectorProduct<double> hvp(model, batch.x, batch.y);
    double worst = 0, largest = 0;
    std::vector<double> e(p, 0.0), column(p);
    for (std::size_t j = 0; j < p; ++j) {
        e.assign(p, 0.0);
        e[j] = 1;
        const auto brute = gradient_difference(model, batch, e, 1e-5);
        BOOST_REQUIRE(brute);  // a unit step of 1e-5 crosses no kink of these inputs
        hvp.apply(e, column);
        for (std::size_t i = 0; i < p; ++i) {
            worst = std::max(worst, std::abs(column[i] - (*brute)[i]));
            largest = std::max(largest, std::abs((*brute)[i]));
        }
    }
    BOOST_TEST_MESSAGE("max |H − brute force| = " << worst << ", max |H| = " << largest);
    BOOST_TEST(largest > 0.1);
    BOOST_TEST(worst <= 1e-7 * largest);
}

// The Gauss–Newton part Jᵀ H_z J does not depend on the labels (H_z = diag p − p pᵀ); the
// rest, Σ ∂L/∂z · ∂²z, does. For a piecewise-linear network the rest vanishes on the
// diagonal (each parameter enters z linearly) but not between layers: the product must
// change with the labels while its diagonal must not.
BOOST_AUTO_TEST_CASE(full_hessian_has_the_label_dependent_residual_term) {
    auto model = make_model<double>(small_mlp, 7, small_mlp_input);
    auto batch = random_batch(8, small_mlp_input, 4, 31);
    auto relabelled = batch;
    for (auto& y : relabelled.y) y = (y + 1) % 4;
    const auto v = normal_vector(model.parameter_count(), 5);
    const auto hv = hv_of(model, batch, v), hv_relabelled = hv_of(model, relabelled, v);
    BOOST_TEST(relative_error(hv_relabelled, hv) > 1e-2);
    HessianVectorProduct<double> a(model, batch.x, batch.y), b(model, relabelled.x, relabelled.y);
    std::vector<double> e(v.size()), ha(v.size()), hb(v.size());
    double worst = 0;
    for (std::size_t j = 0; j < v.size(); j += 7) {
        e.assign(v.size(), 0.0);
        e[j] = 1;
        a.apply(e, ha);
        b.apply(e, hb);
        worst = std::max(worst, std::abs(ha[j] - hb[j]) / std::max(std::abs(ha[j]), 1e-300));
    }
    BOOST_TEST(worst <= 1e-12);
}

// Σ_i e_iᵀ H e_i entry by entry against the exact diagonal (an independent method: K
// backward passes with the factored output Hessian, docs/science.md §4).
BOOST_AUTO_TEST_CASE(diagonal_entries_match_exact_diag_hessian) {
    const char* tiny_lenet =
        "conv:2:5:pad2,relu,maxpool:2:1,conv:3:5,relu,maxpool:2:2,conv:4:5,relu,flatten,dense:5,"
        "relu,dense:10";
    auto model = make_model<double>(tiny_lenet, 9, mnist_input);
    const auto batch = random_batch(4, mnist_input, 10, 41);
    const auto exact = sharpness::exact_diag_hessian(model, batch.x).flat();
    HessianVectorProduct<double> hvp(model, batch.x, batch.y);
    const std::size_t p = hvp.dimension();
    BOOST_REQUIRE_EQUAL(p, exact.size());
    std::vector<double> e(p, 0.0), column(p);
    double worst = 0, largest = 0, trace = 0, exact_trace = 0;
    for (std::size_t j = 0; j < p; ++j) {
        e[j] = 1;
        hvp.apply(e, column);
        e[j] = 0;
        worst = std::max(worst, std::abs(column[j] - exact[j]));
        largest = std::max(largest, std::abs(exact[j]));
        trace += column[j];
        exact_trace += exact[j];
    }
    BOOST_TEST_MESSAGE(p << " entries: max |e_jᵀ H e_j − exact| = " << worst << ", max |exact| = "
                         << largest << ", traces " << trace << " vs " << exact_trace);
    BOOST_TEST(largest > 0);
    BOOST_TEST(worst <= 1e-10 * largest);
    BOOST_TEST(std::abs(trace - exact_trace) <= 1e-10 * std::abs(exact_trace));
}

// ⟨u, H v⟩ = ⟨H u, v⟩ for every zoo network: the forward-over-reverse product of a
// symmetric matrix must be symmetric to rounding.
BOOST_AUTO_TEST_CASE(avgpool_network_matches_central_differences_and_is_symmetric) {
    check_against_differences(avgpool_cnn, avgpool_input, 3);
    auto model = make_model<double>(avgpool_cnn, 5, avgpool_input);
    const auto batch = random_batch(6, avgpool_input, 3, 61);
    HessianVectorProduct<double> hvp(model, batch.x, batch.y);
    const auto u = normal_vector(hvp.dimension(), 3), v = normal_vector(hvp.dimension(), 4);
    std::vector<double> hu(u.size()), hv(v.size());
    hvp.apply(u, hu);
    hvp.apply(v, hv);
    const double uhv = dot(u, hv), huv = dot(hu, v);
    BOOST_TEST(std::abs(uhv) > 0);
    BOOST_TEST(std::abs(uhv - huv) <= 1e-12 * std::abs(uhv));
}

BOOST_AUTO_TEST_CASE(symmetric_for_every_zoo_model) {
    for (const auto& name : zoo_names()) {
        BOOST_TEST_CONTEXT(name) {
            auto model = make_model<double>(name, 1);
            const auto batch = random_batch(6, mnist_input, 10, 51);
            HessianVectorProduct<double> hvp(model, batch.x, batch.y);
            const auto u = normal_vector(hvp.dimension(), 1), v = normal_vector(hvp.dimension(), 2);
            std::vector<double> hu(u.size()), hv(v.size());
            hvp.apply(u, hu);
            hvp.apply(v, hv);
            const double uhv = dot(u, hv), huv = dot(hu, v);
            const double relative = std::abs(uhv - huv) / std::abs(uhv);
            BOOST_TEST_MESSAGE(name << ": <u,Hv> = " << uhv << ", <Hu,v> = " << huv
                                    << ", relative difference " << relative);
            BOOST_TEST(std::abs(uhv) > 0);
            BOOST_TEST(relative <= 1e-12);
        }
    }
}

// The float product follows the double one for every zoo network.
BOOST_AUTO_TEST_CASE(float_agrees_with_double_for_every_zoo_model) {
    for (const auto& name : zoo_names()) {
        BOOST_TEST_CONTEXT(name) {
            auto model = make_model<double>(name, 2);
            auto model_f = convert_model<float>(model);
            const auto batch = random_batch(6, mnist_input, 10, 61);
            const Batch<float> batch_f{to_float(batch.x), batch.y};
            const auto v = normal_vector(model.parameter_count(), 3);
            const double error = relative_error(hv_of(model_f, batch_f, v), hv_of(model, batch, v));
            BOOST_TEST_MESSAGE(name << ": ‖Hv(float) − Hv(double)‖/‖Hv(double)‖ = " << error);
            BOOST_TEST(error <= 1e-4);
        }
    }
}

// Chunks of the batch, kept or recorded again at every product, give the product of the
// whole batch at once (the mean over all inputs, summed in another order), and the loss
// of loss_and_gradient.
BOOST_AUTO_TEST_CASE(chunked_and_rerecorded_products_equal_one_recording) {
    auto model = make_model<double>(all_ops_cnn, 4, all_ops_input);
    const auto batch = random_batch(10, all_ops_input, 3, 71);
    const auto v = normal_vector(model.parameter_count(), 9);
    HessianVectorProduct<double> whole(model, batch.x, batch.y);
    BOOST_TEST(whole.retained_chunks() == 1u);
    BOOST_TEST(whole.loss() == sharpness::loss_and_gradient(model, batch, nullptr),
               boost::test_tools::tolerance(1e-14));
    std::vector<double> reference(v.size());
    whole.apply(v, reference);
    for (const std::size_t retain : {std::size_t(0), std::size_t(1) << 30, std::size_t(20000)}) {
        HvpOptions options;
        options.chunk = 3;
        options.retain_bytes = retain;
        HessianVectorProduct<double> chunked(model, batch.x, batch.y, options);
        BOOST_TEST_MESSAGE("retain " << retain << " bytes: " << chunked.retained_chunks()
                                     << " of 4 chunks kept");
        BOOST_TEST(chunked.loss() == whole.loss(), boost::test_tools::tolerance(1e-14));
        std::vector<double> hv(v.size());
        for (int repeat = 0; repeat < 2; ++repeat) {  // buffers reused by the second product
            chunked.apply(v, hv);
            BOOST_TEST(relative_error(hv, reference) <= 1e-13);
        }
    }
    HvpOptions none;
    none.retain_bytes = 0;
    BOOST_TEST(HessianVectorProduct<double>(model, batch.x, batch.y, none).retained_chunks() == 0u);
    HvpOptions some;
    some.chunk = 3;
    some.retain_bytes = 20000;
    const auto partly = HessianVectorProduct<double>(model, batch.x, batch.y, some).retained_chunks();
    BOOST_TEST((partly > 0u && partly < 4u));
}

// The product is linear in v and leaves the model's gradients alone.
BOOST_AUTO_TEST_CASE(linear_in_the_direction) {
    auto model = make_model<double>(strided_cnn, 6, strided_input);
    const auto batch = random_batch(5, strided_input, 4, 81);
    HessianVectorProduct<double> hvp(model, batch.x, batch.y);
    const auto u = normal_vector(hvp.dimension(), 1), v = normal_vector(hvp.dimension(), 2);
    std::vector<double> w(u.size()), hu(u.size()), hv(u.size()), hw(u.size());
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = 2.5 * u[i] - 0.75 * v[i];
    hvp.apply(u, hu);
    hvp.apply(v, hv);
    hvp.apply(w, hw);
    std::vector<double> combined(u.size());
    for (std::size_t i = 0; i < w.size(); ++i) combined[i] = 2.5 * hu[i] - 0.75 * hv[i];
    BOOST_TEST(relative_error(hw, combined) <= 1e-13);
    std::vector<double> zero(u.size(), 0.0), hzero(u.size(), 1.0);
    hvp.apply(zero, hzero);
    BOOST_TEST(norm(hzero) == 0.0);
}

BOOST_AUTO_TEST_CASE(rejects_bad_input) {
    auto model = make_model<double>(small_mlp, 8, small_mlp_input);
    const auto batch = random_batch(4, small_mlp_input, 4, 91);
    HessianVectorProduct<double> hvp(model, batch.x, batch.y);
    std::vector<double> v(hvp.dimension(), 1.0), hv(hvp.dimension());
    std::vector<double> short_v(hvp.dimension() - 1, 1.0);
    BOOST_CHECK_THROW(hvp.apply(short_v, hv), ShapeError);
    BOOST_CHECK_THROW(hvp.apply(v, std::span<double>(hv).first(3)), ShapeError);
    // Training between products would silently give the Hessian at the old parameters.
    model.parameters()[1]->value[0] += 1e-3;
    BOOST_CHECK_THROW(hvp.apply(v, hv), Error);
    const std::vector<int> three_labels(3, 0);
    BOOST_CHECK_THROW(HessianVectorProduct<double>(model, batch.x, three_labels), ShapeError);
    const Tensor4<double> none = Tensor4<double>::from_shape({0, 1, 4, 4});
    BOOST_CHECK_THROW(HessianVectorProduct<double>(model, none, {}), Error);
    const std::vector<int> out_of_range(4, 4);
    BOOST_CHECK_THROW(HessianVectorProduct<double>(model, batch.x, out_of_range), Error);
    HvpOptions zero_chunk;
    zero_chunk.chunk = 0;
    BOOST_CHECK_THROW(HessianVectorProduct<double>(model, batch.x, batch.y, zero_chunk), Error);
    const auto wrong_shape = normal_inputs<double>(4, {1, 5, 5}, 1);
    BOOST_CHECK_THROW(HessianVectorProduct<double>(model, wrong_shape, batch.y), ShapeError);
}
