// The parametric structure of a Sequential network, computed once: which layers carry
// parameters, their geometry, and which hidden units feed which slice of the next layer's
// weight. Rescaling (scaling.hpp), the minimum sharpness solvers' (out, in, group) view
// (minimum.hpp: LayerDiag) and the per-layer measures (measures.hpp) all read the network
// through this one view.
//
// A hidden unit is what a ReLU rescaling acts on (docs/science.md §2): one output feature
// of a dense layer, one output channel of a conv layer. Between two parametric layers a unit
// is followed through the layers in between: channel-preserving ones (ReLU, max-pool) keep
// unit j as channel j; a flatten turns channel j of an H×W map into the H·W consecutive
// features j·H·W … (j+1)·H·W − 1 (channel-major, as flatten lays them out).
#pragma once

#include "minsharp/nn/sequential.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/minimum.hpp"

#include <cstddef>
#include <string>
#include <vector>

namespace minsharp::sharpness {

/// One dense or conv layer and its geometry.
template <class T>
struct ParametricLayer {
    std::size_t index = 0;  ///< position in the Sequential
    LayerKind kind = LayerKind::Dense;
    std::string spec;       ///< spec token, e.g. "conv:20:5"
    std::string name;       ///< parameter-name prefix, e.g. "layer0"
    const Parameter<T>* weight = nullptr;
    const Parameter<T>* bias = nullptr;  ///< nullptr when the layer has no bias
    ActShape input_shape, output_shape;  ///< per-example shapes entering and leaving the layer
    std::size_t units = 0;            ///< output features (dense) or output channels (conv)
    std::size_t input_width = 0;      ///< weight.shape[1]: input features or input channels
    std::size_t kernel_positions = 1; ///< kh·kw of a conv, 1 for dense
    std::size_t positions_per_unit = 1;  ///< output positions of one unit: Ho·Wo for conv, 1 for dense
    /// The weight read as (units, inputs, group) in its own row-major memory: `inputs` counts
    /// the units of the previous parametric layer (first layer: input_width) and `group` the
    /// entries each (unit, input unit) pair holds, so [:, i, :] is everything input unit i feeds.
    std::size_t inputs = 0, group = 1;
    /// inputs · group: the weight entries of one unit (row j is entries j·per_unit … ).
    std::size_t weight_per_unit() const { return inputs * group; }
};

/// How the units of parametric layer `from` reach layer `to` = from + 1 (indices into
/// ParametricStructure::layers()).
struct UnitEdge {
    std::size_t from = 0, to = 0;
    /// Consecutive input channels/features of `to` one unit of `from` feeds: 1 when the
    /// channels pass through unchanged, H·W when a flatten of H×W maps lies in between.
    std::size_t inputs_per_unit = 1;
    bool through_flatten = false;
};

/// Where unit j of a hidden layer sits in the next layer's weight: `rows` runs of `count`
/// consecutive entries, run o starting at first + o·stride.
struct UnitSlice {
    std::size_t first = 0, count = 0, stride = 0, rows = 0;
};

/// The ordered parametric layers of one model and the unit-to-unit edges between them.
/// Holds pointers into the model it was built from: that model must outlive it and keep
/// its layers (rebuild after Sequential::add or assignment).
template <class T>
class ParametricStructure {
public:
    /// Throws Error when a unit cannot be followed from one parametric layer to the next
    /// (a layer between them that neither keeps the channels nor flattens).
    explicit ParametricStructure(const Sequential<T>& model);

    const std::vector<ParametricLayer<T>>& layers() const { return layers_; }
    const ParametricLayer<T>& layer(std::size_t l) const { return layers_.at(l); }
    std::size_t size() const { return layers_.size(); }

    /// Edges between consecutive parametric layers: edges()[l] goes from layer l to l + 1.
    const std::vector<UnitEdge>& edges() const { return edges_; }

    /// Units of every parametric layer but the last (the ones a rescaling may scale).
    std::vector<std::size_t> hidden_unit_counts() const;

    /// The entries of layer l + 1's weight that read unit j of layer l (l + 1 < size()).
    UnitSlice unit_slice(std::size_t l, std::size_t j) const;

    /// Mutable weight / bias of layer l in `model`, which must be the model this structure
    /// was built from (Error otherwise): scaling writes through these.
    Parameter<T>& weight(Sequential<T>& model, std::size_t l) const;
    Parameter<T>* bias(Sequential<T>& model, std::size_t l) const;

    /// diag H of layer l's weight / bias (nullptr without bias) in `diag`, whose entries
    /// follow model.parameters() order (as exact_diag_hessian gives them); a diagonal in
    /// another order is searched by name. Throws Error naming the parameter when its entry
    /// is missing or has the wrong number of values.
    const ParameterDiag& weight_diag(const DiagHessian& diag, std::size_t l) const;
    const ParameterDiag* bias_diag(const DiagHessian& diag, std::size_t l) const;

    /// Every layer's diagonal in the (out, in, group) view of the minimum sharpness solvers.
    std::vector<LayerDiag> layer_diags(const DiagHessian& diag) const;

private:
    const ParameterDiag& diag_entry(const DiagHessian& diag, const Parameter<T>& p,
                                    std::size_t position) const;
    void require_model(const Sequential<T>& model) const;

    const Sequential<T>* model_ = nullptr;
    std::vector<ParametricLayer<T>> layers_;
    std::vector<UnitEdge> edges_;
    // Positions of each layer's weight and bias in model.parameters(): a DiagHessian lists
    // its entries in that order, so the lookup is done here once.
    std::vector<std::size_t> weight_position_, bias_position_;
};

}  // namespace minsharp::sharpness
