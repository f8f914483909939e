#include "minsharp/nn/models.hpp"

#include "minsharp/core/checked.hpp"
#include "minsharp/ops/registry.hpp"

#include <algorithm>
#include <map>

namespace minsharp {

namespace {

// "dense, conv, maxpool, relu or flatten": the spec tokens of the registered layer kinds.
template <class T>
std::string layer_tokens() {
    std::vector<std::string_view> tokens;
    for (const OpRules<T>& rules : all_op_rules<T>())
        if (rules.parse) tokens.push_back(rules.spec_token);
    std::string list;
    for (std::size_t i = 0; i < tokens.size(); ++i)
        list += (i == 0 ? "" : i + 1 == tokens.size() ? " or " : ", ") + std::string(tokens[i]);
    return list;
}

// A layer token without fields ("relu", "flatten") is a one-layer spec, not a zoo name.
bool is_bare_layer_token(std::string_view name) {
    for (const OpRules<double>& rules : all_op_rules<double>())
        if (rules.parse && rules.spec_form == rules.spec_token && rules.spec_token == name)
            return true;
    return false;
}

const std::map<std::string, std::string, std::less<>>& zoo() {
    static const std::map<std::string, std::string, std::less<>> specs{
        {"small-mlp", "flatten,dense:20,relu,dense:20,relu,dense:10"},
        {"small-cnn", "conv:20:5,relu,maxpool:2:2,conv:20:5,relu,maxpool:2:2,flatten,dense:10"},
        {"mlp", "flatten,dense:512,relu,dense:128,relu,dense:512,relu,dense:10"},
        {"lenet",
         "conv:6:5:pad2,relu,maxpool:2:1,conv:16:5,relu,maxpool:2:2,conv:120:5,relu,flatten,"
         "dense:84,relu,dense:10"},
    };
    return specs;
}

// The layer of one spec token, parsed by the registered kind whose spec token it names.
template <class T>
std::unique_ptr<Layer<T>> parse_layer(const std::string& text, const ActShape& in) {
    const SpecToken token(text);
    for (const OpRules<T>& rules : all_op_rules<T>())
        if (rules.parse && rules.spec_token == token.fields[0])
            if (auto layer = rules.parse(token, in)) return layer;
    throw SpecError(text, "unknown layer (expected " + layer_tokens<T>() + ")");
}

}  // namespace

std::vector<std::string> zoo_names() {
    std::vector<std::string> names;
    for (const auto& [name, spec] : zoo()) names.push_back(name);
    return names;
}

bool is_zoo_name(std::string_view name) { return zoo().find(name) != zoo().end(); }

std::string zoo_spec(std::string_view name) {
    const auto it = zoo().find(name);
    if (it != zoo().end()) return it->second;
    std::string known;
    for (const auto& n : zoo_names()) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown model '" + std::string(name) + "' (zoo: " + known +
                "; or give a spec such as 'flatten,dense:100,relu,dense:10')");
}

// Long specs are rejected before any parsing, so that a huge one costs nothing.
void check_spec_size(std::string_view spec) {
    check_at_most(spec.size(), max_spec_chars, "model spec: length in characters");
    const auto tokens = std::size_t(std::count(spec.begin(), spec.end(), ',')) + 1;
    check_at_most(tokens, limits::max_layers, "model spec: layer count");
}

template <class T>
Sequential<T> build_model(std::string_view spec_or_name, ActShape input) {
    check_spec_size(spec_or_name);
    const bool looks_like_spec = spec_or_name.find_first_of(",:") != std::string_view::npos ||
                                 is_bare_layer_token(spec_or_name);
    const std::string spec =
        looks_like_spec ? std::string(spec_or_name) : zoo_spec(spec_or_name);
    Sequential<T> model(input);
    for (const auto& token : split_spec(spec, ',')) {
        if (token.empty()) throw Error("model spec '" + spec + "': empty token");
        model.add(parse_layer<T>(token, model.size() ? model.output_shape() : input));
    }
    return model;
}

template <class T>
Sequential<T> make_model(std::string_view spec_or_name, std::uint64_t seed, ActShape input) {
    Sequential<T> model = build_model<T>(spec_or_name, input);
    Rng rng(seed);
    model.reset_parameters(rng);
    return model;
}

template Sequential<float> build_model<float>(std::string_view, ActShape);
template Sequential<double> build_model<double>(std::string_view, ActShape);
template Sequential<float> make_model<float>(std::string_view, std::uint64_t, ActShape);
template Sequential<double> make_model<double>(std::string_view, std::uint64_t, ActShape);

}  // namespace minsharp
