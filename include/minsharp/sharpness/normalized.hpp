// Normalized sharpness (Tsuzuku, Sato, Sugiyama, ICML 2020), one weight layer at a time:
//   min over σ ∈ R^{d_out}_+, τ ∈ R^{d_in}_+ of  Σ_ij [ H_ij σ_i τ_j + W_ij² / (σ_i τ_j) ],
// a baseline the experiments compare minimum sharpness against (docs/science.md §5).
#pragma once

#include "minsharp/core/tensor.hpp"

#include <string>

namespace minsharp::sharpness {

/// Result for one layer.
struct NormalizedSharpness {
    double value = 0.0;      ///< the minimum (or infimum) of the objective
    int iterations = 0;      ///< alternating (σ then τ) updates performed
    bool converged = false;  ///< relative change of the objective ≤ tolerance in time
    /// Why the infimum is not attained (degenerate rows/columns); empty otherwise.
    std::string note;
    /// false when some terms vanish only as σ or τ entries run to 0 or ∞ (e.g. a row of H or
    /// of W² that is all zero); those terms are excluded from `value`.
    bool attained = true;
    double relative_change = 0.0;  ///< |Δ value| / value over the last iteration
};

/// Sums a conv (out, in, kh, kw) tensor over its kernel positions → (out, in); the caller
/// reduces both the Hessian diagonal and the squared weights this way.
Tensor2<double> reduce_kernel(const Tensor4<double>& t);

/// Normalized sharpness of one layer from its Hessian diagonal `h` and squared weights `w2`
/// (both d_out × d_in, finite, ≥ 0; else Error). Closed-form alternating updates
///   σ_i = sqrt(Σ_j W2_ij/τ_j / Σ_j H_ij τ_j),  τ_j = sqrt(Σ_i W2_ij/σ_i / Σ_i H_ij σ_i)
/// until the relative change of the objective over one iteration is ≤ tolerance, or
/// max_iterations. Terms joining rows and columns that are not mutually reachable through
/// positive H (row → column) and W2 (column → row) entries vanish in the infimum (e.g. an
/// all-zero row of H: σ_i → ∞); they are dropped, `attained` is false and `note` says so.
NormalizedSharpness normalized_sharpness_layer(const Tensor2<double>& h, const Tensor2<double>& w2,
                                               double tolerance = 1e-12,
                                               int max_iterations = 100000);

}  // namespace minsharp::sharpness
