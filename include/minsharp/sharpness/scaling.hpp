// Function-preserving rescalings of a ReLU network (docs/science.md §2–§3) and the map from a
// Hessian diagonal per parameter tensor to the per-layer (out, in, group) view the minimum
// sharpness solvers work on. Both read the network through ParametricStructure
// (structure.hpp): its layers, their units, and the slice of the next weight a unit feeds.
//
// ReLU and max-pooling are positively homogeneous (relu(γx) = γ·relu(x) for γ > 0, and
// max-pool acts per channel), so scaling what flows into a unit by γ and what flows out of
// it by 1/γ leaves every output unchanged. Plain Tr H is not invariant under these maps;
// minimum sharpness is.
#pragma once

#include "minsharp/nn/sequential.hpp"
#include "minsharp/core/random.hpp"
#include "minsharp/sharpness/curvature.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/sharpness/structure.hpp"

#include <string>
#include <vector>

namespace minsharp::sharpness {

/// Node-wise scale factors: one vector per hidden parametric layer l = 0..L−2 (the outputs
/// of every parametric layer but the last), one γ > 0 per output unit / conv channel.
using NodeScales = std::vector<std::vector<double>>;

/// Indices (into model.layer(i)) of the dense and conv layers, in order.
template <class T>
std::vector<std::size_t> parametric_layer_indices(const Sequential<T>& model);

/// Output units (dense features / conv channels) of each parametric layer but the last:
/// the shape a NodeScales for this model must have.
template <class T>
std::vector<std::size_t> hidden_unit_counts(const Sequential<T>& model);

/// Layer-wise transform in place: W_l → α_l W_l, b_l → (α_1⋯α_l) b_l over the L parametric
/// layers. Needs L factors, each finite and > 0, with Π α_l = 1 (|Σ log α_l| ≤ 1e-9);
/// otherwise throws Error saying which condition failed. Computed in double, stored in T.
template <class T>
void scale_layerwise(Sequential<T>& model, const std::vector<double>& alphas);

/// The layer-wise transform applied to a copy; `model` is untouched.
template <class T>
Sequential<T> scaled_layerwise(const Sequential<T>& model, const std::vector<double>& alphas);

/// Node-wise transform in place: for hidden unit j of parametric layer l < L−1, incoming
/// weights and bias × γ_{l,j}, outgoing weights × 1/γ_{l,j}. "Outgoing" is the slice of the
/// next parametric layer's weight that reads unit j: column j of a dense layer, the
/// input-channel slice W[:, j, :, :] of a conv layer, and for a conv channel reaching a
/// dense layer through flatten, its H·W consecutive columns j·H·W … (j+1)·H·W − 1.
/// Throws Error when `gammas` does not have the shape hidden_unit_counts(model) or holds a
/// factor that is not finite and > 0.
template <class T>
void scale_nodewise(Sequential<T>& model, const NodeScales& gammas);

/// The node-wise transform applied to a copy; `model` is untouched.
template <class T>
Sequential<T> scaled_nodewise(const Sequential<T>& model, const NodeScales& gammas);

/// L random layer-wise factors with Π α_l = 1 whose logs are spread uniformly and scaled so
/// that the most extreme factor is exactly max_factor or 1/max_factor (all lie within).
/// L = 1 gives {1}. max_factor must be ≥ 1.
std::vector<double> random_layer_scales(std::size_t layers, Rng& rng, double max_factor = 1e3);

/// Random node-wise factors for the model, each log-uniform in [1/max_factor, max_factor].
template <class T>
NodeScales random_node_scales(const Sequential<T>& model, Rng& rng, double max_factor = 1e3);

/// The diagonal of each parameter tensor arranged per parametric layer as (out, in, group)
/// for the minimum sharpness solvers: a conv weight (out, in, kh, kw) has group kh·kw; a dense
/// weight after a dense layer (or on the input) has group 1; a dense weight fed through
/// flatten by a conv of C channels of H×W is read as (out, C, H·W). `in` is the number of
/// units of the previous parametric layer (first layer: input channels or features).
/// Names are the layer prefixes ("layer0", ...). Throws Error when a parameter's diagonal is
/// missing from `diag` or has the wrong number of entries. Same as
/// ParametricStructure(model).layer_diags(diag); per-layer traces are the LayerDiag's
/// weight_trace() and bias_trace().
template <class T>
std::vector<LayerDiag> layer_diags(const Sequential<T>& model, const DiagHessian& diag);

}  // namespace minsharp::sharpness
