// Minimum sharpness: the smallest trace of the Hessian over all networks that compute the
// same function under ReLU rescaling (docs/science.md §2–§3). Pure math on Hessian-diagonal
// numbers; the diagonal itself is computed in sharpness/curvature.
//
// Both problems are minimisations of sums of exponentials Σ c·exp(2(x_p − x_q)) over log
// scales x, i.e. convex. A term whose coefficient is zero is a missing edge of the graph
// "p feeds q"; when a unit (or layer) is not on a cycle through the fixed input/output, its
// terms can be scaled away without bound: the infimum is then not attained, the solvers
// drop those terms from the value and say so in `note`.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace minsharp::sharpness {

/// Diagonal-Hessian mass of one parametric layer of a chain network, viewed as (out, in, group).
/// `in` is the number of units (neurons / channels) of the previous parametric layer (for the
/// first layer: input channels or features); `group` is the number of entries per (out, in)
/// pair: kh·kw for a conv weight (out, in, kh, kw), 1 for a dense weight (out, in), and H·W for
/// a dense layer fed by a flattened conv output of C channels of H×W (its (out, C·H·W) weight
/// is (out, C, H·W)). ParametricStructure::layer_diags (structure.hpp) builds these from a
/// model's Hessian diagonal.
struct LayerDiag {
    std::string name;
    std::size_t out = 0, in = 0, group = 1;
    std::vector<double> weight;  ///< out·in·group entries, row-major (out, in, group)
    std::vector<double> bias;    ///< out entries, or empty when the layer has no bias

    /// Σ of the weight diagonal (T^W of the layer).
    double weight_trace() const;
    /// Σ of the bias diagonal (T^b of the layer); 0 without bias.
    double bias_trace() const;
};

/// Result of the layer-wise (the paper's) minimum sharpness.
struct MinimumSharpness {
    double value = 0.0;          ///< min (or infimum) of Tr H over layer-wise rescalings
    std::vector<double> scales;  ///< α_l = exp(u_l), l = 1..L, Π α_l = 1
    /// ‖∇_u f(u*)‖₂ / (u-dependent part of f(u*)): scale-free optimality measure; 0 when
    /// nothing depends on u (L = 1, or every term constant or dropped).
    double gradient_norm = 0.0;
    int iterations = 0;          ///< Newton steps taken
    int coordinate_sweeps = 0;   ///< exact one-variable sweeps run before Newton (warm start)
    bool attained = true;        ///< false: some terms vanish only in the limit (dead layer)
    std::string note;            ///< why the infimum is not attained; empty otherwise
    double trace_before = 0.0;   ///< Σ_l T^W_l + T^b_l at α = 1
};

/// Layer-wise minimum sharpness: minimises over u ∈ R^{L−1}
///   f(u) = Σ_{l<L}[T^W_l e^{−2u_l} + T^b_l e^{−2 s_l}] + T^W_L e^{2 s_{L−1}} + T^b_L,
/// s_l = u_1 + … + u_l, by Newton's method (each step a Cholesky solve through LAPACK) with an
/// Armijo line search, started from the
/// closed-form bias-free optimum refined by a few sweeps of exact one-variable minimisation
/// (which crosses orders of magnitude in one step where damped Newton steps crawl). Stops at
/// gradient_norm ≤ 1e-12 or when no step makes progress in double. `bias_traces` is either empty (no biases) or has one entry
/// per layer. Traces must be finite and ≥ 0 (else Error). A zero weight trace may make the
/// infimum unattained: then `attained` is false, `note` names the vanishing terms, `value` is
/// the infimum (always well defined for finite non-negative traces) and `scales` are finite
/// placeholders for the directions that run off to 0 or ∞.
MinimumSharpness layerwise_minimum_sharpness(const std::vector<double>& weight_traces,
                                             const std::vector<double>& bias_traces);

/// Same, from per-layer diagonals (uses their traces; notes name the layers).
MinimumSharpness layerwise_minimum_sharpness(const std::vector<LayerDiag>& layers);

/// Bias-free closed form L·(Π_l T^W_l)^{1/L} (AM–GM), computed in log space. A zero trace
/// gives 0 (the infimum, not attained when L > 1).
double closed_form_minimum_sharpness(const std::vector<double>& weight_traces);

/// Result of the node-wise minimum sharpness (per-unit rescaling; beyond the paper).
struct NodewiseMinimumSharpness {
    double value = 0.0;  ///< min (or infimum) of Tr H over node-wise rescalings
    /// log γ per hidden layer (layers 1..L−1, i.e. the outputs of layers[0..L−2]), per unit.
    /// Units whose terms vanish in the infimum keep their layer's common scale.
    std::vector<std::vector<double>> log_scales;
    double relative_change = 0.0;  ///< |Δ value| / value over the last sweep
    int sweeps = 0;                ///< block sweeps, each followed by a layer-wise correction
    bool converged = false;        ///< relative_change ≤ tolerance within max_sweeps
    bool attained = true;          ///< false: dead units' terms vanish only in the limit
    std::string note;              ///< which units are dead and how much mass vanishes
    double trace_before = 0.0;     ///< Σ of all diagonal entries at γ = 1
};

/// Node-wise minimum sharpness: minimises Tr H over per-unit scales γ_{l,j} > 0 of every
/// hidden unit (input and output units fixed). Alternates the exact per-unit update
/// γ *= (incoming/outgoing mass)^{1/4} over odd, then even hidden layers (units of a layer
/// and layers of one parity do not interact), each sweep followed by an exact layer-wise
/// (coarse) correction that removes the slow layer-to-layer modes. Stops when the relative
/// change of the objective over a sweep is ≤ tolerance, or after max_sweeps.
/// Requires layers[l].in == layers[l−1].out and consistent sizes (else Error naming the layer).
/// A unit with no path of non-zero curvature from the input and to the output is dead: its
/// terms vanish as its scale goes to 0 or ∞; they are dropped from `value`, `attained` is
/// false and `note` says which units and how much of Tr H that is.
NodewiseMinimumSharpness nodewise_minimum_sharpness(const std::vector<LayerDiag>& layers,
                                                    double tolerance = 1e-12,
                                                    int max_sweeps = 100000);

/// The diagonals after the node-wise rescaling with log γ = log_scales (one vector per hidden
/// layer): weight (l; j, i, g) × (γ_{l−1,i}/γ_{l,j})², bias (l; j) × 1/γ_{l,j}².
std::vector<LayerDiag> apply_nodewise_scales(const std::vector<LayerDiag>& layers,
                                             const std::vector<std::vector<double>>& log_scales);

/// The diagonals after the layer-wise rescaling W_l → α_l W_l, b_l → (α_1⋯α_l) b_l:
/// weight × 1/α_l², bias × 1/(α_1⋯α_l)². Needs one α > 0 per layer with Π α_l = 1
/// (to 1e-9 in log), since only then is the network function unchanged.
std::vector<LayerDiag> apply_layerwise_scales(const std::vector<LayerDiag>& layers,
                                              const std::vector<double>& scales);

}  // namespace minsharp::sharpness
