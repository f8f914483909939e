#include "minsharp/train/training.hpp"

#include "minsharp/io/checkpoint.hpp"
#include "minsharp/core/clock.hpp"
#include "minsharp/core/numerics.hpp"
#include "minsharp/nn/models.hpp"
#include "minsharp/core/parallel.hpp"
#include "minsharp/core/progress.hpp"
#include "minsharp/sharpness/measures.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <utility>

namespace minsharp {

namespace {

// Independent random streams derived from the user's seed.
// The tracking stream seeds only the probes of sampled measures (Hutchinson); it is never
// drawn from by training.
enum Stream : std::uint64_t {
    init_stream = 0,
    subset_stream = 1,
    noise_stream = 2,
    track_stream = 3,
    shuffle_stream = 100
};

constexpr const char* meta_epoch = "minsharp.epoch";
constexpr const char* meta_steps = "minsharp.steps";
constexpr const char* meta_config = "minsharp.config";
constexpr const char* velocity_prefix = "optim.velocity.";

void require(bool ok, const std::string& what) {
    if (!ok) throw Error("training config: " + what);
}


// Settings that may differ between an interrupted run and its resumption: epochs (a run may
// be trained further) and settings that do not change what is trained (the thread count
// changes only the rounding of float sums; the experiment runner plans it per machine).
nlohmann::json resumable_part(const TrainConfig& c) {
    nlohmann::json j = c.to_json();
    for (const char* key : {"epochs", "threads", "eval_every", "checkpoint_every"}) j.erase(key);
    return j;
}

// config.json: the settings, and the numerics that decide the rounding on this machine (the
// same seed trains a different network under another OpenBLAS kernel set).
nlohmann::json config_record(const TrainConfig& c) {
    nlohmann::json j = c.to_json();
    j["numerics"] = numerics_json();
    return j;
}

}  // namespace

// ---- config ---------------------------------------------------------------------------

void TrainConfig::validate() const {
    require(dataset == "mnist" || dataset == "fashion-mnist",
            "unknown dataset '" + dataset + "' (mnist or fashion-mnist)");
    require(subset == "first" || subset == "random",
            "subset must be 'first' or 'random', got '" + subset + "'");
    require(label_noise >= 0 && label_noise <= 1,
            "label noise must be in [0, 1], got " + std::to_string(label_noise));
    require(epochs > 0, "epochs must be positive, got " + std::to_string(epochs));
    require(batch_size > 0, "batch size must be positive");
    require(threads >= 0, "threads must be >= 0 (0: all cores)");
    require(eval_every > 0, "eval-every must be positive");
    require(checkpoint_every > 0, "checkpoint-every must be positive");
    sgd.validate();
    build_model<float>(model);  // throws a clear error for an unknown model or bad spec
}

nlohmann::json TrainConfig::to_json() const {
    return {{"model", model},       {"dataset", dataset},       {"data_dir", data_dir},
            {"train_size", train_size}, {"subset", subset},     {"test_size", test_size},
            {"label_noise", label_noise}, {"epochs", epochs},   {"batch_size", batch_size},
            {"lr", sgd.lr},         {"momentum", sgd.momentum}, {"weight_decay", sgd.weight_decay},
            {"lr_decay", sgd.lr_decay}, {"seed", seed},         {"threads", threads},
            {"eval_every", eval_every}, {"checkpoint_every", checkpoint_every}};
}

TrainConfig TrainConfig::from_json(const nlohmann::json& j) {
    TrainConfig c;
    c.model = j.at("model");
    c.dataset = j.at("dataset");
    c.data_dir = j.value("data_dir", "");
    c.train_size = j.at("train_size");
    c.subset = j.value("subset", "first");
    c.test_size = j.value("test_size", std::size_t(0));
    c.label_noise = j.at("label_noise");
    c.epochs = j.at("epochs");
    c.batch_size = j.at("batch_size");
    c.sgd.lr = j.at("lr");
    c.sgd.momentum = j.at("momentum");
    c.sgd.weight_decay = j.at("weight_decay");
    c.sgd.lr_decay = j.at("lr_decay");
    c.seed = j.at("seed");
    c.threads = j.value("threads", 0);
    c.eval_every = j.value("eval_every", 1);
    c.checkpoint_every = j.value("checkpoint_every", 1);
    return c;
}

nlohmann::json EpochMetrics::to_json() const {
    nlohmann::json j = {{"epoch", epoch}, {"steps", steps}, {"lr", lr},
                        {"batch_loss", batch_loss}, {"seconds", seconds}};
    if (evaluated) {
        j["train_loss"] = train.loss;
        j["train_accuracy"] = train.accuracy;
        j["test_loss"] = test.loss;
        j["test_accuracy"] = test.accuracy;
    }
    return j;
}

// ---- tracking: settings and points ----------------------------------------------------

TrackInterval TrackInterval::parse(std::string_view text) {
    const std::string given(text);
    const std::size_t digits = text.find_first_not_of("0123456789");
    const std::string_view number = text.substr(0, digits);
    std::string_view unit = digits == std::string_view::npos ? std::string_view{} : text.substr(digits);
    while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
    const std::string usage = " (expected a count and a unit, e.g. 5epochs or 100steps)";
    if (number.empty() || unit.empty())
        throw Error("track interval '" + given + "' lacks " +
                    (number.empty() ? "a count" : "a unit") + usage);
    TrackInterval interval;
    if (unit == "epoch" || unit == "epochs")
        interval.unit = Unit::Epochs;
    else if (unit == "step" || unit == "steps")
        interval.unit = Unit::Steps;
    else
        throw Error("track interval '" + given + "': unknown unit '" + std::string(unit) + "'" +
                    usage);
    try {
        interval.every = parse_whole_number(number, "track interval count", 1,
                                            std::numeric_limits<std::uint32_t>::max());
    } catch (const Error& e) {
        throw Error("track interval '" + given + "': " + e.what() + usage);
    }
    return interval;
}

std::string TrackInterval::to_string() const {
    return std::to_string(every) + (unit == Unit::Epochs ? "epochs" : "steps");
}

void TrackOptions::validate() const {
    if (!enabled()) return;
    sharpness::parse_measures(measures);  // throws naming the unknown measure and the valid ones
    if (interval.every == 0) throw Error("track interval must be at least 1");
    if (inputs == 0) throw Error("tracking needs at least 1 input (--track-n)");
}

namespace {

// The keys of a track line besides its measures.
constexpr const char* track_keys[] = {"kind", "epoch", "step", "lr", "inputs", "seconds"};

std::string measure_key(std::string_view name) {
    std::string key(name);
    std::replace(key.begin(), key.end(), '-', '_');
    return key;
}

}  // namespace

std::optional<double> TrackPoint::value(std::string_view measure) const {
    const std::string key = measure_key(measure);
    if (!values.contains(key) || !values.at(key).is_number()) return std::nullopt;
    return values.at(key).get<double>();
}

nlohmann::json TrackPoint::to_json() const {
    nlohmann::json j = values;
    j["kind"] = "track";
    j["epoch"] = epoch;
    j["step"] = step;
    j["lr"] = lr;
    j["inputs"] = inputs;
    j["seconds"] = seconds;
    return j;
}

TrackPoint TrackPoint::from_json(const nlohmann::json& j) {
    TrackPoint p;
    p.epoch = j.at("epoch");
    p.step = j.at("step");
    p.lr = j.at("lr");
    p.inputs = j.at("inputs");
    p.seconds = j.at("seconds");
    for (const auto& [key, value] : j.items())
        if (std::find(std::begin(track_keys), std::end(track_keys), key) == std::end(track_keys))
            p.values[key] = value;
    return p;
}

// ---- data -----------------------------------------------------------------------------

PreparedData prepare_data(const TrainConfig& config) {
    DatasetSplit split =
        load_dataset(config.dataset, data_dir_or_default(config.dataset, config.data_dir));
    PreparedData out{std::move(split.train), std::move(split.test), {}};
    if (config.train_size > 0 && config.train_size != out.train.size()) {
        Rng rng(derive_seed(config.seed, subset_stream));
        out.train = config.subset == "random" ? subset_random(out.train, config.train_size, rng)
                                              : subset_first(out.train, config.train_size);
    }
    if (config.test_size > 0 && config.test_size != out.test.size())
        out.test = subset_first(out.test, config.test_size);
    Rng noise(derive_seed(config.seed, noise_stream));
    out.noisy_indices = apply_label_noise(out.train, config.label_noise, noise);
    return out;
}

// ---- evaluation -----------------------------------------------------------------------

template <class T>
Evaluation evaluate(Sequential<T>& model, const Dataset& data, std::size_t batch) {
    if (data.size() == 0) throw Error("evaluate: dataset '" + data.name + "' is empty");
    Tape<T> tape;
    Tensor4<float> xf;
    Tensor4<T> x;
    std::vector<int> y;
    std::vector<std::size_t> indices(batch);
    double loss = 0;
    std::size_t correct = 0;
    for (std::size_t first = 0; first < data.size(); first += batch) {
        const std::size_t count = std::min(batch, data.size() - first);
        for (std::size_t i = 0; i < count; ++i) indices[i] = first + i;
        gather_batch(data, indices.data(), count, xf, y);
        if constexpr (std::is_same_v<T, float>) {
            tape.clear();
            model.forward(tape, xf);
        } else {
            x = xt::cast<T>(xf);
            tape.clear();
            model.forward(tape, x);
        }
        const NodeId logits = tape.last();
        loss += double(tape.value(cross_entropy(tape, logits, y))(0, 0, 0, 0)) * double(count);
        const auto& z = tape.value(logits);
        const std::size_t k = z.shape()[1];
        for (std::size_t i = 0; i < count; ++i) {
            const T* row = z.data() + i * k;
            correct += std::size_t(std::max_element(row, row + k) - row) == std::size_t(y[i]);
        }
    }
    return {loss / double(data.size()), double(correct) / double(data.size())};
}

template Evaluation evaluate<float>(Sequential<float>&, const Dataset&, std::size_t);
template Evaluation evaluate<double>(Sequential<double>&, const Dataset&, std::size_t);

// ---- trainer --------------------------------------------------------------------------

Trainer::Trainer(Sequential<float>& model, const Dataset& train, const TrainConfig& config)
    : model_(model), train_(train), config_(config), sgd_(model.parameters(), config.sgd) {
    if (train.size() == 0) throw Error("training set '" + train.name + "' is empty");
}

double Trainer::train_epoch(int epoch, const StepCallback& on_step) {
    Rng rng(derive_seed(config_.seed, shuffle_stream + std::uint64_t(epoch)));
    const std::vector<std::size_t> order = epoch_order(train_.size(), rng);
    const std::size_t batch = std::min(config_.batch_size, train_.size());
    const std::size_t steps = (train_.size() + batch - 1) / batch;
    double total = 0;
    for (std::size_t s = 0; s < steps; ++s) {
        const std::size_t first = s * batch, count = std::min(batch, train_.size() - first);
        gather_batch(train_, order.data() + first, count, batch_x_, batch_y_);
        tape_.clear();
        const NodeId loss = cross_entropy(tape_, model_.forward(tape_, batch_x_), batch_y_);
        const float value = tape_.value(loss)(0, 0, 0, 0);
        if (!std::isfinite(value))
            throw DivergenceError("training diverged at epoch " + std::to_string(epoch) +
                                  ", step " + std::to_string(s + 1) + " of " +
                                  std::to_string(steps) + ": loss is " + std::to_string(value) +
                                  " (try a smaller --lr)");
        model_.zero_grad();
        tape_.backward(loss);
        sgd_.step();
        total += value;
        if (on_step) on_step(s + 1, steps, value);
    }
    return total / double(steps);
}

// ---- whole runs -----------------------------------------------------------------------

bool RunFiles::holds_run() const {
    for (const auto& f : all())
        if (std::filesystem::exists(f)) return true;
    return false;
}

namespace {

// The epoch lines in order, each preceded by the points tracked during or after its epoch
// (a point's epoch is the one its step belongs to; 0 before training).
std::string metrics_text(const std::vector<EpochMetrics>& history,
                         const std::vector<TrackPoint>& tracked) {
    std::string text;
    std::size_t next_point = 0;
    for (const auto& m : history) {
        for (; next_point < tracked.size() && tracked[next_point].epoch <= m.epoch; ++next_point)
            text += tracked[next_point].to_json().dump() + "\n";
        text += m.to_json().dump() + "\n";
    }
    for (; next_point < tracked.size(); ++next_point)
        text += tracked[next_point].to_json().dump() + "\n";
    return text;
}

EpochMetrics parse_metrics_line(const nlohmann::json& j) {
    EpochMetrics m;
    m.epoch = j.at("epoch");
    m.steps = j.at("steps");
    m.lr = j.at("lr");
    m.batch_loss = j.at("batch_loss");
    m.seconds = j.at("seconds");
    m.evaluated = j.contains("train_loss");
    if (m.evaluated) {
        m.train = {j.at("train_loss"), j.at("train_accuracy")};
        m.test = {j.at("test_loss"), j.at("test_accuracy")};
    }
    return m;
}

struct MetricsLines {
    std::vector<EpochMetrics> history;
    std::vector<TrackPoint> tracked;
};

// The lines up to `upto_epoch`: lines after it belong to training that the checkpoint does
// not contain (a failed or killed attempt) and are dropped. Lines without a "kind" are
// epoch lines (the only kind metrics.jsonl had before tracking).
MetricsLines read_metrics(const std::filesystem::path& file, int upto_epoch) {
    MetricsLines lines;
    if (!std::filesystem::exists(file)) return lines;
    std::string text = read_file(file);
    // A last line without its newline was cut short by a crash while it was appended; it
    // came after the last checkpoint (MetricsLog), so it is dropped like the lines after it.
    const std::size_t last_newline = text.find_last_of('\n');
    text.resize(last_newline == std::string::npos ? 0 : last_newline + 1);
    std::istringstream in(text);
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
        if (line.empty()) continue;
        try {
            const auto j = nlohmann::json::parse(line);
            if (j.at("epoch").get<int>() > upto_epoch) break;  // the rest is not checked: dropped
            if (j.value("kind", "epoch") == "track")
                lines.tracked.push_back(TrackPoint::from_json(j));
            else
                lines.history.push_back(parse_metrics_line(j));
        } catch (const nlohmann::json::exception& e) {
            throw IoError(file.string() + " line " + std::to_string(number) +
                          " is not a metrics record: " + e.what());
        }
    }
    return lines;
}

// metrics.jsonl grows by appending each epoch's lines: rewriting the whole file every epoch
// is quadratic, and full-batch gradient descent runs thousands of one-step epochs. The file
// is flushed to disk before every checkpoint, so the lines up to a checkpoint survive a
// crash, and a line a crash cut short comes after it (read_metrics drops it on resume).
class MetricsLog {
public:
    explicit MetricsLog(std::filesystem::path file) : file_(std::move(file)) {}
    ~MetricsLog() {
        if (fd_ >= 0) ::close(fd_);
    }
    MetricsLog(const MetricsLog&) = delete;
    MetricsLog& operator=(const MetricsLog&) = delete;

