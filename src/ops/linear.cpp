// Fully connected layer: forward, backward, exact-diagonal rule, spec token and layer.
#include "minsharp/ops/linear.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

#include <cstring>

namespace minsharp {

using namespace ops_detail;

namespace {

// Column sums of a row-major (rows × cols) matrix, added into out.
template <class T>
void add_column_sums(const T* m, std::size_t rows, std::size_t cols, T* out) {
    for (std::size_t r = 0; r < rows; ++r) {
        const T* row = m + r * cols;
        for (std::size_t c = 0; c < cols; ++c) out[c] += row[c];
    }
}

}  // namespace

// ---- forward --------------------------------------------------------------------------

template <class T>
NodeId linear(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias) {
    const Node<T>& in = tape.node(x);
    const std::size_t n = in.value.shape()[0], f = features(in.value);
    const std::size_t o = weight.shape.size() == 2 ? weight.shape[0] : 0;
    require_parameter_shape(weight, {o, f}, "linear");
    if (bias) require_parameter_shape(*bias, {o}, "linear");
    checked_product(std::array{n, o}, "linear output shape");
    Node<T>& out = tape.push(OpKind::Linear, x, {n, o, 1, 1});
    out.weight = &weight;
    out.bias = bias;
    out.needs_grad = true;
    T* y = out.value.data();
    for (std::size_t i = 0; i < n; ++i)
        if (bias)
            std::memcpy(y + i * o, bias->data(), o * sizeof(T));
        else
            std::fill(y + i * o, y + (i + 1) * o, T(0));
    parallel_gemm<T>(Trans::No, Trans::Yes, n, o, f, T(1), in.value.data(), weight.data(), T(1), y);
    return tape.last();
}

// ---- backward -------------------------------------------------------------------------

namespace {

template <class T>
void backward_linear(Tape<T>& tape, NodeId id, bool parameter_grads) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    const std::size_t n = out.value.shape()[0], o = out.value.shape()[1], f = features(in.value);
    if (parameter_grads) {
        parallel_gemm<T>(Trans::Yes, Trans::No, o, f, n, T(1), out.grad.data(), in.value.data(),
                         T(1), out.weight->grad.data());
        if (out.bias) add_column_sums(out.grad.data(), n, o, out.bias->grad.data());
    }
    if (in.needs_grad) {
        parallel_gemm<T>(Trans::No, Trans::No, n, f, o, T(1), out.grad.data(),
                         out.weight->data(), in.grad_written ? T(1) : T(0), in.grad.data());
        wrote_grad(in);
    }
}

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

// Ṙy = Ṙx Wᵀ + x V_Wᵀ + V_b.
template <class T>
void jvp_linear(const JvpArgs<T>& a) {
    const Node<T>& in = *a.input;
    const std::size_t n = a.node.value.shape()[0], o = a.node.value.shape()[1];
    const std::size_t f = features(in.value);
    for (std::size_t i = 0; i < n; ++i)
        if (a.direction.bias)
            std::memcpy(a.tangent + i * o, a.direction.bias, o * sizeof(T));
        else
            std::fill_n(a.tangent + i * o, o, T(0));
    if (a.direction.weight)
        parallel_gemm<T>(Trans::No, Trans::Yes, n, o, f, T(1), in.value.data(),
                         a.direction.weight, T(1), a.tangent);
    if (a.input_tangent)
        parallel_gemm<T>(Trans::No, Trans::Yes, n, o, f, T(1), a.input_tangent,
                         a.node.weight->data(), T(1), a.tangent);
}

// ∂W = ∂yᵀ x, ∂b = Σ_rows ∂y, ∂x = ∂y W; so
// R(∂W) = R(∂y)ᵀ x + ∂yᵀ Ṙx, R(∂b) = Σ_rows R(∂y), R(∂x) = R(∂y) W + ∂y V_W.
template <class T>
void backward_jvp_linear(const BackwardJvpArgs<T>& a) {
    const Node<T>& in = a.input;
    const std::size_t n = a.node.value.shape()[0], o = a.node.value.shape()[1];
    const std::size_t f = features(in.value);
    const T* g = a.node.grad.data();
    if (T* wp = a.direction.weight_product) {
        parallel_gemm<T>(Trans::Yes, Trans::No, o, f, n, T(1), a.grad_tangent, in.value.data(),
                         T(1), wp);
        if (a.input_tangent)
            parallel_gemm<T>(Trans::Yes, Trans::No, o, f, n, T(1), g, a.input_tangent, T(1), wp);
    }
    if (T* bp = a.direction.bias_product) add_column_sums(a.grad_tangent, n, o, bp);
    if (T* dx = a.input_grad_tangent) {
        parallel_gemm<T>(Trans::No, Trans::No, n, f, o, T(1), a.grad_tangent,
                         a.node.weight->data(), a.accumulate ? T(1) : T(0), dx);
        if (a.direction.weight)
            parallel_gemm<T>(Trans::No, Trans::No, n, f, o, T(1), g, a.direction.weight, T(1), dx);
    }
}

// ---- exact diagonal -------------------------------------------------------------------

// Σ_i Σ_k (E_ik ⊗ A_i)∘(E_ik ⊗ A_i) = (Σ_k E_k∘E_k)ᵀ (A∘A): the passes only sum the squared
// output gradients, and one GEMM per chunk does the rest.
template <class T>
class LinearDiag final : public DiagRule<T> {
public:
    LinearDiag(const Tape<T>& tape, NodeId node, const DiagSetup& setup)
        : node_(node), in_(features(tape.value(tape.node(node).input))),
          out_(tape.value(node).shape()[1]), weight_(*setup.weight), bias_(setup.bias) {}

