// Reverse-mode automatic differentiation on a Wengert list.
//
// Ops append nodes as they run; backward walks the list in reverse from any node with any
// seed. The recorded forward stays intact, so backward can be repeated from different
// seeds — the sharpness module runs K backward passes per forward. Node buffers are kept
// across clear(), so a training loop that records the same ops every step stops
// allocating after the first one.
#pragma once

#include "minsharp/ops/kind.hpp"
#include "minsharp/core/tensor.hpp"

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace minsharp {

using NodeId = std::size_t;
inline constexpr NodeId no_node = static_cast<NodeId>(-1);

/// A trainable tensor: values stored flat (row-major), shape in PyTorch layout.
template <class T>
struct Parameter {
    std::string name;
    Shape shape;
    Tensor1<T> value;
    Tensor1<T> grad;

    Parameter() = default;
    Parameter(std::string name_, Shape shape_);
    std::size_t size() const { return value.size(); }
    T* data() { return value.data(); }
    const T* data() const { return value.data(); }
};

/// Geometry of a square-kernel 2-d convolution or pooling window.
struct Window {
    std::size_t kernel = 1, stride = 1, padding = 0;
    /// Output extent along one axis; throws ShapeError when the window does not fit.
    std::size_t output_extent(std::size_t input_extent, std::string_view what) const;
};

/// One recorded operation. Activations are NCHW; dense activations are (N, F, 1, 1) and
/// the scalar loss is (1, 1, 1, 1).
template <class T>
struct Node {
    OpKind kind = OpKind::Input;
    NodeId input = no_node;    ///< the activation this op consumed
    bool needs_grad = false;   ///< false for inputs and everything computed only from them
    /// During backward: grad holds this pass's value. The first op to reach a node writes
    /// its gradient instead of adding to it, so no pass has to zero every gradient first.
    bool grad_written = false;
    Tensor4<T> value;
    Tensor4<T> grad;
    Parameter<T>* weight = nullptr;
    Parameter<T>* bias = nullptr;
    Window window;                          ///< conv2d / max_pool2d / avg_pool2d
    /// conv2d with a fused ReLU: value is relu(conv), and backward first turns grad (with
    /// respect to that value) into the gradient with respect to the convolution's output,
    /// in place: after a backward pass, grad is ∂/∂(pre-activation) as for a plain conv.
    bool relu = false;
    /// During backward, for a node with relu: grad is already zero where the ReLU is
    /// inactive (the max-pool backward does that as it scatters), so the conv skips it.
    bool grad_masked = false;
    std::vector<std::uint32_t> argmax;      ///< max_pool2d: flat input index per output
    std::vector<int> labels;                ///< cross_entropy
    Tensor2<T> probabilities;               ///< cross_entropy: softmax of the logits
};

template <class T>
class Tape {
public:
    /// Records a constant input (no gradient flows into it).
    NodeId input(const Tensor4<T>& x);

    /// Appends a node for an op, reusing a buffer from an earlier recording when there is
    /// one. The value is resized to `shape`; the caller fills it.
    Node<T>& push(OpKind kind, NodeId input, const std::array<std::size_t, 4>& shape);

    /// Forgets the recording but keeps the buffers.
    void clear() { size_ = 0; }

    std::size_t size() const { return size_; }
    NodeId last() const { return size_ - 1; }
    Node<T>& node(NodeId id) { return nodes_[checked(id)]; }
    const Node<T>& node(NodeId id) const { return nodes_[checked(id)]; }
    const Tensor4<T>& value(NodeId id) const { return node(id).value; }
    const Tensor4<T>& grad(NodeId id) const { return node(id).grad; }

    /// Backward from a scalar node (the loss) with seed 1; accumulates parameter gradients.
    void backward(NodeId scalar);

    /// Backward from `from` with the given seed (shape of its value). Gradients of all
    /// earlier nodes are reset first, so repeated calls do not mix. Parameter gradients are
    /// accumulated only when `parameter_grads` is true.
    void backward(NodeId from, const Tensor4<T>& seed, bool parameter_grads);

private:
    std::size_t checked(NodeId id) const;
    void prepare_grads(NodeId upto);
    void zero_unreached_grads(NodeId upto);

    std::deque<Node<T>> nodes_;  // deque: node references stay valid while recording
    std::size_t size_ = 0;
};

}  // namespace minsharp
