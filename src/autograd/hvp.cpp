// The R-operator rules of every op (one pair per OpKind, each reading only its node, its
// input node, their tangents and its own parameters' direction) and the Hessian-vector
// product driver. docs/second-order.md derives each rule.
#include "minsharp/autograd/hvp.hpp"

#include "minsharp/checked.hpp"
#include "minsharp/parallel.hpp"

#include <algorithm>
#include <cstring>

namespace minsharp::autograd {

namespace {

std::size_t features(const auto& t) { return t.shape()[1] * t.shape()[2] * t.shape()[3]; }

std::size_t parts_for(std::size_t items) {
    return std::max<std::size_t>(1, std::min<std::size_t>(items, std::size_t(worker_threads())));
}

// Where the ReLU of a value y is inactive (y ≤ 0, or NaN as the forward treats it), its
// tangent and its gradient's tangent are zero: R of the 0/1 mask is zero away from kinks.
template <class T>
void mask_inactive(const T* __restrict y, T* __restrict t, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) t[i] = y[i] > T(0) ? t[i] : T(0);
}

// Per-part sums of parameter products, added up in part order afterwards so that results
// depend on the number of parts only, not on thread timing.
template <class T>
std::vector<std::vector<T>>& partial_sums(std::size_t parts, std::size_t size) {
    thread_local std::vector<std::vector<T>> partial;
    partial.resize(parts);
    for (auto& p : partial) p.assign(size, T(0));
    return partial;
}

template <class T>
std::vector<T>& scratch(std::size_t size) {
    thread_local std::vector<T> buffer;
    if (buffer.size() < size) buffer.resize(size);
    return buffer;
}

}  // namespace

// ---- input ----------------------------------------------------------------------------

// The data do not depend on the parameters.
template <class T>
void jvp_input(const JvpArgs<T>& a) {
    std::fill_n(a.tangent, a.node.value.size(), T(0));
}

// ---- linear: y = x Wᵀ + b --------------------------------------------------------------

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
    if (T* bp = a.direction.bias_product)
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < o; ++j) bp[j] += a.grad_tangent[i * o + j];
    if (T* dx = a.input_grad_tangent) {
        parallel_gemm<T>(Trans::No, Trans::No, n, f, o, T(1), a.grad_tangent,
                         a.node.weight->data(), a.accumulate ? T(1) : T(0), dx);
        if (a.direction.weight)
            parallel_gemm<T>(Trans::No, Trans::No, n, f, o, T(1), g, a.direction.weight, T(1), dx);
    }
}

// ---- conv2d (optionally with a fused ReLU) --------------------------------------------

namespace {

// Sizes of a recorded convolution (checked when it was recorded).
struct ConvGeometry {
    std::size_t n, c, h, w, o, k, plane;
    std::size_t patch() const { return c * k * k; }
    std::size_t image_in() const { return c * h * w; }
    std::size_t image_out() const { return o * plane; }
};

template <class T>
ConvGeometry conv_geometry(const Node<T>& node, const Node<T>& in) {
    const auto& s = in.value.shape();
    const auto& y = node.value.shape();
    return {s[0], s[1], s[2], s[3], y[1], node.window.kernel, y[2] * y[3]};
}

template <class T>
void im2col_image(const ConvGeometry& d, const Window& win, const T* images, std::size_t i,
                  T* cols) {
    im2col(images + i * d.image_in(), d.c, d.h, d.w, win, cols, d.plane, 0);
}

// Runs image(part, i) for every image, the batch split into one contiguous part per worker.
template <class F>
void for_images(std::size_t n, std::size_t parts, F&& image) {
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(n, parts, part);
        for (std::size_t i = begin; i < end; ++i) image(part, i);
    });
}

}  // namespace

