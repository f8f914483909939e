// 2-d convolution: forward, backward, exact-diagonal rule, spec token and layer. The
// im2col/col2im kernels stay in src/ops/im2col.cpp, compiled apart with their own flags.
#include "minsharp/ops/conv2d.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

#include <cstring>

namespace minsharp {

using namespace ops_detail;

namespace {

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

// OpenBLAS (0.3.21, SkylakeX/Cooperlake kernels) multiplies without packing when
// m·n·k ≤ 10^6 — and for its column-major "TN" case (our row-major No/Yes) only when
// m·n ≤ 1200 and k ≥ 32. A conv GEMM with one short side (6–20 output channels) runs at
// 60–80 GFLOP/s per core packed and 100–170 unpacked, so conv_gemm cuts the columns of C into
// blocks that qualify. Only then: with no short side the unpacked kernels lose (LeNet conv3
// input gradient, 400×147×120: 161 GFLOP/s whole, 91 in blocks of 19 columns), and under
// the AVX2 (Haswell) kernels, which have no unpacked path, every block re-packs its A (the
// same GEMM: 91 vs 37), while the short-side blocks keep C in cache (LeNet conv2 input
// gradient, 150×529×16: 81–84 vs 51–72).
constexpr double openblas_small_mnk = 1e6;
constexpr std::size_t openblas_small_tn_mn = 1200, openblas_small_tn_min_k = 32;
constexpr std::size_t short_side = 32;

std::size_t small_kernel_block(Trans ta, Trans tb, std::size_t m, std::size_t n,
                               std::size_t k) {
    if (std::min(m, k) > short_side) return n;
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

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

// The sizes of a recorded convolution (checked when it was recorded).
template <class T>
ConvDims recorded_dims(const Node<T>& node, const Node<T>& in) {
    const auto& s = in.value.shape();
    const auto& y = node.value.shape();
    return {s[0], s[1], s[2], s[3], y[1], node.window.kernel, y[2], y[3]};
}

// One image's im2col matrix for the tangent rules, per thread: the workers run images
// concurrently.
template <class T>
T* tangent_cols(std::size_t size) {
    thread_local std::vector<T> buffer;
    if (buffer.size() < size) buffer.resize(size);
    return buffer.data();
}

template <class T>
void im2col_image(const ConvDims& d, const Window& win, const T* images, std::size_t i,
                  T* cols) {
    im2col(images + i * d.image_in(), d.c, d.h, d.w, win, cols, d.plane(), 0);
}

// Ṙy = W ⋆ Ṙx + V_W ⋆ x + V_b (⋆: the convolution, as im2col and a GEMM per image); with a
// fused ReLU, masked where the value is inactive.
template <class T>
void jvp_conv2d(const JvpArgs<T>& a) {
    const Node<T>& in = *a.input;
    const ConvDims d = recorded_dims(a.node, in);
    const Window& win = a.node.window;
    for_images(d, parts_for(d.n), [&](std::size_t, std::size_t i) {
        T* cols = tangent_cols<T>(d.patch() * d.plane());
        T* y = a.tangent + i * d.image_out();
        T beta = T(0);
        if (a.direction.weight) {
            im2col_image(d, win, in.value.data(), i, cols);
            gemm<T>(Trans::No, Trans::No, d.o, d.plane(), d.patch(), T(1), a.direction.weight,
                    d.patch(), cols, d.plane(), beta, y, d.plane());
            beta = T(1);
        }
        if (a.input_tangent) {
            im2col_image(d, win, a.input_tangent, i, cols);
            gemm<T>(Trans::No, Trans::No, d.o, d.plane(), d.patch(), T(1),
                    a.node.weight->data(), d.patch(), cols, d.plane(), beta, y, d.plane());
            beta = T(1);
        }
        if (beta == T(0)) std::fill_n(y, d.image_out(), T(0));
        if (a.direction.bias) conv_epilogue(y, d.o, d.plane(), a.direction.bias, false);
        if (a.node.relu)
            zero_where_inactive(a.node.value.data() + i * d.image_out(), y, d.image_out());
    });
}

// With the pre-activation gradient g (node.grad after the tape's backward) and its tangent
// r = mask ⊙ R(∂y): R(∂W) = r ⊗ im2col(x) + g ⊗ im2col(Ṙx), R(∂b) = Σ r,
// R(∂x) = col2im(Wᵀ r + V_Wᵀ g).
template <class T>
void backward_jvp_conv2d(const BackwardJvpArgs<T>& a) {
    const Node<T>& in = a.input;
    const ConvDims d = recorded_dims(a.node, in);
    const Window& win = a.node.window;
    const std::size_t parts = parts_for(d.n);
    const std::size_t wsize = a.direction.weight_product ? a.node.weight->size() : 0;
    const std::size_t bsize = a.direction.bias_product ? a.node.bias->size() : 0;
    auto& partial = partial_grads<T>(wsize + bsize > 0 ? parts : 0, wsize + bsize);
    for_images(d, parts, [&](std::size_t part, std::size_t i) {
        T* cols = tangent_cols<T>(d.patch() * d.plane());
        T* r = a.grad_tangent + i * d.image_out();
        const T* g = a.node.grad.data() + i * d.image_out();
        if (a.node.relu)
            zero_where_inactive(a.node.value.data() + i * d.image_out(), r, d.image_out());
        if (wsize) {
            T* wp = partial[part].data();
            im2col_image(d, win, in.value.data(), i, cols);
            gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), d.plane(), T(1), r, d.plane(), cols,
                    d.plane(), T(1), wp, d.patch());
            if (a.input_tangent) {
                im2col_image(d, win, a.input_tangent, i, cols);
                gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), d.plane(), T(1), g, d.plane(),
                        cols, d.plane(), T(1), wp, d.patch());
            }
        }
        if (bsize) {
            T* bp = partial[part].data() + wsize;
            for (std::size_t c = 0; c < d.o; ++c)
                for (std::size_t p = 0; p < d.plane(); ++p) bp[c] += r[c * d.plane() + p];
        }
        if (T* dx = a.input_grad_tangent) {
            gemm<T>(Trans::Yes, Trans::No, d.patch(), d.plane(), d.o, T(1),
                    a.node.weight->data(), d.patch(), r, d.plane(), T(0), cols, d.plane());
            if (a.direction.weight)
                gemm<T>(Trans::Yes, Trans::No, d.patch(), d.plane(), d.o, T(1),
                        a.direction.weight, d.patch(), g, d.plane(), T(1), cols, d.plane());
            T* image = dx + i * d.image_in();
            if (!a.accumulate) std::fill_n(image, d.image_in(), T(0));
            col2im_add(cols, d.plane(), 0, d.c, d.h, d.w, win, image);
        }
    });
    for (const auto& p : partial) {
        for (std::size_t j = 0; j < wsize; ++j) a.direction.weight_product[j] += p[j];
        for (std::size_t j = 0; j < bsize; ++j) a.direction.bias_product[j] += p[wsize + j];
    }
}

}  // namespace

