// The loss: mean softmax cross-entropy over the batch. Not a layer (no spec token).
#pragma once

#include "minsharp/autograd/tape.hpp"

#include <vector>

namespace minsharp {

template <class T>
struct OpRules;

/// Mean softmax cross-entropy over the batch, numerically stable (log-sum-exp).
/// logits (N, K, 1, 1); labels N values in [0, K).
template <class T>
NodeId cross_entropy(Tape<T>& tape, NodeId logits, const std::vector<int>& labels);

/// Row-wise softmax of (N, K) logits into probs, in the logits' precision.
template <class T>
void softmax_rows(const T* logits, std::size_t rows, std::size_t classes, T* probs);

/// The registry row of OpKind::CrossEntropy.
template <class T>
OpRules<T> cross_entropy_rules();

}  // namespace minsharp
