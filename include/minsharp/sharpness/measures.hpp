// One entry point for every sharpness measure of a trained model on a set of inputs: plain
// Tr H, layer-wise minimum sharpness (the paper's), node-wise minimum sharpness, normalized
// sharpness, the Hutchinson estimate of Tr H, the top Hessian eigenvalues (whole network and
// per layer), the eigenvalue density, and the scale-invariant adaptive sharpness, adaptive
// λ_max and Fisher–Rao norm. Used by apps/sharpness and the experiments.
//
// Definitions (H: Hessian of the mean cross-entropy L over the n inputs, θ: all parameters
// in model.parameters() order, T = diag(|θ|)):
//   adaptive             Σ_i θ_i² H_ii = Tr(T H T)  (Kwon et al. 2021, "ASAM"; the
//                        average-case adaptive sharpness of Andriushchenko et al. 2023)
//   adaptive-lambda-max  λ_max(T H T)
//   fisher-rao           ‖θ‖²_fr = (1/n) Σ_i ⟨θ, ∇_θ ℓ_i⟩², ℓ_i the cross-entropy of input i
//                        with its label (Liang, Poggio, Rakhlin & Stokes 2019, "Fisher–Rao
//                        metric, geometry, and complexity of neural networks": the empirical
//                        ⟨θ, I(θ) θ⟩). For a bias-free ReLU network of L+1 layers it equals
//                        (L+1)² (1/n) Σ_i ⟨∂ℓ_i/∂f, f(x_i)⟩², their closed form; with biases
//                        the general form above is what is computed.
// Any function-preserving rescaling θ' = Dθ (D diagonal positive, as the layer- and
// node-wise rescalings of scaling.hpp) maps H to D⁻¹HD⁻¹ and ∇ℓ_i to D⁻¹∇ℓ_i, so T H T, its
// trace and λ_max, and every ⟨θ, ∇ℓ_i⟩ are unchanged, while λ_max(H) and Tr H are not.
#pragma once

#include "minsharp/nn/sequential.hpp"
#include "minsharp/sharpness/loss.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/sharpness/normalized.hpp"
#include "minsharp/sharpness/spectral.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp::sharpness {

enum class Measure {
    Trace,
    Ms,
    MsNode,
    Normalized,
    Hutchinson,
    LambdaMax,
    TopEigenvalues,
    Spectrum,
    Adaptive,
    AdaptiveLambdaMax,
    FisherRao,
};

/// "trace", "ms", "ms-node", "normalized", "hutchinson", "lambda-max", "top-eigenvalues",
/// "spectrum", "adaptive", "adaptive-lambda-max", "fisher-rao".
std::string_view measure_name(Measure measure);

/// Every measure name, in the order above.
std::vector<std::string> measure_names();

/// The measure called `name`; throws Error listing the valid names otherwise.
Measure parse_measure(std::string_view name);

/// A comma-separated list such as "trace,ms" (spaces around names ignored, repeats kept
/// once, order kept). Throws Error for an empty list or an unknown name.
std::vector<Measure> parse_measures(std::string_view list);

/// Precision of the exact Hessian-diagonal pass (the solvers always run in double).
enum class Precision { Double, Float };

/// "double" / "float".
std::string_view precision_name(Precision precision);

/// Parses "double" or "float"; throws Error otherwise.
Precision parse_precision(std::string_view name);

struct MeasureOptions {
    std::size_t chunk = 1000;              ///< inputs per forward pass of the diag-H pass
    int threads = 0;                       ///< worker threads (0: all cores)
    std::size_t hutchinson_samples = 100;  ///< Rademacher probes for the Hutchinson estimate
    std::uint64_t seed = 0;                ///< seeds every random start vector and probe
    std::size_t top_k = 5;                 ///< eigenvalues reported by top-eigenvalues
    /// Lanczos steps of lambda-max, top-eigenvalues and adaptive-lambda-max (and of each
    /// layer's λ_max); 0: 20, or 2·top_k + 10 for top-eigenvalues when that is more.
    std::size_t lanczos_iterations = 0;
    /// With lambda-max: also each layer's λ_max (one more Lanczos run per layer; training's
    /// --track leaves it out to keep the tracking cheap).
    bool layer_lambda_max = true;
    std::size_t spectrum_probes = 4;       ///< Rademacher probes of the spectral density
    std::size_t spectrum_steps = 40;       ///< Lanczos steps per probe of the density
    Precision precision = Precision::Double;  ///< of the diag-H pass
    bool progress = false;                 ///< progress bar on stderr (drawn on a terminal only)
};

/// Per parametric layer: its Hessian-diagonal blocks and its normalized sharpness.
struct LayerRow {
    std::string name;   ///< "layer0", ...
    std::string spec;   ///< the layer's spec token, e.g. "conv:20:5" or "dense:10"
    std::size_t parameters = 0;
    double weight_trace = 0.0;  ///< T^W_l
    double bias_trace = 0.0;    ///< T^b_l (0 without bias)
    std::optional<NormalizedSharpness> normalized;  ///< when the measure was asked for
    /// With lambda-max: the largest eigenvalue of the layer's block of H (its weight and
    /// bias rows and columns), and the residual ‖H_l u − λ u‖ of its Ritz vector.
    std::optional<double> lambda_max;
    std::optional<double> lambda_max_residual;
};