    void start_chunk(std::size_t count) override { squares_.assign(count * out_, T(0)); }

    void after_pass(const Tape<T>& tape, std::size_t, std::size_t count) override {
        const T* g = tape.grad(node_).data();
        T* s = squares_.data();
        for (std::size_t e = 0; e < count * out_; ++e) s[e] += g[e] * g[e];
    }

    void end_chunk(const Tape<T>& tape, std::size_t count, DiagScratch<T>& scratch) override {
        const T* a = tape.value(tape.node(node_).input).data();
        std::vector<T>& squared_input = scratch.squared_input;
        std::vector<T>& product = scratch.product;
        squared_input.resize(count * in_);
        for (std::size_t e = 0; e < count * in_; ++e) squared_input[e] = a[e] * a[e];
        product.resize(out_ * in_);
        parallel_gemm<T>(Trans::Yes, Trans::No, out_, in_, count, T(1), squares_.data(),
                         squared_input.data(), T(0), product.data());
        for (std::size_t e = 0; e < out_ * in_; ++e) weight_[e] += double(product[e]);
        if (!bias_) return;
        std::vector<double>& b = *bias_;
        for (std::size_t i = 0; i < count; ++i)
            for (std::size_t o = 0; o < out_; ++o) b[o] += double(squares_[i * out_ + o]);
    }

private:
    NodeId node_;
    std::size_t in_, out_;
    std::vector<double>& weight_;
    std::vector<double>* bias_;
    std::vector<T> squares_;  // Σ_k E_k∘E_k, count × out
};

template <class T>
std::unique_ptr<DiagRule<T>> linear_diag(const Tape<T>& tape, NodeId node,
                                         const DiagSetup& setup) {
    return std::make_unique<LinearDiag<T>>(tape, node, setup);
}

// ---- layer ----------------------------------------------------------------------------

Shape dense_weight_shape(std::size_t in, std::size_t out) {
    check_positive_at_most(out, limits::max_features, "dense: out features");
    if (in == 0) throw ShapeError("dense: in features must be positive");
    check_at_most(checked_mul(out, in, "dense: weight count"), limits::max_layer_parameters,
                  "dense: weight count (" + std::to_string(out) + " out × " +
                      std::to_string(in) + " in)");
    return {out, in};
}

// dense:OUT[:nobias]
template <class T>
std::unique_ptr<Layer<T>> parse_dense(const SpecToken& token, const ActShape& in) {
    require_fields(token, 2, "dense:OUT[:nobias]");
    const std::size_t out =
        spec_number(token.fields[1], token, "out features", 1, limits::max_features);
    const auto o = parse_options(token, 2);
    return std::make_unique<Dense<T>>(in.size(), out, o.bias);
}

}  // namespace

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

// ---- unit geometry --------------------------------------------------------------------

namespace {

// One unit per output feature; a (C, H, W) input read unflattened gives each input channel
// H·W consecutive weights of a row.
template <class T>
UnitGeometry<T> dense_unit_geometry(const Layer<T>& layer, const ActShape& in) {
    const auto& d = layer_as<Dense<T>>(layer);
    return {.weight = &d.weight,
            .bias = d.has_bias() ? &d.bias : nullptr,
            .units = d.out_features(),
            .input_width = d.in_features(),
            .kernel_positions = 1,
            .input_channels = in.c,
            .entries_per_input_channel = in.h * in.w};
}

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> linear_rules() {
    OpRules<T> r;
    r.kind = OpKind::Linear;
    r.name = "linear";
    r.layer_name = "dense";
    r.traits = {.parametric = true, .piecewise_linear = true, .positively_homogeneous = true,
                .reads_input_flat = true};
    r.backward = backward_linear<T>;
    r.jvp = jvp_linear<T>;
    r.backward_jvp = backward_jvp_linear<T>;
    r.diag = linear_diag<T>;
    r.unit_geometry = dense_unit_geometry<T>;
    r.spec_token = "dense";
    r.spec_form = "dense:OUT[:nobias]";
    r.parse = parse_dense<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_LINEAR(T)                                           \
    template NodeId linear<T>(Tape<T>&, NodeId, Parameter<T>&, Parameter<T>*);  \
    template class Dense<T>;                                                     \
    template OpRules<T> linear_rules<T>();

MINSHARP_INSTANTIATE_LINEAR(float)
MINSHARP_INSTANTIATE_LINEAR(double)

}  // namespace minsharp
