// Exact diag H of the mean cross-entropy (docs/science.md §4), as an extension of the backward
// pass: one forward per chunk, K backward passes seeded with the columns c_k = √p_k (e_k − p)
// of the factored output Hessian diag(p) − p pᵀ = C Cᵀ, and one rule per parametric layer
// turning (its input, the gradients that reached it) into squared per-example gradients.
//
// Memory peak, MLP 784-512-128-512-10 on 60,000 inputs with chunk 1000 (besides the caller's
// 60,000×784 input tensor, 188 MB in float): per input of a chunk the tape holds 3,882 values
// and 2,314 gradients, the dense buffers Σ_k E_k∘E_k 1,162, the squared-input scratch 784,
// the copy of the chunk 784 and the seeds 10 — 8,936 values, i.e. 35.7 MB per chunk in float
// — plus the 512×784 GEMM product and the double accumulators (535,818 × 8 B = 4.3 MB):
// ≈ 42 MB in float (bench_sharpness --full measures 42 MB of resident-set growth) and
// ≈ 80 MB in double, independent of n. Conv nets keep K gradients per conv output in
// addition; CurvatureOptions::conv_buffer_bytes bounds those by shrinking the chunk.

#include "minsharp/sharpness/curvature.hpp"

#include "minsharp/parallel.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

namespace minsharp::sharpness {

// ---- results --------------------------------------------------------------------------

double ParameterDiag::trace() const {
    return std::accumulate(values.begin(), values.end(), 0.0);
}

double DiagHessian::trace() const {
    double total = 0;
    for (const auto& p : parameters) total += p.trace();
    return total;
}

const ParameterDiag& DiagHessian::at(const std::string& name) const {
    for (const auto& p : parameters)
        if (p.name == name) return p;
    std::string known;
    for (const auto& p : parameters) known += (known.empty() ? "" : ", ") + p.name;
    throw Error("diag H: no parameter '" + name + "' (have: " + known + ")");
}

std::vector<LayerTrace> DiagHessian::layer_traces() const {
    std::vector<LayerTrace> layers;
    for (const auto& p : parameters) {
        const auto dot = p.name.rfind('.');
        const std::string layer = dot == std::string::npos ? p.name : p.name.substr(0, dot);
        const bool is_bias = dot != std::string::npos && p.name.substr(dot + 1) == "bias";
        if (layers.empty() || layers.back().layer != layer) layers.push_back({layer, 0, 0});
        (is_bias ? layers.back().bias : layers.back().weight) += p.trace();
    }
    return layers;
}

std::vector<double> DiagHessian::flat() const {
    std::vector<double> all;
    for (const auto& p : parameters) all.insert(all.end(), p.values.begin(), p.values.end());
    return all;
}

// ---- the allow-list -------------------------------------------------------------------

namespace {

// An allow-list: a layer kind added later is refused until someone shows that every
// logit stays affine in each single parameter of it (no -Wswitch default on purpose).
bool is_piecewise_linear(LayerKind kind) {
    switch (kind) {
        case LayerKind::Dense:
        case LayerKind::Conv2d:
        case LayerKind::MaxPool2d:
        case LayerKind::ReLU:
        case LayerKind::Flatten: return true;
    }
    return false;
}

std::string kind_name(LayerKind kind) {
    switch (kind) {
        case LayerKind::Dense: return "dense";
        case LayerKind::Conv2d: return "conv2d";
        case LayerKind::MaxPool2d: return "max-pool";
        case LayerKind::ReLU: return "relu";
        case LayerKind::Flatten: return "flatten";
    }
    return "kind #" + std::to_string(static_cast<int>(kind));
}

}  // namespace

template <class T>
void require_piecewise_linear(const Sequential<T>& model) {
    for (std::size_t i = 0; i < model.size(); ++i) {
        const Layer<T>& layer = model.layer(i);
        if (!is_piecewise_linear(layer.kind()))
            throw NotPiecewiseLinearError(
                "exact diag H: layer " + std::to_string(i) + " ('" + layer.spec() + "', " +
                kind_name(layer.kind()) +
                ") is not piecewise linear; the exact identity needs a network of dense, "
                "conv2d, max-pool, relu and flatten layers only");
    }
}

// ---- chunk size -----------------------------------------------------------------------

template <class T>
std::size_t effective_chunk(const Sequential<T>& model, std::size_t n,
                            const CurvatureOptions& options) {
    if (options.chunk == 0) throw Error("exact diag H: chunk must be at least 1 input");
    std::size_t conv_values = 0;  // Σ over conv layers of O·Ho·Wo, per input and pass
    for (std::size_t i = 0; i < model.size(); ++i)
        if (model.layer(i).kind() == LayerKind::Conv2d)
            conv_values += model.layer(i).output_shape(model.shape_before(i)).size();
    std::size_t chunk = std::min(options.chunk, std::max<std::size_t>(n, 1));
    if (conv_values > 0) {
        const std::size_t per_input = model.output_shape().size() * conv_values * sizeof(T);
        chunk = std::min(chunk, std::max<std::size_t>(1, options.conv_buffer_bytes / per_input));
    }
    return chunk;
}

// ---- the computation ------------------------------------------------------------------

namespace {

constexpr std::size_t none = static_cast<std::size_t>(-1);

template <class T>
struct DenseLayer {
    NodeId node;
    std::size_t weight, bias;  // indices into the parameter list (bias: none)
    std::size_t in, out;
    std::vector<T> squares;  // Σ_k E_k∘E_k, count × out
};

template <class T>
struct ConvLayer {
    NodeId node;
    std::size_t weight, bias;
    Window window;
    std::size_t channels, height, width, out, plane, patch;
    std::vector<T> grads;  // every pass's output gradient: [input][k][O][Ho·Wo]
};

// One worker's running sums for one conv layer; the workers' sums are added in worker
// order at the end, so a given thread count always gives the same bits.
struct ConvPartial {
    std::vector<double> weight, bias;
};

template <class T>
struct ConvScratch {
    std::vector<T> cols, product;
};

template <class T>
class ExactDiag {
public:
    ExactDiag(Sequential<T>& model, int threads)
        : model_(model), params_(model.parameters()), classes_(model.output_shape().size()),
          workers_(std::size_t(std::max(1, threads > 0 ? threads : worker_threads()))) {
        for (const auto* p : params_) diag_.emplace_back(p->size(), 0.0);
    }

