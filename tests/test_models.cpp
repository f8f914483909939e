#define BOOST_TEST_MODULE models
#include <boost/test/unit_test.hpp>

#include "gradcheck.hpp"
#include "synthetic.hpp"

#include "minsharp/nn/models.hpp"
#include "minsharp/ops/avg_pool2d.hpp"
#include "minsharp/train/training.hpp"

#include <chrono>

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

// ---- limits (docs/limits.md) ----------------------------------------------------------

namespace {

// The model build throws Error whose message contains every one of `needles`.
void expect_spec_error(const std::string& spec, std::vector<std::string> needles,
                       ActShape input = mnist_input) {
    try {
        build_model<float>(spec, input);
        BOOST_ERROR("accepted: " << spec);
    } catch (const Error& e) {
        for (const auto& needle : needles)
            BOOST_TEST(std::string(e.what()).find(needle) != std::string::npos,
                       spec << ": message '" << e.what() << "' lacks '" << needle << "'");
    }
}

}  // namespace

// A padding of 2^31 − 14 made the conv output extent 2^32 and the size products wrap to 0:
// im2col then wrote out of bounds.
BOOST_AUTO_TEST_CASE(huge_padding_is_rejected_not_wrapped) {
    expect_spec_error("conv:1:1:pad2147483634", {"'conv:1:1:pad2147483634'", "padding", "[0, 0]"});
    // 2^63: 2·padding wrapped to 0 and the model trained as pad 0, saving the huge pad.
    expect_spec_error("conv:2:5:pad9223372036854775808",
                      {"padding", "'9223372036854775808'", "[0, 4]"});
    BOOST_CHECK_THROW(Conv2d<float>(1, 2, 5, 1, std::size_t(1) << 63), Error);
}

// 2^60 out features: the weight count wrapped to 0 and training overflowed the heap.
BOOST_AUTO_TEST_CASE(huge_layers_are_rejected_before_allocation) {
    expect_spec_error("flatten,dense:1152921504606846976:nobias",
                      {"out features", "'1152921504606846976'", "[1, 1048576]"});
    BOOST_CHECK_THROW(Dense<float>(784, std::size_t(1) << 60), Error);
    // Within the feature bound, but 784 × 2^20 weights are above the layer limit.
    expect_spec_error("flatten,dense:1048576", {"dense: weight count", "822083584", "268435456"});
    expect_spec_error("conv:1048576:64", {"conv: weight count", "above the limit"},
                      ActShape{1, 64, 64});
}

BOOST_AUTO_TEST_CASE(input_shape_overflow_names_the_shape) {
    expect_spec_error("flatten,dense:10", {"model input shape (1, 4294967296, 4294967296)"},
                      ActShape{1, std::size_t(1) << 32, std::size_t(1) << 32});
    expect_spec_error("flatten,dense:10", {"model input shape (1, 16384, 16384)", "134217728"},
                      ActShape{1, 16384, 16384});
    expect_spec_error("flatten,dense:10", {"model input shape (0, 28, 28)", "positive"},
                      ActShape{0, 28, 28});
    BOOST_CHECK_THROW((ActShape{std::size_t(1) << 32, std::size_t(1) << 32, 1}.size()), Error);
}

// Input, outputs and the im2col matrix of one example: 64 output planes of 1024² fit, 128
// do not (2^27 elements).
BOOST_AUTO_TEST_CASE(activations_per_example_are_bounded) {
    const ActShape big{1, 1024, 1024};
    BOOST_TEST(build_model<float>("conv:64:3:pad1", big).example_elements() ==
               (1u << 20) + (64u << 20) + (9u << 20));
    expect_spec_error("conv:128:3:pad1", {"layer 0 'conv:128:3:pad1'", "134217728"}, big);
}

