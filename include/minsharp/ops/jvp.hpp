// What an op's forward-mode rules read and write: the tangent of its forward (jvp) and the
// tangent of its backward (backward_jvp), for Pearlmutter's R-operator (B. A. Pearlmutter,
// "Fast exact multiplication by the Hessian", Neural Computation 6(1), 1994). Each op file
// defines its pair beside its backward and registers it in its OpRules row; the driver is
// src/autograd/hvp.cpp and docs/second-order.md derives every rule.
#pragma once

#include "minsharp/autograd/tape.hpp"

namespace minsharp {

/// The part of a parameter direction V that belongs to one node's parameters, and where
/// that node adds its share of H V. Null for a node without parameters (or bias).
template <class T>
struct NodeDirection {
    const T* weight = nullptr;  ///< V_W, laid out as the weight
    const T* bias = nullptr;    ///< V_b
    T* weight_product = nullptr;  ///< (H V)_W: R(∂L/∂W) is added here
    T* bias_product = nullptr;    ///< (H V)_b
};

/// What a forward-tangent rule reads and writes.
template <class T>
struct JvpArgs {
    const Node<T>& node;    ///< the op's recorded forward
    const Node<T>* input;   ///< the node it consumed (null for an Input node)
    /// Ṙ of the input's value, same layout; null when it is zero (an input that does not
    /// depend on the parameters).
    const T* input_tangent;
    NodeDirection<T> direction;
    T* tangent;  ///< Ṙ of node.value, written in full
};

/// What the tangent of a backward rule reads and writes. The tape's backward must have
/// run from the loss: node.grad holds ∂L/∂value (for a conv with a fused ReLU, ∂L/∂ of the
/// pre-activation, as the tape leaves it).
template <class T>
struct BackwardJvpArgs {
    const Node<T>& node;
    const Node<T>& input;
    const T* input_tangent;  ///< Ṙ of the input's value; null when zero
    /// R(∂L/∂value) of this node on entry. A rule may overwrite it (the fused ReLU turns it
    /// into R of the pre-activation gradient in place, as the tape does with node.grad).
    T* grad_tangent;
    NodeDirection<T> direction;
    /// R(∂L/∂input value); null when the input needs no gradient.
    T* input_grad_tangent;
    bool accumulate;  ///< add to input_grad_tangent instead of overwriting it
};

/// Writes Ṙ of the node's value (JvpArgs::tangent) in full.
template <class T>
using JvpRule = void (*)(const JvpArgs<T>& a);

/// Writes (or, with accumulate, adds) R(∂L/∂input) and adds the node's parameter products.
template <class T>
using BackwardJvpRule = void (*)(const BackwardJvpArgs<T>& a);

}  // namespace minsharp
