// SGD with momentum, coupled weight decay (as torch.optim.SGD) and the paper's schedule.
#pragma once

#include "minsharp/autograd/tape.hpp"

#include <vector>

namespace minsharp {

struct SgdConfig {
    double lr = 0.1;
    double momentum = 0.9;
    double weight_decay = 0.0;
    /// lr_t = lr / (1 + lr_decay · t) at step t (0 = constant).
    double lr_decay = 0.0;

    /// Throws Error naming the first invalid field.
    void validate() const;
};

template <class T>
class Sgd {
public:
    Sgd(std::vector<Parameter<T>*> params, SgdConfig config);

    /// The rate the next step will use.
    double learning_rate() const;

    /// p ← p − lr_t · v with v ← μ·v + (g + λ·p), as torch.optim.SGD (dampening 0).
    void step();

    std::size_t steps() const { return steps_; }
    void set_steps(std::size_t steps) { steps_ = steps; }
    const SgdConfig& config() const { return config_; }
    /// Momentum buffers, one per parameter in order (saved with checkpoints for --resume).
    std::vector<Tensor1<T>>& momentum_buffers() { return velocity_; }
    const std::vector<Parameter<T>*>& parameters() const { return params_; }

private:
    std::vector<Parameter<T>*> params_;
    std::vector<Tensor1<T>> velocity_;
    SgdConfig config_;
    std::size_t steps_ = 0;
};

}  // namespace minsharp
