#include "minsharp/ops.hpp"

#include "minsharp/parallel.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace minsharp {

namespace {

std::array<std::size_t, 4> shape4(const auto& t) {
    return {t.shape()[0], t.shape()[1], t.shape()[2], t.shape()[3]};
}

std::size_t features(const auto& t) { return t.shape()[1] * t.shape()[2] * t.shape()[3]; }

template <class T>
void require_parameter_shape(const Parameter<T>& p, const Shape& expected, std::string_view op) {
    if (p.shape != expected)
        throw ShapeError(std::string(op) + ": parameter '" + p.name + "' has shape " +
                         shape_str(p.shape) + ", expected " + shape_str(expected));
}

// Column sums of a row-major (rows × cols) matrix, added into out.
template <class T>
void add_column_sums(const T* m, std::size_t rows, std::size_t cols, T* out) {
    for (std::size_t r = 0; r < rows; ++r) {
        const T* row = m + r * cols;
        for (std::size_t c = 0; c < cols; ++c) out[c] += row[c];
    }
}

// Conv work is split over image chunks so that the im2col buffer stays L2-sized (2^17
// elements measured fastest for SmallCNN and LeNet among 2^16..2^20)
// while the GEMM still sees thousands of columns.
constexpr std::size_t conv_chunk_elements = std::size_t(1) << 17;

struct ConvDims {
    std::size_t n, c, h, w, o, k, ho, wo;
    std::size_t patch() const { return c * k * k; }
    std::size_t plane() const { return ho * wo; }
    std::size_t chunk() const {
        return std::clamp<std::size_t>(conv_chunk_elements / (patch() * plane()), 1, n);
    }
};

template <class T>
ConvDims conv_dims(const Node<T>& in, const Parameter<T>& weight, const Window& win) {
    const auto& s = in.value.shape();
    ConvDims d{s[0], s[1], s[2], s[3], weight.shape.at(0), win.kernel, 0, 0};
    d.ho = win.output_extent(d.h, "conv2d height");
    d.wo = win.output_extent(d.w, "conv2d width");
    return d;
}

// Scratch buffers reused by every conv call of a thread.
template <class T>
struct ConvScratch {
    std::vector<T> cols, out;
    void reserve(std::size_t cols_size, std::size_t out_size) {
        if (cols.size() < cols_size) cols.resize(cols_size);
        if (out.size() < out_size) out.resize(out_size);
    }
};

template <class T>
ConvScratch<T>& conv_scratch() {
    thread_local ConvScratch<T> scratch;
    return scratch;
}

template <class T>
void im2col_chunk(const T* x, const ConvDims& d, const Window& win, std::size_t first,
                  std::size_t count, T* cols) {
    const std::size_t ld = count * d.plane();
    for (std::size_t i = 0; i < count; ++i)
        im2col(x + (first + i) * d.c * d.h * d.w, d.c, d.h, d.w, win, cols, ld, i * d.plane());
}

// ---- linear ---------------------------------------------------------------------------

template <class T>
void backward_linear(Tape<T>& tape, NodeId id, bool parameter_grads) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    const std::size_t n = out.value.shape()[0], o = out.value.shape()[1], f = features(in.value);
    if (parameter_grads) {
        gemm<T>(Trans::Yes, Trans::No, o, f, n, T(1), out.grad.data(), in.value.data(), T(1),
                out.weight->grad.data());
        if (out.bias) add_column_sums(out.grad.data(), n, o, out.bias->grad.data());
    }
    if (in.needs_grad)
        gemm<T>(Trans::No, Trans::No, n, f, o, T(1), out.grad.data(), out.weight->data(), T(1),
                in.grad.data());
}

// ---- conv2d ---------------------------------------------------------------------------

template <class T>
void conv_forward_chunk(const ConvDims& d, const Window& win, const T* x, const T* w,
                        const T* b, std::size_t first, std::size_t count, T* y) {
    auto& s = conv_scratch<T>();
    const std::size_t cols_n = count * d.plane();
    s.reserve(d.patch() * cols_n, d.o * cols_n);
    im2col_chunk(x, d, win, first, count, s.cols.data());
    gemm<T>(Trans::No, Trans::No, d.o, cols_n, d.patch(), T(1), w, s.cols.data(), T(0),
            s.out.data());
    // The GEMM gives (O, images·plane); activations are NCHW.
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t o = 0; o < d.o; ++o) {
            const T* src = s.out.data() + o * cols_n + i * d.plane();
            T* dst = y + ((first + i) * d.o + o) * d.plane();
            const T bias = b ? b[o] : T(0);
            for (std::size_t p = 0; p < d.plane(); ++p) dst[p] = src[p] + bias;
        }
}