BOOST_AUTO_TEST_CASE(spec_numbers_are_plain_digits_within_bounds) {
    for (const std::string bad : {"dense:+5", "dense: 5", "dense:5 ", "dense:1e3", "dense:010",
                                  "dense:-1", "dense:0", "dense:0x10", "dense:",
                                  "dense:18446744073709551616"})
        expect_spec_error("flatten," + bad, {"'" + bad + "'", "out features", "whole number"});
    expect_spec_error("conv:2:65", {"kernel", "[1, 64]"});
    expect_spec_error("conv:2:5:stride0", {"stride", "[1, 64]"});
    expect_spec_error("conv:2:5:stride65", {"stride", "[1, 64]"});
    expect_spec_error("conv:2:5:pad5", {"padding", "[0, 4]"});
    expect_spec_error("conv:2:5:pad-1", {"padding", "'-1'"});
    expect_spec_error("maxpool:65:2", {"kernel", "[1, 64]"});
    expect_spec_error("maxpool:2:0", {"stride", "[1, 64]"});
    expect_spec_error("avgpool:65:2", {"kernel", "[1, 64]"});
    expect_spec_error("avgpool:2:0", {"stride", "[1, 64]"});
    expect_spec_error("avgpool:2", {"expected avgpool:K:S"});
    expect_spec_error("avgpool:2:2:pad1", {"expected avgpool:K:S"});
    expect_spec_error("conv:2:5:pad1:pad2", {"'pad' given twice"});
    expect_spec_error("flatten,dense:10:nobias:nobias", {"'nobias' given twice"});
    expect_spec_error("flatten,dense:10:stride2", {"unknown option 'stride2'"});
    // At the bounds, and the canonical forms, are accepted and round-trip.
    const std::string edge = "conv:3:64:stride64:pad63,flatten,dense:1048576:nobias";
    BOOST_TEST(build_model<float>(edge, ActShape{1, 64, 64}).spec() == edge);
    BOOST_TEST(build_model<float>("conv:2:5:stride1:pad0").spec() == "conv:2:5");
}

// 100,000 relu tokens took 20 s to reject; the length and layer limits reject at once.
BOOST_AUTO_TEST_CASE(long_specs_are_rejected_at_once) {
    std::string relus = "relu";
    for (int i = 1; i < 100000; ++i) relus += ",relu";
    const auto start = std::chrono::steady_clock::now();
    expect_spec_error(relus, {"model spec: length in characters is 499999", "4096"});
    const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    BOOST_TEST(took.count() < 1.0);
    std::string layers = "relu";
    for (std::size_t i = 1; i < limits::max_layers + 1; ++i) layers += ",relu";
    expect_spec_error(layers, {"model spec: layer count is 257", "256"});
    Sequential<float> model(mnist_input);
    for (std::size_t i = 0; i < limits::max_layers; ++i) model.add(std::make_unique<ReLU<float>>());
    BOOST_CHECK_THROW(model.add(std::make_unique<ReLU<float>>()), Error);
}

// avgpool:K:S builds the layer, round-trips, has the gradients of finite differences inside
// a network, and trains: one SGD step on a synthetic batch lowers the batch's loss.
BOOST_AUTO_TEST_CASE(avgpool_spec_builds_a_model_that_trains) {
    const std::string spec = "conv:3:5,relu,avgpool:2:2,conv:4:3,avgpool:3:1,flatten,dense:10";
    auto model = make_model<double>(spec, 21);
    BOOST_TEST(model.spec() == spec);
    BOOST_TEST((model.layer(2).kind() == LayerKind::AvgPool2d));
    BOOST_TEST((model.shape_before(3) == ActShape{3, 12, 12}));
    BOOST_TEST((model.shape_before(5) == ActShape{4, 8, 8}));
    Rng rng(22);
    const auto x = random_tensor({2, 1, 28, 28}, rng);
    const std::vector<int> labels{4, 8};
    auto build = [&](Tape<double>& t) { return cross_entropy(t, model.forward(t, x), labels); };
    BOOST_TEST(gradient_error(build, model.parameters(), rng, 12) <= 1e-6);

    Sequential<float> trained = make_model<float>(spec, 23);
    const Dataset data = testing::synthetic_dataset(64, 24, "synthetic/avgpool");
    TrainConfig config;
    config.model = spec;
    config.epochs = 1;
    config.batch_size = 64;
    config.sgd.lr = 0.05;
    auto batch_loss = [&] {
        Tape<float> tape;
        return tape.value(cross_entropy(tape, trained.forward(tape, data.images), data.labels))(
            0, 0, 0, 0);
    };
    const float before = batch_loss();
    Trainer trainer(trained, data, config);
    const double step_loss = trainer.train_epoch(1);
    BOOST_TEST(step_loss == before, boost::test_tools::tolerance(1e-5));
    BOOST_TEST(batch_loss() < before);
}
