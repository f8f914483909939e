// The exact-diagonal rule of a parametric op (docs/science.md §4): turns the op's input
// and the output gradients of the K backward passes seeded with the columns of the
// factored output Hessian into Σ over inputs of the squared per-example gradients of its
// weight and bias. The driver (src/sharpness/curvature.cpp) creates one rule per
// parametric node of the tape and calls it per node, never per element.
#pragma once

#include "minsharp/autograd/tape.hpp"

#include <cstddef>
#include <vector>

namespace minsharp {

/// What a rule is created with.
struct DiagSetup {
    std::size_t classes = 0;               ///< K: backward passes per chunk
    std::size_t workers = 1;               ///< threads a rule may split inputs over
    std::vector<double>* weight = nullptr; ///< running sums, the weight's layout
    std::vector<double>* bias = nullptr;   ///< null when the op has no bias
};

/// Scratch the driver shares between the rules of one model (they run one after another).
template <class T>
struct DiagScratch {
    std::vector<T> squared_input, product;
};

template <class T>
class DiagRule {
public:
    virtual ~DiagRule() = default;
    /// Before the K passes over a chunk of `count` inputs.
    virtual void start_chunk(std::size_t count) = 0;
    /// After backward pass k: the node's grad holds that pass's output gradient.
    virtual void after_pass(const Tape<T>& tape, std::size_t k, std::size_t count) = 0;
    /// After the K passes: adds the chunk's squared per-example gradients.
    virtual void end_chunk(const Tape<T>& tape, std::size_t count, DiagScratch<T>& scratch) = 0;
    /// After the last chunk: adds sums kept per worker into the totals, in worker order
    /// (so a given thread count always gives the same bits).
    virtual void finish() {}
};

}  // namespace minsharp