    void append(std::string_view text) {
        if (fd_ < 0) fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
        if (fd_ < 0) fail("cannot open it");
        while (!text.empty()) {
            const ssize_t n = ::write(fd_, text.data(), text.size());
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) fail("write failed");
            text.remove_prefix(std::size_t(n));
        }
    }

    void sync() {
        if (fd_ >= 0 && ::fsync(fd_) != 0) fail("fsync failed");
    }

private:
    [[noreturn]] void fail(const std::string& what) const {
        throw IoError("cannot append to " + file_.string() + ": " + what + ": " +
                      std::strerror(errno));
    }

    std::filesystem::path file_;
    int fd_ = -1;
};

void require_finite_parameters(const Sequential<float>& model, int epoch) {
    for (const auto* p : model.parameters()) {
        const float* bad = std::find_if(p->data(), p->data() + p->size(),
                                        [](float v) { return !std::isfinite(v); });
        if (bad != p->data() + p->size())
            throw DivergenceError("training diverged in epoch " + std::to_string(epoch) +
                                  ": weight '" + p->name + "' [" +
                                  std::to_string(bad - p->data()) + "] is " +
                                  format_double(*bad) + " (try a smaller --lr)");
    }
}

// A loss that is finite step by step can still be NaN/Inf over the whole set (the last step
// blew the weights up); such an epoch is a divergence, not a metrics line with nulls.
void require_finite_evaluation(const EpochMetrics& m) {
    for (const auto& [what, loss] : {std::pair{"train", m.train.loss}, std::pair{"test", m.test.loss}})
        if (!std::isfinite(loss))
            throw DivergenceError("training diverged in epoch " + std::to_string(m.epoch) +
                                  ": the " + what + " loss after it is " + format_double(loss) +
                                  " (try a smaller --lr)");
}

