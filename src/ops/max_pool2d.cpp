// Max pooling: forward, backward, spec token and layer.
#include "minsharp/ops/max_pool2d.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

#include <bit>
#include <type_traits>

#include "../kernels/float_kernels.hpp"
#include "../kernels/max_pool_row.hpp"

namespace minsharp {

using namespace ops_detail;

namespace {

template <class T>
void max_pool_plane(const T* x, std::size_t w, const Window& win, std::size_t ho,
                    std::size_t wo, std::uint32_t base, T* y, std::uint32_t* argmax) {
    for (std::size_t oy = 0; oy < ho; ++oy)
        for (std::size_t ox = 0; ox < wo; ++ox) {
            std::size_t best = oy * win.stride * w + ox * win.stride;
            T best_value = x[best];
            for (std::size_t ky = 0; ky < win.kernel; ++ky) {
                const std::size_t row = (oy * win.stride + ky) * w + ox * win.stride;
                for (std::size_t kx = 0; kx < win.kernel; ++kx) {
                    const bool better = x[row + kx] > best_value;
                    best = better ? row + kx : best;
                    best_value = better ? x[row + kx] : best_value;
                }
            }
            y[oy * wo + ox] = best_value;
            argmax[oy * wo + ox] = base + static_cast<std::uint32_t>(best);
        }
}

// The 2×2 windows of the zoo: float planes go to the vector kernels of the running CPU
// (src/kernels), double ones to the loop those kernels reproduce.
template <std::size_t Stride, class T>
void max_pool_plane_2x2(const T* x, std::size_t w, std::size_t ho, std::size_t wo,
                        std::uint32_t base, T* y, std::uint32_t* argmax) {
    if constexpr (std::is_same_v<T, float>) {
        const kernels::FloatKernels& k = kernels::float_kernels();
        const auto plane = Stride == 1 ? k.max_pool_2x2_stride1 : k.max_pool_2x2_stride2;
        plane(x, w, ho, wo, base, y, argmax);
    } else {
        kernels::max_pool_plane_2x2<Stride>(x, w, ho, wo, base, y, argmax);
    }
}

// Zeroes the input plane dx_plane unless accumulating, then adds each output's gradient at
// its argmax (an index into the whole tensor dx) where `active`, the fused ReLU's values,
// is positive (everywhere when null).
template <class T>
void max_pool_backward_plane(const T* dy, const std::uint32_t* argmax, std::size_t outputs,
                             const T* active, bool accumulate, std::size_t in_plane, T* dx,
                             T* dx_plane) {
    if (!accumulate) std::fill(dx_plane, dx_plane + in_plane, T(0));
    if (!active) {
        for (std::size_t i = 0; i < outputs; ++i) dx[argmax[i]] += dy[i];
        return;
    }
    // dy[i] or +0 by its bits: GCC turned the select into a branch, which trained networks'
    // dead units made unpredictable (3.5% of a LeNet step).
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    for (std::size_t i = 0; i < outputs; ++i) {
        const Bits keep = Bits(0) - Bits(active[argmax[i]] > T(0));
        dx[argmax[i]] += std::bit_cast<T>(std::bit_cast<Bits>(dy[i]) & keep);
    }
}

}  // namespace

// ---- forward --------------------------------------------------------------------------

template <class T>
NodeId max_pool2d(Tape<T>& tape, NodeId x, Window win) {
    const Node<T>& in = tape.node(x);
    const auto [n, c, h, w] = shape4(in.value);
    if (win.padding != 0) throw Error("max_pool2d: padding is not supported");
    // argmax holds 32-bit indices into the whole input.
    check_at_most(in.value.size(), std::size_t(1) << 32,
                  "max_pool2d: input elements (argmax indices are 32-bit)");
    const std::size_t ho = checked_output_extent(win, h, "max_pool2d height");
    const std::size_t wo = checked_output_extent(win, w, "max_pool2d width");
    Node<T>& out = tape.push(OpKind::MaxPool2d, x, {n, c, ho, wo});
    out.window = win;
    out.argmax.resize(n * c * ho * wo);
    const std::size_t parts = parts_for(n);
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(n * c, parts, part);
        for (std::size_t plane = begin; plane < end; ++plane) {
            const T* x = in.value.data() + plane * h * w;
            const auto base = static_cast<std::uint32_t>(plane * h * w);
            T* y = out.value.data() + plane * ho * wo;
            std::uint32_t* arg = out.argmax.data() + plane * ho * wo;
            if (win.kernel == 2 && win.stride == 1)
                max_pool_plane_2x2<1>(x, w, ho, wo, base, y, arg);
            else if (win.kernel == 2 && win.stride == 2)
                max_pool_plane_2x2<2>(x, w, ho, wo, base, y, arg);
            else
                max_pool_plane(x, w, win, ho, wo, base, y, arg);
        }
    });
    return tape.last();
}

