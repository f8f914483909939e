#define BOOST_TEST_MODULE models
#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"
#include "minsharp/models.hpp"

using namespace minsharp;
using minsharp::testing::gradient_error;
using minsharp::testing::random_tensor;

BOOST_AUTO_TEST_CASE(every_zoo_model_has_correct_gradients) {
    for (const auto& name : zoo_names()) {
        auto model = make_model<double>(name, 11);
        Rng rng(12);
        const auto x = random_tensor({2, 1, 28, 28}, rng);
        const std::vector<int> labels{3, 7};
        auto build = [&](Tape<double>& t) {
            return cross_entropy(t, model.forward(t, x), labels);
        };
        BOOST_TEST(gradient_error(build, model.parameters(), rng, 12) <= 1e-6, name);
    }
}

// Sequential::forward fuses conv + relu into one node and drops a flatten before a dense
// layer; the values and every gradient must be those of the layers run one by one, and the
// fused conv node's gradient the one with respect to the convolution's output.
BOOST_AUTO_TEST_CASE(fused_forward_equals_layer_by_layer) {
    for (const std::string name : {"lenet", "small-cnn"}) {
        auto model = make_model<double>(name, 13);
        Rng rng(14);
        const auto x = random_tensor({3, 1, 28, 28}, rng);
        const std::vector<int> labels{1, 5, 9};
        auto run = [&](bool fused) {
            Tape<double> tape;
            NodeId out = tape.input(x);
            if (fused)
                out = model.forward(tape, out);
            else
                for (std::size_t i = 0; i < model.size(); ++i) out = model.layer(i).forward(tape, out);
            model.zero_grad();
            tape.backward(cross_entropy(tape, out, labels));
            std::vector<double> all(tape.value(out).begin(), tape.value(out).end());
            for (auto* p : model.parameters()) all.insert(all.end(), p->grad.begin(), p->grad.end());
            for (NodeId i = 0; i < tape.size(); ++i)  // conv nodes: gradient before the ReLU
                if (tape.node(i).kind == OpKind::Conv2d)
                    all.insert(all.end(), tape.grad(i).begin(), tape.grad(i).end());
            return std::pair{all, tape.size()};
        };
        const auto [fused, fused_nodes] = run(true);
        const auto [plain, plain_nodes] = run(false);
        BOOST_TEST(fused_nodes < plain_nodes, name);
        BOOST_TEST(fused == plain, name << ": fused and layer-by-layer results differ");
    }
}

BOOST_AUTO_TEST_CASE(zoo_shapes_and_names_follow_pytorch) {
    auto lenet = build_model<float>("lenet");
    BOOST_TEST((lenet.output_shape() == ActShape{10, 1, 1}));
    auto& w = lenet.parameter("layer3.weight");
    BOOST_TEST(w.shape == (Shape{84, 5880}), boost::test_tools::per_element());
    BOOST_TEST(lenet.parameter("layer0.weight").shape == (Shape{6, 1, 5, 5}),
               boost::test_tools::per_element());
    BOOST_TEST(build_model<float>("mlp").parameter_count() == 784u * 512 + 512 + 512 * 128 + 128 +
                                                                  128 * 512 + 512 + 512 * 10 + 10);
    BOOST_TEST(build_model<float>("small-cnn").parameter("layer2.weight").shape ==
                   (Shape{10, 320}),
               boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(spec_round_trips_and_errors_name_the_token) {
    const std::string spec = "conv:4:3:stride2:pad1,relu,maxpool:2:2,flatten,dense:7:nobias";
    auto m = build_model<double>(spec);
    BOOST_TEST(m.spec() == spec);
    BOOST_CHECK_EXCEPTION(build_model<float>("flatten,dense:x"), Error, [](const Error& e) {
        return std::string(e.what()).find("'dense:x'") != std::string::npos;
    });
    BOOST_CHECK_EXCEPTION(build_model<float>("resnet"), Error, [](const Error& e) {
        return std::string(e.what()).find("unknown model 'resnet'") != std::string::npos;
    });
    BOOST_CHECK_THROW(build_model<float>("conv:4:40"), ShapeError);
}

BOOST_AUTO_TEST_CASE(initialisation_is_seeded_and_within_pytorch_bounds) {
    auto a = make_model<float>("small-mlp", 5), b = make_model<float>("small-mlp", 5);
    auto c = make_model<float>("small-mlp", 6);
    BOOST_TEST(a.parameters()[0]->value == b.parameters()[0]->value, boost::test_tools::per_element());
    BOOST_TEST(a.parameters()[0]->value != c.parameters()[0]->value);
    const float bound = 1.0f / std::sqrt(784.0f);
    BOOST_TEST(xt::amax(xt::abs(a.parameters()[0]->value))() <= bound);
    BOOST_TEST(xt::amax(xt::abs(a.parameters()[0]->value))() > 0.9f * bound);
}

BOOST_AUTO_TEST_CASE(float_and_double_models_agree) {
    auto f = make_model<float>("small-cnn", 3);
    auto d = convert_model<double>(f);
    Rng rng(4);
    const auto x = random_tensor({3, 1, 28, 28}, rng);
    const Tensor4<float> xf = xt::cast<float>(x);
    const auto yf = f.predict(xf);
    const auto yd = d.predict(x);
    BOOST_TEST(xt::amax(xt::abs(xt::cast<double>(yf) - yd))() < 1e-4);
}