void save_state(const RunFiles& files, const Sequential<float>& model, Sgd<float>& sgd,
                const TrainConfig& config, int epoch) {
    Safetensors state = model_to_safetensors(model, {{meta_epoch, std::to_string(epoch)},
                                                     {meta_steps, std::to_string(sgd.steps())},
                                                     {meta_config, config.to_json().dump()}});
    const auto& params = sgd.parameters();
    for (std::size_t i = 0; i < params.size(); ++i)
        state.tensors.push_back(make_blob<float>(velocity_prefix + params[i]->name,
                                                 params[i]->shape,
                                                 sgd.momentum_buffers()[i].data()));
    write_safetensors(files.checkpoint(), state);
}

std::size_t steps_per_epoch(const TrainConfig& config, std::size_t examples) {
    const std::size_t batch = std::min(config.batch_size, examples);
    return (examples + batch - 1) / batch;
}

// What the checkpoint says about the run, parsed strictly before anything is loaded.
struct CheckpointInfo {
    TrainConfig config;
    int epoch = 0;
    std::uint64_t steps = 0;
};

CheckpointInfo checkpoint_info(const Safetensors& state, const std::string& where) {
    CheckpointInfo info;
    const std::string& text = required_metadata(state, meta_config, where);
    try {
        info.config = TrainConfig::from_json(nlohmann::json::parse(text));
    } catch (const nlohmann::json::exception& e) {
        throw IoError("checkpoint " + where + ": " + meta_config +
                      " is not a training config: " + e.what());
    }
    const std::uint64_t epoch = metadata_count(state, meta_epoch, where);
    if (epoch > std::uint64_t(std::numeric_limits<int>::max()))
        throw IoError("checkpoint " + where + ": " + meta_epoch + " " + std::to_string(epoch) +
                      " is out of range");
    info.epoch = int(epoch);
    info.steps = metadata_count(state, meta_steps, where);
    return info;
}