    void add_chunk(const Tensor4<T>& x) {
        const std::size_t count = x.shape()[0];
        tape_.clear();
        const NodeId logits = model_.forward(tape_, x);
        if (!layers_found_) find_layers();
        compute_probabilities(tape_.value(logits).data(), count);
        backward_passes(logits, count);
        for (auto& layer : dense_) accumulate_dense(layer, count);
        if (!conv_.empty()) accumulate_conv(count);
    }

    DiagHessian result(std::size_t n) {
        for (std::size_t w = 0; w < partial_.size(); ++w)
            for (std::size_t l = 0; l < conv_.size(); ++l) {
                add_into(diag_[conv_[l].weight], partial_[w][l].weight);
                if (conv_[l].bias != none) add_into(diag_[conv_[l].bias], partial_[w][l].bias);
            }
        DiagHessian h;
        h.inputs = n;
        for (std::size_t j = 0; j < params_.size(); ++j) {
            for (auto& v : diag_[j]) v /= double(n);
            h.parameters.push_back({params_[j]->name, params_[j]->shape, std::move(diag_[j])});
        }
        return h;
    }

private:
    static void add_into(std::vector<double>& dst, const std::vector<double>& src) {
        for (std::size_t i = 0; i < dst.size(); ++i) dst[i] += src[i];
    }

    std::size_t index_of(const Parameter<T>* p) const {
        if (!p) return none;
        const auto it = std::find(params_.begin(), params_.end(), p);
        if (it == params_.end())
            throw Error("exact diag H: tape node uses parameter '" + p->name +
                        "' that is not one of the model's");
        return std::size_t(it - params_.begin());
    }

    // The forward records the same ops for every chunk, so node ids found once hold.
    void find_layers() {
        for (NodeId id = 0; id < tape_.size(); ++id) {
            const Node<T>& node = tape_.node(id);
            const auto& in = tape_.value(node.input == no_node ? id : node.input).shape();
            if (node.kind == OpKind::Linear)
                dense_.push_back({id, index_of(node.weight), index_of(node.bias),
                                  in[1] * in[2] * in[3], node.value.shape()[1], {}});
            else if (node.kind == OpKind::Conv2d)
                conv_.push_back({id, index_of(node.weight), index_of(node.bias), node.window,
                                 in[1], in[2], in[3], node.value.shape()[1],
                                 node.value.shape()[2] * node.value.shape()[3],
                                 in[1] * node.window.kernel * node.window.kernel, {}});
        }
        partial_.resize(workers_);
        for (auto& worker : partial_)
            for (const auto& c : conv_)
                worker.push_back({std::vector<double>(c.out * c.patch, 0.0),
                                  std::vector<double>(c.bias == none ? 0 : c.out, 0.0)});
        scratch_.resize(workers_);
        layers_found_ = true;
    }