// Ṙy = W ⋆ Ṙx + V_W ⋆ x + V_b (⋆: the convolution, as im2col and a GEMM per image); with a
// fused ReLU, masked where the value is inactive.
template <class T>
void jvp_conv2d(const JvpArgs<T>& a) {
    const Node<T>& in = *a.input;
    const ConvGeometry d = conv_geometry(a.node, in);
    const Window& win = a.node.window;
    for_images(d.n, parts_for(d.n), [&](std::size_t, std::size_t i) {
        T* cols = scratch<T>(d.patch() * d.plane).data();
        T* y = a.tangent + i * d.image_out();
        T beta = T(0);
        if (a.direction.weight) {
            im2col_image(d, win, in.value.data(), i, cols);
            gemm<T>(Trans::No, Trans::No, d.o, d.plane, d.patch(), T(1), a.direction.weight,
                    d.patch(), cols, d.plane, beta, y, d.plane);
            beta = T(1);
        }
        if (a.input_tangent) {
            im2col_image(d, win, a.input_tangent, i, cols);
            gemm<T>(Trans::No, Trans::No, d.o, d.plane, d.patch(), T(1), a.node.weight->data(),
                    d.patch(), cols, d.plane, beta, y, d.plane);
            beta = T(1);
        }
        if (beta == T(0)) std::fill_n(y, d.image_out(), T(0));
        if (a.direction.bias)
            for (std::size_t c = 0; c < d.o; ++c)
                for (std::size_t p = 0; p < d.plane; ++p) y[c * d.plane + p] += a.direction.bias[c];
        if (a.node.relu) mask_inactive(a.node.value.data() + i * d.image_out(), y, d.image_out());
    });
}

// With the pre-activation gradient g (node.grad after the tape's backward) and its tangent
// r = mask ⊙ R(∂y): R(∂W) = r ⊗ im2col(x) + g ⊗ im2col(Ṙx), R(∂b) = Σ r,
// R(∂x) = col2im(Wᵀ r + V_Wᵀ g).
template <class T>
void backward_jvp_conv2d(const BackwardJvpArgs<T>& a) {
    const Node<T>& in = a.input;
    const ConvGeometry d = conv_geometry(a.node, in);
    const Window& win = a.node.window;
    const std::size_t parts = parts_for(d.n);
    const std::size_t wsize = a.direction.weight_product ? a.node.weight->size() : 0;
    const std::size_t bsize = a.direction.bias_product ? a.node.bias->size() : 0;
    auto& partial = partial_sums<T>(wsize + bsize > 0 ? parts : 0, wsize + bsize);
    for_images(d.n, parts, [&](std::size_t part, std::size_t i) {
        T* cols = scratch<T>(d.patch() * d.plane).data();
        T* r = a.grad_tangent + i * d.image_out();
        const T* g = a.node.grad.data() + i * d.image_out();
        if (a.node.relu) mask_inactive(a.node.value.data() + i * d.image_out(), r, d.image_out());
        if (wsize) {
            T* wp = partial[part].data();
            im2col_image(d, win, in.value.data(), i, cols);
            gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), d.plane, T(1), r, d.plane, cols,
                    d.plane, T(1), wp, d.patch());
            if (a.input_tangent) {
                im2col_image(d, win, a.input_tangent, i, cols);
                gemm<T>(Trans::No, Trans::Yes, d.o, d.patch(), d.plane, T(1), g, d.plane, cols,
                        d.plane, T(1), wp, d.patch());
            }
        }
        if (bsize) {
            T* bp = partial[part].data() + wsize;
            for (std::size_t c = 0; c < d.o; ++c)
                for (std::size_t p = 0; p < d.plane; ++p) bp[c] += r[c * d.plane + p];
        }
        if (T* dx = a.input_grad_tangent) {
            gemm<T>(Trans::Yes, Trans::No, d.patch(), d.plane, d.o, T(1), a.node.weight->data(),
                    d.patch(), r, d.plane, T(0), cols, d.plane);
            if (a.direction.weight)
                gemm<T>(Trans::Yes, Trans::No, d.patch(), d.plane, d.o, T(1), a.direction.weight,
                        d.patch(), g, d.plane, T(1), cols, d.plane);
            T* image = dx + i * d.image_in();
            if (!a.accumulate) std::fill_n(image, d.image_in(), T(0));
            col2im_add(cols, d.plane, 0, d.c, d.h, d.w, win, image);
        }
    });
    for (const auto& p : partial) {
        for (std::size_t j = 0; j < wsize; ++j) a.direction.weight_product[j] += p[j];
        for (std::size_t j = 0; j < bsize; ++j) a.direction.bias_product[j] += p[wsize + j];
    }
}

