// The layer interface every op file's layer class implements, the per-example shapes it
// maps, and the bounds on what a network may be.
#pragma once

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/kind.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/autograd/tape.hpp"

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
    /// This layer and a ReLU after it as one node, for a kind whose traits say
    /// absorbs_following_relu (Sequential fuses them); throws Error for any other kind.
    virtual NodeId forward_with_relu(Tape<T>& tape, NodeId x);
};

template <class T>
NodeId Layer<T>::forward_with_relu(Tape<T>&, NodeId) {
    throw Error("layer '" + spec() + "' cannot absorb a following relu");
}

}  // namespace minsharp
