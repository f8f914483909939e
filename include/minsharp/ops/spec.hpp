// The pieces every layer's spec token parser shares (grammar in nn/models.hpp): the token
// split into ':' fields, numbers within the layer limits, options, and the error naming
// the token.
#pragma once

#include "minsharp/core/checked.hpp"

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace minsharp {

class SpecError : public Error {
public:
    SpecError(const std::string& token, const std::string& problem)
        : Error("model spec: token '" + token + "': " + problem) {}
};

/// `s` cut at every `sep` (empty parts kept): a spec into tokens, a token into fields.
std::vector<std::string> split_spec(std::string_view s, char sep);

/// One comma-separated token of a spec: its text and its ':' fields (fields[0] names the
/// layer kind).
struct SpecToken {
    std::string text;
    std::vector<std::string> fields;
    explicit SpecToken(std::string_view token) : text(token), fields(split_spec(token, ':')) {}
};

/// A spec number: plain digits in [min, max], or a SpecError naming the token, the field
/// and the value.
std::size_t spec_number(std::string_view text, const SpecToken& token, const char* field,
                        std::size_t min, std::size_t max);

/// Throws SpecError "expected <form>" when the token has fewer than `min` fields.
void require_fields(const SpecToken& token, std::size_t min, std::string_view form);

/// Options after the fixed fields: strideS, padP (windowed layers only), nobias; each at
/// most once.
struct LayerOptions {
    std::size_t stride = 1, padding = 0;
    bool bias = true;
};

/// Parses the options from field `first` on. `kernel` is that of a windowed layer (it
/// bounds the padding), 0 for a layer without a window.
LayerOptions parse_options(const SpecToken& token, std::size_t first, std::size_t kernel = 0);

}  // namespace minsharp
