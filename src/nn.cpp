#include "minsharp/nn.hpp"

#include "minsharp/parallel.hpp"

#include <cmath>

namespace minsharp {

std::string ActShape::str() const { return shape_str(std::array<std::size_t, 3>{c, h, w}); }

namespace {

template <class T>
void fill_uniform(Parameter<T>& p, double bound, Rng& rng) {
    for (auto& v : p.value) v = static_cast<T>(rng.uniform(-bound, bound));
}

// PyTorch's kaiming_uniform_(a=√5) reduces to U(±1/√fan_in), the same bound as the bias.
template <class T>
void pytorch_default_init(Parameter<T>& weight, Parameter<T>& bias, std::size_t fan_in,
                          Rng& rng) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    fill_uniform(weight, bound, rng);
    if (!bias.shape.empty()) fill_uniform(bias, bound, rng);
}

// Checks a layer size against its limit before anything is allocated.
void check_positive_at_most(std::size_t value, std::size_t limit, const std::string& what) {
    if (value == 0) throw ShapeError(what + " must be positive");
    check_at_most(value, limit, what);
}

Shape dense_weight_shape(std::size_t in, std::size_t out) {
    check_positive_at_most(out, limits::max_features, "dense: out features");
    if (in == 0) throw ShapeError("dense: in features must be positive");
    check_at_most(checked_mul(out, in, "dense: weight count"), limits::max_layer_parameters,
                  "dense: weight count (" + std::to_string(out) + " out × " +
                      std::to_string(in) + " in)");
    return {out, in};
}

void check_window(const Window& w, const std::string& layer) {
    check_positive_at_most(w.kernel, limits::max_kernel, layer + ": kernel");
    check_positive_at_most(w.stride, limits::max_stride, layer + ": stride");
    check_at_most(w.padding, w.kernel - 1,
                  layer + ": padding (with kernel " + std::to_string(w.kernel) + ")");
}

Shape conv_weight_shape(std::size_t in, std::size_t out, const Window& w) {
    check_positive_at_most(out, limits::max_features, "conv: out channels");
    check_positive_at_most(in, limits::max_features, "conv: in channels");
    check_window(w, "conv");
    const Shape shape{out, in, w.kernel, w.kernel};
    check_at_most(checked_product(shape, "conv: weight shape"), limits::max_layer_parameters,
                  "conv: weight count of " + shape_str(shape));
    return shape;
}

std::string window_suffix(const Window& w) {
    std::string s;
    if (w.stride != 1) s += ":stride" + std::to_string(w.stride);
    if (w.padding != 0) s += ":pad" + std::to_string(w.padding);
    return s;
}

}  // namespace

// ---- Dense ----------------------------------------------------------------------------

template <class T>
Dense<T>::Dense(std::size_t in, std::size_t out, bool with_bias)
    : weight("weight", dense_weight_shape(in, out)),
      bias(with_bias ? Parameter<T>("bias", {out}) : Parameter<T>()) {}

template <class T>
std::string Dense<T>::spec() const {
    return "dense:" + std::to_string(out_features()) + (has_bias() ? "" : ":nobias");
}

template <class T>
NodeId Dense<T>::forward(Tape<T>& tape, NodeId x) {
    return linear(tape, x, weight, has_bias() ? &bias : nullptr);
}

template <class T>
ActShape Dense<T>::output_shape(const ActShape& in) const {
    if (in.size() != in_features())
        throw ShapeError("dense '" + weight.name + "': input has " + std::to_string(in.size()) +
                         " features " + in.str() + ", layer expects " +
                         std::to_string(in_features()));
    return {out_features(), 1, 1};
}

template <class T>
std::vector<Parameter<T>*> Dense<T>::parameters() {
    if (has_bias()) return {&weight, &bias};
    return {&weight};
}

template <class T>
void Dense<T>::reset_parameters(Rng& rng) {
    pytorch_default_init(weight, bias, in_features(), rng);
}

template <class T>
void Dense<T>::set_name(const std::string& prefix) {
    weight.name = prefix + ".weight";
    bias.name = prefix + ".bias";
}

