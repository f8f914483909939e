// Layers and the Sequential container. Parameters are named and laid out as in PyTorch
// (dense weight (out, in), conv weight (out, in, k, k)), so checkpoints interchange with
// PyTorch state dicts.
#pragma once

#include "minsharp/checked.hpp"
#include "minsharp/ops.hpp"
#include "minsharp/random.hpp"

#include <memory>
#include <string>
#include <vector>

namespace minsharp {

/// Bounds on what a network may be (docs/limits.md). Within them no size product overflows,
/// every matrix side fits BLAS's 32-bit integers and one example's activations fit in
/// memory. The layer constructors, Sequential::add and the spec parser enforce them, each
/// with an Error naming the value, before anything is allocated.
namespace limits {
/// Dense output features and conv input/output channels.
inline constexpr std::size_t max_features = std::size_t(1) << 20;
/// Side of a conv or max-pool window, and its stride. A conv's padding is at most
/// kernel − 1: a wider border only adds outputs that see nothing but zeros.
inline constexpr std::size_t max_kernel = 64;
inline constexpr std::size_t max_stride = 64;
/// Weights of one layer (bias not counted): 500 times the paper's largest layer, and far
/// below BLAS's 32-bit matrix sides (a conv's C·k·k is at most this).
inline constexpr std::size_t max_layer_parameters = std::size_t(1) << 28;
/// Elements one example occupies in a forward pass: the input, every layer's output and the
/// largest conv's im2col matrix (0.5 GiB in float, 1 GiB in double). Counted in elements,
/// not bytes, so that a model valid in float stays valid when converted to double.
inline constexpr std::size_t max_example_elements = std::size_t(1) << 27;
/// Layers of a Sequential.
inline constexpr std::size_t max_layers = 256;
}  // namespace limits

/// Per-example activation shape (C, H, W); dense activations are (F, 1, 1).
struct ActShape {
    std::size_t c = 1, h = 1, w = 1;
    /// C·H·W; throws Error when the product overflows.
    std::size_t size() const {
        return checked_product(std::array<std::size_t, 3>{c, h, w}, "activation shape");
    }
    bool operator==(const ActShape&) const = default;
    std::string str() const;
};

enum class LayerKind { Dense, Conv2d, MaxPool2d, ReLU, Flatten };

template <class T>
class Layer {
public:
    virtual ~Layer() = default;
    virtual LayerKind kind() const = 0;
    /// The spec token, e.g. "dense:10" or "conv:6:5:pad2".
    virtual std::string spec() const = 0;
    virtual NodeId forward(Tape<T>& tape, NodeId x) = 0;
    /// Shape out for a given shape in; throws ShapeError when the layer cannot take it.
    virtual ActShape output_shape(const ActShape& in) const = 0;
    /// Elements of per-example working buffers beyond the output (a conv's im2col matrix),
    /// counted against limits::max_example_elements.
    virtual std::size_t scratch_elements(const ActShape&) const { return 0; }
    virtual std::vector<Parameter<T>*> parameters() { return {}; }
    /// PyTorch's default initialisation (Kaiming-uniform a=√5, bias U(±1/√fan_in)).
    virtual void reset_parameters(Rng&) {}
    virtual std::unique_ptr<Layer<T>> clone() const = 0;
    /// Gives parameters their names ("<prefix>.weight", "<prefix>.bias").
    virtual void set_name(const std::string&) {}
};

template <class T>
class Dense final : public Layer<T> {
public:
    Dense(std::size_t in, std::size_t out, bool bias = true);
    LayerKind kind() const override { return LayerKind::Dense; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override;
    ActShape output_shape(const ActShape& in) const override;
    std::vector<Parameter<T>*> parameters() override;
    void reset_parameters(Rng& rng) override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Dense>(*this); }
    void set_name(const std::string& prefix) override;
    std::size_t in_features() const { return weight.shape[1]; }
    std::size_t out_features() const { return weight.shape[0]; }
    bool has_bias() const { return !bias.shape.empty(); }

    Parameter<T> weight;
    Parameter<T> bias;  ///< empty shape when the layer has no bias
};

template <class T>
class Conv2d final : public Layer<T> {
public:
    Conv2d(std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
           std::size_t stride = 1, std::size_t padding = 0, bool bias = true);
    LayerKind kind() const override { return LayerKind::Conv2d; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override;
    /// This layer and a ReLU after it as one node (conv2d with fused_relu).
    NodeId forward_with_relu(Tape<T>& tape, NodeId x);
    ActShape output_shape(const ActShape& in) const override;
    std::size_t scratch_elements(const ActShape& in) const override;
    std::vector<Parameter<T>*> parameters() override;
    void reset_parameters(Rng& rng) override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Conv2d>(*this); }
    void set_name(const std::string& prefix) override;
    std::size_t in_channels() const { return weight.shape[1]; }
    std::size_t out_channels() const { return weight.shape[0]; }
    bool has_bias() const { return !bias.shape.empty(); }

    Window window;
    Parameter<T> weight;
    Parameter<T> bias;
};

template <class T>
class MaxPool2d final : public Layer<T> {
public:
    MaxPool2d(std::size_t kernel, std::size_t stride);
    LayerKind kind() const override { return LayerKind::MaxPool2d; }
    std::string spec() const override;
    NodeId forward(Tape<T>& tape, NodeId x) override { return max_pool2d(tape, x, window); }
    ActShape output_shape(const ActShape& in) const override;
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<MaxPool2d>(*this); }
    Window window;
};

template <class T>
class ReLU final : public Layer<T> {
public:
    LayerKind kind() const override { return LayerKind::ReLU; }
    std::string spec() const override { return "relu"; }
    NodeId forward(Tape<T>& tape, NodeId x) override { return relu(tape, x); }
    ActShape output_shape(const ActShape& in) const override { return in; }
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<ReLU>(*this); }
};

template <class T>
class Flatten final : public Layer<T> {
public:
    LayerKind kind() const override { return LayerKind::Flatten; }
    std::string spec() const override { return "flatten"; }
    NodeId forward(Tape<T>& tape, NodeId x) override { return flatten(tape, x); }
    ActShape output_shape(const ActShape& in) const override { return {in.size(), 1, 1}; }
    std::unique_ptr<Layer<T>> clone() const override { return std::make_unique<Flatten>(*this); }
};

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
    /// A conv followed by a ReLU records one fused node (conv2d's fused_relu), and a flatten
    /// before a dense layer records nothing (linear reads (N, C, H, W) as (N, C·H·W)): the
    /// values and gradients are those of the layers one by one, without two passes over
    /// the largest activations (together 11% of a LeNet training step).
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
    bool is(std::size_t i, LayerKind kind) const;

    ActShape input_shape_{};
    ActShape output_shape_{};
    std::size_t activation_elements_ = 1;  // the input and every layer's output
    std::size_t largest_scratch_ = 0;
    std::vector<std::unique_ptr<Layer<T>>> layers_;
};

}  // namespace minsharp
