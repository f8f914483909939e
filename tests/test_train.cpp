#define BOOST_TEST_MODULE train
#include <boost/test/unit_test.hpp>

#include "synthetic.hpp"

#include "minsharp/core/blas_core.hpp"
#include "minsharp/core/cpu.hpp"
#include "minsharp/core/numerics.hpp"
#include "minsharp/core/simd.hpp"
#include "minsharp/io/checkpoint.hpp"
#include "minsharp/io/files.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/sharpness/measures.hpp"
#include "minsharp/train/training.hpp"

#include <cstring>
#include <filesystem>
#include <limits>
#include <sstream>

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

RunOptions silent{.progress = false, .log = false};

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
    // config.json reads back as the config, and names the kernels that did the rounding.
    const auto config = nlohmann::json::parse(read_file(dir / "config.json"));
    BOOST_TEST(TrainConfig::from_json(config).to_json() == small_config().to_json());
    BOOST_TEST(config.at("numerics") == numerics_json());
    BOOST_TEST(numerics_text(config) == "OpenBLAS " + blas_core_name() + ", minsharp " +
                                            std::string(simd_isa()) + " kernels, CPU " + isa_level());
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
    const auto resumed = train_run(small_config(), dir, {.resume = true, .progress = false, .log = false}, &data);
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
    BOOST_CHECK_EXCEPTION(train_run(other, dir, {.resume = true, .progress = false, .log = false}, &data), Error,
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

// ---- run folders never mix runs ---------------------------------------------------------

namespace {

bool message_has(const std::exception& e, const std::string& word) {
    return std::string(e.what()).find(word) != std::string::npos;
}

RunOptions resume_options() {
    RunOptions o = silent;
    o.resume = true;
    return o;
}

RunOptions force_options() {
    RunOptions o = silent;
    o.force = true;
    return o;
}

std::size_t line_count(const fs::path& file) {
    std::istringstream in(read_file(file));
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) n += !line.empty();
    return n;
}

// Rewrites the checkpoint with one metadata entry changed (or removed when value is empty).
void edit_checkpoint_metadata(const fs::path& file, const std::string& key, const std::string& value) {
    Safetensors state = read_safetensors(file);
    if (value.empty())
        state.metadata.erase(key);
    else
        state.metadata[key] = value;
    write_safetensors(file, state);
}

}  // namespace

BOOST_AUTO_TEST_CASE(non_finite_evaluation_is_a_divergence_not_a_metrics_line) {
    auto data = synthetic_data();
    data.test.images(0, 0, 0, 0) = std::numeric_limits<float>::quiet_NaN();
    const fs::path dir = fresh_dir("nan-eval");
    auto c = small_config();
    c.model = "flatten,dense:10";  // no ReLU, which would turn a NaN pre-activation into 0
    c.epochs = 1;
    BOOST_CHECK_EXCEPTION(train_run(c, dir, silent, &data), DivergenceError, [](const DivergenceError& e) {
        return message_has(e, "epoch 1") && message_has(e, "test loss");
    });
    BOOST_TEST(!fs::exists(dir / "metrics.jsonl"));
    BOOST_TEST(!fs::exists(dir / "model.safetensors"));
}

BOOST_AUTO_TEST_CASE(a_folder_holding_a_run_is_refused_without_resume_or_force) {
    const auto data = synthetic_data();
    const fs::path dir = fresh_dir("refuse-rerun");
    auto c = small_config();
    c.epochs = 2;
    train_run(c, dir, silent, &data);
    BOOST_CHECK_EXCEPTION(train_run(c, dir, silent, &data), Error, [](const Error& e) {
        return message_has(e, "already holds a run") && message_has(e, "--force") &&
               message_has(e, "--resume");
    });
    RunOptions both = force_options();
    both.resume = true;
    BOOST_CHECK_EXCEPTION(train_run(c, dir, both, &data), Error,
                          [](const Error& e) { return message_has(e, "exclude each other"); });
}