// ---- Conv2d ---------------------------------------------------------------------------

template <class T>
Conv2d<T>::Conv2d(std::size_t in_channels, std::size_t out_channels, std::size_t kernel,
                  std::size_t stride, std::size_t padding, bool with_bias)
    : window{kernel, stride, padding},
      weight("weight", conv_weight_shape(in_channels, out_channels, window)),
      bias(with_bias ? Parameter<T>("bias", {out_channels}) : Parameter<T>()) {}

template <class T>
std::string Conv2d<T>::spec() const {
    return "conv:" + std::to_string(out_channels()) + ":" + std::to_string(window.kernel) +
           window_suffix(window) + (has_bias() ? "" : ":nobias");
}

template <class T>
NodeId Conv2d<T>::forward(Tape<T>& tape, NodeId x) {
    return conv2d(tape, x, weight, has_bias() ? &bias : nullptr, window);
}

template <class T>
NodeId Conv2d<T>::forward_with_relu(Tape<T>& tape, NodeId x) {
    return conv2d(tape, x, weight, has_bias() ? &bias : nullptr, window, true);
}

template <class T>
ActShape Conv2d<T>::output_shape(const ActShape& in) const {
    if (in.c != in_channels())
        throw ShapeError("conv '" + weight.name + "': input has " + std::to_string(in.c) +
                         " channels, layer expects " + std::to_string(in_channels()));
    return {out_channels(), window.output_extent(in.h, "conv '" + weight.name + "' height"),
            window.output_extent(in.w, "conv '" + weight.name + "' width")};
}

// The im2col matrix of one image: C·k·k rows, one column per output position.
template <class T>
std::size_t Conv2d<T>::scratch_elements(const ActShape& in) const {
    const ActShape out = output_shape(in);
    const std::array<std::size_t, 5> matrix{in.c, window.kernel, window.kernel, out.h, out.w};
    return checked_product(matrix, "conv '" + weight.name + "' im2col matrix");
}

template <class T>
std::vector<Parameter<T>*> Conv2d<T>::parameters() {
    if (has_bias()) return {&weight, &bias};
    return {&weight};
}

template <class T>
void Conv2d<T>::reset_parameters(Rng& rng) {
    pytorch_default_init(weight, bias, in_channels() * window.kernel * window.kernel, rng);
}

template <class T>
void Conv2d<T>::set_name(const std::string& prefix) {
    weight.name = prefix + ".weight";
    bias.name = prefix + ".bias";
}

// ---- MaxPool2d ------------------------------------------------------------------------

template <class T>
MaxPool2d<T>::MaxPool2d(std::size_t kernel, std::size_t stride) : window{kernel, stride, 0} {
    check_window(window, "maxpool");
}

template <class T>
std::string MaxPool2d<T>::spec() const {
    return "maxpool:" + std::to_string(window.kernel) + ":" + std::to_string(window.stride);
}

template <class T>
ActShape MaxPool2d<T>::output_shape(const ActShape& in) const {
    return {in.c, window.output_extent(in.h, "maxpool height"),
            window.output_extent(in.w, "maxpool width")};
}

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
        if (is(i, LayerKind::Conv2d) && is(i + 1, LayerKind::ReLU)) {
            x = static_cast<Conv2d<T>&>(*layers_[i]).forward_with_relu(tape, x);
            ++i;
        } else if (!(is(i, LayerKind::Flatten) && is(i + 1, LayerKind::Dense))) {
            x = layers_[i]->forward(tape, x);
        }
    }
    return x;
}

template <class T>
bool Sequential<T>::is(std::size_t i, LayerKind kind) const {
    return i < layers_.size() && layers_[i]->kind() == kind;
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

#define MINSHARP_INSTANTIATE_NN(T)   \
    template class Dense<T>;         \
    template class Conv2d<T>;        \
    template class MaxPool2d<T>;     \
    template class Sequential<T>;

MINSHARP_INSTANTIATE_NN(float)
MINSHARP_INSTANTIATE_NN(double)

}  // namespace minsharp
