#define BOOST_TEST_MODULE train
#include <boost/test/unit_test.hpp>

#include "synthetic.hpp"

#include "minsharp/checkpoint.hpp"
#include "minsharp/train.hpp"

#include <filesystem>

using namespace minsharp;
namespace fs = std::filesystem;

namespace {

PreparedData synthetic_data() {
    return {testing::synthetic_dataset(1000, 1, "synthetic/train"),
            testing::synthetic_dataset(200, 2, "synthetic/test"), {}};
}

TrainConfig small_config() {
    TrainConfig c;
    c.model = "small-mlp";
    c.epochs = 5;
    c.batch_size = 64;
    c.sgd = {0.05, 0.9, 1e-5, 1e-3};
    c.seed = 9;
    c.threads = 2;
    return c;
}

fs::path fresh_dir(const std::string& name) {
    const fs::path dir = fs::temp_directory_path() / ("minsharp-train-" + std::to_string(::getpid())) / name;
    fs::remove_all(dir);
    return dir;
}

RunOptions silent{false, false, false};

bool same_weights(const Sequential<float>& a, const Sequential<float>& b) {
    auto pa = a.parameters(), pb = b.parameters();
    for (std::size_t i = 0; i < pa.size(); ++i)
        if (std::memcmp(pa[i]->data(), pb[i]->data(), pa[i]->size() * sizeof(float)) != 0) return false;
    return true;
}

}  // namespace

BOOST_AUTO_TEST_CASE(training_learns_the_synthetic_task_and_writes_its_files) {
    const auto data = synthetic_data();
    const fs::path dir = fresh_dir("learn");
    const auto result = train_run(small_config(), dir, silent, &data);
    BOOST_TEST(result.history.size() == 5u);
    BOOST_TEST(result.history.back().test.accuracy > 0.9);
    BOOST_TEST(result.history.back().train.loss < result.history.front().train.loss);
    for (const char* f : {"config.json", "metrics.jsonl", "checkpoint.safetensors", "model.safetensors"})
        BOOST_TEST(fs::exists(dir / f), f);
    BOOST_TEST(same_weights(load_model<float>(dir / "model.safetensors"), result.model));
}

BOOST_AUTO_TEST_CASE(same_seed_gives_bit_identical_weights_and_another_seed_does_not) {
    const auto data = synthetic_data();
    auto c = small_config();
    const auto a = train_run(c, fresh_dir("a"), silent, &data);
    const auto b = train_run(c, fresh_dir("b"), silent, &data);
    BOOST_TEST(same_weights(a.model, b.model));
    c.seed = 10;
    const auto other = train_run(c, fresh_dir("c"), silent, &data);
    BOOST_TEST(!same_weights(a.model, other.model));
}

BOOST_AUTO_TEST_CASE(resume_equals_an_uninterrupted_run) {
    const auto data = synthetic_data();
    const auto full = train_run(small_config(), fresh_dir("full"), silent, &data);
    const fs::path dir = fresh_dir("resumed");
    auto interrupted = small_config();
    interrupted.epochs = 2;  // as if killed after epoch 2
    train_run(interrupted, dir, silent, &data);
    const auto resumed = train_run(small_config(), dir, {true, false, false}, &data);
    BOOST_TEST(resumed.history.size() == 5u);
    BOOST_TEST(same_weights(full.model, resumed.model));
    BOOST_TEST(resumed.history.back().test.accuracy == full.history.back().test.accuracy);
}

BOOST_AUTO_TEST_CASE(resume_refuses_a_different_config) {
    const auto data = synthetic_data();
    const fs::path dir = fresh_dir("refuse");
    train_run(small_config(), dir, silent, &data);
    auto other = small_config();
    other.sgd.lr = 0.01;
    BOOST_CHECK_EXCEPTION(train_run(other, dir, {true, false, false}, &data), Error,
                          [](const Error& e) { return std::string(e.what()).find("cannot resume") != std::string::npos; });
}

BOOST_AUTO_TEST_CASE(divergence_stops_with_epoch_and_step_and_keeps_the_last_good_state) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.model = "flatten,dense:10";
    c.sgd = {1e38, 0.9, 0, 0};  // logits overflow float within a few steps
    const fs::path dir = fresh_dir("diverge");
    BOOST_CHECK_EXCEPTION(train_run(c, dir, silent, &data), DivergenceError, [](const DivergenceError& e) {
        const std::string m = e.what();
        return m.find("epoch 1") != std::string::npos && m.find("step") != std::string::npos;
    });
    BOOST_TEST(!fs::exists(dir / "model.safetensors"));
}

BOOST_AUTO_TEST_CASE(invalid_configs_name_the_problem) {
    auto c = small_config();
    c.label_noise = 1.5;
    BOOST_CHECK_EXCEPTION(c.validate(), Error, [](const Error& e) { return std::string(e.what()).find("label noise") != std::string::npos; });
    c = small_config();
    c.model = "transformer";
    BOOST_CHECK_EXCEPTION(c.validate(), Error, [](const Error& e) { return std::string(e.what()).find("unknown model") != std::string::npos; });
    c = small_config();
    c.sgd.lr = -1;
    BOOST_CHECK_THROW(c.validate(), Error);
}

BOOST_AUTO_TEST_CASE(config_json_round_trips) {
    auto c = small_config();
    c.label_noise = 0.3;
    c.subset = "random";
    BOOST_TEST(TrainConfig::from_json(c.to_json()).to_json() == c.to_json());
}