// Runs chunk(first, count) over all images: the batch is split into one contiguous part
// per worker, each walked in cache-sized chunks.
template <class F>
void for_image_chunks(const ConvDims& d, std::size_t parts, F&& chunk) {
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(d.n, parts, part);
        for (std::size_t first = begin; first < end; first += d.chunk())
            chunk(part, first, std::min(d.chunk(), end - first));
    });
}

std::size_t parts_for(std::size_t items) {
    return std::max<std::size_t>(1, std::min<std::size_t>(items, std::size_t(worker_threads())));
}

// Per-part weight/bias gradient sums, reduced in part order so that results depend only
// on the number of parts, not on thread timing.
template <class T>
std::vector<std::vector<T>>& partial_grads(std::size_t parts, std::size_t size) {
    thread_local std::vector<std::vector<T>> partial;
    partial.resize(parts);
    for (auto& p : partial) p.assign(size, T(0));
    return partial;
}

template <class T>
void conv_backward_chunk(const ConvDims& d, const Window& win, const Node<T>& out, Node<T>& in,
                         T* weight_grad, T* bias_grad, std::size_t first, std::size_t count) {
    auto& s = conv_scratch<T>();
    const std::size_t cols_n = count * d.plane();
    s.reserve(d.patch() * cols_n, d.o * cols_n);
    T* dy = s.out.data();
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t o = 0; o < d.o; ++o)
            std::memcpy(dy + o * cols_n + i * d.plane(),
                        out.grad.data() + ((first + i) * d.o + o) * d.plane(),
                        d.plane() * sizeof(T));
    if (weight_grad) {
        im2col_chunk(in.value.data(), d, win, first, count, s.cols.data());
        gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), cols_n, T(1), dy, s.cols.data(), T(1),
                weight_grad);
    }
    if (bias_grad)
        for (std::size_t o = 0; o < d.o; ++o) {
            T sum = 0;
            for (std::size_t p = 0; p < cols_n; ++p) sum += dy[o * cols_n + p];
            bias_grad[o] += sum;
        }
    if (in.needs_grad) {
        gemm<T>(Trans::Yes, Trans::No, d.patch(), cols_n, d.o, T(1), out.weight->data(), dy,
                T(0), s.cols.data());
        for (std::size_t i = 0; i < count; ++i)
            col2im_add(s.cols.data(), cols_n, i * d.plane(), d.c, d.h, d.w, win,
                       in.grad.data() + (first + i) * d.c * d.h * d.w);
    }
}

template <class T>
void backward_conv2d(Tape<T>& tape, NodeId id, bool parameter_grads) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    const ConvDims d = conv_dims(in, *out.weight, out.window);
    const std::size_t parts = parts_for(d.n);
    const std::size_t wsize = out.weight->size(), bsize = out.bias ? out.bias->size() : 0;
    auto& partial = partial_grads<T>(parameter_grads ? parts : 0, wsize + bsize);
    for_image_chunks(d, parts, [&](std::size_t part, std::size_t first, std::size_t count) {
        T* wg = parameter_grads ? partial[part].data() : nullptr;
        T* bg = parameter_grads && out.bias ? partial[part].data() + wsize : nullptr;
        conv_backward_chunk(d, out.window, out, in, wg, bg, first, count);
    });
    if (!parameter_grads) return;
    for (const auto& p : partial) {
        T* wg = out.weight->grad.data();
        for (std::size_t j = 0; j < wsize; ++j) wg[j] += p[j];
        if (out.bias)
            for (std::size_t j = 0; j < bsize; ++j) out.bias->grad.data()[j] += p[wsize + j];
    }
}

// ---- max_pool2d -----------------------------------------------------------------------

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