// ---- max_pool2d: y = x[argmax] ---------------------------------------------------------

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
    const std::size_t parts = a.node.argmax.size() < parallel_ranges_min ? 1 : parts_for(planes);
    parallel_parts(parts, [&](std::size_t part) {
        const auto [begin, end] = part_range(planes, parts, part);
        for (std::size_t p = begin; p < end; ++p) {
            if (!a.accumulate) std::fill_n(dx + p * in_plane, in_plane, T(0));
            const T* r = a.grad_tangent + p * plane;
            const std::uint32_t* argmax = a.node.argmax.data() + p * plane;
            for (std::size_t i = 0; i < plane; ++i) dx[argmax[i]] += r[i];
        }
    });
}

// ---- relu: y = max(x, 0) --------------------------------------------------------------

template <class T>
void jvp_relu(const JvpArgs<T>& a) {
    const std::size_t n = a.node.value.size();
    if (!a.input_tangent) {
        std::fill_n(a.tangent, n, T(0));
        return;
    }
    const T* y = a.node.value.data();
    parallel_ranges(n, [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i)
            a.tangent[i] = y[i] > T(0) ? a.input_tangent[i] : T(0);
    });
}

// ∂x = mask ⊙ ∂y with the mask locally constant: R(∂x) = mask ⊙ R(∂y).
template <class T>
void backward_jvp_relu(const BackwardJvpArgs<T>& a) {
    T* dx = a.input_grad_tangent;
    if (!dx) return;
    const T* y = a.node.value.data();
    const T* r = a.grad_tangent;
    parallel_ranges(a.node.value.size(), [&](std::size_t begin, std::size_t end) {
        for (std::size_t i = begin; i < end; ++i) {
            const T v = y[i] > T(0) ? r[i] : T(0);
            dx[i] = a.accumulate ? dx[i] + v : v;
        }
    });
}

// ---- flatten: a reshape ---------------------------------------------------------------

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

// ---- cross_entropy: L = (1/N) Σ_i [logsumexp(z_i) − z_{i,y_i}] -------------------------

// Ṙ L = (1/N) Σ_i ⟨p_i − e_{y_i}, Ṙz_i⟩.
template <class T>
void jvp_cross_entropy(const JvpArgs<T>& a) {
    const std::size_t n = a.node.probabilities.shape()[0], k = a.node.probabilities.shape()[1];
    double sum = 0;
    if (a.input_tangent)
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < k; ++j)
                sum += (double(a.node.probabilities(i, j)) - (a.node.labels[i] == int(j))) *
                       double(a.input_tangent[i * k + j]);
    a.tangent[0] = static_cast<T>(sum / double(n));
}

// ∂z_i = s (p_i − e_{y_i}) / N with s the seed (∂ of whatever is above the loss, a
// constant): R(∂z_i) = s (diag(p_i) − p_i p_iᵀ) Ṙz_i / N = s p_i ⊙ (Ṙz_i − ⟨p_i, Ṙz_i⟩) / N,
// the softmax Jacobian applied to the logits' tangent.
template <class T>
void backward_jvp_cross_entropy(const BackwardJvpArgs<T>& a) {
    T* dz = a.input_grad_tangent;
    if (!dz) return;
    const std::size_t n = a.node.probabilities.shape()[0], k = a.node.probabilities.shape()[1];
    const T scale = a.node.grad(0, 0, 0, 0) / static_cast<T>(n);
    const T* p = a.node.probabilities.data();
    const T* zt = a.input_tangent;
    for (std::size_t i = 0; i < n; ++i) {
        T mean = 0;
        if (zt)
            for (std::size_t j = 0; j < k; ++j) mean += p[i * k + j] * zt[i * k + j];
        for (std::size_t j = 0; j < k; ++j) {
            const T v = zt ? scale * p[i * k + j] * (zt[i * k + j] - mean) : T(0);
            dz[i * k + j] = a.accumulate ? dz[i * k + j] + v : v;
        }
    }
}

// ---- dispatch -------------------------------------------------------------------------

template <class T>
void jvp_op(const JvpArgs<T>& a) {
    switch (a.node.kind) {
        case OpKind::Input: return jvp_input(a);
        case OpKind::Linear: return jvp_linear(a);
        case OpKind::Conv2d: return jvp_conv2d(a);
        case OpKind::MaxPool2d: return jvp_max_pool2d(a);
        case OpKind::ReLU: return jvp_relu(a);
        case OpKind::Flatten: return jvp_flatten(a);
        case OpKind::CrossEntropy: return jvp_cross_entropy(a);
    }
}

