// Spectral methods on a symmetric operator known only through its products v ↦ Hv: the top
// eigenvalues by Lanczos, Tr H by Hutchinson's estimator, and the eigenvalue density by
// stochastic Lanczos quadrature. They never see the network; any exact Hessian-vector
// product (or an explicit matrix, in the tests) plugs in as a callback.
//
// Lanczos (Lanczos 1950; Golub & Van Loan, "Matrix Computations", §10.1): from a unit start
// vector v₁, m products build an orthonormal basis V = [v₁ … v_m] of the Krylov space
// span{v₁, Hv₁, …, H^{m−1}v₁} in which VᵀHV = T is tridiagonal (diagonal α, off-diagonal β).
// The eigenpairs (θ, y) of the small T give Ritz pairs (θ, Vy) whose extreme values converge
// to H's extreme eigenvalues fastest. In floating point the basis loses orthogonality once a
// Ritz value converges and spurious copies ("ghosts") appear, so each step follows the
// three-term recurrence with one classical Gram–Schmidt pass against the whole basis, and
// repeats that pass only when it cancelled more than 1/√2 of the vector's norm (Daniel,
// Gragg, Kaufman & Stewart 1976; Kahan–Parlett's "twice is enough", Giraud, Langou &
// Rozložník 2005). That costs O(m²·dim) flops and m·dim stored doubles, small next to m
// Hessian-vector products of a network. After m steps H V = V T + r e_mᵀ with r ⟂ V, so a
// Ritz pair's residual is ‖H V y − θ V y‖ = ‖r‖·|y_m| without a further product (Parlett,
// "The Symmetric Eigenvalue Problem", ch. 13). A β that vanishes means the
// Krylov space is invariant: its Ritz values are then exact eigenvalues and the run stops.
//
// In exact arithmetic a single start vector sees each distinct eigenvalue once; in floating
// point rounding seeds the other directions of a repeated eigenvalue's eigenspace and a
// second copy may appear after more iterations. Reported values are eigenvalues (their
// residuals say how exactly) but their repeats do not count multiplicities.
//
// Hutchinson (Hutchinson 1990): for Rademacher z (entries ±1), E[zᵀHz] = Tr H, and the
// variance is 2 Σ_{i≠j} H_ij², so the standard error falls like 1/√samples.
//
// Stochastic Lanczos quadrature (Golub & Meurant 2010; Ubaru, Chen & Saad 2017, "Fast
// estimation of tr(f(A)) via stochastic Lanczos quadrature"; Ghorbani, Krishnan & Xiao
// 2019, "An investigation into neural net optimization via Hessian eigenvalue density"):
// for a unit probe v = z/‖z‖, vᵀ f(H) v = Σ_i f(λ_i) (q_iᵀv)² is an integral against a
// measure with mass (q_iᵀv)² at λ_i, whose expectation is the counting measure divided by
// dim. m Lanczos steps from v give its Gauss quadrature: nodes θ_j (eigenvalues of T) and
// weights τ_j = (e₁ᵀ y_j)², the squared FIRST components of T's unit eigenvectors (the
// weights sum to 1 per probe). Averaging over probes and replacing each node by a Gaussian
// of width σ gives a smooth density estimate. The rule is exact for polynomials of degree
// < 2m, so Σ_j τ_j θ_j^p = vᵀH^p v for p < 2m.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

namespace minsharp::sharpness {

/// hv ← H v for a symmetric H; both spans have the operator's dimension. Called with
/// distinct, non-overlapping buffers.
using HessianVectorProduct = std::function<void(std::span<const double> v, std::span<double> hv)>;

/// Which end of the spectrum top_eigenvalues reports.
enum class EigenOrder {
    Largest,    ///< algebraically largest first (λ_max first)
    Magnitude,  ///< largest |λ| first (the dominant eigenvalue, as power iteration finds)
};

struct EigenOptions {
    EigenOrder order = EigenOrder::Largest;
    bool keep_vectors = false;  ///< return the Ritz vectors (k × dim doubles)
};

struct EigenResult {
    std::vector<double> values;     ///< Ritz values, in the requested order
    std::vector<double> residuals;  ///< ‖H u − θ u‖ of each unit Ritz vector u
    std::vector<std::vector<double>> vectors;  ///< unit Ritz vectors (when kept)
    std::size_t iterations = 0;     ///< Lanczos steps taken (= Hessian-vector products)
    bool invariant_subspace = false;  ///< stopped early: the Krylov space is invariant
};

/// The k top eigenpairs of H by `iterations` Lanczos steps with full reorthogonalisation,
/// started from a Gaussian vector drawn from Rng(seed). Costs `iterations` products; the
/// residuals come from the Lanczos relation (above). Returns
/// min(k, steps taken) values (fewer than k only when the Krylov space became invariant
/// early). Throws Error for dim = 0, k = 0, iterations = 0, k > iterations, or a product
/// that is not finite.
EigenResult top_eigenvalues(const HessianVectorProduct& hvp, std::size_t dim, std::size_t k,
                            std::size_t iterations, std::uint64_t seed,
                            const EigenOptions& options = {});

struct TraceEstimate {
    double value = 0.0;           ///< mean of zᵀHz over the probes
    double standard_error = 0.0;  ///< sample standard deviation / √samples (0 for one sample)
    std::size_t samples = 0;
};

/// Hutchinson's estimate of Tr H with `samples` Rademacher probes drawn from Rng(seed).
/// Throws Error for dim = 0, samples = 0, or a product that is not finite.
TraceEstimate hutchinson_trace(const HessianVectorProduct& hvp, std::size_t dim,
                               std::size_t samples, std::uint64_t seed);

struct DensityOptions {
    std::size_t grid_points = 1000;
    /// Width of each node's Gaussian: sigma when > 0, otherwise sigma_fraction × the span of
    /// all nodes (max − min; 1 if they coincide).
    double sigma = 0.0;
    double sigma_fraction = 0.01;
    /// The grid covers [min node − pad, max node + pad] with pad = grid_padding × sigma.
    double grid_padding = 5.0;
};

struct SpectralDensity {
    /// Per probe: the Gauss quadrature nodes θ_j (ascending) and weights τ_j (sum 1).
    std::vector<std::vector<double>> nodes;
    std::vector<std::vector<double>> weights;
    std::vector<std::size_t> steps;  ///< Lanczos steps taken per probe (≤ the requested)
    double sigma = 0.0;              ///< the Gaussian width used
    std::vector<double> grid;        ///< equally spaced points
    /// (1/probes) Σ_probes Σ_j τ_j N(t; θ_j, σ²) at each grid point: integrates to ≈ 1.
    std::vector<double> density;
};

/// Eigenvalue density of H by stochastic Lanczos quadrature: `probes` Rademacher probes
/// from Rng(seed), `steps` Lanczos steps each (full reorthogonalisation), then the broadened
/// density on a grid. Costs probes × steps products. Throws Error for dim = 0, probes = 0,
/// steps = 0, grid_points < 2, a negative sigma, or a product that is not finite.
SpectralDensity spectral_density(const HessianVectorProduct& hvp, std::size_t dim,
                                 std::size_t probes, std::size_t steps, std::uint64_t seed,
                                 const DensityOptions& options = {});

}  // namespace minsharp::sharpness