// The 2×2 window of the zoo models, unrolled: the generic loop's data-dependent branches
// made pooling a sixth of a SmallCNN step.
template <class T>
void max_pool_plane_2x2(const T* x, std::size_t w, std::size_t stride, std::size_t ho,
                        std::size_t wo, std::uint32_t base, T* y, std::uint32_t* argmax) {
    for (std::size_t oy = 0; oy < ho; ++oy) {
        const std::size_t top = oy * stride * w;
        for (std::size_t ox = 0; ox < wo; ++ox) {
            const std::size_t a = top + ox * stride, b = a + 1, c = a + w, d = c + 1;
            const std::size_t ab = x[b] > x[a] ? b : a;
            const std::size_t cd = x[d] > x[c] ? d : c;
            const std::size_t best = x[cd] > x[ab] ? cd : ab;
            y[oy * wo + ox] = x[best];
            argmax[oy * wo + ox] = base + static_cast<std::uint32_t>(best);
        }
    }
}

template <class T>
void backward_max_pool2d(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    for (std::size_t i = 0; i < out.argmax.size(); ++i) dx[out.argmax[i]] += dy[i];
}

// ---- relu / flatten -------------------------------------------------------------------

template <class T>
void backward_relu(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const T* y = out.value.data();
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    const std::size_t n = out.value.size();
    for (std::size_t i = 0; i < n; ++i) dx[i] += y[i] > T(0) ? dy[i] : T(0);
}

template <class T>
void backward_flatten(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const T* dy = out.grad.data();
    T* dx = in.grad.data();
    for (std::size_t i = 0; i < out.value.size(); ++i) dx[i] += dy[i];
}

// ---- cross_entropy --------------------------------------------------------------------

template <class T>
void backward_cross_entropy(Tape<T>& tape, NodeId id, bool) {
    Node<T>& out = tape.node(id);
    Node<T>& in = tape.node(out.input);
    if (!in.needs_grad) return;
    const std::size_t n = out.probabilities.shape()[0], k = out.probabilities.shape()[1];
    const T scale = out.grad(0, 0, 0, 0) / static_cast<T>(n);
    const T* p = out.probabilities.data();
    T* dz = in.grad.data();
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j)
            dz[i * k + j] += scale * (p[i * k + j] - (out.labels[i] == int(j) ? T(1) : T(0)));
}

}  // namespace

// ---- forward ops ----------------------------------------------------------------------

template <class T>
NodeId linear(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias) {
    const Node<T>& in = tape.node(x);
    const std::size_t n = in.value.shape()[0], f = features(in.value);
    const std::size_t o = weight.shape.size() == 2 ? weight.shape[0] : 0;
    require_parameter_shape(weight, {o, f}, "linear");
    if (bias) require_parameter_shape(*bias, {o}, "linear");
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
    gemm<T>(Trans::No, Trans::Yes, n, o, f, T(1), in.value.data(), weight.data(), T(1), y);
    return tape.last();
}

template <class T>
NodeId conv2d(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias, Window win) {
    const Node<T>& in = tape.node(x);
    if (weight.shape.size() != 4 || weight.shape[2] != win.kernel || weight.shape[3] != win.kernel)
        throw ShapeError("conv2d: weight '" + weight.name + "' has shape " +
                         shape_str(weight.shape) + ", expected (out, in, " +
                         std::to_string(win.kernel) + ", " + std::to_string(win.kernel) + ")");
    if (in.value.shape()[1] != weight.shape[1])
        throw ShapeError("conv2d: input has " + std::to_string(in.value.shape()[1]) +
                         " channels, layer '" + weight.name + "' expects " +
                         std::to_string(weight.shape[1]));
    const ConvDims d = conv_dims(in, weight, win);
    if (bias) require_parameter_shape(*bias, {d.o}, "conv2d");
    Node<T>& out = tape.push(OpKind::Conv2d, x, {d.n, d.o, d.ho, d.wo});
    out.weight = &weight;
    out.bias = bias;
    out.window = win;
    out.needs_grad = true;
    for_image_chunks(d, parts_for(d.n), [&](std::size_t, std::size_t first, std::size_t count) {
        conv_forward_chunk(d, win, in.value.data(), weight.data(), bias ? bias->data() : nullptr,
                           first, count, out.value.data());
    });
    return tape.last();
}

