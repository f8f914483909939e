// Rank and linear correlations used to compare sharpness measures with the generalization
// gap (docs/science.md §6: Kendall τ over runs).
#pragma once

#include <vector>

namespace minsharp::stats {

/// Average ranks (1-based); tied values share the mean of the ranks they occupy, e.g.
/// (10, 20, 20, 30) → (1, 2.5, 2.5, 4). Needs ≥ 1 finite values (else Error).
std::vector<double> average_ranks(const std::vector<double>& x);

/// Kendall's τ-b = (C − D) / sqrt((n₀ − n₁)(n₀ − n₂)), with C/D the concordant/discordant
/// pairs, n₀ = n(n−1)/2 and n₁, n₂ the pairs tied in x, in y. O(n²).
/// Sizes must match and be ≥ 2 and values finite (else Error); a constant x or y gives NaN.
double kendall_tau_b(const std::vector<double>& x, const std::vector<double>& y);

/// Spearman's ρ: Pearson correlation of average ranks (ties handled by averaging).
/// Same requirements as kendall_tau_b; a constant x or y gives NaN.
double spearman_rho(const std::vector<double>& x, const std::vector<double>& y);

/// Pearson's correlation coefficient (two-pass, centred sums).
/// Same requirements as kendall_tau_b; a constant x or y gives NaN.
double pearson(const std::vector<double>& x, const std::vector<double>& y);

}  // namespace minsharp::stats
