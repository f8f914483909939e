#include "minsharp/sharpness/scaling.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

namespace minsharp::sharpness {

namespace {

template <class T>
const Parameter<T>* weight_of(const Layer<T>& layer) {
    if (const auto* d = dynamic_cast<const Dense<T>*>(&layer)) return &d->weight;
    if (const auto* c = dynamic_cast<const Conv2d<T>*>(&layer)) return &c->weight;
    return nullptr;
}

template <class T>
const Parameter<T>* bias_of(const Layer<T>& layer) {
    if (const auto* d = dynamic_cast<const Dense<T>*>(&layer)) return d->has_bias() ? &d->bias : nullptr;
    if (const auto* c = dynamic_cast<const Conv2d<T>*>(&layer)) return c->has_bias() ? &c->bias : nullptr;
    return nullptr;
}

// The (out, in, group) reading of one parametric layer's weight; `in` counts the units of the
// previous parametric layer, so the slice [:, j, :] is everything unit j feeds.
struct Geometry {
    std::size_t layer = 0;  // index into the Sequential
    std::string name;       // "layer0", ...
    std::size_t out = 0, in = 0, group = 1;
};

std::string prefix_of(const std::string& parameter_name) {
    return parameter_name.substr(0, parameter_name.rfind('.'));
}

template <class T>
std::vector<Geometry> geometry(const Sequential<T>& model) {
    std::vector<Geometry> layers;
    for (std::size_t i = 0; i < model.size(); ++i) {
        const Parameter<T>* w = weight_of(model.layer(i));
        if (!w) continue;
        Geometry g;
        g.layer = i;
        g.name = prefix_of(w->name);
        g.out = w->shape[0];
        const std::size_t per_unit = w->size() / g.out;
        g.in = layers.empty() ? w->shape[1] : layers.back().out;
        if (per_unit % g.in != 0)
            throw Error("scaling: layer '" + g.name + "' (" + model.layer(i).spec() + ") reads " +
                        std::to_string(per_unit) + " weights per unit, which is not a multiple of " +
                        "the " + std::to_string(g.in) + " units of '" + layers.back().name + "'");
        g.group = per_unit / g.in;
        layers.push_back(g);
    }
    return layers;
}

template <class T>
Parameter<T>& mutable_weight(Sequential<T>& model, const Geometry& g) {
    return const_cast<Parameter<T>&>(*weight_of(std::as_const(model).layer(g.layer)));
}

template <class T>
Parameter<T>* mutable_bias(Sequential<T>& model, const Geometry& g) {
    return const_cast<Parameter<T>*>(bias_of(std::as_const(model).layer(g.layer)));
}

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
    std::vector<std::size_t> indices;
    for (const auto& g : geometry(model)) indices.push_back(g.layer);
    return indices;
}

template <class T>
std::vector<std::size_t> hidden_unit_counts(const Sequential<T>& model) {
    const auto layers = geometry(model);
    std::vector<std::size_t> counts;
    for (std::size_t l = 0; l + 1 < layers.size(); ++l) counts.push_back(layers[l].out);
    return counts;
}

template <class T>
void scale_layerwise(Sequential<T>& model, const std::vector<double>& alphas) {
    const auto layers = geometry(model);
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
        Parameter<T>& w = mutable_weight(model, layers[l]);
        multiply(w, 0, w.size(), alphas[l]);
        if (Parameter<T>* b = mutable_bias(model, layers[l])) multiply(*b, 0, b->size(), cumulative);
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
    const auto layers = geometry(model);
    const std::size_t hidden = layers.empty() ? 0 : layers.size() - 1;
    if (gammas.size() != hidden)
        throw Error("scale_nodewise: factors for " + std::to_string(gammas.size()) +
                    " hidden layers, the model has " + std::to_string(hidden));
    for (std::size_t l = 0; l < hidden; ++l) {
        if (gammas[l].size() != layers[l].out)
            throw Error("scale_nodewise: " + std::to_string(gammas[l].size()) + " factors for '" +
                        layers[l].name + "', which has " + std::to_string(layers[l].out) + " units");
        for (std::size_t j = 0; j < gammas[l].size(); ++j)
            check_factor(gammas[l][j], "scale_nodewise: factor of unit " + std::to_string(j) +
                                           " of '" + layers[l].name + "'");
    }
    for (std::size_t l = 0; l < hidden; ++l) {
        const Geometry& here = layers[l];
        const Geometry& next = layers[l + 1];
        Parameter<T>& w_in = mutable_weight(model, here);
        Parameter<T>* b_in = mutable_bias(model, here);
        Parameter<T>& w_out = mutable_weight(model, next);
        const std::size_t per_unit = here.in * here.group;
        for (std::size_t j = 0; j < here.out; ++j) {
            const double gamma = gammas[l][j];
            multiply(w_in, j * per_unit, per_unit, gamma);
            if (b_in) multiply(*b_in, j, 1, gamma);
            for (std::size_t o = 0; o < next.out; ++o)
                multiply(w_out, (o * next.in + j) * next.group, next.group, 1.0 / gamma);
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

namespace {

const ParameterDiag& diag_of(const DiagHessian& diag, const std::string& name, std::size_t size) {
    const auto it = std::find_if(diag.parameters.begin(), diag.parameters.end(),
                                 [&](const ParameterDiag& p) { return p.name == name; });
    if (it == diag.parameters.end())
        throw Error("layer_diags: the Hessian diagonal has no entry for parameter '" + name + "'");
    if (it->values.size() != size)
        throw Error("layer_diags: the Hessian diagonal of '" + name + "' has " +
                    std::to_string(it->values.size()) + " entries, the parameter has " +
                    std::to_string(size));
    return *it;
}

}  // namespace

template <class T>
std::vector<LayerDiag> layer_diags(const Sequential<T>& model, const DiagHessian& diag) {
    std::vector<LayerDiag> out;
    for (const Geometry& g : geometry(model)) {
        const Layer<T>& layer = model.layer(g.layer);
        const Parameter<T>* w = weight_of(layer);
        LayerDiag d;
        d.name = g.name;
        d.out = g.out;
        d.in = g.in;
        d.group = g.group;
        // Row-major (out, in, kh, kw) and (out, C·H·W) are already (out, in, group) in memory.
        d.weight = diag_of(diag, w->name, w->size()).values;
        if (const Parameter<T>* b = bias_of(layer)) d.bias = diag_of(diag, b->name, b->size()).values;
        out.push_back(std::move(d));
    }
    return out;
}

std::vector<LayerTrace> layer_traces(const std::vector<LayerDiag>& layers) {
    std::vector<LayerTrace> traces;
    for (const auto& l : layers) traces.push_back({l.name, l.weight_trace(), l.bias_trace()});
    return traces;
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