// The config keys whose values differ, as "key: saved -> now" lines.
std::string config_differences(const nlohmann::json& saved, const nlohmann::json& now) {
    std::string text;
    for (const auto& [key, value] : now.items())
        if (!saved.contains(key) || saved.at(key) != value)
            text += (text.empty() ? "" : ", ") + key + " " +
                    (saved.contains(key) ? saved.at(key).dump() : "(missing)") + " -> " +
                    value.dump();
    return text;
}

// Refuses a checkpoint that is not an earlier state of exactly this run.
void require_resumable(const CheckpointInfo& info, const TrainConfig& config,
                       std::size_t examples, const std::string& where) {
    const auto saved = resumable_part(info.config), now = resumable_part(config);
    if (saved != now)
        throw Error("cannot resume from " + where + ": the run was started with another config (" +
                    config_differences(saved, now) + "); --force starts over");
    if (info.epoch > config.epochs)
        throw Error("cannot resume from " + where + ": it was written at epoch " +
                    std::to_string(info.epoch) + ", after --epochs " +
                    std::to_string(config.epochs) +
                    " (a run cannot be shortened); --force starts over");
    const std::uint64_t expected = std::uint64_t(info.epoch) * steps_per_epoch(config, examples);
    if (info.steps != expected)
        throw IoError("checkpoint " + where + ": " + meta_steps + " " + std::to_string(info.steps) +
                      " is not epoch " + std::to_string(info.epoch) + " x " +
                      std::to_string(steps_per_epoch(config, examples)) + " steps per epoch");
}

