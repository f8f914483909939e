#include "minsharp/sharpness/scaling.hpp"

#include "minsharp/sharpness/structure.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

namespace minsharp::sharpness {

namespace {

template <class T>
void multiply(Parameter<T>& p, std::size_t first, std::size_t count, double factor) {
    for (std::size_t k = first; k < first + count; ++k)
        p.value[k] = static_cast<T>(double(p.value[k]) * factor);
}

void check_factor(double factor, const std::string& what) {
    if (!std::isfinite(factor) || factor <= 0.0)
        throw Error(what + " must be finite and > 0, found " + std::to_string(factor));
}

}  // namespace

template <class T>
std::vector<std::size_t> parametric_layer_indices(const Sequential<T>& model) {
    const ParametricStructure<T> structure(model);
    std::vector<std::size_t> indices;
    for (const auto& layer : structure.layers()) indices.push_back(layer.index);
    return indices;
}

template <class T>
std::vector<std::size_t> hidden_unit_counts(const Sequential<T>& model) {
    return ParametricStructure<T>(model).hidden_unit_counts();
}

template <class T>
void scale_layerwise(Sequential<T>& model, const std::vector<double>& alphas) {
    const ParametricStructure<T> structure(std::as_const(model));
    const auto& layers = structure.layers();
    if (alphas.size() != layers.size())
        throw Error("scale_layerwise: " + std::to_string(alphas.size()) + " factors for a model with " +
                    std::to_string(layers.size()) + " parametric layers");
    double log_product = 0.0;
    for (std::size_t l = 0; l < alphas.size(); ++l) {
        check_factor(alphas[l], "scale_layerwise: factor of '" + layers[l].name + "'");
        log_product += std::log(alphas[l]);
    }
    // Only Π α_l = 1 keeps the network function; anything else rescales the logits.
    if (std::abs(log_product) > 1e-9)
        throw Error("scale_layerwise: the factors must multiply to 1, their product is " +
                    std::to_string(std::exp(log_product)));
    double cumulative = 1.0;
    for (std::size_t l = 0; l < layers.size(); ++l) {
        cumulative *= alphas[l];
        Parameter<T>& w = structure.weight(model, l);
        multiply(w, 0, w.size(), alphas[l]);
        if (Parameter<T>* b = structure.bias(model, l)) multiply(*b, 0, b->size(), cumulative);
    }
}

template <class T>
Sequential<T> scaled_layerwise(const Sequential<T>& model, const std::vector<double>& alphas) {
    Sequential<T> copy = model;
    scale_layerwise(copy, alphas);
    return copy;
}

template <class T>
void scale_nodewise(Sequential<T>& model, const NodeScales& gammas) {
    const ParametricStructure<T> structure(std::as_const(model));
    const auto& layers = structure.layers();
    const std::vector<std::size_t> units = structure.hidden_unit_counts();
    if (gammas.size() != units.size())
        throw Error("scale_nodewise: factors for " + std::to_string(gammas.size()) +
                    " hidden layers, the model has " + std::to_string(units.size()));
    for (std::size_t l = 0; l < units.size(); ++l) {
        if (gammas[l].size() != units[l])
            throw Error("scale_nodewise: " + std::to_string(gammas[l].size()) + " factors for '" +
                        layers[l].name + "', which has " + std::to_string(units[l]) + " units");
        for (std::size_t j = 0; j < gammas[l].size(); ++j)
            check_factor(gammas[l][j], "scale_nodewise: factor of unit " + std::to_string(j) +
                                           " of '" + layers[l].name + "'");
    }
    for (std::size_t l = 0; l < units.size(); ++l) {
        Parameter<T>& w_in = structure.weight(model, l);
        Parameter<T>* b_in = structure.bias(model, l);
        Parameter<T>& w_out = structure.weight(model, l + 1);
        const std::size_t per_unit = layers[l].weight_per_unit();
        for (std::size_t j = 0; j < units[l]; ++j) {
            const double gamma = gammas[l][j];
            multiply(w_in, j * per_unit, per_unit, gamma);
            if (b_in) multiply(*b_in, j, 1, gamma);
            const UnitSlice out = structure.unit_slice(l, j);
            for (std::size_t o = 0; o < out.rows; ++o)
                multiply(w_out, out.first + o * out.stride, out.count, 1.0 / gamma);
        }
    }
}

template <class T>
Sequential<T> scaled_nodewise(const Sequential<T>& model, const NodeScales& gammas) {
    Sequential<T> copy = model;
    scale_nodewise(copy, gammas);
    return copy;
}

std::vector<double> random_layer_scales(std::size_t layers, Rng& rng, double max_factor) {
    if (!(max_factor >= 1.0) || !std::isfinite(max_factor))
        throw Error("random_layer_scales: max_factor must be finite and >= 1, found " +
                    std::to_string(max_factor));
    std::vector<double> u(layers);
    for (auto& v : u) v = rng.uniform(-1.0, 1.0);
    // Centering makes Σ log α = 0 (Π α = 1); stretching makes the extreme factor hit the bound.
    const double mean = layers ? std::accumulate(u.begin(), u.end(), 0.0) / double(layers) : 0.0;
    double extreme = 0.0;
    for (auto& v : u) {
        v -= mean;
        extreme = std::max(extreme, std::abs(v));
    }
    const double stretch = extreme > 0.0 ? std::log(max_factor) / extreme : 0.0;
    std::vector<double> alphas;
    for (double v : u) alphas.push_back(std::exp(v * stretch));
    return alphas;
}

template <class T>
NodeScales random_node_scales(const Sequential<T>& model, Rng& rng, double max_factor) {
    if (!(max_factor >= 1.0) || !std::isfinite(max_factor))
        throw Error("random_node_scales: max_factor must be finite and >= 1, found " +
                    std::to_string(max_factor));
    const double span = std::log(max_factor);
    NodeScales gammas;
    for (std::size_t units : hidden_unit_counts(model)) {
        std::vector<double> layer(units);
        for (auto& g : layer) g = std::exp(rng.uniform(-span, span));
        gammas.push_back(std::move(layer));
    }
    return gammas;
}

template <class T>
std::vector<LayerDiag> layer_diags(const Sequential<T>& model, const DiagHessian& diag) {
    return ParametricStructure<T>(model).layer_diags(diag);
}

#define MINSHARP_INSTANTIATE_SCALING(T)                                                         \
    template std::vector<std::size_t> parametric_layer_indices<T>(const Sequential<T>&);        \
    template std::vector<std::size_t> hidden_unit_counts<T>(const Sequential<T>&);             \
    template void scale_layerwise<T>(Sequential<T>&, const std::vector<double>&);              \
    template Sequential<T> scaled_layerwise<T>(const Sequential<T>&, const std::vector<double>&); \
    template void scale_nodewise<T>(Sequential<T>&, const NodeScales&);                        \
    template Sequential<T> scaled_nodewise<T>(const Sequential<T>&, const NodeScales&);        \
    template NodeScales random_node_scales<T>(const Sequential<T>&, Rng&, double);             \
    template std::vector<LayerDiag> layer_diags<T>(const Sequential<T>&, const DiagHessian&);

MINSHARP_INSTANTIATE_SCALING(float)
MINSHARP_INSTANTIATE_SCALING(double)

}  // namespace minsharp::sharpness