template <class T>
NodeId max_pool2d(Tape<T>& tape, NodeId x, Window win) {
    const Node<T>& in = tape.node(x);
    const auto [n, c, h, w] = shape4(in.value);
    if (win.padding != 0) throw Error("max_pool2d: padding is not supported");
    const std::size_t ho = win.output_extent(h, "max_pool2d height");
    const std::size_t wo = win.output_extent(w, "max_pool2d width");
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
            if (win.kernel == 2)
                max_pool_plane_2x2(x, w, win.stride, ho, wo, base, y, arg);
            else
                max_pool_plane(x, w, win, ho, wo, base, y, arg);
        }
    });
    return tape.last();
}

template <class T>
NodeId relu(Tape<T>& tape, NodeId x) {
    const Node<T>& in = tape.node(x);
    Node<T>& out = tape.push(OpKind::ReLU, x, shape4(in.value));
    const T* a = in.value.data();
    T* y = out.value.data();
    for (std::size_t i = 0; i < in.value.size(); ++i) y[i] = a[i] > T(0) ? a[i] : T(0);
    return tape.last();
}

template <class T>
NodeId flatten(Tape<T>& tape, NodeId x) {
    const Node<T>& in = tape.node(x);
    Node<T>& out = tape.push(OpKind::Flatten, x, {in.value.shape()[0], features(in.value), 1, 1});
    std::copy(in.value.begin(), in.value.end(), out.value.begin());
    return tape.last();
}

template <class T>
void softmax_rows(const T* logits, std::size_t rows, std::size_t classes, T* probs) {
    for (std::size_t i = 0; i < rows; ++i) {
        const T* z = logits + i * classes;
        T* p = probs + i * classes;
        const T m = *std::max_element(z, z + classes);
        T sum = 0;
        for (std::size_t j = 0; j < classes; ++j) sum += (p[j] = std::exp(z[j] - m));
        for (std::size_t j = 0; j < classes; ++j) p[j] /= sum;
    }
}

template <class T>
NodeId cross_entropy(Tape<T>& tape, NodeId logits, const std::vector<int>& labels) {
    const Node<T>& in = tape.node(logits);
    const std::size_t n = in.value.shape()[0], k = features(in.value);
    if (labels.size() != n)
        throw ShapeError("cross_entropy: " + std::to_string(labels.size()) + " labels for " +
                         std::to_string(n) + " logit rows");
    Node<T>& out = tape.push(OpKind::CrossEntropy, logits, {1, 1, 1, 1});
    out.labels.assign(labels.begin(), labels.end());
    ensure_shape(out.probabilities, {n, k});
    softmax_rows(in.value.data(), n, k, out.probabilities.data());
    double total = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (labels[i] < 0 || std::size_t(labels[i]) >= k)
            throw Error("cross_entropy: label " + std::to_string(labels[i]) + " at row " +
                        std::to_string(i) + " is outside [0, " + std::to_string(k) + ")");
        const T* z = in.value.data() + i * k;
        const T m = *std::max_element(z, z + k);
        double sum = 0;
        for (std::size_t j = 0; j < k; ++j) sum += std::exp(double(z[j] - m));
        total += double(m) + std::log(sum) - double(z[labels[i]]);
    }
    out.value(0, 0, 0, 0) = static_cast<T>(total / double(n));
    return tape.last();
}

namespace {

// Output columns ox whose input column ox·stride + kx − pad lies inside [0, width).
std::pair<std::size_t, std::size_t> valid_columns(std::size_t kx, std::size_t width,
                                                  std::size_t wo, const Window& win) {
    const long pad = long(win.padding), stride = long(win.stride);
    long lo = pad > long(kx) ? (pad - long(kx) + stride - 1) / stride : 0;
    long hi = (long(width) - 1 + pad - long(kx));
    hi = hi < 0 ? 0 : hi / stride + 1;
    lo = std::min<long>(lo, long(wo));
    hi = std::clamp<long>(hi, lo, long(wo));
    return {std::size_t(lo), std::size_t(hi)};
}

}  // namespace