// Restores weights, momentum and step count; returns what the checkpoint says of the run
// (its epoch is the last finished one).
CheckpointInfo restore_state(const RunFiles& files, Sequential<float>& model, Sgd<float>& sgd,
                  const TrainConfig& config, std::size_t examples) {
    const Safetensors state = read_safetensors(files.checkpoint());
    const std::string where = files.checkpoint().string();
    const CheckpointInfo info = checkpoint_info(state, where);
    require_resumable(info, config, examples, where);
    load_parameters(model, state, where, {velocity_prefix});
    const auto& params = sgd.parameters();
    for (std::size_t i = 0; i < params.size(); ++i) {
        const std::string name = velocity_prefix + params[i]->name;
        const TensorBlob* blob = state.find(name);
        if (!blob) throw IoError(where + ": momentum of '" + params[i]->name + "' is missing");
        const auto values = blob_values<float>(*blob);
        if (values.size() != params[i]->size())
            throw IoError(where + ": momentum of '" + params[i]->name + "' has the wrong size");
        const auto bad = std::find_if(values.begin(), values.end(), [](float v) { return !std::isfinite(v); });
        if (bad != values.end())
            throw IoError(where + ": tensor '" + name + "' has a non-finite value (" +
                          format_double(*bad) + ") at flat index " +
                          std::to_string(bad - values.begin()));
        std::copy(values.begin(), values.end(), sgd.momentum_buffers()[i].begin());
    }
    sgd.set_steps(info.steps);
    return info;
}

