// Flatten: forward, backward, spec token and layer. Sequential records nothing for a
// flatten right before a layer that reads its input flat (a dense one).
#include "minsharp/ops/flatten.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

namespace minsharp {

using namespace ops_detail;

// ---- forward --------------------------------------------------------------------------

template <class T>
NodeId flatten(Tape<T>& tape, NodeId x) {
    const Node<T>& in = tape.node(x);
    Node<T>& out = tape.push(OpKind::Flatten, x, {in.value.shape()[0], features(in.value), 1, 1});
    const T* a = in.value.data();
    T* y = out.value.data();
    parallel_ranges(in.value.size(), [&](std::size_t begin, std::size_t end) {
        std::copy(a + begin, a + end, y + begin);
    });
    return tape.last();
}

// ---- backward -------------------------------------------------------------------------

namespace {

template <class T>
void copy_range(const T* __restrict a, T* __restrict y, std::size_t n, bool accumulate) {
    if (accumulate)
        for (std::size_t i = 0; i < n; ++i) y[i] += a[i];
    else
        std::copy(a, a + n, y);
}

template <class T>
void backward_flatten(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    parallel_ranges(out.value.size(), [&](std::size_t begin, std::size_t end) {
        copy_range(dy + begin, dx + begin, end - begin, in.grad_written);
    });
    wrote_grad(in);
}

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

template <class T>
void jvp_flatten(const JvpArgs<T>& a) {
    const std::size_t n = a.node.value.size();
    if (!a.input_tangent) {
        std::fill_n(a.tangent, n, T(0));
        return;
    }
    std::copy_n(a.input_tangent, n, a.tangent);
}

template <class T>
void backward_jvp_flatten(const BackwardJvpArgs<T>& a) {
    T* dx = a.input_grad_tangent;
    if (!dx) return;
    const std::size_t n = a.node.value.size();
    if (a.accumulate)
        for (std::size_t i = 0; i < n; ++i) dx[i] += a.grad_tangent[i];
    else
        std::copy_n(a.grad_tangent, n, dx);
}

// flatten
template <class T>
std::unique_ptr<Layer<T>> parse_flatten(const SpecToken& token, const ActShape&) {
    if (token.fields.size() != 1) return nullptr;
    return std::make_unique<Flatten<T>>();
}

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> flatten_rules() {
    OpRules<T> r;
    r.kind = OpKind::Flatten;
    r.name = "flatten";
    r.layer_name = "flatten";
    r.traits = {.piecewise_linear = true, .positively_homogeneous = true, .only_reshapes = true};
    r.backward = backward_flatten<T>;
    r.jvp = jvp_flatten<T>;
    r.backward_jvp = backward_jvp_flatten<T>;
    r.spec_token = "flatten";
    r.spec_form = "flatten";
    r.parse = parse_flatten<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_FLATTEN(T)           \
    template NodeId flatten<T>(Tape<T>&, NodeId); \
    template class Flatten<T>;                    \
    template OpRules<T> flatten_rules<T>();

MINSHARP_INSTANTIATE_FLATTEN(float)
MINSHARP_INSTANTIATE_FLATTEN(double)

}  // namespace minsharp
