// Limits and checked arithmetic for readers of untrusted files: sizes taken from a file are
// multiplied and added only through these helpers, so a hostile header cannot wrap a size
// around to a small number; names taken from a file are printed only through printable_name,
// so an error message cannot carry terminal escapes or megabytes of text.
#pragma once

#include "minsharp/tensor.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace minsharp {

/// Largest safetensors JSON header read_safetensors accepts (the reference implementation
/// also caps it at 100 MB); a longer one is rejected before it is read.
inline constexpr std::uint64_t max_safetensors_header_bytes = 100'000'000;

/// Deepest nesting of arrays/objects accepted in a safetensors header. A valid header nests
/// 3 deep (header → tensor entry → shape); the cap keeps recursive JSON code off deep input.
inline constexpr std::size_t max_safetensors_header_depth = 64;

/// Characters of a file-provided name printed in an error message before it is cut.
inline constexpr std::size_t max_printed_name_chars = 64;

/// a × b, or throws E("<what>: a × b overflows 64 bits").
template <class E = Error>
std::uint64_t checked_mul(std::uint64_t a, std::uint64_t b, std::string_view what) {
    std::uint64_t out = 0;
    if (__builtin_mul_overflow(a, b, &out))
        throw E(std::string(what) + ": " + std::to_string(a) + " × " + std::to_string(b) +
                " overflows 64 bits");
    return out;
}

/// a + b, or throws E("<what>: a + b overflows 64 bits").
template <class E = Error>
std::uint64_t checked_add(std::uint64_t a, std::uint64_t b, std::string_view what) {
    std::uint64_t out = 0;
    if (__builtin_add_overflow(a, b, &out))
        throw E(std::string(what) + ": " + std::to_string(a) + " + " + std::to_string(b) +
                " overflows 64 bits");
    return out;
}

/// The product of `dims` (1 for none), or throws E naming `what` and the dimension at which
/// the product overflows (not the whole list: a hostile one can be megabytes long).
template <class E = Error, class Dims>
std::uint64_t checked_product(const Dims& dims, std::string_view what) {
    std::uint64_t out = 1;
    std::size_t index = 0;
    for (const auto d : dims) {
        const std::uint64_t before = out;
        if (__builtin_mul_overflow(out, static_cast<std::uint64_t>(d), &out))
            throw E(std::string(what) + ": the product of the dimensions overflows 64 bits at " +
                    "dimension " + std::to_string(index) + " (" + std::to_string(before) + " × " +
                    std::to_string(d) + ")");
        ++index;
    }
    return out;
}

/// `name` made safe for an error message: control characters (C0, DEL, C1) and backslashes
/// are written as escapes ("\x1b", "\\"), and text beyond `max_chars` code points is cut
/// and marked with "…". Bytes that are not valid UTF-8 are escaped too.
std::string printable_name(std::string_view name, std::size_t max_chars = max_printed_name_chars);

}  // namespace minsharp