// Settles, before any data is loaded, whether DIR may be used as asked (see train_run).
void check_run_folder(const RunFiles& files, const RunOptions& options) {
    const std::string dir = files.dir.string();
    if (options.resume && options.force)
        throw Error("--resume and --force exclude each other (continue the run in " + dir +
                    ", or delete it and start over?)");
    const bool has_checkpoint = std::filesystem::exists(files.checkpoint());
    if (!options.resume && !options.force && files.holds_run())
        throw Error(dir + " already holds a run; --resume continues it, --force deletes it "
                          "and starts over");
    if (options.resume && !has_checkpoint && options.require_checkpoint)
        throw Error("cannot resume: " + files.checkpoint().string() +
                    " does not exist (the run stopped before its first checkpoint, or " + dir +
                    " is the wrong folder); --force starts over");
    if (std::filesystem::exists(files.dir) && !std::filesystem::is_directory(files.dir))
        throw IoError("cannot write " + dir + ": it is not a folder");
    require_writable_folder(files.dir);
}

// Notes a resume with another thread count: float sums are then grouped differently.
void note_thread_change(const RunFiles& files, int before, int now) {
    if (before != now)
        std::fprintf(stderr,
                     "note: %s was trained with --threads %d, resuming with %d: the weights "
                     "equal an uninterrupted run up to rounding, not bit for bit\n",
                     files.dir.c_str(), before, now);
}

void remove_run_files(const RunFiles& files) {
    for (const auto& f : files.all()) std::filesystem::remove(f);
}

// Restores the run from its checkpoint and returns the last finished epoch. A run that has
// all its epochs and its model is left untouched (already_finished); otherwise the folder
// becomes an unfinished run of this config: the model of a shorter finished run and the
// metrics lines of a failed attempt would no longer match it, so they go now, before
// training can fail again.
int resume_run(const RunFiles& files, RunResult& result, Sgd<float>& sgd, const TrainConfig& config,
               std::size_t examples, const RunOptions& options) {
    const CheckpointInfo info = restore_state(files, result.model, sgd, config, examples);
    MetricsLines lines = read_metrics(files.metrics(), info.epoch);
    result.history = std::move(lines.history);
    result.tracked = std::move(lines.tracked);
    if (info.epoch == config.epochs && std::filesystem::exists(files.model())) {
        result.already_finished = true;
        return info.epoch;
    }
    if (options.log) note_thread_change(files, info.config.threads, config.threads);
    std::filesystem::remove(files.model());
    write_file_atomic(files.metrics(), metrics_text(result.history, result.tracked));
    return info.epoch;
}

