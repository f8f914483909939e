#define BOOST_TEST_MODULE loss
#include <boost/test/unit_test.hpp>

#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/loss.hpp"

#include <algorithm>
#include <cmath>

using namespace minsharp;
using namespace minsharp::sharpness;

namespace {

Batch<double> random_batch(std::size_t n, std::uint64_t seed) {
    Rng rng(seed);
    Batch<double> b;
    b.x = Tensor4<double>::from_shape({n, 1, 28, 28});
    for (auto& v : b.x) v = rng.normal();
    for (std::size_t i = 0; i < n; ++i) b.y.push_back(int(rng.below(10)));
    return b;
}

double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::abs(x));
    return m;
}

// Central differences of the loss along spread-out coordinates match the gradient.
void check_gradient(const std::string& spec, std::size_t n, std::size_t stride) {
    auto model = make_model<double>(spec, 1);
    const Batch<double> batch = random_batch(n, 2);
    std::vector<double> g;
    loss_and_gradient(model, batch, &g);
    BOOST_REQUIRE_EQUAL(g.size(), model.parameter_count());
    const auto theta = get_flat_parameters(model);
    const double scale = max_abs(g);
    const double h = 1e-6;
    for (std::size_t j = 0; j < theta.size(); j += stride) {
        auto shifted = theta;
        shifted[j] = theta[j] + h;
        set_flat_parameters(model, shifted);
        const double up = loss_and_gradient(model, batch, nullptr);
        shifted[j] = theta[j] - h;
        set_flat_parameters(model, shifted);
        const double down = loss_and_gradient(model, batch, nullptr);
        const double numeric = (up - down) / (2 * h);
        BOOST_TEST(std::abs(numeric - g[j]) <= 1e-6 * (std::abs(g[j]) + 1e-3 * scale),
                   spec << " entry " << j << ": analytic " << g[j] << ", numeric " << numeric);
    }
    set_flat_parameters(model, theta);
}

}  // namespace

BOOST_AUTO_TEST_CASE(gradient_matches_finite_differences_mlp) {
    check_gradient("small-mlp", 5, 97);
}

BOOST_AUTO_TEST_CASE(gradient_matches_finite_differences_cnn) {
    check_gradient("small-cnn", 3, 211);
}

BOOST_AUTO_TEST_CASE(loss_is_the_mean_cross_entropy) {
    auto model = make_model<double>("small-mlp", 3);
    const Batch<double> batch = random_batch(4, 4);
    const Tensor2<double> z = model.predict(batch.x);
    double expected = 0;
    for (std::size_t i = 0; i < 4; ++i) {
        double sum = 0;
        for (std::size_t k = 0; k < 10; ++k) sum += std::exp(z(i, k));
        expected += std::log(sum) - z(i, std::size_t(batch.y[i]));
    }
    BOOST_TEST(loss_and_gradient(model, batch, nullptr) == expected / 4,
               boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(chunking_does_not_change_loss_or_gradient) {
    for (const char* spec : {"small-mlp", "small-cnn"}) {
        auto model = make_model<double>(spec, 5);
        const Batch<double> batch = random_batch(7, 6);
        std::vector<double> whole, one, three;
        const double l_whole = loss_and_gradient(model, batch, &whole);
        const double l_one = loss_and_gradient(model, batch, &one, 1);
        const double l_three = loss_and_gradient(model, batch, &three, 3);
        BOOST_TEST(l_one == l_whole, boost::test_tools::tolerance(1e-13));
        BOOST_TEST(l_three == l_whole, boost::test_tools::tolerance(1e-13));
        const double scale = max_abs(whole);
        BOOST_TEST(scale > 0);
        for (std::size_t j = 0; j < whole.size(); ++j) {
            BOOST_TEST_REQUIRE(std::abs(one[j] - whole[j]) <= 1e-13 * scale, spec << " " << j);
            BOOST_TEST_REQUIRE(std::abs(three[j] - whole[j]) <= 1e-13 * scale, spec << " " << j);
        }
    }
}

BOOST_AUTO_TEST_CASE(repeated_calls_do_not_accumulate_gradients) {
    auto model = make_model<double>("small-mlp", 7);
    const Batch<double> batch = random_batch(3, 8);
    std::vector<double> first, second;
    loss_and_gradient(model, batch, &first);
    loss_and_gradient(model, batch, &second);
    BOOST_TEST(first == second);
}

BOOST_AUTO_TEST_CASE(flat_parameters_round_trip) {
    auto model = make_model<double>("small-cnn", 9);
    const auto theta = get_flat_parameters(model);
    BOOST_TEST(theta.size() == model.parameter_count());
    // The flat layout is model.parameters() order, each tensor row-major.
    const auto params = model.parameters();
    BOOST_TEST(theta.front() == params.front()->value[0]);
    BOOST_TEST(theta[params[0]->size()] == params[1]->value[0]);
    BOOST_TEST(theta.back() == params.back()->value[params.back()->size() - 1]);

    std::vector<double> changed = theta;
    for (std::size_t j = 0; j < changed.size(); ++j) changed[j] = double(j) * 1e-3;
    set_flat_parameters(model, changed);
    BOOST_TEST(get_flat_parameters(model) == changed);
    BOOST_TEST(params[1]->value[0] == double(params[0]->size()) * 1e-3);
    set_flat_parameters(model, theta);
    BOOST_TEST(get_flat_parameters(model) == theta);

    auto model_f = convert_model<float>(model);
    const auto theta_f = get_flat_parameters(model_f);
    for (std::size_t j = 0; j < theta.size(); ++j)
        BOOST_TEST_REQUIRE(theta_f[j] == double(float(theta[j])));
}

BOOST_AUTO_TEST_CASE(length_mismatch_and_bad_batches_throw) {
    auto model = make_model<double>("small-mlp", 10);
    auto theta = get_flat_parameters(model);
    theta.pop_back();
    BOOST_CHECK_THROW(set_flat_parameters(model, theta), ShapeError);
    theta.push_back(0);
    theta.push_back(0);
    BOOST_CHECK_THROW(set_flat_parameters(model, theta), ShapeError);

    Batch<double> empty{Tensor4<double>::from_shape({0, 1, 28, 28}), {}};
    BOOST_CHECK_THROW(loss_and_gradient(model, empty, nullptr), Error);
    Batch<double> mismatched = random_batch(3, 11);
    mismatched.y.pop_back();
    BOOST_CHECK_THROW(loss_and_gradient(model, mismatched, nullptr), ShapeError);
}

BOOST_AUTO_TEST_CASE(float_model_gives_a_double_gradient_close_to_double) {
    auto model = make_model<double>("small-mlp", 12);
    auto model_f = convert_model<float>(model);
    const Batch<double> batch = random_batch(6, 13);
    Batch<float> batch_f{Tensor4<float>::from_shape({6, 1, 28, 28}), batch.y};
    std::copy(batch.x.begin(), batch.x.end(), batch_f.x.begin());
    std::vector<double> g, g_f;
    const double l = loss_and_gradient(model, batch, &g);
    const double l_f = loss_and_gradient(model_f, batch_f, &g_f);
    BOOST_TEST(l_f == l, boost::test_tools::tolerance(1e-5));
    const double scale = max_abs(g);
    for (std::size_t j = 0; j < g.size(); ++j)
        BOOST_TEST_REQUIRE(std::abs(g_f[j] - g[j]) <= 1e-4 * scale);
}