template <class T>
void im2col(const T* image, std::size_t channels, std::size_t height, std::size_t width,
            const Window& win, T* cols, std::size_t ld, std::size_t col0) {
    const std::size_t ho = (height + 2 * win.padding - win.kernel) / win.stride + 1;
    const std::size_t wo = (width + 2 * win.padding - win.kernel) / win.stride + 1;
    const long pad = long(win.padding);
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < win.kernel; ++ky)
            for (std::size_t kx = 0; kx < win.kernel; ++kx) {
                T* row = cols + ((c * win.kernel + ky) * win.kernel + kx) * ld + col0;
                const auto [lo, hi] = valid_columns(kx, width, wo, win);
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    const long iy = long(oy * win.stride + ky) - pad;
                    T* dst = row + oy * wo;
                    if (iy < 0 || iy >= long(height)) {
                        std::fill(dst, dst + wo, T(0));
                        continue;
                    }
                    // Input column of output column ox: ox·stride + kx − pad (≥ 0 from lo on).
                    const T* src = image + (c * height + std::size_t(iy)) * width;
                    const std::size_t offset = kx - std::size_t(pad);  // wraps; added to ≥ pad
                    std::fill(dst, dst + lo, T(0));
                    if (win.stride == 1 && hi > lo)
                        std::copy(src + (lo + offset), src + (hi + offset), dst + lo);
                    else
                        for (std::size_t ox = lo; ox < hi; ++ox)
                            dst[ox] = src[ox * win.stride + offset];
                    std::fill(dst + hi, dst + wo, T(0));
                }
            }
}

template <class T>
void col2im_add(const T* cols, std::size_t ld, std::size_t col0, std::size_t channels,
                std::size_t height, std::size_t width, const Window& win, T* image) {
    const std::size_t ho = (height + 2 * win.padding - win.kernel) / win.stride + 1;
    const std::size_t wo = (width + 2 * win.padding - win.kernel) / win.stride + 1;
    const long pad = long(win.padding);
    for (std::size_t c = 0; c < channels; ++c)
        for (std::size_t ky = 0; ky < win.kernel; ++ky)
            for (std::size_t kx = 0; kx < win.kernel; ++kx) {
                const T* row = cols + ((c * win.kernel + ky) * win.kernel + kx) * ld + col0;
                const auto [lo, hi] = valid_columns(kx, width, wo, win);
                for (std::size_t oy = 0; oy < ho; ++oy) {
                    const long iy = long(oy * win.stride + ky) - pad;
                    if (iy < 0 || iy >= long(height)) continue;
                    T* dst = image + (c * height + std::size_t(iy)) * width;
                    const std::size_t offset = kx - std::size_t(pad);  // wraps; see im2col
                    const T* src = row + oy * wo;
                    for (std::size_t ox = lo; ox < hi; ++ox) dst[ox * win.stride + offset] += src[ox];
                }
            }
}

namespace detail {
template <class T>
void backward_op(Tape<T>& tape, NodeId id, bool parameter_grads) {
    switch (tape.node(id).kind) {
        case OpKind::Linear: return backward_linear(tape, id, parameter_grads);
        case OpKind::Conv2d: return backward_conv2d(tape, id, parameter_grads);
        case OpKind::MaxPool2d: return backward_max_pool2d(tape, id, parameter_grads);
        case OpKind::ReLU: return backward_relu(tape, id, parameter_grads);
        case OpKind::Flatten: return backward_flatten(tape, id, parameter_grads);
        case OpKind::CrossEntropy: return backward_cross_entropy(tape, id, parameter_grads);
        case OpKind::Input: return;
    }
}
}  // namespace detail

#define MINSHARP_INSTANTIATE_OPS(T)                                                          \
    template NodeId linear<T>(Tape<T>&, NodeId, Parameter<T>&, Parameter<T>*);              \
    template NodeId conv2d<T>(Tape<T>&, NodeId, Parameter<T>&, Parameter<T>*, Window);      \
    template NodeId max_pool2d<T>(Tape<T>&, NodeId, Window);                                 \
    template NodeId relu<T>(Tape<T>&, NodeId);                                               \
    template NodeId flatten<T>(Tape<T>&, NodeId);                                            \
    template NodeId cross_entropy<T>(Tape<T>&, NodeId, const std::vector<int>&);             \
    template void softmax_rows<T>(const T*, std::size_t, std::size_t, T*);                   \
    template void im2col<T>(const T*, std::size_t, std::size_t, std::size_t, const Window&,  \
                            T*, std::size_t, std::size_t);                                   \
    template void col2im_add<T>(const T*, std::size_t, std::size_t, std::size_t,            \
                                std::size_t, std::size_t, const Window&, T*);                \
    template void detail::backward_op<T>(Tape<T>&, NodeId, bool);

MINSHARP_INSTANTIATE_OPS(float)
MINSHARP_INSTANTIATE_OPS(double)

}  // namespace minsharp