template <class T>
void backward_jvp_op(const BackwardJvpArgs<T>& a) {
    switch (a.node.kind) {
        case OpKind::Linear: return backward_jvp_linear(a);
        case OpKind::Conv2d: return backward_jvp_conv2d(a);
        case OpKind::MaxPool2d: return backward_jvp_max_pool2d(a);
        case OpKind::ReLU: return backward_jvp_relu(a);
        case OpKind::Flatten: return backward_jvp_flatten(a);
        case OpKind::CrossEntropy: return backward_jvp_cross_entropy(a);
        case OpKind::Input: return;
    }
}

// ---- the two tangent passes -----------------------------------------------------------

namespace {

template <class T>
T* sized(std::vector<T>& buffer, std::size_t size) {
    if (buffer.size() < size) buffer.resize(size);
    return buffer.data();
}

// A node's value depends on the parameters exactly when the tape says it needs a
// gradient; the tangent of every other node is zero and is not stored.
template <class T>
void tangent_forward(const Tape<T>& tape, NodeId loss,
                     std::span<const NodeDirection<T>> directions, NodeTangents<T>& t) {
    for (NodeId id = 0; id <= loss; ++id) {
        const Node<T>& node = tape.node(id);
        if (!node.needs_grad) continue;
        const Node<T>* in = node.input == no_node ? nullptr : &tape.node(node.input);
        const T* in_tangent = in && in->needs_grad ? t.value[node.input].data() : nullptr;
        jvp_op<T>({node, in, in_tangent, directions[id], sized(t.value[id], node.value.size())});
    }
}

// As Tape::backward: the first rule to reach a node writes its gradient's tangent, later
// ones add to it. The seed is a constant, so the loss node's own tangent is zero.
template <class T>
void tangent_backward(const Tape<T>& tape, NodeId loss,
                      std::span<const NodeDirection<T>> directions, NodeTangents<T>& t) {
    std::fill(t.grad_written.begin(), t.grad_written.end(), char(0));
    std::fill_n(sized(t.grad[loss], tape.node(loss).value.size()), tape.node(loss).value.size(),
                T(0));
    t.grad_written[loss] = 1;
    for (NodeId id = loss + 1; id-- > 0;) {
        const Node<T>& node = tape.node(id);
        if (!node.needs_grad || node.kind == OpKind::Input || !t.grad_written[id]) continue;
        const Node<T>& in = tape.node(node.input);
        const T* in_tangent = in.needs_grad ? t.value[node.input].data() : nullptr;
        T* in_grad = in.needs_grad ? sized(t.grad[node.input], in.value.size()) : nullptr;
        backward_jvp_op<T>({node, in, in_tangent, t.grad[id].data(), directions[id], in_grad,
                            t.grad_written[node.input] != 0});
        if (in.needs_grad) t.grad_written[node.input] = 1;
    }
}

}  // namespace

template <class T>
void tangent_passes(const Tape<T>& tape, NodeId loss, std::span<const NodeDirection<T>> directions,
                    NodeTangents<T>& tangents) {
    const Node<T>& out = tape.node(loss);
    if (out.kind != OpKind::CrossEntropy)
        throw Error("Hessian-vector product: node " + std::to_string(loss) + " is " +
                    to_string(out.kind) + ", not the cross-entropy loss");
    if (directions.size() <= loss)
        throw Error("Hessian-vector product: " + std::to_string(directions.size()) +
                    " node directions for " + std::to_string(loss + 1) + " nodes");
    tangents.value.resize(std::max(tangents.value.size(), loss + 1));
    tangents.grad.resize(std::max(tangents.grad.size(), loss + 1));
    tangents.grad_written.resize(std::max(tangents.grad_written.size(), loss + 1));
    tangent_forward(tape, loss, directions, tangents);
    tangent_backward(tape, loss, directions, tangents);
}

// ---- the driver ------------------------------------------------------------------------

namespace {

// Bytes a recording holds: what is kept between products.
template <class T>
std::size_t recorded_bytes(const Tape<T>& tape) {
    std::size_t bytes = 0;
    for (NodeId id = 0; id < tape.size(); ++id) {
        const Node<T>& n = tape.node(id);
        bytes += (n.value.size() + (n.needs_grad ? n.grad.size() : 0) + n.probabilities.size()) *
                     sizeof(T) +
                 n.argmax.size() * sizeof(std::uint32_t);
    }
    return bytes;
}

}  // namespace