// ---- forward --------------------------------------------------------------------------

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

// ---- exact diagonal -------------------------------------------------------------------

namespace {

// One worker's running sums; the workers' sums are added in worker order at the end, so
// a given thread count always gives the same bits.
struct ConvPartial {
    std::vector<double> weight, bias;
};

template <class T>
struct ConvDiagScratch {
    std::vector<T> cols, product;
};

// Keeps every pass's output gradient of a chunk, then per input G_i = E_i Uᵀ_i for all K
// seeds at once: (K·O × Ho·Wo)(Ho·Wo × C·k·k), split over the workers by contiguous ranges
// of inputs (parallel_parts runs BLAS single-threaded inside). With a bias, U_i gets an
// extra row of ones so that the same GEMM also yields Σ_positions E_iko.
template <class T>
class Conv2dDiag final : public DiagRule<T> {
public:
    Conv2dDiag(const Tape<T>& tape, NodeId node, const DiagSetup& setup)
        : node_(node), classes_(setup.classes), workers_(setup.workers),
          weight_(*setup.weight), bias_(setup.bias) {
        const Node<T>& n = tape.node(node);
        const auto& in = tape.value(n.input).shape();
        window_ = n.window;
        channels_ = in[1];
        height_ = in[2];
        width_ = in[3];
        out_ = n.value.shape()[1];
        plane_ = n.value.shape()[2] * n.value.shape()[3];
        patch_ = in[1] * n.window.kernel * n.window.kernel;
        partial_.resize(workers_);
        for (auto& p : partial_)
            p = {std::vector<double>(out_ * patch_, 0.0),
                 std::vector<double>(bias_ ? out_ : 0, 0.0)};
        scratch_.resize(workers_);
    }

    void start_chunk(std::size_t count) override {
        grads_.resize(count * classes_ * out_ * plane_);
    }

    void after_pass(const Tape<T>& tape, std::size_t k, std::size_t count) override {
        const std::size_t block = out_ * plane_;
        const T* g = tape.grad(node_).data();
        for (std::size_t i = 0; i < count; ++i)
            std::memcpy(grads_.data() + (i * classes_ + k) * block, g + i * block,
                        block * sizeof(T));
    }

    void end_chunk(const Tape<T>& tape, std::size_t count, DiagScratch<T>&) override {
        const std::size_t workers = std::min(workers_, count);
        const T* x = tape.value(tape.node(node_).input).data();
        parallel_parts(workers, [&](std::size_t w) {
            const auto [first, last] = part_range(count, workers, w);
            inputs(x, w, first, last);
        });
    }

