// Average pooling: forward, backward, spec token and layer. Linear in its input, so the
// exact diag H identity covers networks that use it.
#include "minsharp/ops/avg_pool2d.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

namespace minsharp {

using namespace ops_detail;

namespace {

struct PoolDims {
    std::size_t planes, h, w, ho, wo;
};

template <class T>
PoolDims pool_dims(const Node<T>& in, const Window& win) {
    const auto [n, c, h, w] = shape4(in.value);
    if (win.padding != 0) throw Error("avg_pool2d: padding is not supported");
    return {n * c, h, w, checked_output_extent(win, h, "avg_pool2d height"),
            checked_output_extent(win, w, "avg_pool2d width")};
}

template <class T>
void avg_pool_plane(const T* x, const PoolDims& d, const Window& win, T* y) {
    const T area = T(win.kernel * win.kernel);
    for (std::size_t oy = 0; oy < d.ho; ++oy)
        for (std::size_t ox = 0; ox < d.wo; ++ox) {
            T sum = 0;
            for (std::size_t ky = 0; ky < win.kernel; ++ky) {
                const T* row = x + (oy * win.stride + ky) * d.w + ox * win.stride;
                for (std::size_t kx = 0; kx < win.kernel; ++kx) sum += row[kx];
            }
            y[oy * d.wo + ox] = sum / area;
        }
}

}  // namespace

// ---- forward --------------------------------------------------------------------------

template <class T>
NodeId avg_pool2d(Tape<T>& tape, NodeId x, Window win) {
    const Node<T>& in = tape.node(x);
    const PoolDims d = pool_dims(in, win);
    Node<T>& out = tape.push(OpKind::AvgPool2d, x, {in.value.shape()[0], in.value.shape()[1],
                                                    d.ho, d.wo});
    out.window = win;
    const T* a = in.value.data();
    T* y = out.value.data();
    for_planes(d.planes, in.value.size(), [&](std::size_t p) {
        avg_pool_plane(a + p * d.h * d.w, d, win, y + p * d.ho * d.wo);
    });
    return tape.last();
}

// ---- backward -------------------------------------------------------------------------

namespace {

// Each output spreads its gradient evenly over its window; overlapping windows add up.
template <class T>
void avg_pool_backward_plane(const T* dy, const PoolDims& d, const Window& win,
                             bool accumulate, T* dx) {
    if (!accumulate) std::fill(dx, dx + d.h * d.w, T(0));
    const T area = T(win.kernel * win.kernel);
    for (std::size_t oy = 0; oy < d.ho; ++oy)
        for (std::size_t ox = 0; ox < d.wo; ++ox) {
            const T share = dy[oy * d.wo + ox] / area;
            for (std::size_t ky = 0; ky < win.kernel; ++ky) {
                T* row = dx + (oy * win.stride + ky) * d.w + ox * win.stride;
                for (std::size_t kx = 0; kx < win.kernel; ++kx) row[kx] += share;
            }
        }
}

template <class T>
void backward_avg_pool2d(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const PoolDims d = pool_dims(in, out.window);
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    for_planes(d.planes, in.value.size(), [&](std::size_t p) {
        avg_pool_backward_plane(dy + p * d.ho * d.wo, d, out.window, in.grad_written,
                                dx + p * d.h * d.w);
    });
    wrote_grad(in);
}

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

// Average pooling is linear in its input and has no parameters: Ṙy = avg_pool(Ṙx).
template <class T>
void jvp_avg_pool2d(const JvpArgs<T>& a) {
    if (!a.input_tangent) {
        std::fill_n(a.tangent, a.node.value.size(), T(0));
        return;
    }
    const PoolDims d = pool_dims(*a.input, a.node.window);
    for_planes(d.planes, a.input->value.size(), [&](std::size_t p) {
        avg_pool_plane(a.input_tangent + p * d.h * d.w, d, a.node.window,
                       a.tangent + p * d.ho * d.wo);
    });
}

// The backward is linear in ∂y with fixed weights 1/K²: R(∂x) = backward(R(∂y)).
template <class T>
void backward_jvp_avg_pool2d(const BackwardJvpArgs<T>& a) {
    T* dx = a.input_grad_tangent;
    if (!dx) return;
    const PoolDims d = pool_dims(a.input, a.node.window);
    for_planes(d.planes, a.input.value.size(), [&](std::size_t p) {
        avg_pool_backward_plane(a.grad_tangent + p * d.ho * d.wo, d, a.node.window, a.accumulate,
                                dx + p * d.h * d.w);
    });
}

// ---- layer ----------------------------------------------------------------------------

// avgpool:K:S
template <class T>
std::unique_ptr<Layer<T>> parse_avgpool(const SpecToken& token, const ActShape&) {
    if (token.fields.size() != 3) throw SpecError(token.text, "expected avgpool:K:S");
    return std::make_unique<AvgPool2d<T>>(
        spec_number(token.fields[1], token, "kernel", 1, limits::max_kernel),
        spec_number(token.fields[2], token, "stride", 1, limits::max_stride));
}

}  // namespace

template <class T>
AvgPool2d<T>::AvgPool2d(std::size_t kernel, std::size_t stride) : window{kernel, stride, 0} {
    check_window(window, "avgpool");
}

template <class T>
std::string AvgPool2d<T>::spec() const {
    return "avgpool:" + std::to_string(window.kernel) + ":" + std::to_string(window.stride);
}

template <class T>
ActShape AvgPool2d<T>::output_shape(const ActShape& in) const {
    return {in.c, window.output_extent(in.h, "avgpool height"),
            window.output_extent(in.w, "avgpool width")};
}

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> avg_pool2d_rules() {
    OpRules<T> r;
    r.kind = OpKind::AvgPool2d;
    r.name = "avg_pool2d";
    r.layer_name = "avg-pool";
    r.traits = {.piecewise_linear = true, .positively_homogeneous = true};
    r.backward = backward_avg_pool2d<T>;
    r.jvp = jvp_avg_pool2d<T>;
    r.backward_jvp = backward_jvp_avg_pool2d<T>;
    r.spec_token = "avgpool";
    r.spec_form = "avgpool:K:S";
    r.parse = parse_avgpool<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_AVG_POOL2D(T)                   \
    template NodeId avg_pool2d<T>(Tape<T>&, NodeId, Window); \
    template class AvgPool2d<T>;                             \
    template OpRules<T> avg_pool2d_rules<T>();

MINSHARP_INSTANTIATE_AVG_POOL2D(float)
MINSHARP_INSTANTIATE_AVG_POOL2D(double)

}  // namespace minsharp