template <class T>
HessianVectorProduct<T>::HessianVectorProduct(Sequential<T>& model, const Tensor4<T>& x,
                                              const std::vector<int>& labels,
                                              const HvpOptions& options)
    : model_(model), labels_(labels), inputs_(labels.size()) {
    if (inputs_ == 0) throw Error("Hessian-vector product: no inputs");
    if (options.chunk == 0) throw Error("Hessian-vector product: chunk must be positive");
    if (x.shape()[0] != inputs_)
        throw ShapeError("Hessian-vector product: " + std::to_string(x.shape()[0]) +
                         " inputs but " + std::to_string(inputs_) + " labels");
    const auto& s = x.shape();
    if (ActShape{s[1], s[2], s[3]} != model.input_shape())
        throw ShapeError("Hessian-vector product: the model takes examples of shape " +
                         model.input_shape().str() + ", found " +
                         ActShape{s[1], s[2], s[3]}.str());
    parameters_ = model.parameters();
    for (const auto* p : parameters_) {
        offsets_.push_back(dimension_);
        dimension_ += p->size();
        recorded_parameters_.insert(recorded_parameters_.end(), p->value.begin(), p->value.end());
    }
    direction_.resize(dimension_);
    product_.resize(dimension_);
    per_example_ = features(x);
    for (std::size_t first = 0; first < inputs_; first += options.chunk)
        chunks_.push_back({first, std::min(options.chunk, inputs_ - first)});
    // The first chunks are kept while they fit in retain_bytes; the rest are recorded here
    // only for the loss, and again at every product.
    std::size_t retained_bytes = 0;
    bool retaining = true;
    for (const Chunk& c : chunks_) {
        const T* chunk_inputs = x.data() + c.first * per_example_;
        if (!retaining) {
            loss_ += record(scratch_, chunk_inputs, c);
            continue;
        }
        auto tape = std::make_unique<Tape<T>>();
        loss_ += record(*tape, chunk_inputs, c);
        retained_bytes += recorded_bytes(*tape);
        retaining = retained_bytes <= options.retain_bytes;
        if (retaining) retained_.push_back(std::move(tape));
    }
    loss_ /= double(inputs_);
    // The inputs of the chunks recorded again at every product.
    const std::size_t kept = retained_.size() < chunks_.size() ? chunks_[retained_.size()].first : inputs_;
    later_inputs_.assign(x.data() + kept * per_example_, x.data() + inputs_ * per_example_);
}

template <class T>
HessianVectorProduct<T>::~HessianVectorProduct() = default;

// One forward and one backward of a chunk, seeded so that the chunks' gradients sum to that
// of the mean over all inputs. Returns the chunk's summed loss.
template <class T>
double HessianVectorProduct<T>::record(Tape<T>& tape, const T* x, const Chunk& chunk) {
    const auto& shape = model_.input_shape();
    ensure_shape(chunk_x_, {chunk.count, shape.c, shape.h, shape.w});
    std::copy_n(x, chunk.count * per_example_, chunk_x_.data());
    const std::vector<int> labels(labels_.begin() + long(chunk.first),
                                  labels_.begin() + long(chunk.first + chunk.count));
    tape.clear();
    const NodeId loss = cross_entropy(tape, model_.forward(tape, chunk_x_), labels);
    Tensor4<T> seed = Tensor4<T>::from_shape({1, 1, 1, 1});
    seed(0, 0, 0, 0) = static_cast<T>(double(chunk.count) / double(inputs_));
    tape.backward(loss, seed, false);
    return double(tape.value(loss)(0, 0, 0, 0)) * double(chunk.count);
}

template <class T>
void HessianVectorProduct<T>::require_unchanged_parameters() const {
    std::size_t at = 0;
    for (const auto* p : parameters_) {
        if (std::memcmp(p->value.data(), recorded_parameters_.data() + at, p->size() * sizeof(T)))
            throw Error("Hessian-vector product: parameter '" + p->name +
                        "' changed since the forward was recorded; record again");
        at += p->size();
    }
}