BOOST_AUTO_TEST_CASE(force_clears_the_old_run_so_a_failed_rerun_leaves_no_old_model) {
    const auto data = synthetic_data();
    const fs::path dir = fresh_dir("force");
    auto c = small_config();
    c.epochs = 2;
    train_run(c, dir, silent, &data);
    auto diverging = c;
    diverging.model = "flatten,dense:10";
    diverging.sgd = {1e38, 0.9, 0, 0};
    BOOST_CHECK_THROW(train_run(diverging, dir, force_options(), &data), DivergenceError);
    BOOST_TEST(!fs::exists(dir / "model.safetensors"));
    BOOST_TEST(!fs::exists(dir / "checkpoint.safetensors"));
    BOOST_TEST(TrainConfig::from_json(nlohmann::json::parse(read_file(dir / "config.json"))).model ==
               diverging.model);
    // --force again with a good config: a complete run of it alone.
    const auto again = train_run(c, dir, force_options(), &data);
    BOOST_TEST(line_count(dir / "metrics.jsonl") == 2u);
    BOOST_TEST(same_weights(load_model<float>(dir / "model.safetensors"), again.model));
}

BOOST_AUTO_TEST_CASE(resume_needs_a_checkpoint) {
    const auto data = synthetic_data();
    const fs::path empty = fresh_dir("resume-nothing");
    RunOptions strict = resume_options();
    strict.require_checkpoint = true;
    BOOST_CHECK_EXCEPTION(train_run(small_config(), empty, strict, &data), Error,
                          [](const Error& e) { return message_has(e, "checkpoint.safetensors"); });
    BOOST_TEST(!fs::exists(empty / "config.json"));
    // A run that stopped before its first checkpoint: refused when a checkpoint is required;
    // otherwise (the experiment runner) it starts over, without the old lines.
    const fs::path dir = fresh_dir("resume-no-checkpoint");
    auto c = small_config();
    c.epochs = 2;
    train_run(c, dir, silent, &data);
    fs::remove(dir / "checkpoint.safetensors");
    fs::remove(dir / "model.safetensors");
    BOOST_CHECK_EXCEPTION(train_run(c, dir, strict, &data), Error,
                          [](const Error& e) { return message_has(e, "cannot resume"); });
    c.epochs = 1;
    train_run(c, dir, resume_options(), &data);
    BOOST_TEST(line_count(dir / "metrics.jsonl") == 1u);
}

BOOST_AUTO_TEST_CASE(resume_with_fewer_epochs_is_refused_and_equal_epochs_is_finished) {
    const auto data = synthetic_data();
    const fs::path dir = fresh_dir("resume-epochs");
    auto c = small_config();
    c.epochs = 3;
    const auto full = train_run(c, dir, silent, &data);
    const std::string config_before = read_file(dir / "config.json");
    const std::string model_before = read_file(dir / "model.safetensors");
    auto shorter = c;
    shorter.epochs = 2;
    BOOST_CHECK_EXCEPTION(train_run(shorter, dir, resume_options(), &data), Error, [](const Error& e) {
        return message_has(e, "epoch 3") && message_has(e, "--epochs 2");
    });
    const auto same = train_run(c, dir, resume_options(), &data);
    BOOST_TEST(same.already_finished);
    BOOST_TEST(same.history.size() == 3u);
    BOOST_TEST(same_weights(same.model, full.model));
    BOOST_TEST(read_file(dir / "config.json") == config_before);
    BOOST_TEST(read_file(dir / "model.safetensors") == model_before);
}

BOOST_AUTO_TEST_CASE(resume_with_more_epochs_trains_further_like_one_longer_run) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 4;
    const auto longer = train_run(c, fresh_dir("longer"), silent, &data);
    const fs::path dir = fresh_dir("extended");
    auto first = c;
    first.epochs = 2;
    train_run(first, dir, silent, &data);
    const auto extended = train_run(c, dir, resume_options(), &data);
    BOOST_TEST(!extended.already_finished);
    BOOST_TEST(same_weights(extended.model, longer.model));
    BOOST_TEST(line_count(dir / "metrics.jsonl") == 4u);
    const auto saved = nlohmann::json::parse(read_safetensors(dir / "model.safetensors").metadata.at("minsharp.config"));
    BOOST_TEST(saved.at("epochs").get<int>() == 4);
}

