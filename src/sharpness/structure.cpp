#include "minsharp/sharpness/structure.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/registry.hpp"

#include <algorithm>
#include <array>
#include <optional>

namespace minsharp::sharpness {

namespace {

// A parametric layer's kind-specific part comes from its op file, through the registry;
// the kinds without a unit geometry carry no parameters.
template <class T>
std::optional<UnitGeometry<T>> parametric_part(const Layer<T>& layer, const ActShape& in) {
    const OpRules<T>* rules = find_op_rules<T>(layer.kind());
    if (!rules || !rules->unit_geometry) return std::nullopt;
    return rules->unit_geometry(layer, in);
}

// Where the units of the last parametric layer are, on the way to the next one.
struct UnitPath {
    std::size_t inputs_per_unit = 1;
    bool through_flatten = false;
};

// A layer without parameters either keeps the channels (ReLU and pooling act per channel,
// so channel j stays the output of unit j) or flattens (C, H, W) to C·H·W features, giving
// each unit H·W consecutive ones.
template <class T>
void follow_units(UnitPath& path, const Layer<T>& layer, std::size_t i, const ActShape& in,
                  const ActShape& out, const std::string& last_parametric) {
    if (out.c == in.c) return;
    if (!(out == ActShape{in.size(), 1, 1}))
        throw Error("parametric structure: layer " + std::to_string(i) + " '" + layer.spec() +
                    "' maps " + in.str() + " to " + out.str() + ", so the units of '" +
                    last_parametric + "' cannot be followed through it");
    path.inputs_per_unit *= in.h * in.w;
    path.through_flatten = true;
}

template <class T>
std::size_t position_of(const Parameter<T>* p, const std::vector<const Parameter<T>*>& all) {
    return static_cast<std::size_t>(std::find(all.begin(), all.end(), p) - all.begin());
}

// Reads layer p's weight in units of the previous parametric layer: unit i of `previous`
// owns path.inputs_per_unit consecutive input channels of p, each holding
// entries_per_input_channel weights per output unit.
template <class T>
UnitEdge connect(ParametricLayer<T>& p, const ParametricLayer<T>& previous, std::size_t from,
                 const UnitGeometry<T>& part, const UnitPath& path) {
    if (previous.units * path.inputs_per_unit != part.input_channels)
        throw Error("parametric structure: '" + p.name + "' (" + p.spec + ") reads " +
                    std::to_string(part.input_channels) + " input channels, but the " +
                    std::to_string(previous.units) + " units of '" + previous.name +
                    "' reach it as " + std::to_string(previous.units * path.inputs_per_unit));
    p.inputs = previous.units;
    p.group = path.inputs_per_unit * part.entries_per_input_channel;
    return {from, from + 1, path.inputs_per_unit, path.through_flatten};
}

}  // namespace

template <class T>
ParametricStructure<T>::ParametricStructure(const Sequential<T>& model) : model_(&model) {
    const std::vector<const Parameter<T>*> parameters = model.parameters();
    UnitPath path;
    ActShape in = model.input_shape(), out;
    for (std::size_t i = 0; i < model.size(); ++i, in = out) {
        const Layer<T>& layer = model.layer(i);
        out = layer.output_shape(in);
        const auto part = parametric_part(layer, in);
        if (!part) {
            if (!layers_.empty()) follow_units(path, layer, i, in, out, layers_.back().name);
            continue;
        }
        ParametricLayer<T> p;
        p.index = i;
        p.kind = layer.kind();
        p.spec = layer.spec();
        // Sequential names the parametric layers layer0, layer1, ... in order (nn/sequential.hpp).
        p.name = "layer" + std::to_string(layers_.size());
        p.weight = part->weight;
        p.bias = part->bias;
        p.input_shape = in;
        p.output_shape = out;
        p.units = part->units;
        p.input_width = part->input_width;
        p.kernel_positions = part->kernel_positions;
        p.positions_per_unit = out.h * out.w;
        if (layers_.empty()) {
            p.inputs = p.input_width;
            p.group = p.kernel_positions;
        } else {
            edges_.push_back(connect(p, layers_.back(), layers_.size() - 1, *part, path));
        }
        const std::array<std::size_t, 3> view{p.units, p.inputs, p.group};
        if (checked_product(view, "parametric structure: weight view") != p.weight->size())
            throw Error("parametric structure: the (units, inputs, group) view of '" + p.name +
                        "' does not cover its " + std::to_string(p.weight->size()) + " weights");
        weight_position_.push_back(position_of(p.weight, parameters));
        bias_position_.push_back(p.bias ? position_of(p.bias, parameters) : parameters.size());
        layers_.push_back(std::move(p));
        path = UnitPath{};
    }
}

template <class T>
std::vector<std::size_t> ParametricStructure<T>::hidden_unit_counts() const {
    std::vector<std::size_t> counts;
    for (std::size_t l = 0; l + 1 < layers_.size(); ++l) counts.push_back(layers_[l].units);
    return counts;
}

template <class T>
UnitSlice ParametricStructure<T>::unit_slice(std::size_t l, std::size_t j) const {
    if (l + 1 >= layers_.size())
        throw Error("unit_slice: layer " + std::to_string(l) + " is not a hidden parametric layer");
    const ParametricLayer<T>& next = layers_[l + 1];
    return {j * next.group, next.group, next.weight_per_unit(), next.units};
}

template <class T>
void ParametricStructure<T>::require_model(const Sequential<T>& model) const {
    if (&model != model_)
        throw Error("parametric structure: asked for the parameters of a model it was not built from");
}

// The structure was built from this very model, reached here through a non-const reference,
// so writing through its parameters is allowed.
template <class T>
Parameter<T>& ParametricStructure<T>::weight(Sequential<T>& model, std::size_t l) const {
    require_model(model);
    return const_cast<Parameter<T>&>(*layers_.at(l).weight);
}

template <class T>
Parameter<T>* ParametricStructure<T>::bias(Sequential<T>& model, std::size_t l) const {
    require_model(model);
    return const_cast<Parameter<T>*>(layers_.at(l).bias);
}

template <class T>
const ParameterDiag& ParametricStructure<T>::diag_entry(const DiagHessian& diag,
                                                        const Parameter<T>& p,
                                                        std::size_t position) const {
    const bool in_order = position < diag.parameters.size() && diag.parameters[position].name == p.name;
    const ParameterDiag* entry = in_order ? &diag.parameters[position] : nullptr;
    if (!entry) {
        const auto it = std::find_if(diag.parameters.begin(), diag.parameters.end(),
                                     [&](const ParameterDiag& d) { return d.name == p.name; });
        if (it == diag.parameters.end())
            throw Error("layer_diags: the Hessian diagonal has no entry for parameter '" + p.name + "'");
        entry = &*it;
    }
    if (entry->values.size() != p.size())
        throw Error("layer_diags: the Hessian diagonal of '" + p.name + "' has " +
                    std::to_string(entry->values.size()) + " entries, the parameter has " +
                    std::to_string(p.size()));
    return *entry;
}

template <class T>
const ParameterDiag& ParametricStructure<T>::weight_diag(const DiagHessian& diag, std::size_t l) const {
    return diag_entry(diag, *layers_.at(l).weight, weight_position_[l]);
}

template <class T>
const ParameterDiag* ParametricStructure<T>::bias_diag(const DiagHessian& diag, std::size_t l) const {
    const Parameter<T>* b = layers_.at(l).bias;
    return b ? &diag_entry(diag, *b, bias_position_[l]) : nullptr;
}

template <class T>
std::vector<LayerDiag> ParametricStructure<T>::layer_diags(const DiagHessian& diag) const {
    std::vector<LayerDiag> out;
    for (std::size_t l = 0; l < layers_.size(); ++l) {
        const ParametricLayer<T>& p = layers_[l];
        LayerDiag d;
        d.name = p.name;
        d.out = p.units;
        d.in = p.inputs;
        d.group = p.group;
        // Row-major (out, in, kh, kw) and (out, C·H·W) already are (out, in, group) in memory.
        d.weight = weight_diag(diag, l).values;
        if (const ParameterDiag* b = bias_diag(diag, l)) d.bias = b->values;
        out.push_back(std::move(d));
    }
    return out;
}

template class ParametricStructure<float>;
template class ParametricStructure<double>;

}  // namespace minsharp::sharpness
