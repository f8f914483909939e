// The Sequential container of layers. The layer classes live with their ops
// (include/minsharp/ops/: Dense in linear.hpp, Conv2d in conv2d.hpp, ...); their
// parameters are named and laid out as in PyTorch (dense weight (out, in), conv weight
// (out, in, k, k)), so checkpoints interchange with PyTorch state dicts.
#pragma once

#include "minsharp/ops/all.hpp"
#include "minsharp/ops/layer.hpp"
#include "minsharp/ops/registry.hpp"

#include <memory>
#include <string>
#include <vector>

namespace minsharp {

/// A chain of layers with a fixed per-example input shape. Parametric layers are named
/// layer0, layer1, ... in order (ReLU, pooling and flatten do not count).
template <class T>
class Sequential {
public:
    Sequential() = default;
    /// Throws Error when an extent is zero or one example exceeds
    /// limits::max_example_elements.
    explicit Sequential(ActShape input_shape);
    Sequential(const Sequential& other);
    Sequential& operator=(const Sequential& other);
    Sequential(Sequential&&) noexcept = default;
    Sequential& operator=(Sequential&&) noexcept = default;

    /// Appends a layer; throws ShapeError when it cannot take the current output shape, and
    /// Error beyond limits::max_layers or limits::max_example_elements.
    Sequential& add(std::unique_ptr<Layer<T>> layer);

    /// Records the forward pass of x (N, C, H, W) on the tape; returns the logits node.
    /// Fusions by the layers' traits (ops/registry.hpp): a conv followed by a ReLU records
    /// one fused node (absorbs_following_relu: conv2d's fused_relu), and a flatten before a
    /// dense layer records nothing (reads_input_flat: linear reads (N, C, H, W) as
    /// (N, C·H·W)). The values and gradients are those of the layers one by one, without
    /// two passes over the largest activations (together 11% of a LeNet training step).
    NodeId forward(Tape<T>& tape, const Tensor4<T>& x);
    NodeId forward(Tape<T>& tape, NodeId x);

    /// Logits for a batch without keeping the tape.
    Tensor2<T> predict(const Tensor4<T>& x);

    std::vector<Parameter<T>*> parameters();
    std::vector<const Parameter<T>*> parameters() const;
    Parameter<T>& parameter(const std::string& name);
    std::size_t parameter_count() const;
    void zero_grad();
    void reset_parameters(Rng& rng);

    std::size_t size() const { return layers_.size(); }
    Layer<T>& layer(std::size_t i) { return *layers_.at(i); }
    const Layer<T>& layer(std::size_t i) const { return *layers_.at(i); }
    ActShape input_shape() const { return input_shape_; }
    ActShape output_shape() const { return output_shape_; }
    /// Shape entering layer i (i == size() gives the output shape).
    ActShape shape_before(std::size_t i) const;
    /// The comma-separated architecture spec (see models.hpp).
    std::string spec() const;
    /// Elements one example occupies in a forward pass (see limits::max_example_elements).
    std::size_t example_elements() const { return activation_elements_ + largest_scratch_; }

private:
    void rename();
    const OpTraits* traits(std::size_t i) const;

    ActShape input_shape_{};
    ActShape output_shape_{};
    std::size_t activation_elements_ = 1;  // the input and every layer's output
    std::size_t largest_scratch_ = 0;
    std::vector<std::unique_ptr<Layer<T>>> layers_;
};

}  // namespace minsharp