BOOST_AUTO_TEST_CASE(failed_resume_drops_lines_after_the_checkpoint_and_the_older_model) {
    auto data = synthetic_data();
    const fs::path dir = fresh_dir("failed-resume");
    auto c = small_config();
    c.model = "flatten,dense:10";  // no ReLU: the Inf input below reaches the loss
    c.epochs = 2;
    train_run(c, dir, silent, &data);
    // A line of an attempt that got past the checkpoint and then failed.
    write_file_atomic(dir / "metrics.jsonl",
                      read_file(dir / "metrics.jsonl") +
                          R"({"epoch":3,"steps":48,"lr":0.05,"batch_loss":0.1,"seconds":1,"train_loss":null})" "\n");
    c.epochs = 5;
    data.train.images(0, 0, 0, 0) = std::numeric_limits<float>::infinity();  // diverges at once
    BOOST_CHECK_THROW(train_run(c, dir, resume_options(), &data), DivergenceError);
    BOOST_TEST(line_count(dir / "metrics.jsonl") == 2u);
    BOOST_TEST(!fs::exists(dir / "model.safetensors"));  // a 2-epoch model beside a 5-epoch config
    BOOST_TEST(fs::exists(dir / "checkpoint.safetensors"));
}

BOOST_AUTO_TEST_CASE(checkpoint_metadata_is_parsed_strictly) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 1;
    const auto expect_refusal = [&](const std::string& key, const std::string& value,
                                    const std::string& words) {
        const fs::path dir = fresh_dir("metadata");
        train_run(c, dir, silent, &data);
        edit_checkpoint_metadata(dir / "checkpoint.safetensors", key, value);
        auto more = c;
        more.epochs = 3;
        BOOST_CHECK_EXCEPTION(train_run(more, dir, resume_options(), &data), Error,
                              [&](const Error& e) { return message_has(e, words); });
    };
    expect_refusal("minsharp.config", "", "has no minsharp.config (not written by minsharp train?)");
    expect_refusal("minsharp.epoch", "", "has no minsharp.epoch");
    expect_refusal("minsharp.epoch", "abc", "minsharp.epoch 'abc' is not a non-negative integer");
    expect_refusal("minsharp.epoch", "-5", "minsharp.epoch '-5' is not a non-negative integer");
    expect_refusal("minsharp.steps", "7", "minsharp.steps 7");
    expect_refusal("minsharp.config", "{\"model\":1}", "minsharp.config is not a training config");
}

BOOST_AUTO_TEST_CASE(an_unwritable_output_folder_fails_before_training) {
    const auto data = synthetic_data();
    const fs::path base = fresh_dir("unwritable");
    fs::create_directories(base);
    write_file_atomic(base / "file", "not a folder");
    BOOST_CHECK_EXCEPTION(train_run(small_config(), base / "file" / "run", silent, &data), IoError,
                          [](const IoError& e) { return message_has(e, "is not a folder"); });
    BOOST_CHECK_EXCEPTION(train_run(small_config(), base / "file", silent, &data), Error,
                          [](const Error& e) { return message_has(e, "not a folder"); });
}

// ---- sharpness during training ---------------------------------------------------------------

namespace {

RunOptions tracking(const std::string& measures, const std::string& every, std::size_t inputs,
                    bool resume = false) {
    RunOptions o = silent;
    o.resume = resume;
    o.track.measures = measures;
    o.track.interval = TrackInterval::parse(every);
    o.track.inputs = inputs;
    return o;
}

struct MetricsFile {
    std::vector<nlohmann::json> epochs, points;
    std::vector<std::string> kinds;  // line by line: "epoch" or "track"
};

// Without the wall times, which differ between executions.
MetricsFile read_metrics_file(const fs::path& file) {
    MetricsFile m;
    std::istringstream in(read_file(file));
    for (std::string line; std::getline(in, line);) {
        auto j = nlohmann::json::parse(line);
        j.erase("seconds");
        const bool point = j.value("kind", "") == "track";
        m.kinds.push_back(point ? "track" : "epoch");
        (point ? m.points : m.epochs).push_back(j);
    }
    return m;
}

double measured(Sequential<float>& model, const Dataset& train, std::size_t n,
                sharpness::Measure measure) {
    Sequential<double> copy = convert_model<double>(model);
    std::vector<std::size_t> first(n);
    for (std::size_t i = 0; i < n; ++i) first[i] = i;
    Tensor4<float> x;
    sharpness::Batch<double> batch;
    gather_batch(train, first.data(), n, x, batch.y);
    batch.x = xt::cast<double>(x);
    const auto report = sharpness::measure_sharpness(copy, batch, {measure});
    return measure == sharpness::Measure::Trace ? *report.trace : report.ms->value;
}

}  // namespace