// The NodeDirection of every node of the tape: slices of direction_ and product_.
template <class T>
void HessianVectorProduct<T>::point_directions(const Tape<T>& tape) {
    node_directions_.assign(tape.size(), {});
    auto slice = [&](const Parameter<T>* p, std::vector<T>& flat) -> T* {
        const auto it = std::find(parameters_.begin(), parameters_.end(), p);
        if (it == parameters_.end())
            throw Error("Hessian-vector product: the tape uses parameter '" + p->name +
                        "', which is not the model's");
        return flat.data() + offsets_[std::size_t(it - parameters_.begin())];
    };
    for (NodeId id = 0; id < tape.size(); ++id) {
        const Node<T>& n = tape.node(id);
        NodeDirection<T>& d = node_directions_[id];
        if (n.weight) {
            d.weight = slice(n.weight, direction_);
            d.weight_product = slice(n.weight, product_);
        }
        if (n.bias) {
            d.bias = slice(n.bias, direction_);
            d.bias_product = slice(n.bias, product_);
        }
    }
}

template <class T>
void HessianVectorProduct<T>::add_chunk_product(const Tape<T>& tape, std::span<double> hv) {
    std::fill(product_.begin(), product_.end(), T(0));
    point_directions(tape);
    tangent_passes<T>(tape, tape.last(), node_directions_, tangents_);
    for (std::size_t i = 0; i < dimension_; ++i) hv[i] += double(product_[i]);
}

template <class T>
void HessianVectorProduct<T>::apply(std::span<const double> v, std::span<double> hv) {
    if (v.size() != dimension_ || hv.size() != dimension_)
        throw ShapeError("Hessian-vector product: v has " + std::to_string(v.size()) +
                         " and hv " + std::to_string(hv.size()) + " entries for a model with " +
                         std::to_string(dimension_) + " parameters");
    require_unchanged_parameters();
    for (std::size_t i = 0; i < dimension_; ++i) direction_[i] = static_cast<T>(v[i]);
    std::fill(hv.begin(), hv.end(), 0.0);
    for (std::size_t c = 0; c < chunks_.size(); ++c) {
        if (c < retained_.size()) {
            add_chunk_product(*retained_[c], hv);
            continue;
        }
        const std::size_t skipped = chunks_[retained_.size()].first;
        record(scratch_, later_inputs_.data() + (chunks_[c].first - skipped) * per_example_,
               chunks_[c]);
        add_chunk_product(scratch_, hv);
    }
}

template <class T>
void hessian_vector_product(Sequential<T>& model, const Tensor4<T>& x,
                            const std::vector<int>& labels, std::span<const double> v,
                            std::span<double> hv, const HvpOptions& options) {
    HessianVectorProduct<T>(model, x, labels, options).apply(v, hv);
}

#define MINSHARP_INSTANTIATE_HVP(T)                                                          \
    template void jvp_input<T>(const JvpArgs<T>&);                                           \
    template void jvp_linear<T>(const JvpArgs<T>&);                                          \
    template void backward_jvp_linear<T>(const BackwardJvpArgs<T>&);                         \
    template void jvp_conv2d<T>(const JvpArgs<T>&);                                          \
    template void backward_jvp_conv2d<T>(const BackwardJvpArgs<T>&);                         \
    template void jvp_max_pool2d<T>(const JvpArgs<T>&);                                      \
    template void backward_jvp_max_pool2d<T>(const BackwardJvpArgs<T>&);                     \
    template void jvp_relu<T>(const JvpArgs<T>&);                                            \
    template void backward_jvp_relu<T>(const BackwardJvpArgs<T>&);                           \
    template void jvp_flatten<T>(const JvpArgs<T>&);                                         \
    template void backward_jvp_flatten<T>(const BackwardJvpArgs<T>&);                        \
    template void jvp_cross_entropy<T>(const JvpArgs<T>&);                                   \
    template void backward_jvp_cross_entropy<T>(const BackwardJvpArgs<T>&);                  \
    template void jvp_op<T>(const JvpArgs<T>&);                                              \
    template void backward_jvp_op<T>(const BackwardJvpArgs<T>&);                             \
    template void tangent_passes<T>(const Tape<T>&, NodeId, std::span<const NodeDirection<T>>, \
                                    NodeTangents<T>&);                                       \
    template class HessianVectorProduct<T>;                                                  \
    template void hessian_vector_product<T>(Sequential<T>&, const Tensor4<T>&,               \
                                            const std::vector<int>&, std::span<const double>, \
                                            std::span<double>, const HvpOptions&);

MINSHARP_INSTANTIATE_HVP(float)
MINSHARP_INSTANTIATE_HVP(double)

}  // namespace minsharp::autograd
