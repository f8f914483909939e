// Helpers the op files share (private to src/ops).
#pragma once

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/layer.hpp"
#include "minsharp/core/parallel.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <string>
#include <string_view>

namespace minsharp::ops_detail {

inline std::array<std::size_t, 4> shape4(const auto& t) {
    return {t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]};
}

inline std::size_t features(const auto& t) { return t.shape()[1] * t.shape()[2] * t.shape()[3]; }

template <class T>
void require_parameter_shape(const Parameter<T>& p, const Shape& expected, std::string_view op) {
    if (p.shape != expected)
        throw ShapeError(std::string(op) + ": parameter '" + p.name + "' has shape " +
                         shape_str(p.shape) + ", expected " + shape_str(expected));
}

// Records that an op wrote or added its share of in.grad; `masked`: that share is already
// zero where in's fused ReLU is inactive (the whole gradient is masked only if every share
// was).
template <class T>
void wrote_grad(Node<T>& in, bool masked = false) {
    in.grad_masked = masked && (!in.grad_written || in.grad_masked);
    in.grad_written = true;
}

inline std::size_t parts_for(std::size_t items) {
    return std::max<std::size_t>(1, std::min<std::size_t>(items, std::size_t(worker_threads())));
}

// Runs plane(p) for every (image, channel) plane, one contiguous range per worker when
// there is enough work (`elements`, the outputs over all planes).
template <class F>
void for_planes(std::size_t planes, std::size_t elements, F&& plane) {
    const std::size_t parts = elements < parallel_ranges_min ? 1 : parts_for(planes);
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(planes, parts, part);
        for (std::size_t p = begin; p < end; ++p) plane(p);
    });
}

// Window::output_extent adds 2·padding unchecked: a padding of 2^63 wraps to an extent
// that computes as padding 0. Checked here first for windows that did not come through
// a layer's limits.
inline std::size_t checked_output_extent(const Window& win, std::size_t extent,
                                         const std::string& what) {
    checked_add(extent, checked_mul(2, win.padding, what + " padding"), what + " padded extent");
    return win.output_extent(extent, what);
}

// A layer reached through its kind's registry row as the op file's own class. A layer
// class of another file claiming the kind is a programming error, reported by name.
template <class L, class T>
const L& layer_as(const Layer<T>& layer) {
    const auto* own = dynamic_cast<const L*>(&layer);
    if (!own)
        throw Error("layer '" + layer.spec() + "' has kind " + to_string(layer.kind()) +
                    " but is not that kind's layer class");
    return *own;
}

// ---- layer construction ---------------------------------------------------------------

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
inline void check_positive_at_most(std::size_t value, std::size_t limit, const std::string& what) {
    if (value == 0) throw ShapeError(what + " must be positive");
    check_at_most(value, limit, what);
}

inline void check_window(const Window& w, const std::string& layer) {
    check_positive_at_most(w.kernel, limits::max_kernel, layer + ": kernel");
    check_positive_at_most(w.stride, limits::max_stride, layer + ": stride");
    check_at_most(w.padding, w.kernel - 1,
                  layer + ": padding (with kernel " + std::to_string(w.kernel) + ")");
}

}  // namespace minsharp::ops_detail
