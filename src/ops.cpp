#include "minsharp/ops.hpp"

#include "minsharp/checked.hpp"
#include "minsharp/parallel.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels/float_kernels.hpp"
#include "kernels/max_pool_row.hpp"

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

// Sum of n values in 16 interleaved partial sums: one running sum is a chain of dependent
// adds (4 cycles each; the conv bias gradients spent 4% of a LeNet step there). The order
// is fixed, so the result is still reproducible.
template <class T>
T sum_of(const T* __restrict v, std::size_t n) {
    constexpr std::size_t lanes = 16;
    T partial[lanes] = {};
    std::size_t i = 0;
    for (; i + lanes <= n; i += lanes)
        for (std::size_t j = 0; j < lanes; ++j) partial[j] += v[i + j];
    T sum = 0;
    for (std::size_t j = 0; j < lanes; ++j) sum += partial[j];
    for (; i < n; ++i) sum += v[i];
    return sum;
}

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

template <class T>
void copy_range(const T* __restrict a, T* __restrict y, std::size_t n, bool accumulate) {
    if (accumulate)
        for (std::size_t i = 0; i < n; ++i) y[i] += a[i];
    else
        std::copy(a, a + n, y);
}

// The conv forward runs one image at a time (the backward a few, see backward_group): the
// GEMMs then read and write NCHW activations in place (no layout copies), and cut by
// conv_gemm they run on OpenBLAS's unpacked kernels at 100–115 GFLOP/s per core, against
// 47–80 for the same work batched over several images (SmallCNN conv1 weight gradient 102
// vs 47, conv2 forward 114 vs 78).
struct ConvDims {
    std::size_t n, c, h, w, o, k, ho, wo;
    std::size_t patch() const { return c * k * k; }
    std::size_t plane() const { return ho * wo; }
    std::size_t image_in() const { return c * h * w; }
    std::size_t image_out() const { return o * plane(); }
};

// Window::output_extent adds 2·padding unchecked: a padding of 2^63 wraps to an extent
// that computes as padding 0. Checked here first for windows that did not come through
// a layer's limits.
std::size_t checked_output_extent(const Window& win, std::size_t extent,
                                  const std::string& what) {
    checked_add(extent, checked_mul(2, win.padding, what + " padding"), what + " padded extent");
    return win.output_extent(extent, what);
}

// The output and the im2col matrix of one image: their sizes, and the batch's output, must
// not wrap (a conv output extent of 2^32 made plane() 0 and im2col write out of bounds).
// With these checked, every offset the conv kernels compute is below one of them.
void check_conv_sizes(const ConvDims& d) {
    checked_product(std::array{d.n, d.o, d.ho, d.wo}, "conv2d output shape");
    checked_product(std::array{d.c, d.k, d.k, d.ho, d.wo},
                    "conv2d im2col matrix (C, k, k, Ho, Wo)");
}

template <class T>
ConvDims conv_dims(const Node<T>& in, const Parameter<T>& weight, const Window& win) {
    const auto& s = in.value.shape();
    ConvDims d{s[0], s[1], s[2], s[3], weight.shape.at(0), win.kernel, 0, 0};
    d.ho = checked_output_extent(win, d.h, "conv2d height");
    d.wo = checked_output_extent(win, d.w, "conv2d width");
    check_conv_sizes(d);
    return d;
}

// Records that an op wrote or added its share of in.grad; `masked`: that share is already
// zero where in's fused ReLU is inactive (the whole gradient is masked only if every share
// was).
template <class T>
void wrote_grad(Node<T>& in, bool masked = false) {
    in.grad_masked = masked && (!in.grad_written || in.grad_masked);
    in.grad_written = true;
}

// ---- linear ---------------------------------------------------------------------------

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

// ---- conv2d ---------------------------------------------------------------------------

// OpenBLAS (0.3.21, SkylakeX/Cooperlake kernels) multiplies without packing when
// m·n·k ≤ 10^6 — and for its column-major "TN" case (our row-major No/Yes) only when
// m·n ≤ 1200 and k ≥ 32. The conv GEMMs have one short side (16–20 output channels), where
// the packed path runs at 60–80 GFLOP/s per core and the unpacked one at 100–114, so
// conv_gemm cuts the columns of C into blocks that qualify (measured on every zoo conv).
constexpr double openblas_small_mnk = 1e6;
constexpr std::size_t openblas_small_tn_mn = 1200, openblas_small_tn_min_k = 32;

std::size_t small_kernel_block(Trans ta, Trans tb, std::size_t m, std::size_t n,
                               std::size_t k) {
    std::size_t block = std::size_t(openblas_small_mnk / (double(m) * double(k)));
    if (ta == Trans::No && tb == Trans::Yes) {
        if (k < openblas_small_tn_min_k) return n;
        block = std::min(block, openblas_small_tn_mn / m);
    }
    if (block >= n || block < 16) return n;  // one call; too narrow blocks lose more
    const std::size_t blocks = (n + block - 1) / block;
    return (n + blocks - 1) / blocks;
}

