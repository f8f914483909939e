#include "minsharp/models.hpp"

#include "minsharp/checked.hpp"

#include <algorithm>
#include <map>

namespace minsharp {

namespace {

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

std::vector<std::string> split(std::string_view s, char sep) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (true) {
        const std::size_t end = s.find(sep, start);
        parts.emplace_back(s.substr(start, end - start));
        if (end == std::string_view::npos) break;
        start = end + 1;
    }
    return parts;
}

class SpecError : public Error {
public:
    SpecError(const std::string& token, const std::string& problem)
        : Error("model spec: token '" + token + "': " + problem) {}
};

// A spec number: plain digits within the layer limits (see models.hpp), or a SpecError
// naming the token, the field and the value.
std::size_t spec_number(std::string_view text, const std::string& token, const char* field,
                        std::size_t min, std::size_t max) {
    try {
        return parse_whole_number(text, field, min, max);
    } catch (const Error& e) {
        throw SpecError(token, e.what());
    }
}

// Options after the fixed fields: strideS, padP (windowed layers only), nobias; each at
// most once.
struct LayerOptions {
    std::size_t stride = 1, padding = 0;
    bool bias = true;
};

// "stride" for stride2, "pad" for pad1, the field itself otherwise.
std::string_view option_name(std::string_view field) {
    for (std::string_view name : {"stride", "pad"})
        if (field.starts_with(name)) return name;
    return field;
}

// `kernel` is that of a windowed layer (it bounds the padding), 0 for a dense layer.
LayerOptions parse_options(const std::vector<std::string>& fields, std::size_t first,
                           const std::string& token, std::size_t kernel = 0) {
    const bool windowed = kernel > 0;
    LayerOptions o;
    std::vector<std::string_view> seen;
    for (std::size_t i = first; i < fields.size(); ++i) {
        const std::string_view f = fields[i];
        const std::string_view name = option_name(f);
        if (std::find(seen.begin(), seen.end(), name) != seen.end())
            throw SpecError(token, "option '" + std::string(name) + "' given twice");
        seen.push_back(name);
        if (f == "nobias")
            o.bias = false;
        else if (windowed && name == "stride")
            o.stride = spec_number(f.substr(6), token, "stride", 1, limits::max_stride);
        else if (windowed && name == "pad")
            o.padding = spec_number(f.substr(3), token, "padding", 0, kernel - 1);
        else
            throw SpecError(token, "unknown option '" + std::string(f) + "'");
    }
    return o;
}

void require_fields(const std::vector<std::string>& f, std::size_t min, const std::string& token,
                    const char* form) {
    if (f.size() < min) throw SpecError(token, std::string("expected ") + form);
}

template <class T>
std::unique_ptr<Layer<T>> parse_layer(const std::string& token, const ActShape& in) {
    const auto f = split(token, ':');
    const std::string& kind = f[0];
    if (kind == "relu" && f.size() == 1) return std::make_unique<ReLU<T>>();
    if (kind == "flatten" && f.size() == 1) return std::make_unique<Flatten<T>>();
    if (kind == "dense") {
        require_fields(f, 2, token, "dense:OUT[:nobias]");
        const std::size_t out = spec_number(f[1], token, "out features", 1, limits::max_features);
        const auto o = parse_options(f, 2, token);
        return std::make_unique<Dense<T>>(in.size(), out, o.bias);
    }
    if (kind == "conv") {
        require_fields(f, 3, token, "conv:OUT:K[:strideS][:padP][:nobias]");
        const std::size_t out = spec_number(f[1], token, "out channels", 1, limits::max_features);
        const std::size_t kernel = spec_number(f[2], token, "kernel", 1, limits::max_kernel);
        const auto o = parse_options(f, 3, token, kernel);
        return std::make_unique<Conv2d<T>>(in.c, out, kernel, o.stride, o.padding, o.bias);
    }
    if (kind == "maxpool") {
        if (f.size() != 3) throw SpecError(token, "expected maxpool:K:S");
        return std::make_unique<MaxPool2d<T>>(
            spec_number(f[1], token, "kernel", 1, limits::max_kernel),
            spec_number(f[2], token, "stride", 1, limits::max_stride));
    }
    throw SpecError(token, "unknown layer (expected dense, conv, maxpool, relu or flatten)");
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
                                 spec_or_name == "flatten" || spec_or_name == "relu";
    const std::string spec =
        looks_like_spec ? std::string(spec_or_name) : zoo_spec(spec_or_name);
    Sequential<T> model(input);
    for (const auto& token : split(spec, ',')) {
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
