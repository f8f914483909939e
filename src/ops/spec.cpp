#include "minsharp/ops/spec.hpp"

#include "minsharp/ops/layer.hpp"

#include <algorithm>

namespace minsharp {

std::vector<std::string> split_spec(std::string_view s, char sep) {
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

std::size_t spec_number(std::string_view text, const SpecToken& token, const char* field,
                        std::size_t min, std::size_t max) {
    try {
        return parse_whole_number(text, field, min, max);
    } catch (const Error& e) {
        throw SpecError(token.text, e.what());
    }
}

void require_fields(const SpecToken& token, std::size_t min, std::string_view form) {
    if (token.fields.size() < min) throw SpecError(token.text, "expected " + std::string(form));
}

namespace {

// "stride" for stride2, "pad" for pad1, the field itself otherwise.
std::string_view option_name(std::string_view field) {
    for (std::string_view name : {"stride", "pad"})
        if (field.starts_with(name)) return name;
    return field;
}

}  // namespace

LayerOptions parse_options(const SpecToken& token, std::size_t first, std::size_t kernel) {
    const bool windowed = kernel > 0;
    LayerOptions o;
    std::vector<std::string_view> seen;
    for (std::size_t i = first; i < token.fields.size(); ++i) {
        const std::string_view f = token.fields[i];
        const std::string_view name = option_name(f);
        if (std::find(seen.begin(), seen.end(), name) != seen.end())
            throw SpecError(token.text, "option '" + std::string(name) + "' given twice");
        seen.push_back(name);
        if (f == "nobias")
            o.bias = false;
        else if (windowed && name == "stride")
            o.stride = spec_number(f.substr(6), token, "stride", 1, limits::max_stride);
        else if (windowed && name == "pad")
            o.padding = spec_number(f.substr(3), token, "padding", 0, kernel - 1);
        else
            throw SpecError(token.text, "unknown option '" + std::string(f) + "'");
    }
    return o;
}

}  // namespace minsharp
