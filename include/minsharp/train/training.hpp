// Training: data preparation from a config, SGD epochs, evaluation, and whole runs that
// write their folder (config.json, metrics.jsonl, checkpoint, final model) and resume.
#pragma once

#include "minsharp/data/datasets.hpp"
#include "minsharp/nn/sequential.hpp"
#include "minsharp/train/optim.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

/// Training diverged (NaN/Inf loss, evaluation or weights); the message names the epoch.
class DivergenceError : public Error {
public:
    using Error::Error;
};

struct TrainConfig {
    std::string model = "mlp";       ///< zoo name or spec
    std::string dataset = "mnist";   ///< mnist | fashion-mnist
    std::string data_dir;            ///< empty: default_data_dir(dataset)
    std::size_t train_size = 0;      ///< 0: the whole training set
    std::string subset = "first";    ///< first | random (which train_size examples)
    std::size_t test_size = 0;       ///< 0: the whole test set
    double label_noise = 0.0;        ///< fraction of training labels permuted
    int epochs = 10;
    std::size_t batch_size = 128;
    SgdConfig sgd;
    std::uint64_t seed = 0;
    int threads = 0;                 ///< BLAS threads; 0: all cores
    int eval_every = 1;              ///< evaluate train/test every k epochs (and the last)
    int checkpoint_every = 1;        ///< save the resumable state every k epochs (and the last)

    /// Throws Error naming the first invalid field and its value.
    void validate() const;
    nlohmann::json to_json() const;
    static TrainConfig from_json(const nlohmann::json& j);
};

struct PreparedData {
    Dataset train;  ///< subset, with label noise applied
    Dataset test;
    std::vector<std::size_t> noisy_indices;
};

/// Loads the dataset and applies the subset and label noise, each from its own seeded stream.
PreparedData prepare_data(const TrainConfig& config);

struct Evaluation {
    double loss = 0;
    double accuracy = 0;
};

/// Mean cross-entropy and accuracy over the dataset (against its labels, noisy or not).
template <class T>
Evaluation evaluate(Sequential<T>& model, const Dataset& data, std::size_t batch = 1000);

struct EpochMetrics {
    int epoch = 0;
    std::size_t steps = 0;
    double lr = 0;
    double batch_loss = 0;  ///< mean minibatch loss seen while training
    bool evaluated = false;
    Evaluation train, test;
    double seconds = 0;     ///< training + evaluation time of this epoch
    nlohmann::json to_json() const;
};

class Trainer {
public:
    using StepCallback = std::function<void(std::size_t step, std::size_t steps, double loss)>;

    Trainer(Sequential<float>& model, const Dataset& train, const TrainConfig& config);

    /// One pass over the training set in epoch's seeded order (1-based epoch).
    /// Returns the mean minibatch loss; throws DivergenceError on a NaN/Inf loss.
    double train_epoch(int epoch, const StepCallback& on_step = {});

    Sgd<float>& optimizer() { return sgd_; }

private:
    Sequential<float>& model_;
    const Dataset& train_;
    const TrainConfig& config_;
    Sgd<float> sgd_;
    Tape<float> tape_;
    Tensor4<float> batch_x_;
    std::vector<int> batch_y_;
};

/// How often sharpness is measured during training: after every `every`-th epoch or
/// optimizer step (counted from the start of the run), and once before the first step.
struct TrackInterval {
    enum class Unit { Epochs, Steps };
    std::size_t every = 1;
    Unit unit = Unit::Epochs;

    /// "5epochs", "1epoch", "100steps", "1step" (a space before the unit is allowed).
    /// Throws Error naming the text for a missing or unknown unit or a count < 1.
    static TrackInterval parse(std::string_view text);
    /// "5epochs", "100steps".
    std::string to_string() const;
};

/// Sharpness measured while training (apps/train --track; docs/tracking.md): at each point
/// of the interval, the measures of a double copy of the model on the first `inputs`
/// training images are appended to metrics.jsonl as a {"kind": "track", ...} line.
struct TrackOptions {
    /// Comma-separated measure names as sharpness::parse_measures takes them ("trace,ms");
    /// empty: no tracking.
    std::string measures;
    TrackInterval interval;
    std::size_t inputs = 1000;  ///< the first N training images (all when there are fewer)