    // p in double from the T logits; q = 1 − p from the other classes' sum, which keeps
    // its relative accuracy when the network is confident (p near one).
    void compute_probabilities(const T* z, std::size_t count) {
        const std::size_t k = classes_;
        p_.resize(count * k);
        q_.resize(count * k);
        for (std::size_t i = 0; i < count; ++i) {
            const T* zi = z + i * k;
            double* pi = p_.data() + i * k;
            const double m = double(*std::max_element(zi, zi + k));
            double sum = 0;
            for (std::size_t j = 0; j < k; ++j) sum += (pi[j] = std::exp(double(zi[j]) - m));
            for (std::size_t j = 0; j < k; ++j) pi[j] /= sum;
            for (std::size_t j = 0; j < k; ++j) {
                double others = 0;
                for (std::size_t l = 0; l < k; ++l)
                    if (l != j) others += pi[l];
                q_[i * k + j] = others;
            }
        }
    }

    void fill_seed(std::size_t k, std::size_t count) {
        ensure_shape(seed_, {count, classes_, 1, 1});
        T* s = seed_.data();
        for (std::size_t i = 0; i < count; ++i) {
            const double* pi = p_.data() + i * classes_;
            const double root = std::sqrt(pi[k]);
            for (std::size_t j = 0; j < classes_; ++j)
                s[i * classes_ + j] =
                    static_cast<T>(root * (j == k ? q_[i * classes_ + j] : -pi[j]));
        }
    }

    void backward_passes(NodeId logits, std::size_t count) {
        for (auto& d : dense_) d.squares.assign(count * d.out, T(0));
        for (auto& c : conv_) c.grads.resize(count * classes_ * c.out * c.plane);
        for (std::size_t k = 0; k < classes_; ++k) {
            fill_seed(k, count);
            tape_.backward(logits, seed_, false);
            for (auto& d : dense_) {
                const T* g = tape_.grad(d.node).data();
                T* s = d.squares.data();
                for (std::size_t e = 0; e < count * d.out; ++e) s[e] += g[e] * g[e];
            }
            for (auto& c : conv_) {
                const std::size_t block = c.out * c.plane;
                const T* g = tape_.grad(c.node).data();
                for (std::size_t i = 0; i < count; ++i)
                    std::memcpy(c.grads.data() + (i * classes_ + k) * block, g + i * block,
                                block * sizeof(T));
            }
        }
    }

    // Σ_i Σ_k (E_ik ⊗ A_i)∘(E_ik ⊗ A_i) = (Σ_k E_k∘E_k)ᵀ (A∘A): one GEMM per chunk.
    void accumulate_dense(DenseLayer<T>& d, std::size_t count) {
        const NodeId input = tape_.node(d.node).input;
        const T* a = tape_.value(input).data();
        squared_input_.resize(count * d.in);
        for (std::size_t e = 0; e < count * d.in; ++e) squared_input_[e] = a[e] * a[e];
        product_.resize(d.out * d.in);
        parallel_gemm<T>(Trans::Yes, Trans::No, d.out, d.in, count, T(1), d.squares.data(),
                         squared_input_.data(), T(0), product_.data());
        std::vector<double>& w = diag_[d.weight];
        for (std::size_t e = 0; e < d.out * d.in; ++e) w[e] += double(product_[e]);
        if (d.bias == none) return;
        std::vector<double>& b = diag_[d.bias];
        for (std::size_t i = 0; i < count; ++i)
            for (std::size_t o = 0; o < d.out; ++o) b[o] += double(d.squares[i * d.out + o]);
    }

    // Per-input weight gradients of the conv layers, split over the workers by contiguous
    // ranges of inputs (parallel_parts runs BLAS single-threaded inside).
    void accumulate_conv(std::size_t count) {
        const std::size_t workers = std::min(workers_, count);
        parallel_parts(workers, [&](std::size_t w) {
            const auto [first, last] = part_range(count, workers, w);
            conv_inputs(w, first, last);
        });
    }