// Row-major C (m×n, leading dimension ldc) = op(A)·op(B) + beta·C, op(B) column blocks at a
// time; lda/ldb as in gemm.
template <class T>
void conv_gemm(Trans ta, Trans tb, std::size_t m, std::size_t n, std::size_t k, const T* a,
               std::size_t lda, const T* b, std::size_t ldb, T beta, T* c, std::size_t ldc) {
    const std::size_t block = small_kernel_block(ta, tb, m, n, k);
    for (std::size_t j = 0; j < n; j += block)
        gemm<T>(ta, tb, m, std::min(block, n - j), k, T(1), a, lda,
                tb == Trans::No ? b + j : b + j * ldb, ldb, beta, c + j, ldc);
}

// Per-thread buffers of the conv ops, sized for `images` images: the im2col matrix and a
// gathered output gradient (backward only).
template <class T>
struct ConvScratch {
    std::vector<T> cols, dy;
};

template <class T>
ConvScratch<T>& conv_scratch(const ConvDims& d, std::size_t images, bool with_dy) {
    thread_local ConvScratch<T> s;
    const std::size_t columns = checked_mul(images, d.plane(), "conv2d scratch columns");
    const std::size_t cols = checked_mul(d.patch(), columns, "conv2d im2col scratch");
    if (s.cols.size() < cols) s.cols.resize(cols);
    const std::size_t dy = with_dy ? checked_mul(d.o, columns, "conv2d gradient scratch") : 0;
    if (s.dy.size() < dy) s.dy.resize(dy);
    return s;
}

// y (o planes) += bias, then relu when asked: one pass over the image's output while it is
// in cache.
template <class T>
void conv_epilogue(T* __restrict y, std::size_t planes, std::size_t plane, const T* b,
                   bool relu) {
    for (std::size_t o = 0; o < planes; ++o) {
        T* __restrict row = y + o * plane;
        const T add = b ? b[o] : T(0);
        if (relu)
            for (std::size_t p = 0; p < plane; ++p) {
                const T v = row[p] + add;
                row[p] = v > T(0) ? v : T(0);  // as relu_range, also for NaN
            }
        else if (b)
            for (std::size_t p = 0; p < plane; ++p) row[p] += add;
    }
}

template <class T>
void conv_forward_image(const ConvDims& d, const Window& win, const T* x, const T* w,
                        const T* b, bool relu, T* y) {
    T* cols = conv_scratch<T>(d, 1, false).cols.data();
    im2col(x, d.c, d.h, d.w, win, cols, d.plane(), 0);
    conv_gemm<T>(Trans::No, Trans::No, d.o, d.plane(), d.patch(), w, d.patch(), cols, d.plane(),
                 T(0), y, d.plane());
    conv_epilogue(y, d.o, d.plane(), b, relu);
}

// g = 0 where y ≤ 0: the ReLU's backward, in place.
template <class T>
void zero_where_inactive(const T* __restrict y, T* __restrict g, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) g[i] = y[i] > T(0) ? g[i] : T(0);
}