    bool enabled() const { return !measures.empty(); }
    /// Throws Error for an unknown measure, an interval of 0 or 0 inputs.
    void validate() const;
};

/// One tracked point: a metrics.jsonl line {"kind": "track", "epoch", "step", "lr",
/// "inputs", "seconds", and one key per measure}.
struct TrackPoint {
    int epoch = 0;           ///< the epoch the step belongs to (0: before training)
    std::uint64_t step = 0;  ///< optimizer steps taken when measured
    double lr = 0;           ///< learning rate of the next step
    std::size_t inputs = 0;  ///< training images the measures average over
    double seconds = 0;      ///< time the measures took
    /// Measure name with '-' → '_' ("lambda_max") → its value: a number, or the measure's
    /// JSON object when it has no single "value" (apps/sharpness's JSON for that measure).
    nlohmann::json values = nlohmann::json::object();

    /// The number tracked for `measure` ("lambda-max" or "lambda_max"), if any.
    std::optional<double> value(std::string_view measure) const;
    nlohmann::json to_json() const;
    /// Throws nlohmann::json's error for a missing or mistyped key.
    static TrackPoint from_json(const nlohmann::json& j);
};

struct RunOptions {
    /// Continue the run in DIR from its checkpoint: its stored config must equal this one
    /// apart from epochs (which may grow: the run trains further), threads, eval_every and
    /// checkpoint_every. Without a checkpoint there is nothing to continue: the run starts
    /// over (its files, if any, are deleted), unless require_checkpoint.
    bool resume = false;
    bool progress = true;  ///< progress bar on stderr (only drawn on a terminal)
    bool log = true;       ///< one line per epoch on stdout
    bool force = false;    ///< start over: delete the run files in DIR first
    /// With resume: a folder without checkpoint is an error (apps/train --resume, where it
    /// means a wrong folder; the experiment runner resumes or starts over).
    bool require_checkpoint = false;
    /// Sharpness during training. It reads the weights and draws from no stream of the
    /// training: the weights are bit-identical with and without it. Not part of the config,
    /// so a run may be resumed with other tracking.
    TrackOptions track{};
};

struct RunResult {
    Sequential<float> model;
    std::vector<EpochMetrics> history;
    /// Tracked points in order, those before a resume included (options.track).
    std::vector<TrackPoint> tracked;
    /// Resumed a run that had already trained all its epochs: nothing trained or written.
    bool already_finished = false;
};

/// The files of a run folder. DIR holds a run when any of them exists.
struct RunFiles {
    std::filesystem::path dir;
    std::filesystem::path config() const { return dir / "config.json"; }
    std::filesystem::path metrics() const { return dir / "metrics.jsonl"; }
    std::filesystem::path checkpoint() const { return dir / "checkpoint.safetensors"; }
    std::filesystem::path model() const { return dir / "model.safetensors"; }
    std::vector<std::filesystem::path> all() const { return {config(), metrics(), checkpoint(), model()}; }
    bool holds_run() const;
};

/// Trains per config into `dir`: config.json, metrics.jsonl (one JSON object per epoch,
/// preceded by the tracked points of that epoch when options.track is enabled),
/// checkpoint.safetensors (resumable state), model.safetensors (final weights, written
/// last: its presence marks a finished run). Every file is written atomically, and the
/// files in DIR always belong to one run:
///  - a folder that holds a run is refused unless options.resume or options.force;
///  - force deletes the run files before anything is written;
///  - resume checks the checkpoint's config and epoch first, then cuts metrics.jsonl back
///    to the checkpoint's epoch and removes model.safetensors when it trains further.
/// The output folder is checked writable before the data is loaded. `data` may be given to
/// skip loading. Throws DivergenceError for a non-finite loss, evaluation or weight.
RunResult train_run(const TrainConfig& config, const std::filesystem::path& dir,
                    const RunOptions& options, const PreparedData* data = nullptr);

}  // namespace minsharp
