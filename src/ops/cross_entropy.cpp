// The loss: forward (log-sum-exp) and backward (softmax minus one-hot).
#include "minsharp/ops/cross_entropy.hpp"

#include "minsharp/ops/registry.hpp"

#include "common.hpp"

namespace minsharp {

using namespace ops_detail;

// ---- forward --------------------------------------------------------------------------

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

// ---- backward -------------------------------------------------------------------------

namespace {

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

// ---- tangents (R-operator, docs/second-order.md) --------------------------------------

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

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> cross_entropy_rules() {
    OpRules<T> r;
    r.kind = OpKind::CrossEntropy;
    r.name = "cross_entropy";
    r.layer_name = "cross-entropy";
    r.backward = backward_cross_entropy<T>;
    r.jvp = jvp_cross_entropy<T>;
    r.backward_jvp = backward_jvp_cross_entropy<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_CROSS_ENTROPY(T)                                    \
    template NodeId cross_entropy<T>(Tape<T>&, NodeId, const std::vector<int>&); \
    template void softmax_rows<T>(const T*, std::size_t, std::size_t, T*);       \
    template OpRules<T> cross_entropy_rules<T>();

MINSHARP_INSTANTIATE_CROSS_ENTROPY(float)
MINSHARP_INSTANTIATE_CROSS_ENTROPY(double)

}  // namespace minsharp
