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

// (A JVP rule for cross_entropy goes here, beside its backward.)

}  // namespace

// ---- registry row ---------------------------------------------------------------------

template <class T>
OpRules<T> cross_entropy_rules() {
    OpRules<T> r;
    r.kind = OpKind::CrossEntropy;
    r.name = "cross_entropy";
    r.layer_name = "cross-entropy";
    r.backward = backward_cross_entropy<T>;
    return r;
}

#define MINSHARP_INSTANTIATE_CROSS_ENTROPY(T)                                    \
    template NodeId cross_entropy<T>(Tape<T>&, NodeId, const std::vector<int>&); \
    template void softmax_rows<T>(const T*, std::size_t, std::size_t, T*);       \
    template OpRules<T> cross_entropy_rules<T>();

MINSHARP_INSTANTIATE_CROSS_ENTROPY(float)
MINSHARP_INSTANTIATE_CROSS_ENTROPY(double)

}  // namespace minsharp