// Measures a double copy of the model on the first training images at the points of the
// interval. It only reads the float weights and seeds its sampled measures from a stream of
// its own, so training with and without it gives the same weights bit for bit.
class SharpnessTracker {
public:
    SharpnessTracker(const TrackOptions& options, const Dataset& train, std::uint64_t seed)
        : interval_(options.interval), measures_(sharpness::parse_measures(options.measures)) {
        const std::size_t n = std::min(options.inputs, train.size());
        std::vector<std::size_t> first(n);
        for (std::size_t i = 0; i < n; ++i) first[i] = i;
        Tensor4<float> x;
        gather_batch(train, first.data(), n, x, batch_.y);
        batch_.x = xt::cast<double>(x);
        measure_options_.seed = derive_seed(seed, track_stream);
        measure_options_.layer_lambda_max = false;  // the whole network's λ_max is what is tracked
    }

    std::size_t inputs() const { return batch_.size(); }
    bool due_after_epoch(int epoch) const {
        return interval_.unit == TrackInterval::Unit::Epochs && std::size_t(epoch) % interval_.every == 0;
    }
    bool due_after_step(std::uint64_t step) const {
        return interval_.unit == TrackInterval::Unit::Steps && step % interval_.every == 0;
    }

    TrackPoint measure(const Sequential<float>& model, int epoch, std::uint64_t step, double lr) {
        const auto start = std::chrono::steady_clock::now();
        require_finite_parameters(model, epoch);  // a divergence, not a failed measure
        Sequential<double> copy = convert_model<double>(model);
        sharpness::SharpnessReport report;
        try {
            report = sharpness::measure_sharpness(copy, batch_, measures_, measure_options_);
        } catch (const Error& e) {
            throw Error("tracking at step " + std::to_string(step) + " (epoch " +
                        std::to_string(epoch) + "): " + e.what());
        }
        TrackPoint point;
        point.epoch = epoch;
        point.step = step;
        point.lr = lr;
        point.inputs = batch_.size();
        const nlohmann::json all = report.to_json();
        for (const auto measure : measures_) {
            const std::string key = measure_key(sharpness::measure_name(measure));
            if (all.contains(key)) point.values[key] = single_value(all.at(key));
        }
        point.seconds = seconds_since(start);
        return point;
    }

private:
    // A measure's number: itself, or the "value" (or "estimate") of its object.
    static nlohmann::json single_value(const nlohmann::json& measure) {
        if (measure.is_object())
            for (const char* key : {"value", "estimate"})
                if (measure.contains(key) && measure.at(key).is_number()) return measure.at(key);
        return measure;
    }

    TrackInterval interval_;
    std::vector<sharpness::Measure> measures_;
    sharpness::Batch<double> batch_;
    sharpness::MeasureOptions measure_options_;
};

void note_tracking(const TrackOptions& track, std::size_t inputs) {
    std::fprintf(stderr,
                 "note: tracking %s every %s (and before the first step) on the first %zu "
                 "training images; each point measures a double copy of the model and may take "
                 "a while\n",
                 track.measures.c_str(), track.interval.to_string().c_str(), inputs);
}

void log_point(const TrackPoint& p) {
    std::printf("track step %llu (epoch %d):", static_cast<unsigned long long>(p.step), p.epoch);
    for (const auto& [key, value] : p.values.items())
        if (value.is_number()) std::printf("  %s %.6g", key.c_str(), value.get<double>());
    std::printf("  (%.2fs)\n", p.seconds);
    std::fflush(stdout);
}