BOOST_AUTO_TEST_CASE(track_intervals_parse_and_bad_ones_name_the_problem) {
    const auto steps = TrackInterval::parse("100steps");
    BOOST_TEST(steps.every == 100u);
    BOOST_TEST((steps.unit == TrackInterval::Unit::Steps));
    BOOST_TEST((TrackInterval::parse("1 epoch").unit == TrackInterval::Unit::Epochs));
    BOOST_TEST(TrackInterval::parse("3epochs").to_string() == "3epochs");
    const auto refused = [](const std::string& text, const std::string& words) {
        BOOST_CHECK_EXCEPTION(TrackInterval::parse(text), Error,
                              [&](const Error& e) { return message_has(e, words); });
    };
    refused("5", "lacks a unit");
    refused("steps", "lacks a count");
    refused("5weeks", "unknown unit 'weeks'");
    refused("0steps", "not a whole number in [1,");
    refused("-1epochs", "lacks a count");
    refused("2.5epochs", "unknown unit '.5epochs'");
    TrackOptions unknown;
    unknown.measures = "trace,sharpest";
    BOOST_CHECK_EXCEPTION(unknown.validate(), Error,
                          [](const Error& e) { return message_has(e, "unknown measure 'sharpest'"); });
    TrackOptions no_inputs;
    no_inputs.measures = "trace";
    no_inputs.inputs = 0;
    BOOST_CHECK_THROW(no_inputs.validate(), Error);
    const auto data = synthetic_data();
    BOOST_CHECK_THROW(train_run(small_config(), fresh_dir("bad-track"),
                                tracking("nothing", "1epochs", 10), &data), Error);
}

BOOST_AUTO_TEST_CASE(tracking_leaves_training_bit_identical_and_writes_a_line_per_point) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 3;  // 1000 images, batch 64: 16 steps per epoch
    const fs::path plain_dir = fresh_dir("untracked"), tracked_dir = fresh_dir("tracked");
    const auto plain = train_run(c, plain_dir, silent, &data);
    const auto tracked = train_run(c, tracked_dir, tracking("trace,ms,hutchinson", "7steps", 50), &data);
    BOOST_TEST(same_weights(plain.model, tracked.model));
    BOOST_TEST(read_file(plain_dir / "model.safetensors") == read_file(tracked_dir / "model.safetensors"));
    const auto p = read_metrics_file(plain_dir / "metrics.jsonl");
    const auto t = read_metrics_file(tracked_dir / "metrics.jsonl");
    BOOST_TEST(p.epochs == t.epochs, boost::test_tools::per_element());  // epoch lines unchanged
    // Step 0 and every 7th of the 48 steps; each point before the line of its epoch.
    const std::vector<std::uint64_t> expected{0, 7, 14, 21, 28, 35, 42};
    BOOST_TEST_REQUIRE(t.points.size() == expected.size());
    BOOST_TEST_REQUIRE(tracked.tracked.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const auto& point = t.points[i];
        BOOST_TEST(point.at("step").get<std::uint64_t>() == expected[i]);
        BOOST_TEST(point.at("epoch").get<int>() == int((expected[i] + 15) / 16));
        BOOST_TEST(point.at("inputs").get<int>() == 50);
        BOOST_TEST(point.at("lr").get<double>() == 0.05 / (1 + 1e-3 * double(expected[i])));
        for (const char* key : {"trace", "ms", "hutchinson"}) BOOST_TEST(point.at(key).is_number(), key);
        BOOST_TEST(*tracked.tracked[i].value("trace") == point.at("trace").get<double>());
    }
    // Steps 0, 7, 14 | epoch 1 (steps 1-16) | 21, 28 | epoch 2 | 35, 42 | epoch 3.
    const std::vector<std::string> order{"track", "track", "track", "epoch", "track",
                                         "track", "epoch", "track", "track", "epoch"};
    BOOST_TEST(t.kinds == order, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(a_tracked_point_equals_the_measures_of_the_model_at_that_epoch) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 4;
    const auto run = train_run(c, fresh_dir("track-epochs"), tracking("trace,ms", "2epochs", 100), &data);
    BOOST_TEST_REQUIRE(run.tracked.size() == 3u);  // before training, after epochs 2 and 4
    auto shorter = c;
    shorter.epochs = 2;
    auto at_epoch_2 = train_run(shorter, fresh_dir("two-epochs"), silent, &data);
    const auto& point = run.tracked[1];
    BOOST_TEST(point.epoch == 2);
    BOOST_TEST(point.step == 2 * 16u);
    BOOST_TEST(*point.value("trace") == measured(at_epoch_2.model, data.train, 100, sharpness::Measure::Trace));
    BOOST_TEST(*point.value("ms") == measured(at_epoch_2.model, data.train, 100, sharpness::Measure::Ms));
    auto start = make_model<float>(c.model, derive_seed(c.seed, 0));
    BOOST_TEST(*run.tracked[0].value("trace") == measured(start, data.train, 100, sharpness::Measure::Trace));
    BOOST_TEST(!point.value("lambda-max").has_value());  // not asked for
}

