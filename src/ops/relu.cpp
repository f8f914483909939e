// ReLU: forward, backward, spec token and layer. Sequential usually fuses a ReLU into the
// conv before it (see conv2d.cpp); this is the op for every other place.
#include "minsharp/ops/relu.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

namespace minsharp {

using namespace ops_detail;

namespace {

// Element-wise kernels over restrict pointers: written inline in the parallel_ranges lambdas,
// GCC reloaded the captured pointers after every store and branched per element (scalar,
// 2.3 ns per element instead of vector selects).
template <class T>
void relu_range(const T* __restrict a, T* __restrict y, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) y[i] = a[i] > T(0) ? a[i] : T(0);
}

template <class T>
void relu_grad_range(const T* __restrict y, const T* __restrict dy, T* __restrict dx,
                     std::size_t n, bool accumulate) {
    if (accumulate)
        for (std::size_t i = 0; i < n; ++i) dx[i] += y[i] > T(0) ? dy[i] : T(0);
    else
        for (std::size_t i = 0; i < n; ++i) dx[i] = y[i] > T(0) ? dy[i] : T(0);
}

}  // namespace

// ---- forward --------------------------------------------------------------------------

template <class T>
NodeId relu(Tape<T>& tape, NodeId x) {
    const Node<T>& in = tape.node(x);
    Node<T>& out = tape.push(OpKind::ReLU, x, shape4(in.value));
    const T* a = in.value.data();
    T* y = out.value.data();
    parallel_ranges(in.value.size(), [&](std::size_t begin, std::size_t end) {
        relu_range(a + begin, y + begin, end - begin);
    });
    return tape.last();
}

// ---- backward -------------------------------------------------------------------------

namespace {

template <class T>
void backward_relu(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const T* y = out.value.data();
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    parallel_ranges(out.value.size(), [&](std::size_t begin, std::size_t end) {
        relu_grad_range(y + begin, dy + begin, dx + begin, end - begin, in.grad_written);
    });
    wrote_grad(in);
}

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

template <class T>
void jvp_relu(const JvpArgs<T>& a) {
    const std::size_t n = a.node.value.size();
    if (!a.input_tangent) {
        std::fill_n(a.tangent, n, T(0));
        return;
    }
    // The tangent passes through where the unit is active: the mask of relu's backward.
    const T* y = a.node.value.data();
    parallel_ranges(n, [&](std::size_t begin, std::size_t end) {
        relu_grad_range(y + begin, a.input_tangent + begin, a.tangent + begin, end - begin, false);
    });
}

// ∂x = mask ⊙ ∂y with the mask locally constant: R(∂x) = mask ⊙ R(∂y).
template <class T>
void backward_jvp_relu(const BackwardJvpArgs<T>& a) {
    if (!a.input_grad_tangent) return;
    const T* y = a.node.value.data();
    parallel_ranges(a.node.value.size(), [&](std::size_t begin, std::size_t end) {
        relu_grad_range(y + begin, a.grad_tangent + begin, a.input_grad_tangent + begin,
                        end - begin, a.accumulate);
    });
}

// relu
template <class T>
std::unique_ptr<Layer<T>> parse_relu(const SpecToken& token, const ActShape&) {
    if (token.fields.size() != 1) return nullptr;
    return std::make_unique<ReLU<T>>();
}

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> relu_rules() {
    OpRules<T> r;
    r.kind = OpKind::ReLU;
    r.name = "relu";
    r.layer_name = "relu";
    r.traits = {.piecewise_linear = true, .positively_homogeneous = true};
    r.backward = backward_relu<T>;
    r.jvp = jvp_relu<T>;
    r.backward_jvp = backward_jvp_relu<T>;
    r.spec_token = "relu";
    r.spec_form = "relu";
    r.parse = parse_relu<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_RELU(T)           \
    template NodeId relu<T>(Tape<T>&, NodeId); \
    template class ReLU<T>;                    \
    template OpRules<T> relu_rules<T>();

MINSHARP_INSTANTIATE_RELU(float)
MINSHARP_INSTANTIATE_RELU(double)

}  // namespace minsharp
