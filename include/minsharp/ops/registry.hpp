// One row per op kind: its name, traits and rules (src/ops/registry.cpp). The tape's
// backward, Sequential's fusions, the spec parser and the exact-diagonal driver look kinds
// up here instead of switching on them. Dispatch is per node, through function pointers.
#pragma once

#include "minsharp/ops/diag_rule.hpp"
#include "minsharp/ops/jvp.hpp"
#include "minsharp/ops/layer.hpp"
#include "minsharp/ops/spec.hpp"

#include <memory>
#include <string_view>
#include <vector>

namespace minsharp {

struct OpTraits {
    /// Has a weight (and possibly a bias): it owns an exact-diagonal rule.
    bool parametric = false;
    /// Every output is piecewise linear in its input and in each single parameter, so the
    /// exact diag H identity (docs/science.md §4) covers networks made of such layers.
    bool piecewise_linear = false;
    /// f(αx) = α f(x) for α > 0 (a parametric op: with its bias scaled by α too).
    bool positively_homogeneous = false;
    /// Sequential records this layer and a ReLU right after it as one node
    /// (Layer::forward_with_relu).
    bool absorbs_following_relu = false;
    /// Reads any (N, C, H, W) input as (N, C·H·W): a flatten right before it is skipped.
    bool reads_input_flat = false;
    /// The value is the input reshaped: skipped before a layer that reads its input flat.
    bool only_reshapes = false;
};

/// Local backward of one node: adds (or writes, for the first op to reach it) the input's
/// gradient, and the parameter gradients when parameter_grads.
template <class T>
using BackwardRule = void (*)(Tape<T>& tape, NodeId id, bool parameter_grads);

/// The layer of a spec token whose fields[0] is the kind's spec_token, or null when the
/// token's form is not this kind's (the caller reports an unknown layer).
template <class T>
using LayerParser = std::unique_ptr<Layer<T>> (*)(const SpecToken& token, const ActShape& in);

template <class T>
using DiagRuleFactory = std::unique_ptr<DiagRule<T>> (*)(const Tape<T>& tape, NodeId node,
                                                         const DiagSetup& setup);

/// A parametric layer's weight read by unit (a dense output feature, a conv output
/// channel): what a ReLU rescaling scales and what the sharpness structure
/// (sharpness/structure.hpp) builds its view from.
template <class T>
struct UnitGeometry {
    const Parameter<T>* weight = nullptr;
    const Parameter<T>* bias = nullptr;  ///< null when the layer has no bias
    std::size_t units = 0;               ///< rows of the weight
    std::size_t input_width = 0;         ///< weight.shape[1]: input features or channels
    std::size_t kernel_positions = 1;    ///< kh·kw of a conv, 1 for dense
    /// Input channels of the weight and the entries one input channel holds per unit: a
    /// conv's kernel positions; for a dense layer reading a (C, H, W) input unflattened, H·W.
    std::size_t input_channels = 0, entries_per_input_channel = 1;
};

/// The UnitGeometry of a layer of the rule's kind taking per-example input `in`.
template <class T>
using UnitGeometryRule = UnitGeometry<T> (*)(const Layer<T>& layer, const ActShape& in);

template <class T>
struct OpRules {
    OpKind kind = OpKind::Input;
    std::string_view name;        ///< on the tape: "linear", "max_pool2d"
    std::string_view layer_name;  ///< in messages about layers: "dense", "max-pool"
    OpTraits traits;
    BackwardRule<T> backward = nullptr;  ///< null: nothing flows back (the input)
    /// The R-operator pair (ops/jvp.hpp) for exact Hessian-vector products
    /// (autograd/hvp.hpp); null: the kind has no second-order rules yet.
    JvpRule<T> jvp = nullptr;
    BackwardJvpRule<T> backward_jvp = nullptr;  ///< null for the input, like backward
    DiagRuleFactory<T> diag = nullptr;   ///< parametric kinds
    UnitGeometryRule<T> unit_geometry = nullptr;  ///< parametric kinds
    /// The diag rule keeps every pass's output gradient of a chunk (the driver bounds the
    /// chunk by CurvatureOptions::conv_buffer_bytes for these).
    bool diag_keeps_pass_grads = false;
    std::string_view spec_token;  ///< "dense"; empty for ops that are not layers
    std::string_view spec_form;   ///< "dense:OUT[:nobias]"; == spec_token for bare tokens
    LayerParser<T> parse = nullptr;
};

/// Every kind's rules, in OpKind order.
template <class T>
const std::vector<OpRules<T>>& all_op_rules();

/// The rules of a kind; throws Error for a value that is not a registered kind.
template <class T>
const OpRules<T>& op_rules(OpKind kind);

/// The rules of a kind, or null for a value that is not a registered kind.
template <class T>
const OpRules<T>* find_op_rules(OpKind kind);

}  // namespace minsharp