BOOST_AUTO_TEST_CASE(resume_keeps_the_points_up_to_the_checkpoint_and_drops_the_rest) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 4;
    const auto options = tracking("trace", "1epochs", 30);
    const fs::path full_dir = fresh_dir("track-full"), dir = fresh_dir("track-resumed");
    train_run(c, full_dir, options, &data);
    auto first = c;
    first.epochs = 2;
    train_run(first, dir, options, &data);
    // What a killed attempt past the checkpoint leaves: a point and an epoch line of epoch 3
    // and a line cut short while it was appended.
    const std::string metrics = read_file(dir / "metrics.jsonl");
    write_file_atomic(dir / "metrics.jsonl",
                      metrics + R"({"kind":"track","epoch":3,"step":40,"lr":0.05,"inputs":30,"seconds":0,"trace":1})" "\n" +
                          R"({"epoch":3,"steps":48,"lr":0.05,"batch_loss":0.1,"seconds":1})" "\n" +
                          R"({"kind":"track","epoch":3,"st)");
    auto resumed_options = tracking("trace", "1epochs", 30, true);
    const auto resumed = train_run(c, dir, resumed_options, &data);
    BOOST_TEST(resumed.tracked.size() == 5u);
    const auto a = read_metrics_file(full_dir / "metrics.jsonl");
    const auto b = read_metrics_file(dir / "metrics.jsonl");
    BOOST_TEST(a.kinds == b.kinds, boost::test_tools::per_element());
    BOOST_TEST(a.points == b.points, boost::test_tools::per_element());
    BOOST_TEST(a.epochs == b.epochs, boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(batch_size_of_the_whole_set_with_no_momentum_is_full_batch_gradient_descent) {
    const auto data = synthetic_data();
    auto c = small_config();
    c.epochs = 1;
    c.batch_size = data.train.size();
    c.sgd = {0.1, 0.0, 0.0, 0.0};
    const auto run = train_run(c, fresh_dir("full-batch"), silent, &data);
    BOOST_TEST(run.history.back().steps == 1u);
    // θ₁ = θ₀ − η ∇L(θ₀), L the mean cross-entropy over all training images, in double.
    auto start = make_model<double>(c.model, derive_seed(c.seed, 0));
    Tape<double> tape;
    const Tensor4<double> x = xt::cast<double>(data.train.images);
    const NodeId loss = cross_entropy(tape, start.forward(tape, x), data.train.labels);
    start.zero_grad();
    tape.backward(loss);
    double worst = 0, scale = 0;
    const auto before = start.parameters();
    const auto after = run.model.parameters();
    for (std::size_t i = 0; i < before.size(); ++i)
        for (std::size_t k = 0; k < before[i]->size(); ++k) {
            const double expected = before[i]->value.data()[k] - 0.1 * before[i]->grad.data()[k];
            worst = std::max(worst, std::abs(double(after[i]->value.data()[k]) - expected));
            scale = std::max(scale, std::abs(expected));
        }
    BOOST_TEST(worst / scale < 1e-6);  // float training against the double step
}
