// Exact Hessian-vector products of the mean cross-entropy by forward-over-reverse
// differentiation: Pearlmutter's R-operator (B. A. Pearlmutter, "Fast exact multiplication
// by the Hessian", Neural Computation 6(1), 1994). docs/second-order.md derives the rules.
//
// For a direction V in parameter space, R{f} = d/dε f(θ + εV) at ε = 0. Applied to the
// recorded forward (a forward tangent Ṙy per node) and then to the recorded backward (a
// tangent R(∂y) of every node's gradient), it gives R{∇_θ L} = H V: the full Hessian,
// including the terms between layers that the Gauss–Newton matrix leaves out. One product
// costs one tangent forward and one tangent backward over the recorded tape, and the
// recording (values, argmax, probabilities and the gradients of one backward) is reused
// by every product.
//
// Each op kind has one rule pair in its op file under src/ops/, registered in its OpRules
// row (ops/registry.hpp): jvp (the forward tangent) and backward_jvp (the tangent of its
// backward rule). Each reads only its node, the node it consumed, their tangents and the
// direction of its own parameters. Tangents live in side arrays indexed by NodeId
// (NodeTangents), not in the tape.
#pragma once

#include "minsharp/nn/sequential.hpp"
#include "minsharp/ops/jvp.hpp"

#include <cstddef>
#include <memory>
#include <span>
#include <vector>

namespace minsharp::autograd {

// The rule arguments live with the ops (ops/jvp.hpp); these names keep their old spelling.
using minsharp::BackwardJvpArgs;
using minsharp::JvpArgs;
using minsharp::NodeDirection;

/// Forward tangents Ṙ(value) and backward tangents R(grad) of every node of one tape,
/// flat in each node's value layout. Buffers only grow, so repeated products (and chunks
/// of different sizes) stop allocating after the first.
template <class T>
struct NodeTangents {
    std::vector<std::vector<T>> value;
    std::vector<std::vector<T>> grad;
    std::vector<char> grad_written;
};

/// Runs the tangent forward and the tangent backward over a tape on which the forward of
/// a scalar loss node `loss` and a backward from it have been recorded. directions[id] is
/// node id's NodeDirection (all null for nodes without parameters); the products are added
/// where they point.
template <class T>
void tangent_passes(const Tape<T>& tape, NodeId loss, std::span<const NodeDirection<T>> directions,
                    NodeTangents<T>& tangents);

// ---- the driver ------------------------------------------------------------------------

struct HvpOptions {
    std::size_t chunk = 1000;  ///< inputs per recorded forward (bounds the tangent buffers)
    /// Recordings (values and gradients of every node) kept between products, in bytes.
    /// Chunks beyond it are recorded again at every product: slower (one more forward
    /// and backward each), but memory stays bounded for any number of inputs.
    std::size_t retain_bytes = std::size_t(1) << 30;
};

/// H v for the mean cross-entropy of `model` over fixed inputs and labels, at the
/// parameters the model has at construction. The forward and backward are recorded once
/// (per chunk); each apply() then costs one tangent forward and one tangent backward.
/// The model must outlive this object, and its parameters must not change meanwhile
/// (apply throws Error when they have).
template <class T>
class HessianVectorProduct {
public:
    /// Throws Error for no inputs or a zero chunk, ShapeError when x does not fit the model
    /// or the label count differs from the inputs, and Error for a label outside the
    /// model's classes.
    HessianVectorProduct(Sequential<T>& model, const Tensor4<T>& x, const std::vector<int>& labels,
                         const HvpOptions& options = {});
    ~HessianVectorProduct();
    HessianVectorProduct(const HessianVectorProduct&) = delete;
    HessianVectorProduct& operator=(const HessianVectorProduct&) = delete;

    /// Parameters of the model: the length of v and hv (model.parameters() order, the flat
    /// layout of get_flat_parameters).
    std::size_t dimension() const { return dimension_; }
    std::size_t inputs() const { return inputs_; }
    /// Mean cross-entropy over the inputs at the recorded parameters.
    double loss() const { return loss_; }
    /// Chunks whose recording is kept (the others are recorded again per product).
    std::size_t retained_chunks() const { return retained_.size(); }

    /// hv = H v. Throws ShapeError when v or hv is not dimension() long, Error when the
    /// model's parameters changed since construction.
    void apply(std::span<const double> v, std::span<double> hv);

private:
    struct Chunk {
        std::size_t first, count;
    };
    double record(Tape<T>& tape, const T* x, const Chunk& chunk);
    void point_directions(const Tape<T>& tape);
    void add_chunk_product(const Tape<T>& tape, std::span<double> hv);
    void require_unchanged_parameters() const;

    Sequential<T>& model_;
    std::vector<int> labels_;
    std::vector<Chunk> chunks_;
    std::size_t dimension_ = 0, inputs_ = 0, per_example_ = 0;
    double loss_ = 0;
    std::vector<std::unique_ptr<Tape<T>>> retained_;  // the first retained_.size() chunks
    std::vector<T> later_inputs_;  // inputs of the chunks recorded again at every product
    Tape<T> scratch_;
    Tensor4<T> chunk_x_;
    std::vector<T> recorded_parameters_;
    std::vector<Parameter<T>*> parameters_;
    std::vector<std::size_t> offsets_;    // where each parameter starts in the flat layout
    std::vector<T> direction_, product_;  // V and one chunk's H V, flat, in T
    std::vector<NodeDirection<T>> node_directions_;
    NodeTangents<T> tangents_;
};

/// One-off H v (records, multiplies once, forgets). For many products with the same inputs
/// use HessianVectorProduct.
template <class T>
void hessian_vector_product(Sequential<T>& model, const Tensor4<T>& x,
                            const std::vector<int>& labels, std::span<const double> v,
                            std::span<double> hv, const HvpOptions& options = {});

}  // namespace minsharp::autograd
