// Differentiable primitives. Each op has its forward and its local backward side by side
// in src/ops.cpp; the tape dispatches backward by OpKind.
#pragma once

#include "minsharp/tape.hpp"

#include <type_traits>

namespace minsharp {

/// y = x·Wᵀ + b with x (N, in, 1, 1) or any (N, C, H, W) whose C·H·W == in.
/// W is (out, in); b (out) may be null.
template <class T>
NodeId linear(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias);

/// 2-d convolution (cross-correlation, as PyTorch), W (out, in, k, k), b (out) or null.
/// With fused_relu the node's value is relu(conv) (see Node::relu): one node and no
/// separate pass over the activations forward and backward; Sequential fuses conv, relu.
template <class T>
NodeId conv2d(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias, Window window, bool fused_relu = false);

/// Max pooling over kernel×kernel windows (no padding). Ties go to the first maximum.
template <class T>
NodeId max_pool2d(Tape<T>& tape, NodeId x, Window window);

template <class T>
NodeId relu(Tape<T>& tape, NodeId x);

/// (N, C, H, W) → (N, C·H·W, 1, 1).
template <class T>
NodeId flatten(Tape<T>& tape, NodeId x);

/// Mean softmax cross-entropy over the batch, numerically stable (log-sum-exp).
/// logits (N, K, 1, 1); labels N values in [0, K).
template <class T>
NodeId cross_entropy(Tape<T>& tape, NodeId logits, const std::vector<int>& labels);

/// Row-wise softmax of (N, K) logits into probs, in the logits' precision.
template <class T>
void softmax_rows(const T* logits, std::size_t rows, std::size_t classes, T* probs);

/// im2col of one image (C, H, W) into columns [col0, col0 + Ho·Wo) of a row-major matrix
/// with C·k·k rows and `ld` columns; row (c, ki, kj), column oy·Wo + ox.
template <class T>
void im2col(const T* image, std::size_t channels, std::size_t height, std::size_t width,
            const Window& window, T* cols, std::size_t ld, std::size_t col0);

/// The adjoint of im2col: adds the columns back into the image gradient.
template <class T>
void col2im_add(const T* cols, std::size_t ld, std::size_t col0, std::size_t channels,
                std::size_t height, std::size_t width, const Window& window, T* image);

namespace detail {
/// Runs the local backward rule of one node (called by Tape::backward).
template <class T>
void backward_op(Tape<T>& tape, NodeId id, bool parameter_grads);
}  // namespace detail

}  // namespace minsharp
