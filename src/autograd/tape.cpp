#include "minsharp/autograd/tape.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/registry.hpp"

#include <algorithm>

namespace minsharp {

template <class T>
Parameter<T>::Parameter(std::string name_, Shape shape_)
    : name(std::move(name_)), shape(std::move(shape_)) {
    std::size_t n = 1;
    for (auto d : shape) n *= d;
    value = Tensor1<T>::from_shape({n});
    grad = Tensor1<T>::from_shape({n});
    value.fill(T(0));
    grad.fill(T(0));
}

std::size_t Window::output_extent(std::size_t input_extent, std::string_view what) const {
    const std::size_t padded =
        checked_add(input_extent, checked_mul(2, padding, "padding"), "padded extent");
    if (kernel == 0 || stride == 0 || padded < kernel)
        throw ShapeError(std::string(what) + ": window of size " + std::to_string(kernel) +
                         " (stride " + std::to_string(stride) + ", padding " +
                         std::to_string(padding) + ") does not fit an input of extent " +
                         std::to_string(input_extent));
    return (padded - kernel) / stride + 1;
}

template <class T>
std::size_t Tape<T>::checked(NodeId id) const {
    if (id >= size_)
        throw Error("tape: node " + std::to_string(id) + " does not exist (tape has " +
                    std::to_string(size_) + " nodes)");
    return id;
}

template <class T>
Node<T>& Tape<T>::push(OpKind kind, NodeId input, const std::array<std::size_t, 4>& shape) {
    if (size_ == nodes_.size()) nodes_.emplace_back();
    Node<T>& n = nodes_[size_++];
    n.kind = kind;
    n.input = input;
    n.needs_grad = input != no_node && nodes_[input].needs_grad;
    n.weight = nullptr;
    n.bias = nullptr;
    n.relu = false;
    ensure_shape(n.value, shape);
    return n;
}

template <class T>
NodeId Tape<T>::input(const Tensor4<T>& x) {
    std::array<std::size_t, 4> shape;
    std::copy(x.shape().begin(), x.shape().end(), shape.begin());
    Node<T>& n = push(OpKind::Input, no_node, shape);
    std::copy(x.begin(), x.end(), n.value.begin());
    return last();
}

template <class T>
void Tape<T>::prepare_grads(NodeId upto) {
    for (NodeId i = 0; i <= upto; ++i) {
        Node<T>& n = nodes_[i];
        n.grad_written = false;
        n.grad_masked = false;
        if (!n.needs_grad && i != upto) continue;
        std::array<std::size_t, 4> shape;
        std::copy(n.value.shape().begin(), n.value.shape().end(), shape.begin());
        ensure_shape(n.grad, shape);
    }
}

// Nodes the seed does not reach have a zero gradient.
template <class T>
void Tape<T>::zero_unreached_grads(NodeId upto) {
    for (NodeId i = 0; i < upto; ++i) {
        Node<T>& n = nodes_[i];
        if (!n.needs_grad || n.grad_written) continue;
        std::fill(n.grad.begin(), n.grad.end(), T(0));
        n.grad_written = true;
    }
}

template <class T>
void Tape<T>::backward(NodeId scalar) {
    Tensor4<T> seed = Tensor4<T>::from_shape({1, 1, 1, 1});
    check_shape(seed, node(scalar).value.shape(), "backward from a non-scalar node");
    seed(0, 0, 0, 0) = T(1);
    backward(scalar, seed, true);
}

template <class T>
void Tape<T>::backward(NodeId from, const Tensor4<T>& seed, bool parameter_grads) {
    check_shape(seed, node(from).value.shape(), "backward seed for " + to_string(node(from).kind));
    prepare_grads(from);
    std::copy(seed.begin(), seed.end(), nodes_[from].grad.begin());
    nodes_[from].grad_written = true;
    const auto& rules = all_op_rules<T>();
    for (NodeId i = from + 1; i-- > 0;) {
        const Node<T>& n = nodes_[i];
        if (!n.needs_grad || !n.grad_written) continue;
        if (const BackwardRule<T> backward = rules[std::size_t(n.kind)].backward)
            backward(*this, i, parameter_grads);
    }
    zero_unreached_grads(from);
}

template struct Parameter<float>;
template struct Parameter<double>;
template class Tape<float>;
template class Tape<double>;

}  // namespace minsharp