    void finish() override {
        for (const auto& p : partial_) {
            add_into(weight_, p.weight);
            if (bias_) add_into(*bias_, p.bias);
        }
    }

private:
    static void add_into(std::vector<double>& dst, const std::vector<double>& src) {
        for (std::size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
    }

    void inputs(const T* x, std::size_t worker, std::size_t first, std::size_t last) {
        ConvDiagScratch<T>& s = scratch_[worker];
        ConvPartial& acc = partial_[worker];
        const std::size_t rows = classes_ * out_;  // the K seeds stacked
        const std::size_t width = patch_ + (bias_ ? 1 : 0);
        s.cols.resize(width * plane_);
        s.product.resize(rows * width);
        std::fill(s.cols.begin() + std::ptrdiff_t(patch_ * plane_), s.cols.end(), T(1));
        for (std::size_t i = first; i < last; ++i) {
            im2col(x + i * channels_ * height_ * width_, channels_, height_, width_, window_,
                   s.cols.data(), plane_, 0);
            const T* e = grads_.data() + i * rows * plane_;
            gemm<T>(Trans::No, Trans::Yes, rows, width, plane_, T(1), e, s.cols.data(), T(0),
                    s.product.data());
            add_squares(s.product.data(), width, acc);
        }
    }

    // Σ_k G_ik∘G_ik into the weight sums and Σ_k (Σ_positions E_ik)² into the bias sums;
    // row k·O + o of the product holds G_ik[o, :] and, in its last column, the bias term.
    void add_squares(const T* g, std::size_t width, ConvPartial& acc) const {
        for (std::size_t k = 0; k < classes_; ++k)
            for (std::size_t o = 0; o < out_; ++o) {
                const T* row = g + (k * out_ + o) * width;
                double* w = acc.weight.data() + o * patch_;
                for (std::size_t q = 0; q < patch_; ++q) {
                    const double v = double(row[q]);
                    w[q] += v * v;
                }
                if (bias_) {
                    const double b = double(row[patch_]);
                    acc.bias[o] += b * b;
                }
            }
    }

    NodeId node_;
    std::size_t classes_, workers_;
    std::vector<double>& weight_;
    std::vector<double>* bias_;
    Window window_;
    std::size_t channels_ = 0, height_ = 0, width_ = 0, out_ = 0, plane_ = 0, patch_ = 0;
    std::vector<T> grads_;  // every pass's output gradient: [input][k][O][Ho·Wo]
    std::vector<ConvPartial> partial_;          // [worker]
    std::vector<ConvDiagScratch<T>> scratch_;  // [worker]
};

template <class T>
std::unique_ptr<DiagRule<T>> conv2d_diag(const Tape<T>& tape, NodeId node,
                                         const DiagSetup& setup) {
    return std::make_unique<Conv2dDiag<T>>(tape, node, setup);
}

// ---- layer ----------------------------------------------------------------------------

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

// conv:OUT:K[:strideS][:padP][:nobias]
template <class T>
std::unique_ptr<Layer<T>> parse_conv(const SpecToken& token, const ActShape& in) {
    require_fields(token, 3, "conv:OUT:K[:strideS][:padP][:nobias]");
    const std::size_t out =
        spec_number(token.fields[1], token, "out channels", 1, limits::max_features);
    const std::size_t kernel = spec_number(token.fields[2], token, "kernel", 1, limits::max_kernel);
    const auto o = parse_options(token, 3, kernel);
    return std::make_unique<Conv2d<T>>(in.c, out, kernel, o.stride, o.padding, o.bias);
}

}  // namespace

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

// ---- unit geometry --------------------------------------------------------------------

namespace {

// One unit per output channel; each input channel holds k·k weights of a unit.
template <class T>
UnitGeometry<T> conv_unit_geometry(const Layer<T>& layer, const ActShape&) {
    const auto& c = layer_as<Conv2d<T>>(layer);
    const std::size_t kk = c.window.kernel * c.window.kernel;
    return {.weight = &c.weight,
            .bias = c.has_bias() ? &c.bias : nullptr,
            .units = c.out_channels(),
            .input_width = c.in_channels(),
            .kernel_positions = kk,
            .input_channels = c.in_channels(),
            .entries_per_input_channel = kk};
}

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> conv2d_rules() {
    OpRules<T> r;
    r.kind = OpKind::Conv2d;
    r.name = "conv2d";
    r.layer_name = "conv2d";
    r.traits = {.parametric = true, .piecewise_linear = true, .positively_homogeneous = true,
                .absorbs_following_relu = true};
    r.backward = backward_conv2d<T>;
    r.jvp = jvp_conv2d<T>;
    r.backward_jvp = backward_jvp_conv2d<T>;
    r.diag = conv2d_diag<T>;
    r.unit_geometry = conv_unit_geometry<T>;
    r.diag_keeps_pass_grads = true;
    r.spec_token = "conv";
    r.spec_form = "conv:OUT:K[:strideS][:padP][:nobias]";
    r.parse = parse_conv<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_CONV2D(T)                                                       \
    template NodeId conv2d<T>(Tape<T>&, NodeId, Parameter<T>&, Parameter<T>*, Window, bool);\
    template class Conv2d<T>;                                                                \
    template OpRules<T> conv2d_rules<T>();

MINSHARP_INSTANTIATE_CONV2D(float)
MINSHARP_INSTANTIATE_CONV2D(double)

}  // namespace minsharp