void log_epoch(const EpochMetrics& m, int epochs) {
    std::printf("epoch %d/%d  lr %.4g  batch loss %.4f", m.epoch, epochs, m.lr, m.batch_loss);
    if (m.evaluated)
        std::printf("  train loss %.4f acc %.4f  test loss %.4f acc %.4f", m.train.loss,
                    m.train.accuracy, m.test.loss, m.test.accuracy);
    std::printf("  (%.2fs)\n", m.seconds);
    std::fflush(stdout);
}

}  // namespace

RunResult train_run(const TrainConfig& config, const std::filesystem::path& dir,
                    const RunOptions& options, const PreparedData* data) {
    config.validate();
    options.track.validate();
    const RunFiles files{dir};
    check_run_folder(files, options);
    if (config.threads > 0) set_threads(config.threads);
    PreparedData loaded;
    if (!data) {
        loaded = prepare_data(config);
        data = &loaded;
    }
    RunResult result{make_model<float>(config.model, derive_seed(config.seed, init_stream)), {}, {}, false};
    Trainer trainer(result.model, data->train, config);
    int done = 0;
    if (options.resume && std::filesystem::exists(files.checkpoint())) {
        done = resume_run(files, result, trainer.optimizer(), config, data->train.size(), options);
        if (result.already_finished) return result;
    } else {
        remove_run_files(files);  // nothing there, --force, or nothing to resume from
    }
    write_file_atomic(files.config(), config_record(config).dump(2) + "\n");
    std::optional<SharpnessTracker> tracker;
    if (options.track.enabled()) {
        tracker.emplace(options.track, data->train, config.seed);
        if (options.log || options.progress) note_tracking(options.track, tracker->inputs());
    }
    // The points of the current epoch, logged before its line as metrics.jsonl holds them.
    std::vector<TrackPoint> points;
    double tracking_seconds = 0;
    const auto track = [&](int epoch) {
        points.push_back(tracker->measure(result.model, epoch, trainer.optimizer().steps(),
                                          trainer.optimizer().learning_rate()));
        tracking_seconds += points.back().seconds;
    };
    if (tracker && done == 0) track(0);
    MetricsLog metrics(files.metrics());
    for (int epoch = done + 1; epoch <= config.epochs; ++epoch) {
        const auto start = std::chrono::steady_clock::now();
        tracking_seconds = 0;
        ProgressBar bar("epoch " + std::to_string(epoch) + "/" + std::to_string(config.epochs),
                        steps_per_epoch(config, data->train.size()));
        EpochMetrics m;
        m.epoch = epoch;
        m.lr = trainer.optimizer().learning_rate();
        m.batch_loss = trainer.train_epoch(epoch, [&](std::size_t s, std::size_t, double loss) {
            if (options.progress) bar.update(s, "loss " + std::to_string(loss).substr(0, 6));
            if (tracker && tracker->due_after_step(trainer.optimizer().steps())) {
                if (options.progress) bar.update(s, "tracking sharpness");
                track(epoch);
            }
        });
        if (options.progress) bar.finish();
        require_finite_parameters(result.model, epoch);
        m.steps = trainer.optimizer().steps();
        m.evaluated = epoch % config.eval_every == 0 || epoch == config.epochs;
        if (m.evaluated) {
            m.train = evaluate(result.model, data->train);
            m.test = evaluate(result.model, data->test);
            require_finite_evaluation(m);
        }
        if (tracker && tracker->due_after_epoch(epoch)) track(epoch);
        m.seconds = seconds_since(start) - tracking_seconds;
        std::string lines;
        for (auto& p : points) {
            if (options.log) log_point(p);
            lines += p.to_json().dump() + "\n";
            result.tracked.push_back(std::move(p));
        }
        points.clear();
        result.history.push_back(m);
        if (options.log) log_epoch(m, config.epochs);
        metrics.append(lines + m.to_json().dump() + "\n");
        if (epoch % config.checkpoint_every == 0 || epoch == config.epochs) {
            metrics.sync();  // every line up to the checkpoint is on disk before it
            save_state(files, result.model, trainer.optimizer(), config, epoch);
        }
    }
    save_model(result.model, files.model(), {{meta_config, config.to_json().dump()}});
    return result;
}

}  // namespace minsharp
