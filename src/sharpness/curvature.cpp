// Exact diag H of the mean cross-entropy (docs/science.md §4), as an extension of the backward
// pass: one forward per chunk, K backward passes seeded with the columns c_k = √p_k (e_k − p)
// of the factored output Hessian diag(p) − p pᵀ = C Cᵀ, and one rule per parametric layer
// turning (its input, the gradients that reached it) into squared per-example gradients.
// The rules live with their ops (src/ops/linear.cpp, src/ops/conv2d.cpp, DiagRule in
// include/minsharp/ops/diag_rule.hpp); this file drives them.
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

#include "minsharp/ops/registry.hpp"
#include "minsharp/core/parallel.hpp"

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

std::vector<double> DiagHessian::flat() const {
    std::vector<double> all;
    for (const auto& p : parameters) all.insert(all.end(), p.values.begin(), p.values.end());
    return all;
}

// ---- the allow-list -------------------------------------------------------------------

namespace {

// An allow-list: a layer kind is refused until its op file shows that every logit stays
// affine in each single parameter of it (its piecewise_linear trait), and so is any kind
// outside the registry.
template <class T>
bool is_piecewise_linear(LayerKind kind) {
    const OpRules<T>* rules = find_op_rules<T>(kind);
    return rules && rules->traits.piecewise_linear;
}

template <class T>
std::string kind_name(LayerKind kind) {
    if (const OpRules<T>* rules = find_op_rules<T>(kind)) return std::string(rules->layer_name);
    return "kind #" + std::to_string(static_cast<int>(kind));
}

// "dense, conv2d, max-pool, relu and flatten": the layer kinds the identity covers.
template <class T>
std::string piecewise_linear_kinds() {
    std::vector<std::string_view> names;
    for (const OpRules<T>& rules : all_op_rules<T>())
        if (rules.parse && rules.traits.piecewise_linear) names.push_back(rules.layer_name);
    std::string list;
    for (std::size_t i = 0; i < names.size(); ++i)
        list += (i == 0 ? "" : i + 1 == names.size() ? " and " : ", ") + std::string(names[i]);
    return list;
}

}  // namespace

template <class T>
void require_piecewise_linear(const Sequential<T>& model) {
    for (std::size_t i = 0; i < model.size(); ++i) {
        const Layer<T>& layer = model.layer(i);
        if (!is_piecewise_linear<T>(layer.kind()))
            throw NotPiecewiseLinearError(
                "exact diag H: layer " + std::to_string(i) + " ('" + layer.spec() + "', " +
                kind_name<T>(layer.kind()) +
                ") is not piecewise linear; the exact identity needs a network of " +
                piecewise_linear_kinds<T>() + " layers only");
    }
}

// ---- chunk size -----------------------------------------------------------------------

template <class T>
std::size_t effective_chunk(const Sequential<T>& model, std::size_t n,
                            const CurvatureOptions& options) {
    if (options.chunk == 0) throw Error("exact diag H: chunk must be at least 1 input");
    std::size_t conv_values = 0;  // Σ over conv layers of O·Ho·Wo, per input and pass
    for (std::size_t i = 0; i < model.size(); ++i) {
        const OpRules<T>* rules = find_op_rules<T>(model.layer(i).kind());
        if (rules && rules->diag_keeps_pass_grads)
            conv_values += model.layer(i).output_shape(model.shape_before(i)).size();
    }
    std::size_t chunk = std::min(options.chunk, std::max<std::size_t>(n, 1));
    if (conv_values > 0) {
        const std::size_t per_input = model.output_shape().size() * conv_values * sizeof(T);
        chunk = std::min(chunk, std::max<std::size_t>(1, options.conv_buffer_bytes / per_input));
    }
    return chunk;
}

// ---- the computation ------------------------------------------------------------------

namespace {

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
        if (!rules_found_) find_rules();
        compute_probabilities(tape_.value(logits).data(), count);
        for (auto& rule : rules_) rule->start_chunk(count);
        for (std::size_t k = 0; k < classes_; ++k) {
            fill_seed(k, count);
            tape_.backward(logits, seed_, false);
            for (auto& rule : rules_) rule->after_pass(tape_, k, count);
        }
        for (auto& rule : rules_) rule->end_chunk(tape_, count, scratch_);
    }

    DiagHessian result(std::size_t n) {
        for (auto& rule : rules_) rule->finish();
        DiagHessian h;
        h.inputs = n;
        for (std::size_t j = 0; j < params_.size(); ++j) {
            for (auto& v : diag_[j]) v /= double(n);
            h.parameters.push_back({params_[j]->name, params_[j]->shape, std::move(diag_[j])});
        }
        return h;
    }

private:
    std::vector<double>* diag_of(const Parameter<T>* p) {
        if (!p) return nullptr;
        const auto it = std::find(params_.begin(), params_.end(), p);
        if (it == params_.end())
            throw Error("exact diag H: tape node uses parameter '" + p->name +
                        "' that is not one of the model's");
        return &diag_[std::size_t(it - params_.begin())];
    }

    // One rule per parametric node, from its op file. The forward records the same ops for
    // every chunk, so the nodes found once hold.
    void find_rules() {
        for (NodeId id = 0; id < tape_.size(); ++id) {
            const Node<T>& node = tape_.node(id);
            const OpRules<T>& rules = op_rules<T>(node.kind);
            if (!rules.diag) continue;
            rules_.push_back(rules.diag(
                tape_, id, {classes_, workers_, diag_of(node.weight), diag_of(node.bias)}));
        }
        rules_found_ = true;
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

    Sequential<T>& model_;
    std::vector<Parameter<T>*> params_;
    std::size_t classes_;
    std::size_t workers_;
    std::vector<std::vector<double>> diag_;  // the rules hold pointers: never resized
    Tape<T> tape_;
    bool rules_found_ = false;
    std::vector<std::unique_ptr<DiagRule<T>>> rules_;  // tape order
    DiagScratch<T> scratch_;
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