// Runs image(part, i) for every image: the batch is split into one contiguous part per
// worker.
template <class F>
void for_images(const ConvDims& d, std::size_t parts, F&& image) {
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(d.n, parts, part);
        for (std::size_t i = begin; i < end; ++i) image(part, i);
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

// The backward GEMMs have K = images·plane (weight gradient) or N = images·plane (input
// gradient): for small planes (SmallCNN conv2: 64, LeNet conv3: 49) one image is too short
// and a few images gathered into one matrix run faster (measured: SmallCNN conv2 at batch
// 128, groups of 2 / 4 / 8 / 1 images: 2.5 / 2.9 / 2.8 / 4.4 ms; LeNet indifferent).
constexpr std::size_t conv_backward_min_columns = 128;

std::size_t backward_group(const ConvDims& d) {
    return std::max<std::size_t>(1, (conv_backward_min_columns + d.plane() - 1) / d.plane());
}

// The output gradient of images [first, first + count) as one (O, count·plane) matrix:
// the NCHW slice itself for one image, else a gathered copy.
template <class T>
const T* output_grad_matrix(const ConvDims& d, const T* dy, std::size_t first,
                            std::size_t count, T* buffer) {
    const T* g = dy + first * d.image_out();
    if (count == 1) return g;
    const std::size_t cols_n = count * d.plane();
    for (std::size_t i = 0; i < count; ++i)
        for (std::size_t o = 0; o < d.o; ++o)
            std::memcpy(buffer + o * cols_n + i * d.plane(), g + (i * d.o + o) * d.plane(),
                        d.plane() * sizeof(T));
    return buffer;
}

// Gradients from images [first, first + count): weight and bias (when non-null) and the
// input gradient (when dx is non-null; added to dx or, unless accumulate, written over it;
// dx, dy and x are the whole NCHW tensors).
template <class T>
void conv_backward_group(const ConvDims& d, const Window& win, const T* w, const T* dy,
                         const T* x, T* dx, bool accumulate, std::size_t first,
                         std::size_t count, T* weight_grad, T* bias_grad) {
    auto& s = conv_scratch<T>(d, count, count > 1);
    const std::size_t cols_n = count * d.plane();
    const T* g = output_grad_matrix(d, dy, first, count, s.dy.data());
    if (weight_grad) {
        for (std::size_t i = 0; i < count; ++i)
            im2col(x + (first + i) * d.image_in(), d.c, d.h, d.w, win, s.cols.data(), cols_n,
                   i * d.plane());
        conv_gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), cols_n, g, cols_n, s.cols.data(),
                     cols_n, T(1), weight_grad, d.patch());
    }
    if (bias_grad)
        for (std::size_t o = 0; o < d.o; ++o) bias_grad[o] += sum_of(g + o * cols_n, cols_n);
    if (dx) {
        conv_gemm<T>(Trans::Yes, Trans::No, d.patch(), cols_n, d.o, w, d.patch(), g, cols_n, T(0),
                     s.cols.data(), cols_n);
        T* image = dx + first * d.image_in();
        if (!accumulate) std::fill(image, image + count * d.image_in(), T(0));
        for (std::size_t i = 0; i < count; ++i)
            col2im_add(s.cols.data(), cols_n, i * d.plane(), d.c, d.h, d.w, win,
                       image + i * d.image_in());
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
    const std::size_t group = backward_group(d);
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(d.n, parts, part);
        T* wg = parameter_grads ? partial[part].data() : nullptr;
        T* bg = parameter_grads && out.bias ? partial[part].data() + wsize : nullptr;
        for (std::size_t first = begin; first < end; first += group) {
            const std::size_t count = std::min(group, end - first);
            // The fused ReLU's backward, image by image just before the GEMMs read them.
            if (out.relu && !out.grad_masked)
                zero_where_inactive(out.value.data() + first * d.image_out(),
                                    out.grad.data() + first * d.image_out(),
                                    count * d.image_out());
            conv_backward_group(d, out.window, out.weight->data(), out.grad.data(),
                                in.value.data(), in.needs_grad ? in.grad.data() : nullptr,
                                in.grad_written, first, count, wg, bg);
        }
    });
    if (in.needs_grad) wrote_grad(in);
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
    const std::size_t parts = out.argmax.size() < parallel_ranges_min ? 1 : parts_for(planes);
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(planes, parts, part);
        for (std::size_t p = begin; p < end; ++p) {
            const T* dy = out.grad.data() + p * plane;
            const std::uint32_t* argmax = out.argmax.data() + p * plane;
            max_pool_backward_plane(dy, argmax, plane, active, in.grad_written, in_plane,
                                    in.grad.data(), in.grad.data() + p * in_plane);
        }
    });
    wrote_grad(in, in.relu);
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
    parallel_ranges(out.value.size(), [&](std::size_t begin, std::size_t end) {
        relu_grad_range(y + begin, dy + begin, dx + begin, end - begin, in.grad_written);
    });
    wrote_grad(in);
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
    if (!in.grad_written) std::fill(dz, dz + n * k, T(0));
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < k; ++j)
            dz[i * k + j] += scale * (p[i * k + j] - (out.labels[i] == int(j) ? T(1) : T(0)));
    wrote_grad(in);
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

template <class T>
NodeId conv2d(Tape<T>& tape, NodeId x, Parameter<T>& weight,
              std::type_identity_t<Parameter<T>>* bias, Window win, bool fused_relu) {
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
    out.relu = fused_relu;
    for_images(d, parts_for(d.n), [&](std::size_t, std::size_t i) {
        conv_forward_image(d, win, in.value.data() + i * d.image_in(), weight.data(),
                           bias ? bias->data() : nullptr, fused_relu,
                           out.value.data() + i * d.image_out());
    });
    return tape.last();
}

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
    template NodeId conv2d<T>(Tape<T>&, NodeId, Parameter<T>&, Parameter<T>*, Window, bool);\
    template NodeId max_pool2d<T>(Tape<T>&, NodeId, Window);                                 \
    template NodeId relu<T>(Tape<T>&, NodeId);                                               \
    template NodeId flatten<T>(Tape<T>&, NodeId);                                            \
    template NodeId cross_entropy<T>(Tape<T>&, NodeId, const std::vector<int>&);             \
    template void softmax_rows<T>(const T*, std::size_t, std::size_t, T*);                   \
    template void detail::backward_op<T>(Tape<T>&, NodeId, bool);

MINSHARP_INSTANTIATE_OPS(float)
MINSHARP_INSTANTIATE_OPS(double)

}  // namespace minsharp