    // G_i = E_i Uᵀ_i for all K seeds at once: (K·O × Ho·Wo)(Ho·Wo × C·k·k). With a bias,
    // U_i gets an extra row of ones so that the same GEMM also yields Σ_positions E_iko.
    void conv_inputs(std::size_t worker, std::size_t first, std::size_t last) {
        ConvScratch<T>& s = scratch_[worker];
        for (std::size_t l = 0; l < conv_.size(); ++l) {
            const ConvLayer<T>& c = conv_[l];
            ConvPartial& acc = partial_[worker][l];
            const std::size_t rows = classes_ * c.out;  // the K seeds stacked
            const std::size_t width = c.patch + (c.bias != none ? 1 : 0);
            s.cols.resize(width * c.plane);
            s.product.resize(rows * width);
            std::fill(s.cols.begin() + std::ptrdiff_t(c.patch * c.plane), s.cols.end(), T(1));
            const T* x = tape_.value(tape_.node(c.node).input).data();
            for (std::size_t i = first; i < last; ++i) {
                im2col(x + i * c.channels * c.height * c.width, c.channels, c.height, c.width,
                       c.window, s.cols.data(), c.plane, 0);
                const T* e = c.grads.data() + i * rows * c.plane;
                gemm<T>(Trans::No, Trans::Yes, rows, width, c.plane, T(1), e, s.cols.data(),
                        T(0), s.product.data());
                add_squares(s.product.data(), c, width, acc);
            }
        }
    }

    // Σ_k G_ik∘G_ik into the weight sums and Σ_k (Σ_positions E_ik)² into the bias sums;
    // row k·O + o of the product holds G_ik[o, :] and, in its last column, the bias term.
    void add_squares(const T* g, const ConvLayer<T>& c, std::size_t width,
                     ConvPartial& acc) const {
        for (std::size_t k = 0; k < classes_; ++k)
            for (std::size_t o = 0; o < c.out; ++o) {
                const T* row = g + (k * c.out + o) * width;
                double* w = acc.weight.data() + o * c.patch;
                for (std::size_t q = 0; q < c.patch; ++q) {
                    const double v = double(row[q]);
                    w[q] += v * v;
                }
                if (c.bias != none) {
                    const double b = double(row[c.patch]);
                    acc.bias[o] += b * b;
                }
            }
    }

    Sequential<T>& model_;
    std::vector<Parameter<T>*> params_;
    std::size_t classes_;
    std::size_t workers_;
    std::vector<std::vector<double>> diag_;
    Tape<T> tape_;
    bool layers_found_ = false;
    std::vector<DenseLayer<T>> dense_;
    std::vector<ConvLayer<T>> conv_;
    std::vector<std::vector<ConvPartial>> partial_;  // [worker][conv layer]
    std::vector<ConvScratch<T>> scratch_;            // [worker]
    std::vector<T> squared_input_, product_;
    std::vector<double> p_, q_;
    Tensor4<T> seed_;
};

}  // namespace

template <class T>
DiagHessian exact_diag_hessian(Sequential<T>& model, const Tensor4<T>& x,
                               const CurvatureOptions& options) {
    const auto start = std::chrono::steady_clock::now();
    require_piecewise_linear(model);
    const std::size_t n = x.shape()[0];
    if (n == 0) throw Error("exact diag H: no inputs");
    const std::size_t chunk = effective_chunk(model, n, options);
    ExactDiag<T> run(model, options.threads);
    if (chunk >= n) {
        run.add_chunk(x);
    } else {
        const auto& s = x.shape();
        const std::size_t per_input = s[1] * s[2] * s[3];
        Tensor4<T> part;
        for (std::size_t first = 0; first < n; first += chunk) {
            const std::size_t count = std::min(chunk, n - first);
            ensure_shape(part, {count, s[1], s[2], s[3]});
            std::copy_n(x.data() + first * per_input, count * per_input, part.data());
            run.add_chunk(part);
        }
    }
    DiagHessian h = run.result(n);
    h.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return h;
}

#define MINSHARP_INSTANTIATE_CURVATURE(T)                                                    \
    template void require_piecewise_linear<T>(const Sequential<T>&);                         \
    template std::size_t effective_chunk<T>(const Sequential<T>&, std::size_t,               \
                                            const CurvatureOptions&);                        \
    template DiagHessian exact_diag_hessian<T>(Sequential<T>&, const Tensor4<T>&,            \
                                               const CurvatureOptions&);

MINSHARP_INSTANTIATE_CURVATURE(float)
MINSHARP_INSTANTIATE_CURVATURE(double)

}  // namespace minsharp::sharpness
