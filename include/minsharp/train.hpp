// Training: data preparation from a config, SGD epochs, evaluation, and whole runs that
// write their folder (config.json, metrics.jsonl, checkpoint, final model) and resume.
#pragma once

#include "minsharp/data.hpp"
#include "minsharp/nn.hpp"
#include "minsharp/optim.hpp"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace minsharp {

/// Training diverged (NaN/Inf loss); the message names the epoch and step.
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

struct RunOptions {
    bool resume = false;   ///< continue from DIR/checkpoint.safetensors when present
    bool progress = true;  ///< progress bar on stderr (only drawn on a terminal)
    bool log = true;       ///< one line per epoch on stdout
};

struct RunResult {
    Sequential<float> model;
    std::vector<EpochMetrics> history;
};

/// Trains per config into `dir`: config.json, metrics.jsonl (one JSON object per epoch),
/// checkpoint.safetensors (resumable state), model.safetensors (final weights). Every file
/// is written atomically. `data` may be given to skip loading.
RunResult train_run(const TrainConfig& config, const std::filesystem::path& dir,
                    const RunOptions& options, const PreparedData* data = nullptr);

}  // namespace minsharp
