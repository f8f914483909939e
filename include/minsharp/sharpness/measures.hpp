// One entry point for every sharpness measure of a trained model on a set of inputs: plain
// Tr H, layer-wise minimum sharpness (the paper's), node-wise minimum sharpness, normalized
// sharpness and the Hutchinson estimate of Tr H. Used by apps/sharpness and the experiments.
#pragma once

#include "minsharp/nn.hpp"
#include "minsharp/sharpness/loss.hpp"
#include "minsharp/sharpness/minimum.hpp"
#include "minsharp/sharpness/normalized.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp::sharpness {

enum class Measure { Trace, Ms, MsNode, Normalized, Hutchinson };

/// "trace", "ms", "ms-node", "normalized", "hutchinson".
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
    std::uint64_t seed = 0;                ///< seeds the Hutchinson probes
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
};

/// The Hutchinson estimate of Tr H: mean of vᵀHv over Rademacher probes v, each Hv by
/// central differences of the gradient (estimators.hpp: hutchinson_sample).
struct HutchinsonResult {
    double estimate = 0.0;
    double standard_error = 0.0;  ///< sample standard deviation / √samples
    std::size_t samples = 0;
};

/// Wall time of each piece of work. The diag-H pass is shared by trace, ms, ms-node and
/// normalized and counted once, in `diag_hessian`; the others are the solves alone.
struct MeasureSeconds {
    double diag_hessian = 0.0;
    double ms = 0.0;
    double ms_node = 0.0;
    double normalized = 0.0;
    double hutchinson = 0.0;
    double total() const { return diag_hessian + ms + ms_node + normalized + hutchinson; }
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
    MeasureSeconds seconds;

    nlohmann::json to_json() const;
};

/// Computes the asked-for measures of the mean cross-entropy of `model` over `data`. The
/// exact diag H runs once (in options.precision) and feeds trace, ms, ms-node and
/// normalized; labels enter only the Hutchinson estimate (the Hessian diagonal of the
/// cross-entropy does not depend on them). Normalized sharpness sums
/// normalized_sharpness_layer(H_W, W²) over the parametric layers, conv weights reduced over
/// kernel positions; biases are not part of it. Throws Error for no inputs, no measures,
/// or a network that is not piecewise linear, and an Error naming the measure when one
/// comes out NaN or Inf (checked as soon as it is computed, so it is never reported).
SharpnessReport measure_sharpness(Sequential<double>& model, const Batch<double>& data,
                                  const std::vector<Measure>& measures,
                                  const MeasureOptions& options = {});

/// A readable, aligned table: per-layer traces (and normalized sharpness), then each
/// measure with its value and time, then any notes (dead layers, unconverged solves).
std::string format_report(const SharpnessReport& report);

}  // namespace minsharp::sharpness