// ---- backward -------------------------------------------------------------------------

namespace {

template <class T>
void backward_max_pool2d(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    // An output plane's argmax points into its own input plane: planes are independent.
    const auto& s = out.value.shape();
    const std::size_t planes = s[0] * s[1], plane = s[2] * s[3];
    const std::size_t in_plane = in.value.shape()[2] * in.value.shape()[3];
    // A fused ReLU's backward costs little here (its values are read only at the argmax) and
    // saves the conv a pass over its gradient.
    const T* active = in.relu ? in.value.data() : nullptr;
    for_planes(planes, out.argmax.size(), [&](std::size_t p) {
        const T* dy = out.grad.data() + p * plane;
        const std::uint32_t* argmax = out.argmax.data() + p * plane;
        max_pool_backward_plane(dy, argmax, plane, active, in.grad_written, in_plane,
                                in.grad.data(), in.grad.data() + p * in_plane);
    });
    wrote_grad(in, in.relu);
}

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

// Ṙy = Ṙx[argmax]: away from ties the winner of each window does not move.
template <class T>
void jvp_max_pool2d(const JvpArgs<T>& a) {
    const std::size_t n = a.node.value.size();
    if (!a.input_tangent) {
        std::fill_n(a.tangent, n, T(0));
        return;
    }
    const std::uint32_t* argmax = a.node.argmax.data();
    parallel_ranges(n, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) a.tangent[i] = a.input_tangent[argmax[i]];
    });
}

// R(∂x) = scatter of R(∂y) to the argmax (the backward's own rule: it is linear in ∂y with
// a locally constant argmax).
template <class T>
void backward_jvp_max_pool2d(const BackwardJvpArgs<T>& a) {
    T* dx = a.input_grad_tangent;
    if (!dx) return;
    // An output plane's argmax points into its own input plane: planes are independent.
    const auto& s = a.node.value.shape();
    const std::size_t planes = s[0] * s[1], plane = s[2] * s[3];
    const std::size_t in_plane = a.input.value.shape()[2] * a.input.value.shape()[3];
    for_planes(planes, a.node.argmax.size(), [&](std::size_t p) {
        if (!a.accumulate) std::fill_n(dx + p * in_plane, in_plane, T(0));
        const T* r = a.grad_tangent + p * plane;
        const std::uint32_t* argmax = a.node.argmax.data() + p * plane;
        for (std::size_t i = 0; i < plane; ++i) dx[argmax[i]] += r[i];
    });
}

// ---- layer ----------------------------------------------------------------------------

// maxpool:K:S
template <class T>
std::unique_ptr<Layer<T>> parse_maxpool(const SpecToken& token, const ActShape&) {
    if (token.fields.size() != 3) throw SpecError(token.text, "expected maxpool:K:S");
    return std::make_unique<MaxPool2d<T>>(
        spec_number(token.fields[1], token, "kernel", 1, limits::max_kernel),
        spec_number(token.fields[2], token, "stride", 1, limits::max_stride));
}

}  // namespace

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

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> max_pool2d_rules() {
    OpRules<T> r;
    r.kind = OpKind::MaxPool2d;
    r.name = "max_pool2d";
    r.layer_name = "max-pool";
    r.traits = {.piecewise_linear = true, .positively_homogeneous = true};
    r.backward = backward_max_pool2d<T>;
    r.jvp = jvp_max_pool2d<T>;
    r.backward_jvp = backward_jvp_max_pool2d<T>;
    r.spec_token = "maxpool";
    r.spec_form = "maxpool:K:S";
    r.parse = parse_maxpool<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_MAX_POOL2D(T)                   \
    template NodeId max_pool2d<T>(Tape<T>&, NodeId, Window); \
    template class MaxPool2d<T>;                             \
    template OpRules<T> max_pool2d_rules<T>();

MINSHARP_INSTANTIATE_MAX_POOL2D(float)
MINSHARP_INSTANTIATE_MAX_POOL2D(double)

}  // namespace minsharp
