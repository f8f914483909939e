#include "minsharp/nn/sequential.hpp"

#include "minsharp/core/parallel.hpp"

#include <cmath>

namespace minsharp {

std::string ActShape::str() const { return shape_str(std::array<std::size_t, 3>{c, h, w}); }

// ---- Sequential -----------------------------------------------------------------------

template <class T>
Sequential<T>::Sequential(ActShape input_shape) : input_shape_(input_shape) {
    if (input_shape.c == 0 || input_shape.h == 0 || input_shape.w == 0)
        throw ShapeError("model input shape " + input_shape.str() + ": extents must be positive");
    const std::array<std::size_t, 3> extents{input_shape.c, input_shape.h, input_shape.w};
    activation_elements_ = checked_product(extents, "model input shape");
    check_at_most(activation_elements_, limits::max_example_elements,
                  "model input shape " + input_shape.str() + ": elements per example");
}

template <class T>
Sequential<T>::Sequential(const Sequential& other)
    : input_shape_(other.input_shape_),
      output_shape_(other.output_shape_),
      activation_elements_(other.activation_elements_),
      largest_scratch_(other.largest_scratch_) {
    for (const auto& l : other.layers_) layers_.push_back(l->clone());
}

template <class T>
Sequential<T>& Sequential<T>::operator=(const Sequential& other) {
    if (this != &other) *this = Sequential(other);
    return *this;
}

template <class T>
Sequential<T>& Sequential<T>::add(std::unique_ptr<Layer<T>> layer) {
    if (layers_.size() >= limits::max_layers)
        throw Error("model: more than " + std::to_string(limits::max_layers) + " layers");
    const ActShape in = layers_.empty() ? input_shape_ : output_shape_;
    const ActShape out = layer->output_shape(in);
    const std::size_t activations =
        checked_add(activation_elements_, out.size(), "model: activations per example");
    const std::size_t scratch = std::max(largest_scratch_, layer->scratch_elements(in));
    check_at_most(checked_add(activations, scratch, "model: elements per example"),
                  limits::max_example_elements,
                  "model: with layer " + std::to_string(layers_.size()) + " '" +
                      layer->spec() + "', the elements of one example's activations");
    output_shape_ = out;
    activation_elements_ = activations;
    largest_scratch_ = scratch;
    layers_.push_back(std::move(layer));
    rename();
    return *this;
}

template <class T>
void Sequential<T>::rename() {
    std::size_t index = 0;
    for (auto& l : layers_)
        if (!l->parameters().empty()) l->set_name("layer" + std::to_string(index++));
}

template <class T>
NodeId Sequential<T>::forward(Tape<T>& tape, const Tensor4<T>& x) {
    const auto& s = x.shape();
    if (ActShape{s[1], s[2], s[3]} != input_shape_)
        throw ShapeError("model input: expected examples of shape " + input_shape_.str() +
                         ", found " + ActShape{s[1], s[2], s[3]}.str());
    return forward(tape, tape.input(x));
}

template <class T>
NodeId Sequential<T>::forward(Tape<T>& tape, NodeId x) {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
        const OpTraits& layer = *traits(i);
        const OpTraits* next = traits(i + 1);
        if (layer.absorbs_following_relu && next && layers_[i + 1]->kind() == LayerKind::ReLU) {
            x = layers_[i]->forward_with_relu(tape, x);
            ++i;
        } else if (!(layer.only_reshapes && next && next->reads_input_flat)) {
            x = layers_[i]->forward(tape, x);
        }
    }
    return x;
}

// The traits of layer i's kind, or null past the last layer.
template <class T>
const OpTraits* Sequential<T>::traits(std::size_t i) const {
    static const OpTraits unregistered{};  // a kind outside the registry fuses with nothing
    if (i >= layers_.size()) return nullptr;
    const OpRules<T>* rules = find_op_rules<T>(layers_[i]->kind());
    return rules ? &rules->traits : &unregistered;
}

template <class T>
Tensor2<T> Sequential<T>::predict(const Tensor4<T>& x) {
    Tape<T> tape;
    const NodeId out = forward(tape, x);
    const auto& v = tape.value(out);
    Tensor2<T> logits = Tensor2<T>::from_shape({v.shape()[0], v.shape()[1]});
    std::copy(v.begin(), v.end(), logits.begin());
    return logits;
}

template <class T>
std::vector<Parameter<T>*> Sequential<T>::parameters() {
    std::vector<Parameter<T>*> all;
    for (auto& l : layers_)
        for (auto* p : l->parameters()) all.push_back(p);
    return all;
}

template <class T>
std::vector<const Parameter<T>*> Sequential<T>::parameters() const {
    std::vector<const Parameter<T>*> all;
    for (auto& l : layers_)
        for (auto* p : l->parameters()) all.push_back(p);
    return all;
}

template <class T>
Parameter<T>& Sequential<T>::parameter(const std::string& name) {
    for (auto* p : parameters())
        if (p->name == name) return *p;
    throw Error("model has no parameter named '" + name + "'");
}

template <class T>
std::size_t Sequential<T>::parameter_count() const {
    std::size_t n = 0;
    for (const auto* p : parameters()) n += p->size();
    return n;
}

template <class T>
void Sequential<T>::zero_grad() {
    for (auto* p : parameters()) {
        T* g = p->grad.data();
        parallel_ranges(p->size(), [&](std::size_t begin, std::size_t end) {
            std::fill(g + begin, g + end, T(0));
        });
    }
}

template <class T>
void Sequential<T>::reset_parameters(Rng& rng) {
    for (auto& l : layers_) l->reset_parameters(rng);
}

template <class T>
ActShape Sequential<T>::shape_before(std::size_t i) const {
    ActShape s = input_shape_;
    for (std::size_t j = 0; j < i && j < layers_.size(); ++j) s = layers_[j]->output_shape(s);
    return s;
}

template <class T>
std::string Sequential<T>::spec() const {
    std::string s;
    for (const auto& l : layers_) s += (s.empty() ? "" : ",") + l->spec();
    return s;
}

template class Sequential<float>;
template class Sequential<double>;

}  // namespace minsharp
