// The Hessian-vector product driver: the two tangent passes over a recorded tape, each node
// dispatched through its kind's OpRules row (jvp, backward_jvp). The rules themselves live
// in their op files under src/ops/, beside each op's backward; docs/second-order.md
// derives them.
#include "minsharp/autograd/hvp.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/registry.hpp"

#include <algorithm>
#include <cstring>

namespace minsharp::autograd {

// ---- the two tangent passes -----------------------------------------------------------

namespace {

std::size_t features(const auto& t) { return t.shape()[1] * t.shape()[2] * t.shape()[3]; }

template <class T>
T* sized(std::vector<T>& buffer, std::size_t size) {
    if (buffer.size() < size) buffer.resize(size);
    return buffer.data();
}

// A kind without second-order rules cannot be part of a network whose H v is asked for.
template <class T>
JvpRule<T> jvp_rule(OpKind kind) {
    const OpRules<T>& r = op_rules<T>(kind);
    if (!r.jvp)
        throw Error("Hessian-vector product: op '" + std::string(r.name) + "' has no JVP rule");
    return r.jvp;
}

template <class T>
BackwardJvpRule<T> backward_jvp_rule(OpKind kind) {
    const OpRules<T>& r = op_rules<T>(kind);
    if (!r.backward_jvp)
        throw Error("Hessian-vector product: op '" + std::string(r.name) +
                    "' has no backward JVP rule");
    return r.backward_jvp;
}

// A node's value depends on the parameters exactly when the tape says it needs a
// gradient; the tangent of every other node is zero and is not stored.
template <class T>
void tangent_forward(const Tape<T>& tape, NodeId loss,
                     std::span<const NodeDirection<T>> directions, NodeTangents<T>& t) {
    for (NodeId id = 0; id <= loss; ++id) {
        const Node<T>& node = tape.node(id);
        if (!node.needs_grad) continue;
        const Node<T>* in = node.input == no_node ? nullptr : &tape.node(node.input);
        const T* in_tangent = in && in->needs_grad ? t.value[node.input].data() : nullptr;
        jvp_rule<T>(node.kind)({node, in, in_tangent, directions[id],
                                sized(t.value[id], node.value.size())});
    }
}

// As Tape::backward: the first rule to reach a node writes its gradient's tangent, later
// ones add to it. The seed is a constant, so the loss node's own tangent is zero.
template <class T>
void tangent_backward(const Tape<T>& tape, NodeId loss,
                      std::span<const NodeDirection<T>> directions, NodeTangents<T>& t) {
    std::fill(t.grad_written.begin(), t.grad_written.end(), char(0));
    std::fill_n(sized(t.grad[loss], tape.node(loss).value.size()), tape.node(loss).value.size(),
                T(0));
    t.grad_written[loss] = 1;
    for (NodeId id = loss + 1; id-- > 0;) {
        const Node<T>& node = tape.node(id);
        if (!node.needs_grad || node.kind == OpKind::Input || !t.grad_written[id]) continue;
        const Node<T>& in = tape.node(node.input);
        const T* in_tangent = in.needs_grad ? t.value[node.input].data() : nullptr;
        T* in_grad = in.needs_grad ? sized(t.grad[node.input], in.value.size()) : nullptr;
        backward_jvp_rule<T>(node.kind)({node, in, in_tangent, t.grad[id].data(), directions[id],
                                         in_grad, t.grad_written[node.input] != 0});
        if (in.needs_grad) t.grad_written[node.input] = 1;
    }
}

}  // namespace

template <class T>
void tangent_passes(const Tape<T>& tape, NodeId loss, std::span<const NodeDirection<T>> directions,
                    NodeTangents<T>& tangents) {
    const Node<T>& out = tape.node(loss);
    if (out.kind != OpKind::CrossEntropy)
        throw Error("Hessian-vector product: node " + std::to_string(loss) + " is " +
                    to_string(out.kind) + ", not the cross-entropy loss");
    if (directions.size() <= loss)
        throw Error("Hessian-vector product: " + std::to_string(directions.size()) +
                    " node directions for " + std::to_string(loss + 1) + " nodes");
    tangents.value.resize(std::max(tangents.value.size(), loss + 1));
    tangents.grad.resize(std::max(tangents.grad.size(), loss + 1));
    tangents.grad_written.resize(std::max(tangents.grad_written.size(), loss + 1));
    tangent_forward(tape, loss, directions, tangents);
    tangent_backward(tape, loss, directions, tangents);
}

// ---- the driver ------------------------------------------------------------------------

namespace {

// Bytes a recording holds: what is kept between products.
template <class T>
std::size_t recorded_bytes(const Tape<T>& tape) {
    std::size_t bytes = 0;
    for (NodeId id = 0; id < tape.size(); ++id) {
        const Node<T>& n = tape.node(id);
        bytes += (n.value.size() + (n.needs_grad ? n.grad.size() : 0) + n.probabilities.size()) *
                     sizeof(T) +
                 n.argmax.size() * sizeof(std::uint32_t);
    }
    return bytes;
}

}  // namespace

template <class T>
HessianVectorProduct<T>::HessianVectorProduct(Sequential<T>& model, const Tensor4<T>& x,
                                              const std::vector<int>& labels,
                                              const HvpOptions& options)
    : model_(model), labels_(labels), inputs_(labels.size()) {
    if (inputs_ == 0) throw Error("Hessian-vector product: no inputs");
    if (options.chunk == 0) throw Error("Hessian-vector product: chunk must be positive");
    if (x.shape()[0] != inputs_)
        throw ShapeError("Hessian-vector product: " + std::to_string(x.shape()[0]) +
                         " inputs but " + std::to_string(inputs_) + " labels");
    const auto& s = x.shape();
    if (ActShape{s[1], s[2], s[3]} != model.input_shape())
        throw ShapeError("Hessian-vector product: the model takes examples of shape " +
                         model.input_shape().str() + ", found " +
                         ActShape{s[1], s[2], s[3]}.str());
    parameters_ = model.parameters();
    for (const auto* p : parameters_) {
        offsets_.push_back(dimension_);
        dimension_ += p->size();
        recorded_parameters_.insert(recorded_parameters_.end(), p->value.begin(), p->value.end());
    }
    direction_.resize(dimension_);
    product_.resize(dimension_);
    per_example_ = features(x);
    for (std::size_t first = 0; first < inputs_; first += options.chunk)
        chunks_.push_back({first, std::min(options.chunk, inputs_ - first)});
    // The first chunks are kept while they fit in retain_bytes; the rest are recorded here
    // only for the loss, and again at every product.
    std::size_t retained_bytes = 0;
    bool retaining = true;
    for (const Chunk& c : chunks_) {
        const T* chunk_inputs = x.data() + c.first * per_example_;
        if (!retaining) {
            loss_ += record(scratch_, chunk_inputs, c);
            continue;
        }
        auto tape = std::make_unique<Tape<T>>();
        loss_ += record(*tape, chunk_inputs, c);
        retained_bytes += recorded_bytes(*tape);
        retaining = retained_bytes <= options.retain_bytes;
        if (retaining) retained_.push_back(std::move(tape));
    }
    loss_ /= double(inputs_);
    // The inputs of the chunks recorded again at every product.
    const std::size_t kept = retained_.size() < chunks_.size() ? chunks_[retained_.size()].first : inputs_;
    later_inputs_.assign(x.data() + kept * per_example_, x.data() + inputs_ * per_example_);
}

template <class T>
HessianVectorProduct<T>::~HessianVectorProduct() = default;

// One forward and one backward of a chunk, seeded so that the chunks' gradients sum to that
// of the mean over all inputs. Returns the chunk's summed loss.
template <class T>
double HessianVectorProduct<T>::record(Tape<T>& tape, const T* x, const Chunk& chunk) {
    const auto& shape = model_.input_shape();
    ensure_shape(chunk_x_, {chunk.count, shape.c, shape.h, shape.w});
    std::copy_n(x, chunk.count * per_example_, chunk_x_.data());
    const std::vector<int> labels(labels_.begin() + long(chunk.first),
                                  labels_.begin() + long(chunk.first + chunk.count));
    tape.clear();
    const NodeId loss = cross_entropy(tape, model_.forward(tape, chunk_x_), labels);
    Tensor4<T> seed = Tensor4<T>::from_shape({1, 1, 1, 1});
    seed(0, 0, 0, 0) = static_cast<T>(double(chunk.count) / double(inputs_));
    tape.backward(loss, seed, false);
    return double(tape.value(loss)(0, 0, 0, 0)) * double(chunk.count);
}

template <class T>
void HessianVectorProduct<T>::require_unchanged_parameters() const {
    std::size_t at = 0;
    for (const auto* p : parameters_) {
        if (std::memcmp(p->value.data(), recorded_parameters_.data() + at, p->size() * sizeof(T)))
            throw Error("Hessian-vector product: parameter '" + p->name +
                        "' changed since the forward was recorded; record again");
        at += p->size();
    }
}

// The NodeDirection of every node of the tape: slices of direction_ and product_.
template <class T>
void HessianVectorProduct<T>::point_directions(const Tape<T>& tape) {
    node_directions_.assign(tape.size(), {});
    auto slice = [&](const Parameter<T>* p, std::vector<T>& flat) -> T* {
        const auto it = std::find(parameters_.begin(), parameters_.end(), p);
        if (it == parameters_.end())
            throw Error("Hessian-vector product: the tape uses parameter '" + p->name +
                        "', which is not the model's");
        return flat.data() + offsets_[std::size_t(it - parameters_.begin())];
    };
    for (NodeId id = 0; id < tape.size(); ++id) {
        const Node<T>& n = tape.node(id);
        NodeDirection<T>& d = node_directions_[id];
        if (n.weight) {
            d.weight = slice(n.weight, direction_);
            d.weight_product = slice(n.weight, product_);
        }
        if (n.bias) {
            d.bias = slice(n.bias, direction_);
            d.bias_product = slice(n.bias, product_);
        }
    }
}

template <class T>
void HessianVectorProduct<T>::add_chunk_product(const Tape<T>& tape, std::span<double> hv) {
    std::fill(product_.begin(), product_.end(), T(0));
    point_directions(tape);
    tangent_passes<T>(tape, tape.last(), node_directions_, tangents_);
    for (std::size_t i = 0; i < dimension_; ++i) hv[i] += double(product_[i]);
}

template <class T>
void HessianVectorProduct<T>::apply(std::span<const double> v, std::span<double> hv) {
    if (v.size() != dimension_ || hv.size() != dimension_)
        throw ShapeError("Hessian-vector product: v has " + std::to_string(v.size()) +
                         " and hv " + std::to_string(hv.size()) + " entries for a model with " +
                         std::to_string(dimension_) + " parameters");
    require_unchanged_parameters();
    for (std::size_t i = 0; i < dimension_; ++i) direction_[i] = static_cast<T>(v[i]);
    std::fill(hv.begin(), hv.end(), 0.0);
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
        if (c < retained_.size()) {
            add_chunk_product(*retained_[c], hv);
            continue;
        }
        const std::size_t skipped = chunks_[retained_.size()].first;
        record(scratch_, later_inputs_.data() + (chunks_[c].first - skipped) * per_example_,
               chunks_[c]);
        add_chunk_product(scratch_, hv);
    }
}

template <class T>
void hessian_vector_product(Sequential<T>& model, const Tensor4<T>& x,
                            const std::vector<int>& labels, std::span<const double> v,
                            std::span<double> hv, const HvpOptions& options) {
    HessianVectorProduct<T>(model, x, labels, options).apply(v, hv);
}

#define MINSHARP_INSTANTIATE_HVP(T)                                                          \
    template void tangent_passes<T>(const Tape<T>&, NodeId, std::span<const NodeDirection<T>>, \
                                    NodeTangents<T>&);                                       \
    template class HessianVectorProduct<T>;                                                  \
    template void hessian_vector_product<T>(Sequential<T>&, const Tensor4<T>&,               \
                                            const std::vector<int>&, std::span<const double>, \
                                            std::span<double>, const HvpOptions&);

MINSHARP_INSTANTIATE_HVP(float)
MINSHARP_INSTANTIATE_HVP(double)

}  // namespace minsharp::autograd