/// The Hutchinson estimate of Tr H: mean of vᵀHv over Rademacher probes v, each Hv exact
/// (autograd/hvp.hpp; the finite-difference estimators of estimators.hpp are separate).
struct HutchinsonResult {
    double estimate = 0.0;
    double standard_error = 0.0;  ///< sample standard deviation / √samples
    std::size_t samples = 0;
};

/// Ritz values of a Lanczos run on an exact Hessian-vector product, largest first.
struct EigenvalueResult {
    std::vector<double> values;
    std::vector<double> residuals;  ///< ‖H u − λ u‖ of each unit Ritz vector u
    std::size_t iterations = 0;     ///< Lanczos steps taken
    bool invariant_subspace = false;
};

/// ‖θ‖²_fr = (1/n) Σ_i s_i², s_i = ⟨θ, ∇_θ ℓ_i⟩ (see the top of this file).
struct FisherRaoResult {
    double value = 0.0;      ///< ‖θ‖²_fr
    double mean_directional = 0.0;  ///< (1/n) Σ_i s_i = ⟨θ, ∇_θ L⟩
};

/// Wall time of each piece of work. The diag-H pass is shared by trace, ms, ms-node and
/// normalized and counted once, in `diag_hessian`; the others are the solves alone.
struct MeasureSeconds {
    double diag_hessian = 0.0;
    double ms = 0.0;
    double ms_node = 0.0;
    double normalized = 0.0;
    double hutchinson = 0.0;
    double hvp_recording = 0.0;  ///< the forward and backward recorded once for every Hv
    double lambda_max = 0.0;     ///< including each layer's λ_max
    double top_eigenvalues = 0.0;
    double spectrum = 0.0;
    double adaptive = 0.0;
    double adaptive_lambda_max = 0.0;
    double fisher_rao = 0.0;
    double total() const {
        return diag_hessian + ms + ms_node + normalized + hutchinson + hvp_recording +
               lambda_max + top_eigenvalues + spectrum + adaptive + adaptive_lambda_max +
               fisher_rao;
    }
};

struct SharpnessReport {
    std::string model_spec;
    std::size_t inputs = 0;       ///< how many inputs the loss (and H) averages over
    std::size_t parameters = 0;
    std::vector<Measure> measures;  ///< what was asked for
    Precision precision = Precision::Double;
    std::vector<LayerRow> layers;   ///< empty when no diag-H measure was asked for
    /// Tr H (exact), present whenever the diag-H pass ran (any measure but hutchinson).
    std::optional<double> trace;
    std::optional<MinimumSharpness> ms;
    std::optional<NodewiseMinimumSharpness> ms_node;
    /// Σ over parametric layers of the layer's normalized sharpness (weights only).
    std::optional<double> normalized;
    std::optional<HutchinsonResult> hutchinson;
    std::optional<EigenvalueResult> lambda_max;       ///< one value
    std::optional<EigenvalueResult> top_eigenvalues;  ///< top_k values
    std::optional<SpectralDensity> spectrum;
    std::optional<double> adaptive;
    std::optional<EigenvalueResult> adaptive_lambda_max;  ///< one value
    std::optional<FisherRaoResult> fisher_rao;
    MeasureSeconds seconds;

    nlohmann::json to_json() const;
};

/// Computes the asked-for measures of the mean cross-entropy of `model` over `data`. The
/// exact diag H runs once (in options.precision) and feeds trace, ms, ms-node, normalized
/// and adaptive (the Hessian diagonal of the cross-entropy does not depend on the labels).
/// hutchinson, lambda-max, top-eigenvalues, spectrum and adaptive-lambda-max share one
/// exact Hessian-vector product in double (recorded once), and need the labels, as does
/// fisher-rao. Each random start vector or probe set comes from its own stream derived
/// from options.seed, so asking for more measures does not change any one of them. Normalized sharpness sums
/// normalized_sharpness_layer(H_W, W²) over the parametric layers, conv weights reduced over
/// kernel positions; biases are not part of it. Throws Error for no inputs, no measures,
/// or a network that is not piecewise linear, options out of range (top_k or lanczos
/// steps 0, top_k above the steps), and an Error naming the measure when one
/// comes out NaN or Inf (checked as soon as it is computed, so it is never reported).
SharpnessReport measure_sharpness(Sequential<double>& model, const Batch<double>& data,
                                  const std::vector<Measure>& measures,
                                  const MeasureOptions& options = {});

/// s_i = ⟨θ, ∇_θ ℓ_i⟩ for every input i (ℓ_i its cross-entropy with its label), exactly:
/// a parametric layer's pre-activation z = W h + b is linear and homogeneous in (W, b), so
/// its share of s_i is ⟨∂ℓ_i/∂z, z⟩ (Euler), summed over its output positions. One forward
/// and one backward per chunk of inputs — the cost of one gradient — give all n values.
/// Throws Error for no inputs, missing labels or a zero chunk.
std::vector<double> parameter_directional_derivatives(Sequential<double>& model,
                                                      const Batch<double>& data,
                                                      std::size_t chunk = 1000);

/// A readable, aligned table: per-layer traces (and normalized sharpness), then each
/// measure with its value and time, then any notes (dead layers, unconverged solves).
std::string format_report(const SharpnessReport& report);

}  // namespace minsharp::sharpness
