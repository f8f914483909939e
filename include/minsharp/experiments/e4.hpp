// E4 of the paper (Ibayashi et al., 2021, arXiv:2106.12612): the scale-invariance
// demonstration. A trained network is rescaled layer-wise and node-wise with factors from 1e-3
// to 1e3: the outputs do not change, Tr H changes by orders of magnitude, minimum sharpness
// does not.
#pragma once

#include "minsharp/experiments/jobs.hpp"

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace minsharp::experiments {

/// One transformed network.
struct E4Row {
    std::string transform;  ///< "layer" or "node"
    double factor = 1;
    double output_change = 0;  ///< max |z' − z| / max |z| over the inputs and classes
    double trace = 0, ms = 0, ms_node = 0, normalized = 0;
    double diag_seconds = 0;
    static std::vector<std::string> csv_columns();
    std::vector<std::string> csv_row() const;
};

struct E4Result {
    std::string model;
    std::size_t n = 0;
    int epochs = 0;
    double train_accuracy = 0, test_accuracy = 0;
    std::vector<E4Row> rows;
    nlohmann::json to_json() const;
    static E4Result from_json(const nlohmann::json& j);
};

/// Layer-wise factors for strength c: α_1 = c, α_2 = 1/c, the other layers 1 (Π α = 1).
/// Needs ≥ 2 parametric layers (else Error).
std::vector<double> e4_layer_scales(std::size_t layers, double c);

/// Node-wise factors for strength c: unit j of every hidden layer gets c for even j and
/// 1/c for odd j, so the transformation is not a layer-wise one.
std::vector<std::vector<double>> e4_node_scales(const std::vector<std::size_t>& units, double c);

/// Transforms `model` with every factor, both ways, and measures each copy on x.
std::vector<E4Row> scale_invariance_rows(const Sequential<double>& model, const Tensor4<double>& x,
                                         const std::vector<double>& factors, int threads);

/// Runs the E4 job: trains (or resumes) the job's network in its folder, then writes
/// result.json with one row per (transform, factor).
void run_e4_job(const Job& job);

}  // namespace minsharp::experiments
